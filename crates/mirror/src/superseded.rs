//! What a file held just before the view that read it rewrote it.
//!
//! A compile that updates a file it read (ranlib indexing the archive `ar`
//! just wrote, `ar r` adding members to an existing archive) depends on the
//! old content, which is gone once the compile ends. The daemon hashes it at
//! the last moment it exists: before the truncating open, the create over
//! it, or the rename onto it.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::attr;
use crate::record::Stamp;

/// The stamp and BLAKE3 hash of the regular file at `path`; `None` if it is
/// not there, not a regular file, or changed while it was read (then nothing
/// trustworthy can be said of what the view read).
pub(crate) fn content_before_rewrite(path: &Path) -> io::Result<Option<(Stamp, [u8; 32])>> {
    let mut file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        // Gone, or a symlink (O_NOFOLLOW): no file content the view read.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let before = file.metadata()?;
    if !before.is_file() {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut file, &mut hasher)?;
    let stamp = attr::stamp(&before);
    if attr::stamp(&file.metadata()?) != stamp {
        return Ok(None);
    }
    Ok(Some((stamp, *hasher.finalize().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_a_file_and_says_nothing_of_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lib.a");
        std::fs::write(&f, b"!<arch>\n").unwrap();
        let (stamp, hash) = content_before_rewrite(&f).unwrap().unwrap();
        assert_eq!(hash, *blake3::hash(b"!<arch>\n").as_bytes());
        assert_eq!(stamp.size, 8);
        assert!(content_before_rewrite(&dir.path().join("none"))
            .unwrap()
            .is_none());
        assert!(content_before_rewrite(dir.path()).unwrap().is_none());
        std::os::unix::fs::symlink(&f, dir.path().join("link")).unwrap();
        assert!(content_before_rewrite(&dir.path().join("link"))
            .unwrap()
            .is_none());
    }
}
