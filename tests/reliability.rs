//! Bad input and damage never break a build or produce a wrong output: a
//! malformed request on the agent socket, damaged cache files, several builds
//! at once on one agent and on two.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn project(sb: &Sandbox, n: usize) -> String {
    let mut build = String::new();
    for i in 0..n {
        sb.write(
            &format!("u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i}; }}\n"),
        );
        build.push_str(&format!("gcc -O2 -c u{i}.c && "));
    }
    build.push_str("true");
    build
}

fn objects(sb: &Sandbox, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| sb.read(&format!("u{i}.o"))).collect()
}

#[test]
fn malformed_requests_get_an_error_and_the_agent_keeps_serving() {
    let sb = Sandbox::new();
    let build = project(&sb, 3);
    sb.run_ok(&build);
    let socket = sb.cache.join("agent.sock");
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        // Right magic, another protocol version.
        [b"CFS\x01".as_slice(), &[9, 0], &[0, 0, 0, 0]].concat(),
        // Right magic and version, a length of 4 GiB.
        [b"CFS\x01".as_slice(), &[1, 0], &[255, 255, 255, 255]].concat(),
        // A valid header announcing 100 bytes, then nothing.
        [b"CFS\x01".as_slice(), &[1, 0], &[100, 0, 0, 0]].concat(),
        // A valid header and a body that is not a request.
        [
            b"CFS\x01".as_slice(),
            &[1, 0],
            &[4, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
    ];
    for g in &garbage {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(g).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
    }
    sb.sh("rm -f *.o");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(
        sb.counts(),
        (3, 0, 0, 0),
        "the agent survived and still serves hits"
    );
}

#[test]
fn damaged_cache_files_are_detected_and_recompiled() {
    let sb = Sandbox::new();
    let build = project(&sb, 6);
    sb.run_ok(&build);
    let plain = objects(&sb, 6);
    sb.cachefs().arg("stop").output().unwrap();
    // Damage every blob a different way: flip a byte, truncate, empty, delete.
    let mut blobs = Vec::new();
    for dir in std::fs::read_dir(sb.cache.join("blobs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            blobs.push(f.unwrap().path());
        }
    }
    assert!(blobs.len() >= 6, "one blob per object");
    for (i, b) in blobs.iter().enumerate() {
        let mut data = std::fs::read(b).unwrap();
        match i % 4 {
            0 => {
                let last = data.len() - 1;
                data[last] ^= 0x55;
                std::fs::write(b, data).unwrap();
            }
            1 => std::fs::write(b, &data[..data.len() / 2]).unwrap(),
            2 => std::fs::write(b, b"").unwrap(),
            _ => std::fs::remove_file(b).unwrap(),
        }
    }
    sb.sh("rm -f *.o");
    sb.zero_stats();
    let out = sb.run_ok(&build);
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((hits, errors), (0, 0), "{}", stderr(&out));
    assert_eq!(misses, 6);
    assert_eq!(objects(&sb, 6), plain, "recompiled objects are right");
    // Repaired: the next build hits again.
    sb.sh("rm -f *.o");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(sb.counts().0, 6);
    assert_eq!(objects(&sb, 6), plain);
}

#[test]
fn garbage_index_is_moved_aside_and_the_build_goes_on() {
    let sb = Sandbox::new();
    let build = project(&sb, 3);
    sb.run_ok(&build);
    let plain = objects(&sb, 3);
    sb.cachefs().arg("stop").output().unwrap();
    std::fs::write(sb.cache.join("index.redb"), vec![0x5a; 70_000]).unwrap();
    sb.sh("rm -f *.o");
    sb.run_ok(&build);
    assert_eq!(objects(&sb, 3), plain);
    let moved = std::fs::read_dir(&sb.cache).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("index.redb.corrupt-")
    });
    assert!(moved, "the damaged index is kept aside for inspection");
}

#[test]
fn four_builds_at_once_on_one_agent_and_two_agents_at_once() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let mut trees = Vec::new();
    for sb in [&a, &b] {
        for t in 0..2 {
            let dir = format!("tree{t}");
            for i in 0..8 {
                sb.write(
                    &format!("{dir}/u{i}.c"),
                    &format!("int u{i}_{t}(void) {{ return {i} + {t}; }}\n"),
                );
            }
            sb.write(
                &format!("{dir}/Makefile"),
                "OBJS := $(patsubst %.c,%.o,$(wildcard *.c))\nall: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
            );
            trees.push((sb, dir));
        }
    }
    let run_all = |trees: &Vec<(&Sandbox, String)>| {
        let handles: Vec<_> = trees
            .iter()
            .map(|(sb, dir)| {
                sb.cachefs()
                    .args(["run", "make", "-s", "-j2", "-C", dir])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut h in handles {
            assert!(h.wait().unwrap().success());
        }
    };
    run_all(&trees);
    for (sb, dir) in &trees {
        sb.sh(&format!("rm -f {dir}/*.o"));
    }
    a.zero_stats();
    b.zero_stats();
    run_all(&trees);
    assert_eq!(a.counts(), (16, 0, 0, 0));
    assert_eq!(b.counts(), (16, 0, 0, 0));
    for (sb, dir) in &trees {
        let o = sb.read(&format!("{dir}/u3.o"));
        sb.sh(&format!("gcc -O2 -c {dir}/u3.c -o plain.o"));
        assert_eq!(o, sb.read("plain.o"));
    }
}

/// The FUSE connection aborted mid-build (as `echo 1 > /sys/fs/fuse/connections/N/abort`
/// does): compiles in flight rerun uncached, the build is right, no dead mount stays.
#[test]
fn fuse_connection_aborted_mid_build() {
    use std::os::unix::fs::MetadataExt;
    let control = std::path::Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(control)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        // fusectl is not mounted on every machine; the test needs it.
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(control)
            .status();
    }
    let sb = Sandbox::new();
    let n = 40;
    for i in 0..n {
        sb.write(
            &format!("src/u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i}; }}\n"),
        );
    }
    sb.write(
        "Makefile",
        "OBJS := $(patsubst %.c,%.o,$(wildcard src/*.c))\nall: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
    );
    sb.cachefs().arg("start").output().unwrap();
    let mnt = sb.cache.join("mnt");
    let connection = std::fs::metadata(&mnt).unwrap().dev();
    let abort = control.join(format!(
        "{}/abort",
        (libc_major(connection) << 20) | libc_minor(connection)
    ));
    assert!(abort.exists(), "no FUSE control file {}", abort.display());
    let build = sb
        .cachefs()
        .args(["run", "make", "-s", "-j2"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&abort, "1").unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the build failed after the FUSE connection was aborted"
    );
    for i in [0, n / 2, n - 1] {
        let o = sb.read(&format!("src/u{i}.o"));
        sb.sh(&format!("gcc -O2 -c src/u{i}.c -o plain.o"));
        assert_eq!(o, sb.read("plain.o"), "u{i}.o");
    }
    // The agent detaches the dead mount within its housekeeping second.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let listing = std::fs::read_dir(&mnt);
    assert!(
        listing.is_ok(),
        "a dead mount was left at {}: {:?}",
        mnt.display(),
        listing.err()
    );
    // A fresh agent caches again.
    sb.cachefs().arg("stop").output().unwrap();
    sb.sh("rm -f src/*.o");
    sb.run_ok("make -s -j2");
    sb.sh("rm -f src/*.o");
    sb.zero_stats();
    sb.run_ok("make -s -j2");
    assert_eq!(sb.counts(), (n as u64, 0, 0, 0));
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}
