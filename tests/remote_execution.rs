//! Misses run on a real REAPI executor: buildbox-casd's local Execution service, which runs
//! each action with buildbox-run in a bubblewrap sandbox holding nothing but the action's
//! input root (scripts/setup-reapi.sh, bubblewrap and strace from scripts/setup.sh). The
//! input root is what an earlier compile of the call was observed to read; every remote
//! result is checked against its trace before it is served; whatever cannot run remotely
//! compiles here, correctly, and is counted.

mod common;
use common::debian::{lua_artifacts as artifacts, LUA_OBJECTS};
use common::servers::{self, ServerProcess};
use common::*;

const BUILD: &str = "make -s -j2 linux >/dev/null";

fn url(server: &ServerProcess) -> String {
    format!("grpc://{}", server.addr())
}

fn executing(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CACHEFS_REAPI", url.to_string()),
        ("CACHEFS_REMOTE_EXECUTE", "1".to_string()),
    ]
}

fn start(sb: &Sandbox, settings: &[(&'static str, String)]) {
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_agent(sb, &pairs);
}

fn n(s: &serde_json::Value, key: &str) -> u64 {
    s[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {s}"))
}

fn reasons(s: &serde_json::Value, key: &str) -> String {
    s[key].to_string()
}

/// The team case: lua was built (and shared through the REAPI cache) before a change to
/// lua.h that every file includes. A second machine (own cache directory, empty) builds the
/// changed tree with `execute = true`: every compile misses, takes the inputs the shared
/// dep sets name, and runs on the executor; the objects, the library and the programs are
/// byte-identical to a plain build of the changed tree; a rebuild is all hits.
#[test]
fn after_a_change_every_lua_compile_runs_on_the_executor_byte_identical() {
    let server = servers::buildbox_casd_executing();
    let url = url(&server);
    let first = Sandbox::new();
    common::debian::lua_plain(&first);
    start(&first, &[("CACHEFS_REAPI", url.clone())]);
    first.run_ok(BUILD);
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    // The change, and what a plain build of it makes.
    first.sh("sed -i 's/#define LUA_VERSION_RELEASE\\t\"4\"/#define LUA_VERSION_RELEASE\\t\"4-team\"/' src/lua.h");
    assert!(String::from_utf8_lossy(&first.sh("cat src/lua.h").stdout).contains("4-team"));
    first.sh("make -s -j2 linux >/dev/null 2>&1");
    let plain = artifacts(&first.path("src"));
    first.sh("make -s clean");

    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start(&second, &executing(&url));
    second.run_ok(BUILD);
    let s = second.stats();
    assert_eq!(n(&s, "errors"), 0, "{s}");
    // Every C compile and both links ran remotely; `ar` and `ranlib` are never sent.
    assert!(
        n(&s, "remote_executions") >= LUA_OBJECTS as u64,
        "only {} of {LUA_OBJECTS} compiles ran remotely: failures {}, not sent {}",
        n(&s, "remote_executions"),
        reasons(&s, "remote_execution_failures"),
        reasons(&s, "not_run_remotely")
    );
    assert_eq!(n(&s, "local_fallbacks"), 0, "{s}");
    assert!(n(&s, "remote_execution_blobs_uploaded") > 0, "{s}");
    assert_eq!(
        artifacts(&second.path("src")),
        plain,
        "remotely executed compiles differ from a plain build"
    );
    assert!(second
        .sh("src/lua -v")
        .stdout
        .starts_with(b"Lua 5.4.4-team"));

    // What ran remotely was stored like any miss: a rebuild is all hits.
    second.sh("make -s clean");
    second.run_ok(BUILD);
    let again = second.stats();
    assert_eq!(n(&again, "misses"), n(&s, "misses"), "{again}");
    assert_eq!(artifacts(&second.path("src")), plain);
}

/// A clean build with an empty cache: the first compiles run here (nothing is known of the
/// compiler yet); the later ones remotely with a guessed input root (what compiles by the same
/// compiler read, its system headers, the sources and headers of the directories its command
/// line names), checked by its trace; a guess that missed (the first link: the linker was
/// never read by a compile) fails remotely and runs here. Objects and programs are a plain
/// build's; a rebuild is all hits.
#[test]
fn a_clean_lua_build_with_an_empty_cache_runs_its_compiles_remotely() {
    let server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    let plain = common::debian::lua_plain(&sb);
    start(&sb, &executing(&url(&server)));
    sb.run_ok(BUILD);
    let s = sb.stats();
    assert_eq!(artifacts(&sb.path("src")), plain, "{s}");
    assert_eq!(n(&s, "errors"), 0, "{s}");
    let ran = n(&s, "remote_executions");
    let fell_back = n(&s, "local_fallbacks");
    let never = s["not_run_remotely"]["never compiled before: its inputs are learnt here first"]
        .as_u64()
        .unwrap_or(0);
    // Every compile and link is accounted for: remote, fallen back (counted with its reason),
    // or one of the two that -j2 starts before anything is known of the compiler.
    assert_eq!(ran + fell_back + never, LUA_OBJECTS as u64 + 2, "{s}");
    assert!(never <= 2, "{s}");
    // Fallbacks are the guesses' misses: the first link (the linker is never read by a
    // compile) and a first include of a header outside the guessed directories.
    assert!(
        ran >= LUA_OBJECTS as u64 - 4,
        "{ran} of {LUA_OBJECTS} ran remotely: failures {}, not sent {}",
        reasons(&s, "remote_execution_failures"),
        reasons(&s, "not_run_remotely")
    );
    sb.sh("make -s clean");
    sb.run_ok(BUILD);
    assert_eq!(artifacts(&sb.path("src")), plain);
    assert_eq!(sb.stats()["hits"].as_u64(), Some(38));
}

/// The example project (21 compiles with `-g -MMD`, one link) built clean, the same way:
/// objects, depfiles and the program are a plain build's.
#[test]
fn a_clean_build_of_the_example_project_runs_remotely() {
    let server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c-project");
    sb.sh(&format!("cp -r {}/. .", example.display()));
    sb.sh("make -s -j2 >/dev/null 2>&1");
    let listing = "find obj calc -type f | sort | xargs sha256sum";
    let plain = sb.sh(listing);
    sb.sh("make -s clean >/dev/null");
    start(&sb, &executing(&url(&server)));
    sb.run_ok("make -s -j2 >/dev/null");
    let s = sb.stats();
    assert_eq!(sb.sh(listing).stdout, plain.stdout, "{s}");
    // 21 compiles and a link: all but the first two compiles (started together, nothing
    // known yet) remotely.
    assert!(n(&s, "remote_executions") >= 19, "{s}");
}

/// One project, compiled again after each edit: a compile seen for the first time runs
/// here; an edit of a file's contents runs remotely; a new `#include` (a file the input
/// root lacks) fails remotely and compiles here, and the next edit runs remotely with it;
/// a `__has_include` probe of a file that is here but not in the input root is caught by
/// the trace; a file appearing where an earlier compile found nothing is not sent. Every
/// output is byte-identical to gcc's own, and `explain` says where each ran.
#[test]
fn edits_run_remotely_and_what_the_input_root_lacks_compiles_here() {
    let server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    start(&sb, &executing(&url(&server)));
    let compile = "gcc -O2 -c a.c -o a.o";
    let check = |step: &str| {
        sb.run_ok(compile);
        sb.sh("gcc -O2 -c a.c -o plain.o");
        let same = sb.sh("cmp a.o plain.o");
        assert!(same.status.success(), "{step}: a.o differs from gcc's own");
        let s = sb.stats();
        let explain = sb.cachefs().args(["explain", "a.o"]).output().unwrap();
        (s, String::from_utf8_lossy(&explain.stdout).into_owned())
    };
    sb.sh("printf '#include <stdio.h>\\n#include \"h.h\"\\nint main(void){puts(MSG);return 0;}\\n' > a.c");
    sb.sh("echo '#define MSG \"one\"' > h.h");
    let (s, explain) = check("first compile");
    assert_eq!(n(&s, "remote_executions"), 0, "{s}");
    assert!(
        reasons(&s, "not_run_remotely").contains("never compiled before"),
        "{s}"
    );
    assert!(explain.contains("where it ran: here"), "{explain}");

    sb.sh("echo '#define MSG \"two\"' > h.h");
    let (s, explain) = check("an edited header");
    assert_eq!(n(&s, "remote_executions"), 1, "{s}");
    assert!(
        explain.contains("where it ran: remotely, on grpc://"),
        "{explain}"
    );

    // A new header: the input root lacks it, the remote compile fails, this one does not.
    sb.sh("echo '#define EXTRA 1' > new.h && sed -i '1i #include \"new.h\"' a.c");
    let (s, explain) = check("a new include");
    assert_eq!(n(&s, "local_fallbacks"), 1, "{s}");
    assert!(
        reasons(&s, "remote_execution_failures").contains("failed remotely"),
        "{s}"
    );
    assert!(explain.contains("after the remote run failed"), "{explain}");
    sb.sh("echo '#define MSG \"three\"' > h.h");
    let (s, _) = check("the edit after it");
    assert_eq!(n(&s, "remote_executions"), 2, "{s}");

    // A probe the earlier compile never made, of a file that is here: the trace shows it
    // found nothing there, so the result is not believed.
    sb.sh("echo '#define MSG \"probed\"' > other.h");
    sb.sh("printf '#if __has_include(\"other.h\")\\n#include \"other.h\"\\n#endif\\n' >> h.h");
    let (s, _) = check("a new __has_include");
    assert_eq!(n(&s, "local_fallbacks"), 2, "{s}");
    assert!(
        reasons(&s, "remote_execution_failures").contains("input root incomplete"),
        "{s}"
    );
    sb.sh("echo '#define MSG2 1' >> other.h");
    let (s, _) = check("the edit after the probe");
    assert_eq!(n(&s, "remote_executions"), 3, "{s}");

    // A file appears where the earlier compile found nothing: the newest dep set no longer
    // holds; an older one may, and is sent, but the trace shows the remote compile found
    // nothing where this machine has late.h: compiled here, failing as gcc does.
    sb.sh("printf '#if __has_include(\"late.h\")\\n#error late\\n#endif\\n' >> a.c");
    let (s, _) = check("a probe that finds nothing");
    let before = n(&s, "remote_executions");
    sb.sh("echo '#define LATE 1' > late.h");
    let out = sb.run(compile);
    assert!(
        !out.status.success(),
        "late.h exists: the compile must fail as gcc's does"
    );
    let s = sb.stats();
    assert_eq!(n(&s, "remote_executions"), before, "{s}");
}

/// A C++ compile runs remotely too (libstdc++'s headers, cc1plus), byte-identical.
#[test]
fn a_cxx_compile_runs_remotely_byte_identical() {
    let server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    start(&sb, &executing(&url(&server)));
    sb.sh("printf '#include <vector>\\n#include <string>\\n#include \"v.h\"\\nstd::vector<std::string> f(){return {V};}\\n' > b.cc");
    sb.sh("echo '#define V \"x\"' > v.h");
    sb.run_ok("g++ -O2 -std=c++17 -c b.cc -o b.o");
    sb.sh("echo '#define V \"y\", \"z\"' > v.h");
    sb.run_ok("g++ -O2 -std=c++17 -c b.cc -o b.o");
    sb.sh("g++ -O2 -std=c++17 -c b.cc -o plain.o");
    assert!(sb.sh("cmp b.o plain.o").status.success(), "b.o differs");
    let s = sb.stats();
    assert_eq!(n(&s, "remote_executions"), 1, "{s}");
}

/// The executor stops mid-build: the compiles after that compile here (the first costs a
/// refused connection, the rest skip the server), the build completes and its outputs are
/// a plain build's.
#[test]
fn the_executor_stopped_mid_build_the_build_completes_here() {
    let mut server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    common::debian::lua_plain(&sb);
    start(&sb, &executing(&url(&server)));
    // Learnt here: every compile observed once.
    sb.run_ok(BUILD);
    sb.sh("make -s clean");
    sb.sh("echo '#define CACHEFS_EDIT 1' >> src/lua.h");
    sb.sh("make -s -j2 linux >/dev/null 2>&1");
    let plain = artifacts(&sb.path("src"));
    sb.sh("make -s clean");

    let build = sb
        .cachefs()
        .args(["run", "sh", "-c", BUILD])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while n(&sb.stats(), "remote_executions") < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", sb.stats());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sb.stats();
    assert_eq!(artifacts(&sb.path("src")), plain);
    assert!(n(&s, "local_fallbacks") >= 1, "{s}");
    assert!(
        reasons(&s, "remote_execution_failures").contains("server unreachable or refused"),
        "{s}"
    );
    assert_eq!(n(&s, "errors"), 0, "{s}");
}

/// rustc compiles are never sent (they choose crates by listing their search directories),
/// and `stats` says so.
#[test]
fn rustc_is_not_sent_and_stats_say_why() {
    let server = servers::buildbox_casd_executing();
    let sb = Sandbox::new();
    start(&sb, &executing(&url(&server)));
    sb.sh("echo 'pub fn f() -> u32 { 1 }' > lib.rs");
    sb.run_ok("rustc --crate-type lib --edition 2021 lib.rs");
    let s = sb.stats();
    assert_eq!(n(&s, "remote_executions"), 0, "{s}");
    assert!(reasons(&s, "not_run_remotely").contains("rustc"), "{s}");
}
