/* The execl family is C-variadic, which stable Rust cannot define. These collect the arguments the way
 * glibc's own execl/execlp/execle do (argv ends at the first NULL after arg; execle's envp follows it)
 * and hand an argv array to the shim's Rust entry points. Rust exports them as execl/execlp/execle
 * through tail-jump trampolines, because a Rust cdylib hides every symbol a C object defines. */
#include <stdarg.h>
#include <stddef.h>

int cachefs_shim_execv(const char *path, char *const argv[]);
int cachefs_shim_execvp(const char *file, char *const argv[]);
int cachefs_shim_execve(const char *path, char *const argv[], char *const envp[]);

/* Counts on a copy first so that argv can be a VLA in the caller's frame (no allocation: this may run in
 * a vfork child). argc includes arg and is at least 1, exactly as glibc computes it. */
#define COLLECT_ARGV(arg, ap, argv)                                                                   \
    va_list ap;                                                                                       \
    size_t argc_ = 1;                                                                                 \
    va_start(ap, arg);                                                                                \
    {                                                                                                 \
        va_list cp_;                                                                                  \
        va_copy(cp_, ap);                                                                             \
        while (va_arg(cp_, char *) != NULL)                                                           \
            argc_++;                                                                                  \
        va_end(cp_);                                                                                  \
    }                                                                                                 \
    char *argv[argc_ + 1];                                                                            \
    argv[0] = (char *)(arg);                                                                          \
    for (size_t i_ = 1; i_ <= argc_; i_++)                                                            \
        argv[i_] = va_arg(ap, char *);

__attribute__((visibility("hidden"))) int cachefs_c_execl(const char *path, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap, argv)
    va_end(ap);
    return cachefs_shim_execv(path, argv);
}

__attribute__((visibility("hidden"))) int cachefs_c_execlp(const char *file, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap, argv)
    va_end(ap);
    return cachefs_shim_execvp(file, argv);
}

__attribute__((visibility("hidden"))) int cachefs_c_execle(const char *path, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap, argv)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return cachefs_shim_execve(path, argv, envp);
}

/* The precompiled `core` refers to this even with panic=abort, and nothing in the shim calls it. It is
 * defined here, not in Rust, so that it stays local to the shim: exported, it would interpose on the
 * personality routine of every preloaded Rust program linking std dynamically (rustc), and their
 * unwinding (rustc's exit on a compile error, a proc macro's caught panic) would abort instead. */
void rust_eh_personality(void) {}
