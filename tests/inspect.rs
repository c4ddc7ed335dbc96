//! `cachefs deps`, `graph`, `explain` and `runs` on real builds.

mod common;
use common::*;

fn project(sb: &Sandbox) {
    sb.write("inc/a.h", "#include \"b.h\"\n#define A (B + 1)\n");
    sb.write("inc/b.h", "#define B 1\n");
    std::fs::create_dir_all(sb.path("first")).unwrap();
    sb.write(
        "x.c",
        "#include <stdio.h>\n#include \"a.h\"\nint x(void) { return A; }\n",
    );
    sb.write(
        "main.c",
        "int x(void);\nint main(void) { return x() - 2; }\n",
    );
}

const BUILD: &str =
    "gcc -Ifirst -Iinc -MD -c x.c -o x.o && gcc -c main.c -o main.o && gcc x.o main.o -o prog";

fn cachefs_out(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.cachefs().args(args).output().unwrap();
    assert!(out.status.success(), "cachefs {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn deps_lists_every_header_gcc_lists_and_the_probed_paths() {
    let sb = Sandbox::new();
    project(&sb);
    sb.run_ok(BUILD);
    let deps: serde_json::Value =
        serde_json::from_str(&cachefs_out(&sb, &["deps", "x.o", "--json"])).unwrap();
    let reads: Vec<&str> = deps["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let absent: Vec<&str> = deps["absent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Every file of gcc's own -MD list is an observed read.
    let d = String::from_utf8(sb.read("x.d")).unwrap();
    let listed: Vec<&str> = d
        .split_whitespace()
        .skip(1)
        .filter(|t| *t != "\\")
        .collect();
    assert!(listed.len() >= 4, "{d}");
    for f in listed {
        let abs = std::fs::canonicalize(sb.path(f)).unwrap();
        assert!(
            reads.contains(&abs.to_str().unwrap()),
            "{} missing from deps: {reads:?}",
            abs.display()
        );
    }
    // The -Ifirst probe that found nothing is recorded too (b.h is included
    // with quotes from inc/a.h, so gcc looks in inc/ first and never probes
    // first/b.h).
    let first = std::fs::canonicalize(sb.path("first")).unwrap();
    let probe = first.join("a.h");
    assert!(
        absent.contains(&probe.to_str().unwrap()),
        "{} not among {absent:?}",
        probe.display()
    );
    assert!(!absent.contains(&first.join("b.h").to_str().unwrap()));
    let text = cachefs_out(&sb, &["deps", "x.o"]);
    assert!(
        text.contains("produced by: gcc -Ifirst -Iinc -MD -c x.c -o x.o"),
        "{text}"
    );
}

#[test]
fn graph_joins_objects_to_the_link_and_dot_accepts_it() {
    let sb = Sandbox::new();
    project(&sb);
    sb.run_ok(BUILD);
    let json: serde_json::Value =
        serde_json::from_str(&cachefs_out(&sb, &["graph", "--no-system"])).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    let id_of = |suffix: &str| {
        nodes
            .iter()
            .find(|n| n["label"].as_str().unwrap().ends_with(suffix))
            .map(|n| n["id"].as_str().unwrap().to_string())
    };
    let obj = id_of("/x.o").expect("x.o is a node");
    let edges = json["edges"].as_array().unwrap();
    let into_obj = edges
        .iter()
        .filter(|e| e["to"] == obj.as_str() && e["kind"] == "write")
        .count();
    let from_obj = edges
        .iter()
        .filter(|e| e["from"] == obj.as_str() && e["kind"] == "read")
        .count();
    assert_eq!(
        (into_obj, from_obj),
        (1, 1),
        "x.o is written by its compile and read by the link"
    );
    assert!(nodes
        .iter()
        .all(|n| !n["label"].as_str().unwrap().starts_with("/usr/")));
    let dot = cachefs_out(&sb, &["graph", "--format", "dot"]);
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("Graphviz dot is required: run scripts/setup.sh");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), dot.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"<?xml"),
        "dot rejected the graph"
    );
    let svg = sb
        .cachefs()
        .args(["graph", "--format", "svg"])
        .output()
        .unwrap();
    assert!(svg.status.success() && String::from_utf8_lossy(&svg.stdout).contains("<svg"));
    // Without Graphviz, svg says how to get it.
    let no_dot = sb.root.path().join("no-dot");
    std::fs::create_dir_all(&no_dot).unwrap();
    let svg = sb
        .cachefs()
        .args(["graph", "--format", "svg"])
        .env("PATH", &no_dot)
        .output()
        .unwrap();
    assert!(!svg.status.success());
    assert!(
        stderr(&svg).contains("apt-get install graphviz"),
        "{}",
        stderr(&svg)
    );
}

#[test]
fn explain_names_the_changed_header_flag_and_variable() {
    let sb = Sandbox::new();
    project(&sb);
    sb.run_ok(BUILD);
    sb.write("inc/b.h", "#define B 2\n");
    sb.run_ok(BUILD);
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    assert!(
        why.contains("input changed") && why.contains("inc/b.h"),
        "{why}"
    );
    sb.run_ok("gcc -Ifirst -Iinc -MD -O2 -c x.c -o x.o");
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    assert!(why.contains("argument -O2 added"), "{why}");
    // gcc's driver reads COMPILER_PATH: set, it is a changed input.
    sb.run_ok("COMPILER_PATH=first gcc -Ifirst -Iinc -MD -O2 -c x.c -o x.o");
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    assert!(
        why.contains("input changed: environment variable COMPILER_PATH")
            && why.contains("stored: unset")
            && why.contains("now:    set to \"first\""),
        "{why}"
    );
    // A variable the compile never reads is no input: a hit.
    sb.run_ok("UNREAD_BY_GCC=on COMPILER_PATH=first gcc -Ifirst -Iinc -MD -O2 -c x.c -o x.o");
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    assert!(why.contains("was a hit"), "{why}");
    let runs = cachefs_out(&sb, &["runs"]);
    assert_eq!(runs.lines().count(), 5, "{runs}");
    // id, start time (UTC), counts, command.
    let year = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let newest = runs.lines().next().unwrap();
    assert!(newest.contains(&format!("  {}-", &year[..4])), "{newest}");
    assert!(newest.contains("1 compiles (1 hits, 0 misses)"), "{newest}");
}

/// README: `cachefs explain` names the directory that changed, and arguments
/// that are only reordered (a miss: order matters to the compiler, `-I`
/// search order).
#[test]
fn explain_names_a_changed_directory_and_reordered_arguments() {
    let sb = Sandbox::new();
    project(&sb);
    let x_c = sb.path("x.c");
    let x_o = sb.path("x.o");
    let (first, inc) = (sb.path("first"), sb.path("inc"));
    let includes = format!("-I{} -I{}", first.display(), inc.display());
    let compile = format!("gcc {includes} -c {} -o {}", x_c.display(), x_o.display());
    sb.run_ok(&compile);
    // The same command (absolute paths) from another directory: a miss (entries
    // are not shared across directories), and explain names both directories.
    std::fs::create_dir_all(sb.path("sub")).unwrap();
    sb.run_ok(&format!("cd sub && {compile}"));
    let (hits, misses, _, _) = sb.counts();
    assert_eq!((hits, misses), (0, 2));
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    let moved = format!(
        "it missed because the directory changed: {} → {}",
        sb.project.display(),
        sb.path("sub").display()
    );
    assert!(why.contains(&moved), "{why}");
    assert!(
        !why.contains("argument"),
        "only the directory changed: {why}"
    );
    // Reordered -I options: a miss; explain shows the new command line and says
    // the arguments were reordered (none added or removed).
    let reordered = compile.replace(
        &includes,
        &format!("-I{} -I{}", inc.display(), first.display()),
    );
    sb.run_ok(&format!("cd sub && {reordered}"));
    assert_eq!(sb.counts().1, 3, "reordered arguments miss");
    let why = cachefs_out(&sb, &["explain", "x.o"]);
    assert!(
        why.contains(&format!("last compile of {}: {reordered}", x_o.display())),
        "{why}"
    );
    assert!(why.contains("the same arguments, reordered"), "{why}");
    assert!(!why.contains("added") && !why.contains("removed"), "{why}");
}

/// Piped into a reader that has gone (`cachefs stats | head -1`): the
/// command ends as `cat` would, by SIGPIPE, without a panic message.
#[test]
fn a_closed_pipe_ends_printing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    for args in [&["stats"][..], &["man"], &["completions", "bash"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = sb
            .cachefs()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
