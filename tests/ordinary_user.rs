//! cachefs as an ordinary user: the agent mounts through the setuid
//! fusermount3 and each compile enters a user namespace.

mod common;
use common::users::{as_user, ensure_user, give_to, is_root, FuseOpenToAll, USER};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn ordinary_user_gets_hits_through_fusermount3_and_user_namespaces() {
    assert!(
        is_root(),
        "this test sets up a second user account and needs root"
    );
    let uid = ensure_user();
    let _fuse = FuseOpenToAll::new();
    let sb = Sandbox::new();
    // The user must reach the sandbox (a TMPDIR under /root would not do).
    for dir in sb.root.path().ancestors().skip(1) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by other users: set TMPDIR to a directory that is",
            dir.display()
        );
    }
    sb.write("a.c", "int a(void) { return 4; }\n");
    sb.write(
        "main.c",
        "int a(void);\nint main(void) { return a() - 4; }\n",
    );
    give_to(&sb, &uid, &[sb.root.path()]);
    let script = format!(
        "set -ex; cd {}; export HOME={} CACHEFS_DIR={}; unset XDG_CONFIG_HOME XDG_CACHE_HOME; C={}; trap '$C stop' EXIT; \
         $C run sh -c 'gcc -c a.c && gcc -c main.c && gcc a.o main.o -o prog'; rm -f *.o prog; \
         $C run sh -c 'gcc -c a.c && gcc -c main.c && gcc a.o main.o -o prog'; ./prog; \
         $C mount . ../mnt; (cd ../mnt && cat a.c > copy.c); \
         $C umount ../mnt; $C graph --processes > ../graph.json; \
         $C stats --json",
        sb.project.display(),
        sb.root.path().display(),
        sb.cache.display(),
        cachefs_bin().display()
    );
    let out = as_user(&script);
    // `set -x`: a failure shows which step failed.
    assert!(out.status.success(), "{}", stderr(&out));
    let json = String::from_utf8_lossy(&out.stdout);
    let stats: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (
            stats["hits"].as_u64(),
            stats["misses"].as_u64(),
            stats["errors"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{stats}"
    );
    // `cachefs mount` works for the user too (fusermount3, no passthrough).
    assert_eq!(sb.read("copy.c"), sb.read("a.c"));
    let graph = std::fs::read_to_string(sb.root.path().join("graph.json")).unwrap();
    let copy = sb.root.path().join("mnt/copy.c");
    assert!(graph.contains(copy.to_str().unwrap()), "{graph}");
    assert!(graph.contains("\"cat a.c"), "{graph}");
    let owner = std::fs::metadata(sb.cache.join("index.redb")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&owner).to_string(), uid);
    assert_eq!(
        std::fs::metadata(&sb.cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn another_user_cannot_use_roots_agent() {
    assert!(is_root(), "this test needs root");
    ensure_user();
    let sb = Sandbox::new();
    sb.write("a.c", "int a(void) { return 4; }\n");
    sb.run_ok("gcc -c a.c");
    let mode = std::fs::metadata(&sb.cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory is private");
    let sock = std::fs::metadata(sb.cache.join("agent.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(sock, 0o600, "the socket is private");
    // Even with the directory opened up, the agent refuses another uid.
    std::fs::set_permissions(&sb.cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        sb.cache.join("agent.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::set_permissions(sb.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The agent may answer (and close) before the request is even sent:
    // a failed send is fine, the refusal is what must arrive.
    let client = sb.root.path().join("foreign_client.py");
    std::fs::write(
        &client,
        format!(
            "import socket, struct\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect({:?})\n\
             try:\n    s.sendall(b'CFS\\x01' + struct.pack('<HI', 1, 1) + b'\\x06')\n\
             except OSError:\n    pass\n\
             print(s.recv(4096))\n",
            sb.cache.join("agent.sock").to_string_lossy()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!("python3 {}", client.display());
    let out = as_user(&script);
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains("refused"),
        "another user got: {reply} {}",
        stderr(&out)
    );
    // Nor can it reach the agent's FUSE mount (in root's private directory,
    // and mounted without allow_other): the kernel refuses, the agent never
    // sees it.
    let mnt = agent_lane(&sb, 0);
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "ls", &mnt.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("Permission denied"),
        "another user listed the agent's mount: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// Portable keys across users: root builds a tree through a shared
/// memcached; the ordinary user, with its own cache directory, `HOME`,
/// `USER` and `LOGNAME`, builds the same tree and every compile is a remote
/// hit, its objects the ones root's plain gcc makes.
#[test]
fn a_second_user_hits_what_the_first_stored_through_memcached() {
    assert!(is_root(), "this test sets up a second user and needs root");
    let uid = ensure_user();
    let _fuse = FuseOpenToAll::new();
    let mc = servers::memcached();
    let url = format!("tcp://{}", mc.addr());
    let sb = Sandbox::new();
    sb.write("a.c", "int a(void) { return 4; }\n");
    sb.write(
        "main.c",
        "int a(void);\nint main(void) { return a() - 4; }\n",
    );
    const COMPILES: &str = "gcc -O2 -c a.c && gcc -O2 -c main.c";
    sb.sh(COMPILES);
    let plain = (sb.read("a.o"), sb.read("main.o"));
    sb.sh("rm -f a.o main.o");
    // cargo test's LD_LIBRARY_PATH names rustup's directories under /root,
    // which the loader probes and the other user cannot search: not a
    // build's environment.
    let first = sb
        .cachefs()
        .env_remove("LD_LIBRARY_PATH")
        .env("CACHEFS_MEMCACHED", &url)
        .args(["run", "sh", "-c", COMPILES])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    // Root's agent sends its entries in the background: wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sent = |s: serde_json::Value| {
        s["remote"]["writes_pending"].as_u64() == Some(0)
            && s["remote"]["writes"].as_u64() > Some(0)
    };
    while !sent(sb.stats()) {
        assert!(std::time::Instant::now() < deadline, "writes never drained");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sb.sh("rm -f a.o main.o");
    let user_cache = sb.root.path().join("user-cache");
    std::fs::create_dir(&user_cache).unwrap();
    // Not root's cache directory: its agent's mounts are in it.
    give_to(&sb, &uid, &[&sb.project, &user_cache]);
    let script = format!(
        "set -e; cd {}; export HOME={} USER={USER} LOGNAME={USER} CACHEFS_DIR={} CACHEFS_MEMCACHED={url}; \
         unset XDG_CONFIG_HOME XDG_CACHE_HOME LD_LIBRARY_PATH; C={}; trap '$C stop' EXIT; \
         $C run sh -c '{COMPILES}' >/dev/null 2>&1; $C explain a.o >&2; $C stats --json",
        sb.project.display(),
        user_cache.display(),
        user_cache.display(),
        cachefs_bin().display()
    );
    let out = as_user(&script);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(
        (
            stats["hits"].as_u64(),
            stats["remote_hits"].as_u64(),
            stats["misses"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{stats}\n{}",
        stderr(&out)
    );
    assert_eq!((sb.read("a.o"), sb.read("main.o")), plain);
}
