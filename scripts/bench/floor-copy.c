/* The "floor" of a build for c-builds.sh: a stand-in compiler that produces
 * each output by copying the file a plain build wrote at the same path
 * (saved under $CACHEFS_FLOOR_STASH). A build with it costs what no compiler
 * cache can remove: make, shells, ar, generators, process starts. Handles
 * `-o OUT` (or `-c SRC.c`'s implied SRC.o) and `-MF DEPFILE` (empty when the
 * plain build left none at that path, e.g. automake's renamed .Tpo). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int copy_from_stash(const char *out, int required) {
    char cwd[4096], src[8192];
    if (!getcwd(cwd, sizeof cwd)) return 1;
    const char *stash = getenv("CACHEFS_FLOOR_STASH");
    if (!stash) { fprintf(stderr, "floor-copy: CACHEFS_FLOOR_STASH is not set\n"); return 1; }
    if (out[0] == '/') snprintf(src, sizeof src, "%s%s", stash, out);
    else snprintf(src, sizeof src, "%s%s/%s", stash, cwd, out);
    int in = open(src, O_RDONLY);
    if (in < 0 && required) { fprintf(stderr, "floor-copy: no stashed %s: run a plain build first\n", src); return 1; }
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (o < 0) { perror(out); return 1; }
    char buf[1 << 16];
    ssize_t n;
    while (in >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(o, buf, (size_t)n) != n) { perror(out); return 1; }
    if (in >= 0) close(in);
    return close(o) != 0;
}

int main(int argc, char **argv) {
    const char *out = NULL, *depfile = NULL, *source = NULL;
    int compile_only = 0;
    static char implied[4096];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "-MF") && i + 1 < argc) depfile = argv[++i];
        else if (!strcmp(argv[i], "-c")) compile_only = 1;
        else if (argv[i][0] != '-') source = argv[i];
    }
    if (!out && compile_only && source) {
        const char *base = strrchr(source, '/') ? strrchr(source, '/') + 1 : source;
        snprintf(implied, sizeof implied, "%s", base);
        char *dot = strrchr(implied, '.');
        if (dot) strcpy(dot, ".o");
        out = implied;
    }
    if (out && copy_from_stash(out, 1)) return 1;
    if (depfile && copy_from_stash(depfile, 0)) return 1;
    return 0;
}
