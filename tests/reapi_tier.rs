//! The REAPI cache tier against a real REAPI server, buildbox-casd (scripts/setup-reapi.sh):
//! two agents with their own cache directories share its ActionCache and CAS; a server
//! stopped mid-build, and entries replaced on the server's disk, are misses, never a
//! failed build or a wrong output.

mod common;
use cachefs_store::remote::{chunking, Kind, Memcached, Reapi, ReapiConfig, Remote, RemoteTier};
use common::debian::lua_artifacts as artifacts;
use common::servers::{self, ServerProcess};
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lua's 34 objects, `ar` and `ranlib` of liblua.a, and the lua and luac links.
const LUA_COMPILES: u64 = 38;
const BUILD: &str = "make -s -j2 linux >/dev/null";

fn grpc_url(server: &ServerProcess) -> String {
    format!("grpc://{}", server.addr())
}

/// Lua unpacked in a new sandbox and built once without cachefs: its artifacts, then
/// cleaned.
fn lua_plain() -> (Sandbox, Vec<(String, Vec<u8>)>) {
    let sb = Sandbox::new();
    let plain = common::debian::lua_plain(&sb);
    (sb, plain)
}

/// The first agent builds lua cold and writes every entry to the server.
fn first_agent_fills(first: &Sandbox, settings: &[(&str, &str)]) {
    start_agent(first, settings);
    first.run_ok(BUILD);
    assert_eq!(first.counts(), (0, LUA_COMPILES, 0, 0));
    let s = wait_for_remote_writes(first);
    assert_eq!(s["remote"]["tier"], "reapi");
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    assert_eq!(s["remote"]["writes_dropped"], 0, "{s}");
    first.sh("make -s clean");
}

/// A second agent (own cache directory, same project path) for the first one's tree.
fn second_agent(first: &Sandbox, settings: &[(&str, &str)]) -> Sandbox {
    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, settings);
    second
}

/// The microseconds of the found remote reads the agent logged (`reapi get …: N bytes in
/// M µs`, at debug level), sorted.
fn logged_hit_times(sb: &Sandbox) -> Vec<u64> {
    let log = std::fs::read_to_string(sb.cache.join("agent.log")).unwrap_or_default();
    let mut t: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("reapi get") && l.contains(" bytes in "))
        .filter_map(|l| l.rsplit(" in ").next()?.strip_suffix(" µs")?.parse().ok())
        .collect();
    t.sort();
    t
}

#[test]
fn two_agents_share_buildbox_casd_the_second_builds_lua_from_remote_hits_alone() {
    two_agents_share_lua(&servers::buildbox_casd(), "buildbox-casd");
}

#[test]
fn two_agents_share_buildgrid_the_second_builds_lua_from_remote_hits_alone() {
    two_agents_share_lua(&servers::buildgrid(), "BuildGrid");
}

/// The first agent builds lua cold and fills `server`; the second, with its own cache
/// directory, builds it with every compile a remote hit, byte-identical to a plain build,
/// then again with every compile a local hit.
fn two_agents_share_lua(server: &ServerProcess, name: &str) {
    let url = grpc_url(server);
    let settings = [("CACHEFS_REAPI", url.as_str())];
    let (first, plain) = lua_plain();
    first_agent_fills(&first, &settings);

    let second = second_agent(
        &first,
        &[
            ("CACHEFS_REAPI", url.as_str()),
            ("RUST_LOG", "cachefs_store::remote::reapi=debug"),
        ],
    );
    let started = Instant::now();
    second.run_ok(BUILD);
    let took = started.elapsed();
    let s = second.stats();
    assert_eq!(
        (
            s["hits"].as_u64(),
            s["remote_hits"].as_u64(),
            s["local_hits"].as_u64(),
            s["misses"].as_u64(),
            s["errors"].as_u64()
        ),
        (
            Some(LUA_COMPILES),
            Some(LUA_COMPILES),
            Some(0),
            Some(0),
            Some(0)
        ),
        "{s}"
    );
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    assert!(s["remote"]["bytes_read"].as_u64().unwrap() > 0);
    assert_eq!(
        artifacts(&second.path("src")),
        plain,
        "remote hits through REAPI differ from a plain build"
    );
    let lua = second.sh("src/lua -e 'print(6 * 7)'");
    assert_eq!(lua.stdout, b"42\n");

    // What a remote read costs (a measurement, not a threshold).
    let t = logged_hit_times(&second);
    if !t.is_empty() {
        eprintln!(
            "{name}: reads of lua's clean build from remote hits ({took:?}): {} found, \
             median {} µs, p90 {} µs, max {} µs ({} bytes read)",
            t.len(),
            t[t.len() / 2],
            t[t.len() * 9 / 10],
            t[t.len() - 1],
            s["remote"]["bytes_read"]
        );
    }

    // Copied into the second agent's own store: the next build hits locally.
    second.sh("make -s clean");
    second.run_ok(BUILD);
    let s = second.stats();
    assert_eq!(
        (s["hits"].as_u64(), s["remote_hits"].as_u64()),
        (Some(2 * LUA_COMPILES), Some(LUA_COMPILES)),
        "{s}"
    );
    assert_eq!(artifacts(&second.path("src")), plain);
}

/// The second agent gets two objects from the server, the server is stopped, and the
/// same agent builds the rest: every remaining compile misses and runs, the build
/// completes, identical to a plain one, and the server is reported failing.
#[test]
fn a_reapi_server_stopped_mid_build_leaves_a_complete_identical_build() {
    let mut casd = servers::buildbox_casd();
    let url = grpc_url(&casd);
    let settings = [("CACHEFS_REAPI", url.as_str())];
    let (first, plain) = lua_plain();
    first_agent_fills(&first, &settings);

    let second = second_agent(&first, &settings);
    // The command lines `make linux` runs in src/, for two of its objects.
    second.run_ok(
        "make -s -C src lapi.o lcode.o SYSCFLAGS=-DLUA_USE_LINUX 'SYSLIBS=-Wl,-E -ldl' \
         >/dev/null",
    );
    assert_eq!(second.stats()["remote_hits"], 2);
    casd.kill();
    second.run_ok(BUILD);
    let s = second.stats();
    assert_eq!(
        (
            s["remote_hits"].as_u64(),
            s["misses"].as_u64(),
            s["errors"].as_u64()
        ),
        (Some(2), Some(LUA_COMPILES - 2), Some(0)),
        "{s}"
    );
    let server = &s["remote"]["servers"][0];
    assert_eq!(server["healthy"], false, "{s}");
    assert!(s["remote"]["errors"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        artifacts(&second.path("src")),
        plain,
        "the build after the server stopped differs from a plain build"
    );
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Entries changed on the server's disk behind its back: ActionResults that name another
/// entry's blob (each a valid blob of the right digest), then CAS blobs whose bytes no
/// longer match their digest. Each is a miss (read-only agents, so nothing is written back
/// over them), and the build is identical to a plain one.
#[test]
fn replaced_reapi_entries_are_misses_never_wrong_outputs() {
    let casd = servers::buildbox_casd();
    let url = grpc_url(&casd);
    let (first, plain) = lua_plain();
    first_agent_fills(&first, &[("CACHEFS_REAPI", url.as_str())]);
    let read_only = [
        ("CACHEFS_REAPI", url.as_str()),
        ("CACHEFS_REMOTE_READ_ONLY", "1"),
    ];
    let store = casd.data_dir().join("cache");

    // Each ActionResult replaced by the next one's.
    let entries = files_under(&store.join("actioncache/objects"));
    // A manifest and a result for each of lua's 38 cached steps (their outputs are inside
    // the results), and the few outputs over 512 KiB on their own.
    assert!(
        entries.len() >= 2 * LUA_COMPILES as usize,
        "ActionCache entries: {}",
        entries.len()
    );
    let contents: Vec<Vec<u8>> = entries.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (i, p) in entries.iter().enumerate() {
        std::fs::write(p, &contents[(i + 1) % contents.len()]).unwrap();
    }
    let s = all_miss_identically(
        &second_agent(&first, &read_only),
        &plain,
        "swapped ActionResults",
    );
    // Without a key (CACHEFS_REMOTE_KEY) each swapped entry is a well-formed value of
    // another place: the tier returns it, and the agent's own checks (a manifest's dep sets,
    // a result's id, a blob's content hash) refuse it.
    assert!(s["remote"]["gets_found"].as_u64().unwrap() > 0, "{s}");
    first.sh("make -s clean");

    // The entries restored; every CAS blob's bytes changed, its size kept.
    for (p, c) in entries.iter().zip(&contents) {
        std::fs::write(p, c).unwrap();
    }
    for p in files_under(&store.join("cas/objects")) {
        let mut b = std::fs::read(&p).unwrap();
        if b.is_empty() {
            continue;
        }
        let mid = b.len() / 2;
        b[mid] ^= 0x5a;
        let _ = std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        std::fs::write(&p, b).unwrap();
    }
    let s = all_miss_identically(
        &second_agent(&first, &read_only),
        &plain,
        "corrupt CAS blobs",
    );
    eprintln!("corrupt CAS blobs: {}", s["remote"]);
    assert!(
        s["remote"]["errors"].as_u64().unwrap() >= LUA_COMPILES,
        "{s}"
    );
}

/// A clean build of lua by this agent: every compile misses (none fails), and the
/// artifacts are a plain build's.
fn all_miss_identically(
    sb: &Sandbox,
    plain: &[(String, Vec<u8>)],
    what: &str,
) -> serde_json::Value {
    sb.run_ok(BUILD);
    let s = sb.stats();
    assert_eq!(
        (
            s["hits"].as_u64(),
            s["misses"].as_u64(),
            s["errors"].as_u64()
        ),
        (Some(0), Some(LUA_COMPILES), Some(0)),
        "{what}: {s}"
    );
    assert_eq!(
        artifacts(&sb.path("src")),
        plain,
        "{what} changed an output"
    );
    s
}

fn tier(url: &str, instance: &str) -> Reapi {
    Reapi::new(
        &ReapiConfig {
            url: url.into(),
            instance: instance.into(),
            ..Default::default()
        },
        Duration::from_secs(2),
    )
    .unwrap()
}

/// The tier on its own: values through one batch call and through ByteStream (chunks
/// over the batch limit), a missing key, a deleted one, a wrong instance name; and what a
/// small remote read costs here.
#[test]
fn reapi_tier_round_trips_small_and_streamed_values() {
    let casd = servers::buildbox_casd();
    let url = grpc_url(&casd);
    let remote = Remote::new(Box::new(tier(&url, "")), false);
    let values: Vec<Vec<u8>> = [10, 100_000, 3 * chunking::CHUNK_SIZE + 17]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 % 251) as u8).collect())
        .collect();
    for (i, v) in values.iter().enumerate() {
        let id = [i as u8; 32];
        remote.put(Kind::Blob, &id, &id, v);
        assert_eq!(
            remote.get(Kind::Blob, &id, &id).as_ref(),
            Some(v),
            "value {i}"
        );
    }
    assert_eq!(remote.get(Kind::Blob, &[9; 32], &[9; 32]), None);
    let r = remote.report();
    assert_eq!((r.errors, r.writes, r.gets_found), (0, 3, 3), "{r:?}");

    let raw = tier(&url, "");
    raw.set("", "k", b"v").unwrap();
    assert_eq!(raw.get("", "k").unwrap().as_deref(), Some(&b"v"[..]));
    raw.delete("", "k").unwrap();
    assert_eq!(raw.get("", "k").unwrap(), None);

    // What a small read costs, beside memcached's on the same machine at the same time
    // (a measurement, not a threshold).
    let mc = servers::memcached();
    let memcached = Remote::new(
        Box::new(
            Memcached::new(&[format!("tcp://{}", mc.addr())], Duration::from_secs(2)).unwrap(),
        ),
        false,
    );
    let small = [0u8; 32];
    memcached.put(Kind::Blob, &small, &small, &values[0]);
    let n = 200u32;
    let (mut reapi_time, mut memcached_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let started = Instant::now();
        assert!(remote.get(Kind::Blob, &small, &small).is_some());
        reapi_time += started.elapsed();
        let started = Instant::now();
        assert!(memcached.get(Kind::Blob, &small, &small).is_some());
        memcached_time += started.elapsed();
    }
    eprintln!(
        "a 10-byte value (one item: its head holds it), {n} reads interleaved: \
         buildbox-casd {:?} each, memcached {:?} each",
        reapi_time / n,
        memcached_time / n
    );

    // buildbox-casd serves only its default instance: a named one is refused, and the
    // message says which setting to check.
    let e = tier(&url, "no-such-instance").get("", "k").unwrap_err();
    assert!(e.to_string().contains("reapi_instance"), "{e}");
}

/// `grpcs://` against BuildGrid serving TLS with a certificate from a private CA: with the
/// CA bundle the tier reads and writes; without it (the system's roots) every call fails,
/// a miss, and the message names the CA setting.
#[test]
fn grpcs_with_a_custom_ca_reaches_a_tls_server() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificate(pki.path());
    let bgd = servers::buildgrid_tls(&key, &cert);
    let url = format!("grpcs://{}", bgd.addr());
    let with_ca = Reapi::new(
        &ReapiConfig {
            url: url.clone(),
            ca: Some(ca),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .unwrap();
    with_ca.set("", "k", b"over TLS").unwrap();
    assert_eq!(
        with_ca.get("", "k").unwrap().as_deref(),
        Some(&b"over TLS"[..])
    );

    let system_roots = tier(&url, "");
    let e = system_roots.get("", "k").unwrap_err();
    eprintln!("grpcs:// without the CA: {e}");
    assert!(e.is_connection_failure(), "{e}");
    assert!(e.to_string().contains("CACHEFS_REAPI_CA"), "{e}");
    // Plain HTTP/2 to a TLS port fails too.
    assert!(tier(&format!("grpc://{}", bgd.addr()), "")
        .get("", "k")
        .is_err());
}

/// A server that requires a client certificate (mutual TLS): refused without one, served
/// with `reapi_client_cert`/`reapi_client_key`; extra headers ride along.
#[test]
fn grpcs_with_a_client_certificate_reaches_a_mutual_tls_server() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificate(pki.path());
    let bgd = servers::buildgrid_mutual_tls(&key, &cert, &ca);
    let url = format!("grpcs://{}", bgd.addr());
    let config = |client: bool| ReapiConfig {
        url: url.clone(),
        ca: Some(ca.clone()),
        client_cert: client.then(|| (cert.clone(), key.clone())),
        headers: vec![("x-cachefs-test".into(), "on".into())],
        ..Default::default()
    };
    let with_cert = Reapi::new(&config(true), Duration::from_secs(5)).unwrap();
    with_cert.set("", "m", b"mutual").unwrap();
    assert_eq!(
        with_cert.get("", "m").unwrap().as_deref(),
        Some(&b"mutual"[..])
    );
    let without = Reapi::new(&config(false), Duration::from_secs(5)).unwrap();
    let e = without.get("", "m").unwrap_err();
    eprintln!("mutual TLS without a client certificate: {e}");
    // A client certificate over plain gRPC is a setting error, said at once.
    let plain = ReapiConfig {
        url: format!("grpc://{}", bgd.addr()),
        client_cert: Some((cert.clone(), key.clone())),
        ..Default::default()
    };
    let refused = Reapi::new(&plain, Duration::from_secs(5)).err().unwrap();
    assert!(
        refused.to_string().contains("CACHEFS_REAPI_CLIENT_CERT"),
        "{refused}"
    );
}

/// An HS256 JWT for `secret`, expiring in an hour (python3's standard library).
fn jwt(secret: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "cachefs-test", "exp": int(time.time()) + 3600}).encode())
sig = b(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// BuildGrid requiring a JWT: the right token reads and writes; a wrong one is refused
/// with a message that names the setting and not the token, and the server is then
/// skipped (no retry fixes a token within a cool-down).
#[test]
fn a_server_that_requires_a_token_refuses_a_wrong_one_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("auth.secret");
    std::fs::write(&secret_file, "team secret").unwrap();
    let bgd = servers::buildgrid_jwt(&secret_file);
    let with_token = |token: String| {
        Reapi::new(
            &ReapiConfig {
                url: grpc_url(&bgd),
                token: Some(token),
                ..Default::default()
            },
            Duration::from_secs(5),
        )
        .unwrap()
    };
    let right = with_token(jwt("team secret"));
    right.set("", "k", b"authorized").unwrap();
    assert_eq!(
        right.get("", "k").unwrap().as_deref(),
        Some(&b"authorized"[..])
    );

    let wrong_token = jwt("another secret");
    let wrong = with_token(wrong_token.clone());
    let e = wrong.get("", "k").unwrap_err().to_string();
    eprintln!("a wrong token: {e}");
    assert!(
        e.contains("Unauthenticated") || e.contains("PermissionDenied"),
        "{e}"
    );
    assert!(e.contains("CACHEFS_REAPI_TOKEN"), "{e}");
    assert!(!e.contains(&wrong_token), "{e}");
    assert!(!wrong.health()[0].healthy);
    assert!(
        tier(&grpc_url(&bgd), "").get("", "k").is_err(),
        "no token at all"
    );
}
