//! `cachefs mount` / `umount` on real builds: every process run inside the
//! mount is recorded with what it read and wrote, compiler or not; `cachefs
//! run` inside the mount caches as usual; stale mounts are cleaned up.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A `cachefs mount` of the sandbox's project at `<root>/mnt`, unmounted on
/// drop so a failing test leaves no mount behind.
struct Mounted<'a> {
    sb: &'a Sandbox,
    mnt: PathBuf,
}

impl<'a> Mounted<'a> {
    fn new(sb: &'a Sandbox) -> Mounted<'a> {
        let mnt = sb.root.path().join("mnt");
        let out = sb
            .cachefs()
            .arg("mount")
            .arg(&sb.project)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", stderr(&out));
        assert!(mounted(&mnt), "not in mountinfo after `cachefs mount`");
        Mounted { sb, mnt }
    }

    /// `sh -c SCRIPT` inside the mount, plain (no cachefs run).
    fn sh(&self, script: &str) -> Output {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&self.mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", stderr(&out));
        out
    }

    fn cachefs(&self, args: &[&str]) -> Output {
        let mut c = self.sb.cachefs();
        c.args(args).current_dir(&self.mnt);
        c.output().unwrap()
    }

    fn umount(&self) -> Output {
        self.sb
            .cachefs()
            .arg("umount")
            .arg(&self.mnt)
            .output()
            .unwrap()
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = self.umount();
        }
    }
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

fn out_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest run's graph, waiting until the mount daemon saved it with
/// `ready` true of it (it saves twice a second while things change).
fn graph_when(sb: &Sandbox, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    graph_of(sb, &[], ready)
}

fn graph_of(
    sb: &Sandbox,
    args: &[&str],
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = sb
            .cachefs()
            .args(["graph", "--format", "json"])
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if ready(&g) {
                return g;
            }
        }
        assert!(Instant::now() < deadline, "graph never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_id(g: &serde_json::Value, label: &str) -> Option<String> {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["label"] == label)
        .map(|n| n["id"].as_str().unwrap().to_string())
}

fn command_ids(g: &serde_json::Value, prefix: &str) -> Vec<String> {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "command" && n["label"].as_str().unwrap().starts_with(prefix))
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

fn has_edge(g: &serde_json::Value, from: &str, to: &str, kind: &str) -> bool {
    g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["from"] == from && e["to"] == to && e["kind"] == kind)
}

fn generator_project(sb: &Sandbox) {
    sb.write("version.h.in", "#define VERSION @V@\n");
    sb.write(
        "gen.sh",
        "#!/bin/sh\n# A code generator: reads $1, writes $2 (through a temporary).\nsed 's/@V@/42/' \"$1\" > \"$2.tmp\"\nmv \"$2.tmp\" \"$2\"\n",
    );
    sb.write(
        "main.c",
        "#include <stdio.h>\n#include \"version.h\"\nint main(void) { printf(\"%d\\n\", VERSION); return 0; }\n",
    );
    sb.write(
        "Makefile",
        "prog: main.o\n\tgcc main.o -o prog\nmain.o: main.c version.h\n\tgcc -c main.c -o main.o\nversion.h: version.h.in gen.sh\n\tsh gen.sh version.h.in version.h\nclean:\n\trm -f prog main.o version.h\n",
    );
}

#[test]
fn a_generator_step_inside_a_mount_is_recorded_with_its_edges() {
    let sb = Sandbox::new();
    generator_project(&sb);
    let m = Mounted::new(&sb);
    m.sh("make -s");
    assert_eq!(out_str(&m.sh("./prog")), "42\n");
    // Written through the mount into the real tree.
    assert_eq!(
        String::from_utf8(sb.read("version.h")).unwrap(),
        "#define VERSION 42\n"
    );
    let (input, header) = (m.mnt.join("version.h.in"), m.mnt.join("version.h"));
    let (object, prog) = (m.mnt.join("main.o"), m.mnt.join("prog"));
    let label = |p: &Path| p.to_str().unwrap().to_string();
    let g = graph_when(&sb, |g| node_id(g, &label(&prog)).is_some());
    let f = |g: &serde_json::Value, p: &Path| {
        node_id(g, &label(p)).unwrap_or_else(|| panic!("{} not in {g:#}", p.display()))
    };
    let one = |g: &serde_json::Value, prefix: &str| {
        let ids = command_ids(g, prefix);
        assert_eq!(ids.len(), 1, "{prefix}: {g:#}");
        ids[0].clone()
    };
    let tmp = m.mnt.join("version.h.tmp");

    // Step by step (the default): the generator's step read the input and
    // the script and wrote the header; the header is an input of the
    // compile, whose object is an input of the link: one joined graph.
    let gen = one(&g, "sh gen.sh version.h.in version.h");
    assert!(has_edge(&g, &f(&g, &input), &gen, "read"), "{g:#}");
    assert!(has_edge(&g, &f(&g, &m.mnt.join("gen.sh")), &gen, "read"));
    assert!(has_edge(&g, &gen, &f(&g, &header), "write"));
    assert!(
        !has_edge(&g, &f(&g, &tmp), &gen, "read"),
        "its own temporary"
    );
    let cc = one(&g, "gcc -c main.c");
    assert!(has_edge(&g, &f(&g, &header), &cc, "read"));
    assert!(has_edge(&g, &cc, &f(&g, &object), "write"));
    let link = one(&g, "gcc main.o");
    assert!(has_edge(&g, &f(&g, &object), &link, "read"));
    assert!(has_edge(&g, &link, &f(&g, &prog), "write"));
    let make = one(&g, "make -s");
    assert!(has_edge(&g, &make, &gen, "spawn"));
    assert!(has_edge(&g, &make, &cc, "spawn"));

    // Process by process: the script's shell redirected sed's output into
    // the temporary; sed, which it started, read the input; mv, which it
    // started too, moved the temporary into place.
    let g = graph_of(&sb, &["--processes"], |_| true);
    let gen = one(&g, "sh gen.sh version.h.in version.h");
    let (sed, mv) = (one(&g, "sed"), one(&g, "mv"));
    assert!(has_edge(&g, &gen, &sed, "spawn"), "{g:#}");
    assert!(has_edge(&g, &gen, &mv, "spawn"));
    assert!(has_edge(&g, &f(&g, &input), &sed, "read"));
    assert!(has_edge(&g, &gen, &f(&g, &tmp), "write"));
    assert!(has_edge(&g, &f(&g, &tmp), &mv, "read"));
    assert!(has_edge(&g, &mv, &f(&g, &header), "write"));
    assert!(!command_ids(&g, "gcc -c main.c").is_empty());

    // deps: version.h was written by mv, as part of the generator's step,
    // which read the input and the script.
    let deps = m.cachefs(&["deps", "version.h", "--json"]);
    assert!(deps.status.success(), "{}", stderr(&deps));
    let d: serde_json::Value = serde_json::from_slice(&deps.stdout).unwrap();
    assert_eq!(d["argv"][0], "mv", "{d:#}");
    assert_eq!(
        d["step"]["processes"][0],
        "sh gen.sh version.h.in version.h"
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let step_reads = strings(&d["step"]["reads"]);
    assert!(step_reads.contains(&label(&input)), "{d:#}");
    assert!(step_reads.contains(&label(&m.mnt.join("gen.sh"))));
    assert!(strings(&d["step"]["written"]).contains(&label(&header)));
    assert!(!step_reads.iter().any(|r| r.ends_with("main.c")));
    // The source directory's path names the same file.
    let by_src = sb
        .cachefs()
        .arg("deps")
        .arg(sb.path("version.h"))
        .output()
        .unwrap();
    assert!(
        out_str(&by_src).contains("produced by: mv"),
        "{}",
        stderr(&by_src)
    );
    let text = out_str(&m.cachefs(&["deps", "version.h"]));
    assert!(
        text.contains("started by: sh gen.sh version.h.in version.h"),
        "{text}"
    );
    assert!(text.contains("started by: make -s"), "{text}");
    assert!(
        text.contains("as part of the build step `sh gen.sh"),
        "{text}"
    );
    let explain = out_str(&m.cachefs(&["explain", "version.h"]));
    assert!(explain.contains("recorded, not cached"), "{explain}");

    // DOT for Graphviz.
    let dot = m.cachefs(&[
        "graph",
        "--format",
        "dot",
        "--under",
        m.mnt.to_str().unwrap(),
    ]);
    assert!(dot.status.success());
    require("dot");
    {
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&dot.stdout).unwrap();
        assert!(child.wait().unwrap().success());
    }

    let runs = out_str(&sb.cachefs().arg("runs").output().unwrap());
    assert!(runs.contains("processes observed  cachefs mount"), "{runs}");
    let out = m.umount();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unmounted"), "{}", stderr(&out));
    assert!(!mounted(&m.mnt));
    // The record outlives the mount.
    let g = graph_when(&sb, |_| true);
    assert!(node_id(&g, &label(&header)).is_some());
}

#[test]
fn cachefs_run_inside_a_mount_caches_as_usual() {
    let sb = Sandbox::new();
    example_project(&sb);
    let m = Mounted::new(&sb);
    let build = |m: &Mounted| {
        let out = m.cachefs(&["run", "make", "-s", "-j2"]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    build(&m);
    // The example's 21 compiles and its link.
    let compiles = 22;
    assert_eq!(sb.counts(), (0, compiles, 0, 0), "the first build misses");
    let first = example_outputs(&sb);
    m.sh("make -s clean");
    sb.zero_stats();
    build(&m);
    let (hits, misses, uncacheable, errors) = sb.counts();
    assert_eq!((misses, uncacheable, errors), (0, 0, 0), "{:#}", sb.stats());
    assert_eq!(hits, compiles);
    assert_eq!(example_outputs(&sb), first);
    // The compiles are recorded by the run log, with their paths as seen
    // inside the mount.
    let deps = m.cachefs(&["deps", "calc"]);
    assert!(
        out_str(&deps).contains("outcome: hit"),
        "{}",
        out_str(&deps)
    );
    assert!(m.umount().status.success());
}

#[test]
fn foreground_mount_stops_on_ctrl_c_and_saves_its_record() {
    let sb = Sandbox::new();
    sb.write("in.txt", "hello\n");
    let mnt = sb.root.path().join("fg");
    let mut child = sb
        .cachefs()
        .args(["mount", "--foreground"])
        .arg(&sb.project)
        .arg(&mnt)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounted(&mnt) {
        assert!(Instant::now() < deadline, "foreground mount never appeared");
        assert!(child.try_wait().unwrap().is_none(), "mount exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("sh")
        .args(["-c", "cat in.txt > out.txt; exit 3"])
        .current_dir(&mnt)
        .status()
        .unwrap();
    // Commands inside behave as on the source tree, exit codes included.
    assert_eq!(out.code(), Some(3));
    assert_eq!(sb.read("out.txt"), b"hello\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!mounted(&mnt));
    let g = graph_when(&sb, |_| true);
    let cat = command_ids(&g, "cat in.txt");
    let input = node_id(&g, mnt.join("in.txt").to_str().unwrap()).expect("in.txt");
    assert!(has_edge(&g, &input, &cat[0], "read"), "{g:#}");
}

#[test]
fn umount_cleans_up_after_a_killed_mount_and_a_killed_agent() {
    let sb = Sandbox::new();
    sb.write("a.c", "int a;\n");
    let m = Mounted::new(&sb);
    let state: Vec<_> = std::fs::read_dir(sb.cache.join("mounts"))
        .unwrap()
        .collect();
    assert_eq!(state.len(), 1);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state[0].as_ref().unwrap().path()).unwrap()).unwrap();
    let pid = state["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&m.mnt).is_ok() {
        assert!(Instant::now() < deadline, "the mount still answers");
        std::thread::sleep(Duration::from_millis(20));
    }
    // doctor names it and says what to do.
    let doctor = sb.cachefs().arg("doctor").output().unwrap();
    let said = out_str(&doctor);
    assert!(
        said.contains(&format!("run `cachefs umount {}`", m.mnt.display())),
        "{said}"
    );
    let out = m.umount();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("was killed"), "{}", stderr(&out));
    assert!(!mounted(&m.mnt));
    // A second umount says plainly that nothing is mounted.
    let again = m.umount();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("is not mounted"),
        "{}",
        stderr(&again)
    );

    // The agent's own mirror, left by an agent killed with SIGKILL.
    sb.run_ok("gcc -c a.c -o a.o");
    let agent_mnt = agent_lane(&sb, 0);
    assert!(mounted(&agent_mnt));
    let agent = Command::new("pgrep")
        .args(["-f", &format!("^{} agent", cachefs_bin().display())])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&agent.stdout).split_whitespace() {
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        // Only this sandbox's agent: its environment names our cache dir.
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let ours = format!("CACHEFS_DIR={}", sb.cache.display());
        if env.split(|&b| b == 0).any(|v| v == ours.as_bytes()) {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&agent_mnt).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the agent's mirror still answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = sb.cachefs().arg("umount").arg(&agent_mnt).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stale FUSE mount"),
        "{}",
        stderr(&out)
    );
    assert!(!mounted(&agent_mnt));
}

#[test]
fn bad_mount_arguments_get_clear_errors() {
    let sb = Sandbox::new();
    let missing = sb
        .cachefs()
        .args(["mount", "/no/such/dir", "m"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("/no/such/dir"),
        "{}",
        stderr(&missing)
    );
    let m = Mounted::new(&sb);
    let twice = sb
        .cachefs()
        .arg("mount")
        .arg(&sb.project)
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("already a mountpoint"),
        "{}",
        stderr(&twice)
    );
}
