//! Tree mounts (`cachefs mount SRC MNT`): SRC itself at MNT, every access
//! attributed to the process that made it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cachefs_mirror::{Access, Mirror, MirrorOptions, ProcessRecord};

/// As `cachefs mount` mounts a tree: names and attributes cached for a second.
fn options() -> MirrorOptions {
    MirrorOptions {
        ttl: Duration::from_secs(1),
        ..MirrorOptions::default()
    }
}

fn opened_for(p: &ProcessRecord, path: &Path, write: bool) -> bool {
    p.accesses.iter().any(|a| {
        matches!(a, Access::Open { path: q, write: w, read: r, .. }
            if q == path && (if write { *w } else { *r && !*w }))
    })
}

fn argv0(p: &ProcessRecord) -> String {
    p.argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn a_generator_pipeline_is_recorded_per_process_with_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("config.h.in"), "#define V @V@\n").unwrap();
    let mnt = dir.path().join("mnt");
    let mirror = Mirror::mount_tree(&src, &mnt, options(), Box::new(|_| false)).unwrap();
    let src = src.canonicalize().unwrap();

    // dash sets up the redirection, then execs sed (last command of -c).
    let status = Command::new("sh")
        .args(["-c", "sed 's/@V@/7/' config.h.in > config.h; cat config.h"])
        .current_dir(mirror.mountpoint())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "#define V 7\n");
    // Written through the mount into the real source directory.
    assert_eq!(
        std::fs::read_to_string(src.join("config.h")).unwrap(),
        "#define V 7\n"
    );

    let procs = mirror.processes();
    let sh = procs
        .iter()
        .position(|p| argv0(p) == "sh" && opened_for(p, &src.join("config.h"), true))
        .unwrap_or_else(|| panic!("no sh writing config.h: {procs:#?}"));
    let sed = procs
        .iter()
        .position(|p| argv0(p) == "sed")
        .unwrap_or_else(|| panic!("no sed: {procs:#?}"));
    assert!(opened_for(&procs[sed], &src.join("config.h.in"), false));
    assert!(!opened_for(&procs[sh], &src.join("config.h.in"), false));
    // sed is in the shell's process tree (forked or exec'd by it).
    let mut up = procs[sed].parent;
    while let Some(i) = up.filter(|&i| i != sh) {
        up = procs[i].parent;
    }
    assert_eq!(up, Some(sh), "{procs:#?}");
    assert_eq!(procs[sh].cwd, mirror.mountpoint());
    let cat = procs.iter().find(|p| argv0(p) == "cat").unwrap();
    assert!(opened_for(cat, &src.join("config.h"), false));
    mirror.unmount().unwrap();
}

#[test]
fn probes_and_listings_are_attributed_and_ignored_commands_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    let mnt = dir.path().join("mnt");
    let ignore = Box::new(|argv: &[std::ffi::OsString]| argv.iter().any(|a| a == "ignored"));
    let mirror = Mirror::mount_tree(&src, &mnt, options(), ignore).unwrap();
    let src = src.canonicalize().unwrap();
    let run = |script: &str| {
        let out = Command::new("bash")
            .args(["-c", script, "bash"])
            .current_dir(mirror.mountpoint())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run("ls >/dev/null; test -e missing || true");
    run("test -e other || true; : ignored");
    let mut ignored = Command::new("bash");
    ignored
        .args(["-c", "test -e secret; ls >/dev/null", "ignored"])
        .current_dir(mirror.mountpoint());
    let _ = ignored.status().unwrap();

    let procs = mirror.processes();
    let all: Vec<&Access> = procs.iter().flat_map(|p| &p.accesses).collect();
    let probe = |name: &str| Access::NotFound {
        path: src.join(name),
    };
    assert!(all.contains(&&probe("missing")), "{procs:#?}");
    assert!(all.contains(&&probe("other")));
    assert!(!all.contains(&&probe("secret")), "ignored process recorded");
    let ls = procs.iter().find(|p| argv0(p) == "ls").unwrap();
    assert!(ls.accesses.contains(&Access::ReadDir { path: src.clone() }));
    // The real root's attributes, not a synthetic directory.
    let md = std::fs::metadata(mirror.mountpoint()).unwrap();
    assert_eq!(md.len(), std::fs::metadata(&src).unwrap().len());
    mirror.unmount().unwrap();
}

#[test]
fn a_missing_source_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Mirror::mount_tree(
        &dir.path().join("nope"),
        &dir.path().join("mnt"),
        options(),
        Box::new(|_| false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn each_process_s_probe_of_the_same_missing_name_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mnt = dir.path().join("mnt");
    let mirror = Mirror::mount_tree(&src, &mnt, options(), Box::new(|_| false)).unwrap();
    let src = src.canonicalize().unwrap();
    for marker in ["first", "second"] {
        // Both probe config.h; the kernel must not answer the second from
        // the first's negative entry.
        let out = Command::new("sh")
            .args(["-c", "test -e config.h || true", marker])
            .current_dir(mirror.mountpoint())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let probe = Access::NotFound {
        path: src.join("config.h"),
    };
    let probing: Vec<String> = mirror
        .processes()
        .iter()
        .filter(|p| p.accesses.contains(&probe))
        .map(|p| {
            p.argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(probing.len(), 2, "{probing:?}");
    assert!(probing[0].ends_with("first") && probing[1].ends_with("second"));

    // Changed behind the mount, in the source directory: seen within the TTL.
    std::fs::write(src.join("config.h"), "one").unwrap();
    let through = mirror.mountpoint().join("config.h");
    assert_eq!(std::fs::read_to_string(&through).unwrap(), "one");
    std::fs::write(src.join("config.h"), "three").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::metadata(&through).unwrap().len(), 5);
    assert_eq!(std::fs::read_to_string(&through).unwrap(), "three");
    mirror.unmount().unwrap();
}
