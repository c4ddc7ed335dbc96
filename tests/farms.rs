//! cachefs in front of an existing compile farm (issue #20): a missed C
//! compile runs under the prefix command (`CACHEFS_PREFIX=distcc`, ccache's
//! `CCACHE_PREFIX`), a hit runs nothing. Real daemons in network namespaces
//! of their own, joined to the build's by a veth pair: distccd, and icecc's
//! scheduler with two iceccd. Lua 5.4 from Debian's sources is the build.

mod common;
use common::debian::{lua_artifacts, lua_plain, LUA_OBJECTS};
use common::netns::NetNs;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The objects, ar and ranlib of liblua.a, the lua and luac links.
const LUA_CALLS: u64 = 38;
const DISTCC_PORT: u16 = 3632;

/// One distccd on a machine of its own (a network namespace), its log kept.
struct DistccFarm {
    machine: NetNs,
    daemon: std::process::Child,
    log: PathBuf,
    /// `DISTCC_HOSTS` for a client on the build's machine.
    hosts: String,
}

impl DistccFarm {
    /// distccd on `machine`, serving the build's machine `build`.
    fn start(build: &NetNs, log_dir: &Path) -> DistccFarm {
        require("distccd");
        let machine = NetNs::new();
        let (_, addr) = build.link(&machine, 1);
        let log = log_dir.join("distccd.log");
        let daemon = machine
            .command("distccd")
            .args([
                "--daemon",
                "--no-detach",
                "--log-stderr",
                "--log-level",
                "info",
            ])
            .args(["--allow", "10.77.1.0/24", "--listen", &addr, "--jobs", "2"])
            .args(["--port", &DISTCC_PORT.to_string()])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        machine.wait_listening(DISTCC_PORT);
        DistccFarm {
            machine,
            daemon,
            log,
            hosts: format!("{addr}:{DISTCC_PORT}/2,lzo"),
        }
    }

    /// Compiles distccd finished for a client (its log's job summaries).
    fn compiled(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(" COMPILE_OK ")).count()
    }

    /// The machine lost: distccd and every job it runs killed.
    fn kill(&self) {
        self.machine.kill_inside();
    }
}

impl Drop for DistccFarm {
    fn drop(&mut self) {
        self.kill();
        let _ = self.daemon.wait();
    }
}

/// Waits for `done` (ten minutes at most: a hang fails the test).
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited in vain: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `cachefs run sh -c script` on the build's machine with `env` set.
fn farm_run(build: &NetNs, sb: &Sandbox, env: &[(&str, String)], script: &str) -> Command {
    let mut c = build.command(cachefs_bin());
    c.args(["run", "sh", "-c", script])
        .env("CACHEFS_DIR", &sb.cache)
        .env_remove("LD_PRELOAD")
        .env_remove("CACHEFS_RUN_ID")
        .env_remove("RUST_LOG")
        .current_dir(&sb.project);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn checked(out: Output) -> Output {
    assert!(
        out.status.success(),
        "the build failed: {}\n{}",
        out.status,
        stderr(&out)
    );
    out
}

/// distcc's environment for a client of `farm`: its state in the sandbox,
/// no local fallback (a compile that does not run on the farm fails).
fn distcc_env(sb: &Sandbox, farm: &DistccFarm, fallback: bool) -> Vec<(&'static str, String)> {
    let dir = sb.root.path().join("distcc");
    std::fs::create_dir_all(&dir).unwrap();
    vec![
        ("CACHEFS_PREFIX", "distcc".into()),
        ("DISTCC_HOSTS", farm.hosts.clone()),
        ("DISTCC_DIR", dir.to_string_lossy().into_owned()),
        ("DISTCC_FALLBACK", if fallback { "1" } else { "0" }.into()),
    ]
}

/// (hits, misses, uncacheable, errors), and the uncacheable's reasons.
fn counts(sb: &Sandbox) -> ((u64, u64, u64, u64), String) {
    (sb.counts(), sb.stats()["uncacheable_reasons"].to_string())
}

/// The environment variables and files a compile's key holds (`cachefs deps`).
fn deps_of(sb: &Sandbox, output: &str) -> String {
    let out = sb.cachefs().args(["deps", output]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A farm's count of the compiles its other machine ran so far.
trait Farm {
    fn compiled(&self) -> usize;
}

impl Farm for DistccFarm {
    fn compiled(&self) -> usize {
        DistccFarm::compiled(self)
    }
}

impl Farm for IceccFarm {
    fn compiled(&self) -> usize {
        IceccFarm::compiled(self)
    }
}

/// A farm test's machines: the build's, with its sandbox, and the farm.
/// Dropped in this order: the farm, the sandbox (its agent stopped), then
/// the build's namespace.
struct Case<F: Farm> {
    farm: F,
    sb: Sandbox,
    build: NetNs,
}

impl<F: Farm> Case<F> {
    /// `None` where namespaces cannot be made (said on stderr).
    fn start(farm: impl FnOnce(&NetNs, &Sandbox) -> F) -> Option<Case<F>> {
        if let Some(why) = NetNs::unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let build = NetNs::new();
        let sb = Sandbox::new();
        let farm = farm(&build, &sb);
        Some(Case { farm, sb, build })
    }

    /// Lua unpacked and built plainly, to be built on the farm.
    fn lua(&self) -> FarmBuild<'_> {
        FarmBuild {
            build: &self.build,
            sb: &self.sb,
            plain: lua_plain(&self.sb),
            farm: &self.farm,
        }
    }
}

fn distcc_case() -> Option<Case<DistccFarm>> {
    Case::start(|build, sb| {
        require("distcc");
        DistccFarm::start(build, sb.root.path())
    })
}

fn icecc_case() -> Option<Case<IceccFarm>> {
    Case::start(|build, _| IceccFarm::start(build))
}

/// Lua built under `cachefs run` on the build's machine, with a farm.
struct FarmBuild<'a> {
    build: &'a NetNs,
    sb: &'a Sandbox,
    /// The plain build's artifacts.
    plain: Vec<(String, Vec<u8>)>,
    farm: &'a dyn Farm,
}

impl FarmBuild<'_> {
    const MAKE: &'static str = "make -s -j2 linux >/dev/null";

    /// The first build under `env`: byte-identical to plain, every object
    /// compiled on the farm, every call a miss, no `farm_own` string in the
    /// key of `src/lapi.o` (the key, as `cachefs deps` shows it).
    fn cold(&self, env: &[(&str, String)], farm_own: &[&str]) -> String {
        checked(
            farm_run(self.build, self.sb, env, Self::MAKE)
                .output()
                .unwrap(),
        );
        let built = lua_artifacts(&self.sb.path("src"));
        assert!(
            built == self.plain,
            "the farm's build differs from the plain build"
        );
        // A daemon logs a compile after it answered: wait for the lines.
        until("the farm logged every object", || {
            self.farm.compiled() >= LUA_OBJECTS
        });
        assert_eq!(
            self.farm.compiled(),
            LUA_OBJECTS,
            "every object compiled on the farm"
        );
        assert_eq!(counts(self.sb), ((0, LUA_CALLS, 0, 0), "{}".into()));
        let deps = deps_of(self.sb, "src/lapi.o");
        for own in farm_own {
            assert!(!deps.contains(own), "{own} in the key:\n{deps}");
        }
        deps
    }

    /// The first build under `env`, the farm's machine lost (`kill`) once it
    /// compiled 3 objects: the farm's client compiles the rest locally, the
    /// build succeeds, byte-identical to plain, every call cached (the
    /// client's own messages are no part of a result), and a rebuild is all
    /// hits. What the build printed on stderr.
    fn killed_mid_build(&self, env: &[(&str, String)], kill: &dyn Fn()) -> String {
        let printed = self.sb.root.path().join("build.stderr");
        let mut running = farm_run(self.build, self.sb, env, Self::MAKE)
            .stderr(std::fs::File::create(&printed).unwrap())
            .spawn()
            .unwrap();
        until("the farm compiled 3 objects", || self.farm.compiled() >= 3);
        kill();
        let mut status = None;
        until("the build ended after the farm died", || {
            status = running.try_wait().unwrap();
            status.is_some()
        });
        let printed = std::fs::read_to_string(&printed).unwrap();
        assert!(status.unwrap().success(), "the build failed: {printed}");
        let remote = self.farm.compiled();
        assert!(
            remote < LUA_OBJECTS,
            "the farm died mid-build: {remote} compiled there"
        );
        eprintln!("the farm compiled {remote} of {LUA_OBJECTS} objects before it was killed");
        let built = lua_artifacts(&self.sb.path("src"));
        assert!(built == self.plain, "the build after the farm died differs");
        assert_eq!(counts(self.sb), ((0, LUA_CALLS, 0, 0), "{}".into()));
        self.all_hits(env);
        printed
    }

    /// A clean rebuild under `env`: every call a hit, nothing sent to the
    /// farm, byte-identical to plain.
    fn all_hits(&self, env: &[(&str, String)]) {
        self.sb.sh("make -s clean");
        self.sb.zero_stats();
        let before = self.farm.compiled();
        checked(
            farm_run(self.build, self.sb, env, Self::MAKE)
                .output()
                .unwrap(),
        );
        assert_eq!(counts(self.sb), ((LUA_CALLS, 0, 0, 0), "{}".into()));
        assert_eq!(
            self.farm.compiled(),
            before,
            "a hit runs nothing on the farm"
        );
        let built = lua_artifacts(&self.sb.path("src"));
        assert!(built == self.plain, "the rebuild from cache differs");
    }
}

#[test]
fn distcc_compiles_the_misses_and_a_rebuild_is_all_local_hits() {
    let Some(case) = distcc_case() else {
        return;
    };
    let on_farm = case.lua();
    let (build, sb, farm) = (&case.build, &case.sb, &case.farm);
    let env = distcc_env(sb, farm, false);
    let deps = on_farm.cold(
        &env,
        &["DISTCC_", "/usr/bin/distcc", "/etc/distcc", "/distcc/"],
    );
    assert!(
        deps.contains("CPATH="),
        "gcc's own reads stay keyed:\n{deps}"
    );
    // Another host list (the key does not hold it): every call a local hit.
    let mut other = env.clone();
    other[1].1 = format!("{} 10.77.1.9/1", farm.hosts);
    on_farm.all_hits(&other);
    // The farm's results are ordinary results: a build without the prefix hits them.
    on_farm.all_hits(&[]);
    assert_eq!(sb.sh("src/lua -e 'print(6 * 7)'").stdout, b"42\n");
    debug_information_goes_to_the_farm_uncached(build, sb, farm, &env);
}

/// A compile with `-g` under distcc: compiled by distccd, not stored (its
/// debug information is not a local compile's); a local build's entry for
/// it is a hit under the prefix.
fn debug_information_goes_to_the_farm_uncached(
    build: &NetNs,
    sb: &Sandbox,
    farm: &DistccFarm,
    env: &[(&str, String)],
) {
    sb.write(
        "dbg.c",
        "#define TWICE(x) ((x) + (x))\nint f(int a) { return TWICE(a) * 3; }\n",
    );
    let compile = "gcc -O2 -g -c dbg.c -o dbg.o";
    let before = farm.compiled();
    sb.zero_stats();
    for _ in 0..2 {
        checked(farm_run(build, sb, env, compile).output().unwrap());
    }
    until("distccd logged both compiles", || {
        farm.compiled() >= before + 2
    });
    assert_eq!(farm.compiled(), before + 2, "both compiled by distccd");
    let reason = "debug information compiled by the farm (prefix)";
    assert_eq!(counts(sb), ((0, 0, 2, 0), format!("{{\"{reason}\":2}}")));
    checked(sb.run(compile));
    let local = sb.read("dbg.o");
    sb.zero_stats();
    checked(farm_run(build, sb, env, compile).output().unwrap());
    assert_eq!(counts(sb), ((1, 0, 0, 0), "{}".into()));
    assert_eq!(
        farm.compiled(),
        before + 2,
        "a hit runs nothing on the farm"
    );
    assert_eq!(sb.read("dbg.o"), local);
}

#[test]
fn distccd_killed_mid_build_the_build_completes_correctly() {
    let Some(case) = distcc_case() else {
        return;
    };
    let on_farm = case.lua();
    let (sb, farm) = (&case.sb, &case.farm);
    let env = distcc_env(sb, farm, true);
    let printed = on_farm.killed_mid_build(&env, &|| farm.kill());
    assert!(
        printed.contains("running locally instead"),
        "distcc fell back locally: {printed}"
    );
}

/// icecream: a scheduler and a daemon that takes no jobs itself on the
/// build's machine, and a daemon on a second machine (with mounts of its own:
/// iceccd's socket is a fixed path), so every compile goes there, in a chroot
/// of the environment tarball `icecc-create-env` made of the local gcc.
struct IceccFarm {
    node: NetNs,
    scheduler: std::process::Child,
    local: std::process::Child,
    remote: std::process::Child,
    /// Logs and environments, readable by the daemons' own user.
    dir: tempfile::TempDir,
    tarball: PathBuf,
    /// The build machine's iceccd socket is the host's: one farm at a time.
    _alone: std::sync::MutexGuard<'static, ()>,
}

/// Held by the one icecc farm of this test binary that runs.
static ICECC_FARM: std::sync::Mutex<()> = std::sync::Mutex::new(());

const LOCAL_SOCKET: &str = "/run/icecc/iceccd.socket";

impl IceccFarm {
    fn start(build: &NetNs) -> IceccFarm {
        let alone = ICECC_FARM.lock().unwrap_or_else(|e| e.into_inner());
        for tool in ["icecc", "iceccd", "icecc-scheduler", "icecc-create-env"] {
            require(tool);
        }
        let dir = tempfile::Builder::new()
            .prefix("cachefs-icecc-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        set_mode(d, 0o755);
        // The daemons write as their own user.
        for sub in ["logs", "envs"] {
            std::fs::create_dir(d.join(sub)).unwrap();
            set_mode(&d.join(sub), 0o777);
        }
        let node = NetNs::with_own_mounts();
        let (scheduler_addr, _) = build.link(&node, 2);
        std::fs::create_dir_all("/run/icecc").unwrap();
        node.sh("mount -t tmpfs none /run/icecc");
        let log = |name: &str| d.join("logs").join(name).to_string_lossy().into_owned();
        let scheduler = build
            .command("icecc-scheduler")
            .args(["-p", "8765", "-vvv", "-l", &log("scheduler.log")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = |machine: &NetNs, name: &str, jobs: &str| {
            machine
                .command("iceccd")
                .args(["-s", &scheduler_addr, "-m", jobs, "-N", name, "-vvv"])
                .args(["-l", &log(&format!("{name}.log"))])
                .arg("-b")
                .arg(d.join("envs").join(name))
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        };
        let local = daemon(build, "build", "0");
        let remote = daemon(&node, "node", "2");
        let tarball = create_env(d);
        let farm = IceccFarm {
            node,
            scheduler,
            local,
            remote,
            dir,
            tarball,
            _alone: alone,
        };
        farm.wait_for_logins();
        farm
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(name)).unwrap_or_default()
    }

    /// Until both daemons logged in to the scheduler (60 s at most).
    fn wait_for_logins(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let log = self.log("scheduler.log");
            if log.contains("login build ") && log.contains("login node ") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemons did not reach the scheduler:\n{log}\nbuild:\n{}\nnode:\n{}",
                self.log("build.log"),
                self.log("node.log")
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Compiles the second machine's daemon ran.
    fn compiled(&self) -> usize {
        self.log("node.log")
            .lines()
            .filter(|l| l.contains("Remote compilation completed"))
            .count()
    }
}

impl Drop for IceccFarm {
    fn drop(&mut self) {
        for child in [&mut self.local, &mut self.remote, &mut self.scheduler] {
            // iceccd leads a process group of its own, with its jobs.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
        self.node.kill_inside();
        let _ = std::fs::remove_file(LOCAL_SOCKET);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `icecc-create-env` of the local gcc and g++: the tarball's path.
fn create_env(dir: &Path) -> PathBuf {
    let out = Command::new("icecc-create-env")
        .args(["--gcc", "/usr/bin/gcc", "/usr/bin/g++"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "icecc-create-env: {}", stderr(&out));
    let tarball = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("icecc-create-env made a tarball");
    set_mode(&tarball, 0o644);
    tarball
}

/// An icecc client's environment: the prefix and the environment tarball.
fn icecc_env(farm: &IceccFarm) -> Vec<(&'static str, String)> {
    vec![
        ("CACHEFS_PREFIX", "icecc".to_string()),
        ("ICECC_VERSION", farm.tarball.to_string_lossy().into_owned()),
    ]
}

#[test]
fn icecc_compiles_the_misses_on_another_machine_and_a_rebuild_is_all_local_hits() {
    let Some(case) = icecc_case() else {
        return;
    };
    let on_farm = case.lua();
    let env = icecc_env(&case.farm);
    let tarball = case.farm.tarball.to_string_lossy();
    let own = [
        "ICECC",
        "/usr/bin/icecc",
        "/etc/icecc",
        ".icecream-",
        &tarball,
    ];
    on_farm.cold(&env, &own);
    on_farm.all_hits(&env);
}

#[test]
fn icecc_node_killed_mid_build_the_build_completes_correctly() {
    let Some(case) = icecc_case() else {
        return;
    };
    let on_farm = case.lua();
    let env = icecc_env(&case.farm);
    on_farm.killed_mid_build(&env, &|| case.farm.node.kill_inside());
}

/// `cachefs config`'s line for the prefix, with `env` set and the config
/// file `file_text` in the sandbox.
fn prefix_setting(sb: &Sandbox, file_text: &str, env: &[(&str, &str)]) -> String {
    let config = sb.root.path().join("config.toml");
    std::fs::write(&config, file_text).unwrap();
    let mut c = sb.cachefs();
    c.env("CACHEFS_CONFIG", &config)
        .env_remove("CACHEFS_PREFIX")
        .env_remove("CCACHE_PREFIX");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.arg("config").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("prefix"))
        .unwrap_or_else(|| panic!("no prefix in {text}"))
        .to_string()
}

#[test]
fn the_prefix_comes_from_the_config_file_cachefs_prefix_or_ccache_prefix() {
    let sb = Sandbox::new();
    let line = prefix_setting(&sb, "prefix = \"distcc -v\"\n", &[]);
    assert!(
        line.contains("distcc -v") && line.contains("config.toml"),
        "{line}"
    );
    let line = prefix_setting(&sb, "prefix = \"distcc\"\n", &[("CCACHE_PREFIX", "icecc")]);
    assert!(
        line.contains("icecc") && line.contains("$CCACHE_PREFIX"),
        "{line}"
    );
    let both = [("CCACHE_PREFIX", "icecc"), ("CACHEFS_PREFIX", "/opt/farm")];
    let line = prefix_setting(&sb, "", &both);
    assert!(
        line.contains("/opt/farm") && line.contains("$CACHEFS_PREFIX"),
        "{line}"
    );
    assert!(prefix_setting(&sb, "", &[]).contains("none"));

    // A prefix command is any program given the compile's command line: this
    // one shows that it ran by a definition of its own.
    let script = sb.root.path().join("farm.sh");
    std::fs::write(&script, "#!/bin/sh\nexec \"$@\" -DVIA_PREFIX=1\n").unwrap();
    set_mode(&script, 0o755);
    sb.write(
        "main.c",
        "#include <stdio.h>\n#ifndef VIA_PREFIX\n#define VIA_PREFIX 0\n#endif\n\
         int main(void) { printf(\"%d\\n\", VIA_PREFIX); return 0; }\n",
    );
    let build = |prefix: &Path| {
        let out = sb
            .cachefs()
            .env("CCACHE_PREFIX", prefix)
            .args(["run", "sh", "-c", "gcc -o main main.c && ./main"])
            .output()
            .unwrap();
        checked(out)
    };
    assert_eq!(build(&script).stdout, b"1\n");
    // One that is not there: the build goes on without it, and says so.
    std::fs::remove_file(sb.path("main")).unwrap();
    let out = build(Path::new("no-such-farm"));
    assert_eq!(out.stdout, b"0\n");
    assert!(
        stderr(&out).contains("no-such-farm is not found"),
        "{}",
        stderr(&out)
    );
}
