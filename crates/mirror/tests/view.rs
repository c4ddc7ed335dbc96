//! Real FUSE mounts, real programs run inside views (needs root and
//! /dev/fuse, as the cachefs agent does).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cachefs_mirror::{Access, Kind, Mirror, MirrorOptions};
use common::*;

const TTL: Duration = Duration::from_secs(60);

#[test]
fn reads_listings_and_probes_are_recorded() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    std::fs::write(w.join("a.txt"), "hello\n").unwrap();
    std::fs::create_dir(w.join("sub")).unwrap();
    std::fs::write(w.join("sub/b"), "").unwrap();

    let v = m.mirror.open_view();
    let out = sh(&m.mirror, v, w, "cat a.txt && ls sub && ! test -e missing");
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nb\n");

    assert!(found(&rec, &w.join("a.txt")));
    assert!(opened(&rec, &w.join("a.txt")));
    assert!(has(
        &rec,
        |a| matches!(a, Access::ReadDir { path } if *path == w.join("sub"))
    ));
    assert!(not_found(&rec, &w.join("missing")));
    // The shell and cat were executed from the mirror.
    assert!(opened(&rec, Path::new("/usr/bin/cat")));
    assert!(unobservable(&rec).is_empty(), "{:?}", unobservable(&rec));
    let stamp = rec.accesses.iter().find_map(|a| match a {
        Access::Open {
            path,
            stamp,
            read,
            write,
            ..
        } if *path == w.join("a.txt") => {
            assert!(*read && !*write);
            Some(*stamp)
        }
        _ => None,
    });
    assert_eq!(stamp.unwrap().size, 6);
}

#[test]
fn repeated_lookups_are_recorded_once_per_view() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    let v = m.mirror.open_view();
    let out = sh(
        &m.mirror,
        v,
        w,
        "test -e missing; test -e missing; test -e missing; true",
    );
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    let missing = w.join("missing");
    let n = rec
        .accesses
        .iter()
        .filter(|a| matches!(a, Access::NotFound { path } if *path == missing))
        .count();
    assert_eq!(n, 1);
}

#[test]
fn a_second_view_sees_its_own_first_lookups() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    std::fs::write(w.join("present"), "x").unwrap();
    for _ in 0..2 {
        let v = m.mirror.open_view();
        let out = sh(&m.mirror, v, w, "test -e missing || cat present");
        let rec = m.mirror.close_view(v).unwrap();
        assert_ok(&out);
        assert!(not_found(&rec, &w.join("missing")));
        assert!(found(&rec, &w.join("present")));
        assert!(found(&rec, Path::new("/usr/bin")));
    }
}

#[test]
fn parallel_views_record_only_their_own_accesses() {
    let m = mount(true, TTL);
    let works: Vec<_> = (0..4).map(|_| workdir()).collect();
    for (i, work) in works.iter().enumerate() {
        std::fs::write(
            work.path().join(format!("f{i}.c")),
            "int f(void) { return 1; }\n",
        )
        .unwrap();
    }
    let records: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = works
            .iter()
            .enumerate()
            .map(|(i, work)| {
                let mirror = &m.mirror;
                s.spawn(move || {
                    let v = mirror.open_view();
                    let src = format!("f{i}.c");
                    let out = run_in_view(
                        mirror,
                        v,
                        &["/usr", "/tmp"],
                        work.path(),
                        "/usr/bin/gcc",
                        &["-c", &src],
                    );
                    assert_ok(&out);
                    mirror.close_view(v).unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, rec) in records.iter().enumerate() {
        assert!(opened(rec, &works[i].path().join(format!("f{i}.c"))));
        for (j, other) in works.iter().enumerate() {
            let other = other.path().to_string_lossy().into_owned();
            let leaked = rec
                .accesses
                .iter()
                .any(|a| format!("{a:?}").contains(&other));
            assert_eq!(leaked, i == j, "view {i} saw work dir {j}");
        }
    }
}

#[test]
fn gcc_compiles_and_links_through_the_mirror_with_passthrough() {
    gcc_through_the_mirror(true);
}

#[test]
fn gcc_compiles_and_links_through_the_mirror_without_passthrough() {
    gcc_through_the_mirror(false);
}

fn gcc_through_the_mirror(passthrough: bool) {
    let m = mount(passthrough, TTL);
    assert_eq!(m.mirror.passthrough_active(), passthrough);
    let work = workdir();
    let w = work.path();
    std::fs::create_dir(w.join("inc1")).unwrap();
    std::fs::create_dir(w.join("inc2")).unwrap();
    std::fs::write(w.join("inc2/answer.h"), "#define ANSWER 42\n").unwrap();
    let main_c = "#include <stdio.h>\n#include <answer.h>\nint main(void) { printf(\"%d\\n\", ANSWER); return 0; }\n";
    std::fs::write(w.join("main.c"), main_c).unwrap();
    let compile =
        |out: &str| ["-O2", "-Iinc1", "-Iinc2", "-c", "main.c", "-o", out].map(String::from);

    let native = Command::new("gcc")
        .args(compile("native.o"))
        .current_dir(w)
        .output()
        .unwrap();
    assert_ok(&native);

    let v = m.mirror.open_view();
    let args = compile("view.o");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in_view(&m.mirror, v, &["/usr", "/tmp"], w, "/usr/bin/gcc", &args);
    assert_ok(&out);
    let link = run_in_view(
        &m.mirror,
        v,
        &["/usr", "/tmp"],
        w,
        "/usr/bin/gcc",
        &["view.o", "-o", "prog"],
    );
    assert_ok(&link);
    let run = run_in_view(&m.mirror, v, &["/usr", "/tmp"], w, "./prog", &[]);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&run);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n");

    let view_o = std::fs::read(w.join("view.o")).unwrap();
    assert_eq!(
        view_o,
        std::fs::read(w.join("native.o")).unwrap(),
        "objects differ"
    );

    assert!(
        not_found(&rec, &w.join("inc1/answer.h")),
        "the probe of the first -I dir"
    );
    assert!(opened(&rec, &w.join("inc2/answer.h")));
    assert!(opened(&rec, Path::new("/usr/include/stdio.h")));
    assert!(has(&rec, |a| matches!(a,
        Access::Open { path, write: true, created: true, stamp, .. }
            if *path == w.join("view.o") && stamp.size == 0)));
    assert!(has(&rec, |a| matches!(
        a,
        Access::Created { .. } | Access::Open { created: true, .. }
    )));
    assert!(unobservable(&rec).is_empty(), "{:?}", unobservable(&rec));
}

#[test]
fn writes_are_performed_and_recorded_with_passthrough() {
    writes_are_performed_and_recorded(true);
}

#[test]
fn writes_are_performed_and_recorded_without_passthrough() {
    writes_are_performed_and_recorded(false);
}

fn writes_are_performed_and_recorded(passthrough: bool) {
    let m = mount(passthrough, TTL);
    let work = workdir();
    let w = work.path();
    std::fs::write(w.join("t.txt"), "old contents").unwrap();
    std::fs::write(w.join("keep"), "kept").unwrap();
    std::fs::write(w.join("other"), "other").unwrap();
    std::fs::write(w.join("victim"), "12345678").unwrap();
    let script = "set -e
        printf abc > w.txt
        printf def >> w.txt
        stat -c %s w.txt > size1
        printf xy > t.txt
        mkdir d
        ln -s w.txt link
        mv w.txt d/moved.txt
        rm t.txt
        exec 3> open.txt
        printf 1234567 >&3
        stat -c %s open.txt > size2
        exec 3>&-
        truncate -s 3 open.txt
        mv -n other keep
        rmdir d2 2>/dev/null || mkdir d2 && rmdir d2
        ln keep hard
        chmod 600 hard
        exec 4< victim
        rm victim
        stat -L -c %s /dev/fd/4 > size3
        exec 4<&-";
    let v = m.mirror.open_view();
    let out = sh(&m.mirror, v, w, script);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);

    let read = |p: &str| std::fs::read_to_string(w.join(p)).unwrap();
    assert_eq!(read("d/moved.txt"), "abcdef");
    assert_eq!(
        read("size1").trim(),
        "6",
        "size seen through the mirror after writes"
    );
    assert_eq!(
        read("size2").trim(),
        "7",
        "size of a file still open for writing"
    );
    assert_eq!(read("open.txt"), "123");
    assert_eq!(read("keep"), "kept");
    assert_eq!(read("size3").trim(), "8", "fstat of an unlinked open file");
    let keep = std::fs::metadata(w.join("keep")).unwrap();
    assert_eq!((keep.nlink(), keep.mode() & 0o777), (2, 0o600));
    assert_eq!(
        std::fs::read_link(w.join("link")).unwrap(),
        Path::new("w.txt")
    );
    assert!(!w.join("t.txt").exists() && !w.join("w.txt").exists() && !w.join("d2").exists());

    let p = |s: &str| w.join(s);
    let open = |path: PathBuf, pred: &dyn Fn(bool, bool, bool, bool) -> bool| {
        has(&rec, |a| {
            matches!(a, Access::Open { path: q, write, truncate, append, created, .. }
            if *q == path && pred(*write, *truncate, *append, *created))
        })
    };
    assert!(open(p("w.txt"), &|w, _, _, c| w && c));
    assert!(open(p("w.txt"), &|w, _, a, c| w && a && !c));
    assert!(open(p("t.txt"), &|w, t, _, c| w && t && !c));
    assert!(has(&rec, |a| *a
        == Access::Created {
            path: p("d"),
            kind: Kind::Dir
        }));
    assert!(has(&rec, |a| *a
        == Access::Created {
            path: p("link"),
            kind: Kind::Symlink
        }));
    assert!(has(&rec, |a| *a
        == Access::Renamed {
            from: p("w.txt"),
            to: p("d/moved.txt")
        }));
    assert!(has(&rec, |a| *a == Access::Removed { path: p("t.txt") }));
    assert!(has(&rec, |a| *a == Access::Removed { path: p("d2") }));
    assert!(has(&rec, |a| *a
        == Access::SetAttr {
            path: p("open.txt"),
            size: Some(3)
        }));
    assert!(unobservable(&rec).is_empty(), "{:?}", unobservable(&rec));
}

#[test]
fn the_mountpoint_is_hidden_inside_views() {
    let m = mount(true, TTL);
    let parent = m.dir.path();
    let v = m.mirror.open_view();
    let script = format!("ls -a {0} && ! test -e {0}/mnt", parent.display());
    let out = sh(&m.mirror, v, Path::new("/"), &script);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), ".\n..\n");
    let mnt = parent.join("mnt");
    assert!(!has(&rec, |a| format!("{a:?}").contains(&*mnt.to_string_lossy())));
}

#[test]
fn close_view_frees_its_inodes() {
    let m = mount(true, TTL);
    let baseline = m.mirror.stats();
    assert_eq!(baseline.inodes, 0);
    let work = workdir();
    let v = m.mirror.open_view();
    let out = sh(
        &m.mirror,
        v,
        work.path(),
        "ls /usr/include > /dev/null && cat /usr/include/stdio.h > /dev/null",
    );
    assert_ok(&out);
    assert!(m.mirror.stats().inodes > 10);
    m.mirror.close_view(v).unwrap();
    assert!(m.mirror.close_view(v).is_none());
    let stats = eventually(&m.mirror, |s| s.open_files == 0 && s.backing_ids == 0);
    assert_eq!(stats.inodes, baseline.inodes);
    assert_eq!(stats.views, 0);
    assert_eq!(stats.open_dirs, 0);
    // The closed view's tree is gone.
    assert!(!m.mirror.view_root(v).exists());
}

#[test]
fn unmount_leaves_no_mount_and_a_stale_mount_is_cleaned() {
    const CHILD: &str = "CACHEFS_MIRROR_TEST_STALE_CHILD";
    if let Ok(mnt) = std::env::var(CHILD) {
        // In the child: mount, say so, and wait to be killed.
        let mirror = Mirror::mount(Path::new(&mnt), MirrorOptions::default()).unwrap();
        println!("MOUNTED");
        std::mem::forget(mirror);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _cleanup = Detach(mnt.clone());
    kill_after_mount(CHILD, &mnt);
    let err = std::fs::read_dir(&mnt).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "the killed mount is stale"
    );

    let mirror = Mirror::mount(&mnt, MirrorOptions::default()).unwrap();
    let v = mirror.open_view();
    assert!(mirror.view_root(v).join("usr/bin").is_dir());
    mirror.unmount().unwrap();
    assert!(!mounted(&mnt), "no mount left at {}", mnt.display());
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}

/// Detaches whatever is still mounted at the path if the test fails midway,
/// so a failure does not leave the killed child's stale mount behind.
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn kill_after_mount(var: &str, mnt: &Path) {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "unmount_leaves_no_mount_and_a_stale_mount_is_cleaned",
            "--nocapture",
        ])
        .env(var, mnt)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mounted = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("MOUNTED"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(mounted, "the child mounted");
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

/// Waits for the kernel's asynchronous RELEASEs after the view's processes
/// exited.
fn eventually(
    mirror: &Mirror,
    done: impl Fn(&cachefs_mirror::MirrorStats) -> bool,
) -> cachefs_mirror::MirrorStats {
    let start = Instant::now();
    loop {
        let stats = mirror.stats();
        if done(&stats) || start.elapsed() > Duration::from_secs(5) {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A probe counts only when the daemon answered that very probe: looked up
/// by other processes (as the client does; never by the daemon's own
/// process), many at once, it is answered while the daemon serves; one
/// nobody looked up is not, even when a later one was; after an abort none
/// is, before the daemon thread has noticed and ever after. Probes are not
/// recorded in views.
#[test]
fn a_probe_counts_only_when_the_daemon_answered_it() {
    let m = mount(true, TTL);
    let v = m.mirror.open_view();
    let look_up = |probe: &cachefs_mirror::Probe| {
        let out = Command::new("stat").arg(&probe.path).output().unwrap();
        assert!(!out.status.success(), "a probe never exists");
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    let probe = m.mirror.new_probe();
                    look_up(&probe);
                    assert!(m.mirror.probe_answered(&probe));
                }
            });
        }
    });
    let rec = m.mirror.close_view(v).unwrap();
    assert!(rec.accesses.is_empty(), "{:?}", rec.accesses);
    let (mine, later) = (m.mirror.new_probe(), m.mirror.new_probe());
    look_up(&later);
    assert!(m.mirror.probe_answered(&later));
    assert!(
        !m.mirror.probe_answered(&mine),
        "a probe nobody looked up, though a later one was answered"
    );

    let id = m.mirror.connection().expect("the mirror's fusectl number");
    let abort = PathBuf::from(format!("/sys/fs/fuse/connections/{id}/abort"));
    if !abort.exists() {
        // fusectl is not mounted on every machine.
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .status();
    }
    assert!(abort.exists(), "no FUSE control file {}", abort.display());
    std::fs::write(&abort, "1").unwrap();
    for _ in 0..2 {
        let probe = m.mirror.new_probe();
        look_up(&probe);
        assert!(
            !m.mirror.probe_answered(&probe),
            "an aborted connection stays aborted"
        );
    }
}

/// A file the view read and then truncates or renames over is hashed first;
/// a file it only writes is not.
#[test]
fn a_read_file_is_hashed_before_the_view_rewrites_it() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    for f in ["trunc", "renamed", "untouched"] {
        std::fs::write(w.join(f), format!("old {f}\n")).unwrap();
    }
    let v = m.mirror.open_view();
    let script = "cat trunc renamed >/dev/null && echo new >trunc && \
                  echo new >tmp && mv tmp renamed && echo new >untouched";
    let out = sh(&m.mirror, v, w, script);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    let superseded: Vec<_> = rec
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::Superseded { path, stamp, hash } => Some((path.clone(), stamp.size, *hash)),
            _ => None,
        })
        .collect();
    let old = |f: &str| *blake3::hash(format!("old {f}\n").as_bytes()).as_bytes();
    assert_eq!(
        superseded,
        vec![
            (w.join("trunc"), 10, old("trunc")),
            (w.join("renamed"), 12, old("renamed")),
        ]
    );
    assert_eq!(std::fs::read(w.join("trunc")).unwrap(), b"new\n");
}
