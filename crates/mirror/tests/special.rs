//! FIFOs, sockets and device nodes under a view (see `src/special.rs`): the
//! mirror stands in for them with empty regular files that never block, and
//! records them; a jobserver FIFO declared plumbing and bound over its path
//! is the real one, unrecorded. Needs root and /dev/fuse.

mod common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cachefs_mirror::FifoBinds;
use common::*;

const TTL: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// `sh -c script` in the view under `timeout`: a read of the mirror's own
/// pipe would wait forever.
fn sh_within_limit(m: &Mounted, view: u64, cwd: &Path, script: &str) -> std::process::Output {
    let args = ["30", "/bin/sh", "-c", script];
    run_in_view(
        &m.mirror,
        view,
        &["/usr", "/tmp"],
        cwd,
        "/usr/bin/timeout",
        &args,
    )
}

#[test]
fn a_fifo_is_an_empty_file_whose_open_fails_at_once() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    mkfifo(&w.join("f"));
    let v = m.mirror.open_view();
    // No writer anywhere: a real FIFO's reader would wait.
    // Nor is it removed, renamed or linked: the compile runs again outside.
    let script = "test -f f && ! test -p f && ! test -s f && ! cat f 2>err \
                  && grep -q 'No such device' err && ! rm -f f && ! mv f g && ! ln f h";
    let out = sh_within_limit(&m, v, w, script);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    let want = format!("reached a FIFO: {}", w.join("f").display());
    assert_eq!(rec.special_file(), Some(want));
    let real = std::fs::symlink_metadata(w.join("f")).unwrap();
    assert!(real.file_type().is_fifo(), "left as it was");
    assert!(!w.join("g").exists() && !w.join("h").exists());
}

/// `bind` of a Unix socket makes its node through the daemon (mknod).
#[test]
fn binding_a_unix_socket_is_refused_and_recorded() {
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3 to bind a socket with");
        return;
    }
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    let sock = w.join("s.sock");
    let v = m.mirror.open_view();
    let script = format!(
        "! /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{}\")' 2>/dev/null",
        sock.display()
    );
    let out = sh_within_limit(&m, v, w, &script);
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    assert!(!sock.exists(), "nothing is made for real in the view");
    let want = format!("reached a Unix socket: {}", sock.display());
    assert_eq!(rec.special_file(), Some(want));
}

#[test]
fn a_plumbing_fifo_bound_into_the_view_is_the_real_one_and_unrecorded() {
    let m = mount(true, TTL);
    let work = workdir();
    let w = work.path();
    let fifo = w.join("jobserver");
    mkfifo(&fifo);
    // Held open by "make", with a token in it.
    let mut held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    held.write_all(b"+").unwrap();

    let v = m.mirror.open_view_with_plumbing(vec![fifo.clone()]);
    let fifos = FifoBinds::new(std::slice::from_ref(&fifo));
    assert!(!fifos.is_empty());
    let tmp = CString::new("/tmp").unwrap();
    let usr = CString::new("/usr").unwrap();
    let tmp_src = CString::new(m.mirror.view_root(v).join("tmp").as_os_str().as_bytes()).unwrap();
    let usr_src = CString::new(m.mirror.view_root(v).join("usr").as_os_str().as_bytes()).unwrap();
    let cwd = CString::new(w.as_os_str().as_bytes()).unwrap();
    let mut cmd = Command::new("/usr/bin/timeout");
    cmd.args([
        "30",
        "/bin/sh",
        "-c",
        "test -p jobserver && head -c 1 jobserver",
    ]);
    // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let null = std::ptr::null();
            ok(libc::unshare(libc::CLONE_NEWNS))?;
            ok(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null as _,
            ))?;
            let open = fifos.open();
            // /usr first: the mount lives under /tmp, hidden once /tmp is bound.
            for (src, dst) in [(&usr_src, &usr), (&tmp_src, &tmp)] {
                ok(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    null as _,
                ))?;
            }
            open.bind(&fifos)?;
            ok(libc::chdir(cwd.as_ptr()))
        });
    }
    let out = cmd.output().unwrap();
    let rec = m.mirror.close_view(v).unwrap();
    assert_ok(&out);
    assert_eq!(
        out.stdout, b"+",
        "the build's token, read from the real FIFO"
    );
    assert_eq!(rec.special_file(), None, "plumbing is not an input");
    assert!(!found(&rec, &fifo));
}

fn ok(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
