//! The shim in real processes: a C driver calls each hooked function under LD_PRELOAD, and a C probe
//! stands in for the cachefs client, printing what it was given (a shell script could not: the kernel
//! replaces a script's argv[0] with the script path). Nothing here runs a real compile.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const DRIVER_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;

/* driver MODE TARGET ARGV0 ARG1 ARG2: start TARGET with argv {ARGV0, ARG1, ARG2} through MODE. */
/* Takes the pid's address: an argument `pid` would be read before the spawn
   call that sets it, as C leaves the order of argument evaluation open. */
static int spawned(int rc, const pid_t *pid) {
    int status;
    if (rc != 0) { printf("spawn failed: errno=%d\n", rc); return 126; }
    if (waitpid(*pid, &status, 0) != *pid) { printf("waitpid failed: errno=%d\n", errno); return 125; }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int main(int argc, char **argv) {
    if (argc != 6) return 100;
    const char *mode = argv[1], *target = argv[2];
    char **args = argv + 3;
    pid_t pid;
    if (!strcmp(mode, "execve")) execve(target, args, environ);
    else if (!strcmp(mode, "execv")) execv(target, args);
    else if (!strcmp(mode, "execvp")) execvp(target, args);
    else if (!strcmp(mode, "execvpe")) execvpe(target, args, environ);
    else if (!strcmp(mode, "execl")) execl(target, args[0], args[1], args[2], (char *)0);
    else if (!strcmp(mode, "execlp")) execlp(target, args[0], args[1], args[2], (char *)0);
    else if (!strcmp(mode, "execle")) execle(target, args[0], args[1], args[2], (char *)0, environ);
    else if (!strcmp(mode, "fexecve")) {
        int fd = open(target, O_RDONLY);
        if (fd < 0) { printf("exec failed: errno=%d\n", errno); return 127; }
        fexecve(fd, args, environ);
    }
    else if (!strcmp(mode, "posix_spawn"))
        return spawned(posix_spawn(&pid, target, NULL, NULL, args, environ), &pid);
    else if (!strcmp(mode, "posix_spawnp"))
        return spawned(posix_spawnp(&pid, target, NULL, NULL, args, environ), &pid);
    else if (!strcmp(mode, "system")) {
        int status = system(target);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    }
    else return 101;
    printf("exec failed: errno=%d\n", errno);
    return 127;
}
"#;

const PROBE_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv, char **envp) {
    printf("PROBE argv0=%s\n", argv[0]);
    for (int i = 1; i < argc; i++) printf("PROBE arg=%s\n", argv[i]);
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "CACHEFS_", 8) || !strncmp(*e, "LD_PRELOAD=", 11)) printf("PROBE env %s\n", *e);
    const char *code = getenv("PROBE_EXIT");
    return code ? atoi(code) : 42;
}
"#;

/// Every hooked function; the `p` ones are given a bare name to search in PATH.
const MODES: [(&str, bool); 10] = [
    ("execve", false),
    ("execv", false),
    ("execvp", true),
    ("execvpe", true),
    ("execl", false),
    ("execlp", true),
    ("execle", false),
    ("fexecve", false),
    ("posix_spawn", false),
    ("posix_spawnp", true),
];

struct Fixture {
    dir: PathBuf,
    driver: PathBuf,
    probe: PathBuf,
}

impl Fixture {
    fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The fake compiler: running it (instead of the probe) means "not diverted".
    fn gcc(&self) -> String {
        self.bin().join("gcc").display().to_string()
    }

    fn path_env(&self) -> String {
        format!("{}:/usr/bin:/bin", self.bin().display())
    }

    /// A command under the shim in a controlled environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", self.path_env())
            .env("LD_PRELOAD", cachefs_preload::SHIM_PATH)
            .env("CACHEFS_CLIENT", &self.probe)
            .env("CACHEFS_DIR", self.dir.join("cache"))
            .env("CACHEFS_RUN_ID", "run-7")
            .current_dir(&self.dir);
        cmd
    }

    fn driver(&self, mode: &str, target: &str) -> Command {
        let mut cmd = self.command(&self.driver);
        cmd.args([mode, target, "argv0-kept", "-c", "x y.c"]);
        cmd
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = fresh_dir();
        fs::create_dir_all(dir.join("bin")).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        let driver = compile_c(&dir, "driver", DRIVER_C);
        let probe = compile_c(&dir, "probe", PROBE_C);
        script(&dir.join("bin/gcc"), "echo \"REAL gcc $*\"\nexit 7", 0o755);
        script(
            &dir.join("bin/gcc-nm"),
            "echo \"REAL gcc-nm $*\"\nexit 5",
            0o755,
        );
        script(&dir.join("bin/gcc-ar"), "echo \"REAL gcc-ar $*\"", 0o755);
        script(&dir.join("bin/noexec/gcc"), "exit 0", 0o644);
        fs::write(dir.join("Makefile"), "x.o:\n\tgcc -c x.c\n").unwrap();
        Fixture { dir, driver, probe }
    })
}

/// A directory for this test process, under Cargo's per-target temp dir; those of finished runs are
/// removed (several runs may share the target dir at once, hence one per pid).
fn fresh_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = "preload-shim-";
    for entry in fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(prefix) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    fs::write(&src, source).unwrap();
    let status = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {name}.c");
    exe
}

fn script(path: &Path, body: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

struct Run {
    code: i32,
    stdout: String,
}

impl Run {
    fn probe(&self, key: &str) -> Vec<&str> {
        let prefix = format!("PROBE {key}");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    fn probe_env(&self) -> BTreeMap<&str, &str> {
        self.probe("env ")
            .iter()
            .filter_map(|e| e.split_once('='))
            .collect()
    }

    fn diverted(&self) -> bool {
        self.stdout.contains("PROBE argv0=")
    }
}

fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("start");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    eprintln!(
        "{cmd:?}\n  -> {status}\n{stdout}{}",
        String::from_utf8_lossy(&stderr)
    );
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
    }
}

/// The probe ran in place of the compiler with argv intact and `compiler` as CACHEFS_COMPILER.
fn assert_diverted(r: &Run, argv0: &str, args: &[&str], compiler: &str) {
    assert_eq!(r.code, 42, "the probe's exit code");
    assert_eq!(r.probe("argv0="), [argv0]);
    assert_eq!(r.probe("arg="), args);
    let compilers: Vec<_> = r.probe("env CACHEFS_COMPILER=");
    assert_eq!(compilers, [compiler], "exactly one CACHEFS_COMPILER");
}

#[test]
fn every_hook_diverts_with_argv_kept() {
    let f = fixture();
    for (mode, search) in MODES {
        let target = if search { "gcc".to_string() } else { f.gcc() };
        let r = run(&mut f.driver(mode, &target));
        assert_diverted(&r, "argv0-kept", &["-c", "x y.c"], &f.gcc());
        let env = r.probe_env();
        assert_eq!(env.get("CACHEFS_RUN_ID"), Some(&"run-7"), "{mode}");
        assert_eq!(
            env.get("LD_PRELOAD"),
            Some(&cachefs_preload::SHIM_PATH),
            "{mode}"
        );
    }
}

#[test]
fn system_and_shell_commands_divert() {
    let f = fixture();
    let r = run(&mut f.driver("system", "gcc -c 'x y.c'"));
    assert_diverted(&r, "gcc", &["-c", "x y.c"], &f.gcc());
    let r = run(f.command("/bin/sh").args(["-c", "gcc -O2 -c x.c"]));
    assert_diverted(&r, "gcc", &["-O2", "-c", "x.c"], &f.gcc());
}

#[test]
fn inside_a_compile_nothing_diverts() {
    let f = fixture();
    for (mode, search) in MODES {
        let target = if search { "gcc".to_string() } else { f.gcc() };
        let r = run(f.driver(mode, &target).env("CACHEFS_IN_COMPILE", "1"));
        assert!(!r.diverted(), "{mode}");
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (7, "REAL gcc -c x y.c\n"),
            "{mode}"
        );
    }
    // Only "1" marks a compile.
    let r = run(f.driver("execve", &f.gcc()).env("CACHEFS_IN_COMPILE", "0"));
    assert!(r.diverted());
}

#[test]
fn in_compile_survives_a_scrubbed_environment() {
    let f = fixture();
    let r = run(f
        .command("/usr/bin/env")
        .arg("-i")
        .arg(f.gcc())
        .arg("x.c")
        .env("CACHEFS_IN_COMPILE", "1"));
    assert_eq!((r.code, r.stdout.as_str()), (7, "REAL gcc x.c\n"));
}

#[test]
fn non_compilers_run_unchanged() {
    let f = fixture();
    let r = run(&mut f.driver("execve", "/bin/echo"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "-c x y.c\n"));
    let r = run(&mut f.driver("posix_spawnp", "echo"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "-c x y.c\n"));
    for mode in ["execvp", "posix_spawnp", "execlp"] {
        let r = run(&mut f.driver(mode, "gcc-nm"));
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (5, "REAL gcc-nm -c x y.c\n"),
            "{mode}"
        );
    }
    // Archivers are cached like compilers.
    let ar = f.dir.join("bin/gcc-ar").to_string_lossy().into_owned();
    let r = run(&mut f.driver("execvp", "gcc-ar"));
    assert_diverted(&r, "argv0-kept", &["-c", "x y.c"], &ar);
    let r = run(f.command("/bin/sh").args(["-c", "exit 3"]));
    assert_eq!(r.code, 3);
}

#[test]
fn missing_or_unexecutable_compilers_fail_as_usual() {
    let f = fixture();
    let r = run(&mut f.driver("execve", "/nonexistent/gcc"));
    assert_eq!((r.code, r.stdout.as_str()), (127, "exec failed: errno=2\n"));
    for mode in ["execvp", "execlp", "execvpe"] {
        let r = run(f.driver(mode, "gcc").env("PATH", "/nonexistent"));
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (127, "exec failed: errno=2\n"),
            "{mode}"
        );
    }
    let r = run(&mut f.driver("posix_spawn", "/nonexistent/gcc"));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (126, "spawn failed: errno=2\n")
    );
    let r = run(f.driver("posix_spawnp", "gcc").env("PATH", "/nonexistent"));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (126, "spawn failed: errno=2\n")
    );
    let noexec = f.bin().join("noexec/gcc").display().to_string();
    let r = run(&mut f.driver("execve", &noexec));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (127, "exec failed: errno=13\n")
    );
    // A PATH entry without an executable gcc is skipped, as execvp does.
    let path = format!("{}:{}", f.bin().join("noexec").display(), f.bin().display());
    let r = run(f.driver("execvp", "gcc").env("PATH", path));
    assert_diverted(&r, "argv0-kept", &["-c", "x y.c"], &f.gcc());
}

#[test]
fn env_i_is_diverted_and_reinjected() {
    let f = fixture();
    let r = run(f
        .command("/usr/bin/env")
        .arg("-i")
        .arg(f.gcc())
        .args(["-c", "x.c"]));
    assert_diverted(&r, &f.gcc(), &["-c", "x.c"], &f.gcc());
    let env = r.probe_env();
    assert_eq!(env.get("LD_PRELOAD"), Some(&cachefs_preload::SHIM_PATH));
    assert_eq!(env.get("CACHEFS_CLIENT"), Some(&f.probe.to_str().unwrap()));
    assert_eq!(
        env.get("CACHEFS_DIR"),
        Some(&f.dir.join("cache").to_str().unwrap())
    );
    assert_eq!(env.get("CACHEFS_RUN_ID"), Some(&"run-7"));
    // Not diverted programs get them back too; a value the program set itself is kept.
    let r = run(f
        .command("/usr/bin/env")
        .args(["-i", "CACHEFS_RUN_ID=mine", "/usr/bin/printenv"]));
    assert!(
        r.stdout
            .contains(&format!("LD_PRELOAD={}\n", cachefs_preload::SHIM_PATH)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("CACHEFS_RUN_ID=mine\n"));
    assert!(!r.stdout.contains("CACHEFS_RUN_ID=run-7"));
}

#[test]
fn make_recipe_is_diverted() {
    let f = fixture();
    let r = run(f
        .command("make")
        .args(["-s", "-f", "Makefile"])
        .env("PROBE_EXIT", "0"));
    assert_eq!(r.code, 0);
    assert_eq!(r.probe("argv0="), ["gcc"]);
    assert_eq!(r.probe("arg="), ["-c", "x.c"]);
    assert_eq!(r.probe("env CACHEFS_COMPILER="), [f.gcc()]);
}

#[test]
fn real_compiler_names() {
    let f = fixture();
    let triple_gcc = "/usr/bin/x86_64-linux-gnu-gcc-12";
    assert!(
        Path::new(triple_gcc).exists() && Path::new("/usr/bin/gcc-12").exists(),
        "{triple_gcc} is not installed (Debian 12's gcc-12): run scripts/setup.sh"
    );
    for (mode, target, compiler) in [
        ("execve", "/usr/bin/cc", "/usr/bin/cc"),
        ("execv", "/usr/bin/gcc-12", "/usr/bin/gcc-12"),
        ("posix_spawn", "/usr/bin/c++", "/usr/bin/c++"),
        // Searched the caller's PATH ("/usr/bin" comes after our bin/, which has no such name).
        ("execvp", "x86_64-linux-gnu-gcc-12", triple_gcc),
        // The descriptor names the file, symlinks resolved.
        ("fexecve", "/usr/bin/cc", triple_gcc),
    ] {
        let r = run(&mut f.driver(mode, target));
        assert_diverted(&r, "argv0-kept", &["-c", "x y.c"], compiler);
    }
}

#[test]
fn no_usable_client_means_no_divert() {
    let f = fixture();
    let not_executable = f.dir.join("Makefile");
    for client in [
        None,
        Some(""),
        Some("probe"),
        Some(not_executable.to_str().unwrap()),
    ] {
        let mut cmd = f.driver("execve", &f.gcc());
        match client {
            Some(c) => cmd.env("CACHEFS_CLIENT", c),
            None => cmd.env_remove("CACHEFS_CLIENT"),
        };
        let r = run(&mut cmd);
        assert_eq!((r.code, r.diverted()), (7, false), "{client:?}");
    }
}

/// The client execs the real compiler; it must not be sent back to itself, whatever its environment.
#[test]
fn the_client_is_never_diverted() {
    let f = fixture();
    let r = run(f
        .driver("execve", &f.gcc())
        .env("CACHEFS_CLIENT", &f.driver));
    assert_eq!((r.code, r.diverted()), (7, false));
}

/// Per-exec cost of loading the shim (run with `--ignored --nocapture`). Timings are printed, not
/// asserted: they depend on the machine.
#[test]
#[ignore]
fn exec_overhead() {
    let f = fixture();
    let runs = 1000;
    let time = |preload: bool| {
        let start = Instant::now();
        for _ in 0..runs {
            let mut cmd = f.command("/bin/true");
            if !preload {
                cmd.env_remove("LD_PRELOAD");
            }
            assert!(cmd.status().unwrap().success());
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
    };
    let (mut without, mut with) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        without = without.min(time(false));
        with = with.min(time(true));
    }
    println!(
        "exec overhead ({}): /bin/true {without:.0} µs without the shim, {with:.0} µs with it: +{:.0} µs",
        cachefs_preload::SHIM_PATH,
        with - without
    );
}
