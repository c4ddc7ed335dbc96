//! FUSE mounts seen from outside: whether a path is one, whether its daemon
//! is gone (stale), and detaching it, as root or through fusermount3; and
//! where the agent's own mounts live (`place`).

pub mod place;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A lazy unmount: the kernel drops the mount once nothing uses it, so a
/// process still inside it cannot keep its daemon from exiting. An ordinary
/// user's mount was made by fusermount3 and is undone by it.
pub fn detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; umount2 touches no memory of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    for helper in ["fusermount3", "fusermount"] {
        let done = std::process::Command::new(helper)
            .arg("-uz")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status();
        if done.is_ok_and(|s| s.success()) {
            return Ok(());
        }
    }
    Err(err)
}

pub use cachefs_mirror::is_stale;

/// The filesystem type mounted at exactly `path` (the newest mount there),
/// from /proc/self/mountinfo.
pub fn mounted_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|(point, _)| point == path)
        .map(|(_, fstype)| fstype)
}

/// `id parent dev root MOUNTPOINT opts [optional…] - FSTYPE source opts`;
/// the mountpoint escapes space, tab, newline and backslash in octal.
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let mut fields = line.split(' ');
    let point = fields.nth(4)?;
    let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
    Some((PathBuf::from(unescape(point)), fstype.to_string()))
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let line =
            "36 35 0:50 / /tmp/a\\040b rw,nosuid shared:1 - fuse.cachefs cachefs rw,user_id=0";
        let (point, fstype) = parse_mountinfo_line(line).unwrap();
        assert_eq!(point, Path::new("/tmp/a b"));
        assert_eq!(fstype, "fuse.cachefs");
        assert_eq!(mounted_type(Path::new("/proc")).as_deref(), Some("proc"));
        assert!(mounted_type(Path::new("/no/such/mount")).is_none());
    }
}
