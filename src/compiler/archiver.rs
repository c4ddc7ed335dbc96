//! `ar` and `ranlib` calls: which ones are pure functions of what they read,
//! and whether an archive they wrote is the same bytes on every run.
//!
//! In deterministic mode (`D`, the default of Debian's binutils and of
//! llvm-ar) every member header holds a zero timestamp, owner and group, so
//! the archive depends on the members' bytes alone. In `U` mode it holds the
//! members' mtimes, which a restored object never has again: not cached. A
//! build whose `ar` defaults to `U` is caught by the archive itself
//! (`records_times_or_owners`), whatever its flags say.

/// Why this archiver call must run uncached, or `None`.
pub fn uncacheable_reason(program: &[u8], args: &[Vec<u8>]) -> Option<&'static str> {
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or(program);
    if memchr::memmem::find(name, b"ranlib").is_some() {
        return ranlib_reason(args);
    }
    ar_reason(args)
}

fn ranlib_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    args.iter()
        .any(|a| a == b"-U")
        .then_some("ranlib -U stores timestamps")
}

/// Long options that take the next argument, before the operation key.
const AR_OPTIONS_WITH_VALUE: [&[u8]; 4] =
    [b"--plugin", b"--target", b"--output", b"--record-libdeps"];

fn ar_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    let key = operation_key(args)?;
    let key = key.strip_prefix(b"-").unwrap_or(key);
    let op = key.iter().find(|c| b"dmpqrstx".contains(c));
    if key.contains(&b'M') {
        return Some("ar -M reads its script from stdin");
    }
    if key.contains(&b'U') {
        return Some("ar U mode stores timestamps");
    }
    if op == Some(&b'x') && key.contains(&b'o') {
        return Some("ar xo restores the members' timestamps");
    }
    None
}

/// The argument holding ar's operation letters (`rcs`, `-qc`): the first
/// one that is not a long option or its value.
fn operation_key(args: &[Vec<u8>]) -> Option<&[u8]> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if AR_OPTIONS_WITH_VALUE.iter().any(|o| a == o) {
            it.next();
        } else if !a.starts_with(b"--") && !a.starts_with(b"-X") {
            return Some(a);
        }
    }
    None
}

const MAGIC: &[u8] = b"!<arch>\n";
const THIN_MAGIC: &[u8] = b"!<thin>\n";
const HEADER: usize = 60;

/// Whether `data` is an `ar` archive whose headers hold a timestamp, owner
/// or group other than zero (the archive would differ on the next run).
/// Not an archive, or an archive this parser cannot follow: `None`.
pub fn records_times_or_owners(data: &[u8]) -> Option<bool> {
    let thin = data.starts_with(THIN_MAGIC);
    if !thin && !data.starts_with(MAGIC) {
        return None;
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let h = data.get(at..at + HEADER)?;
        if &h[58..60] != b"`\n" {
            return None;
        }
        let field = |r: std::ops::Range<usize>| std::str::from_utf8(&h[r]).ok().map(str::trim);
        let nonzero = |r| field(r).is_none_or(|v| !v.is_empty() && v.bytes().any(|b| b != b'0'));
        if nonzero(16..28) || nonzero(28..34) || nonzero(34..40) {
            return Some(true);
        }
        let size: usize = field(48..58)?.parse().ok()?;
        // A thin archive holds only its index and name table; members are
        // named, not copied.
        let name = &h[..16];
        let has_data = !thin
            || name.starts_with(b"/ ")
            || name.starts_with(b"// ")
            || name.starts_with(b"/SYM64/");
        at += HEADER + if has_data { size + size % 2 } else { 0 };
    }
    // A last odd-sized member may lack its padding byte; past that, the
    // archive is truncated.
    (at <= data.len() + 1).then_some(false)
}

/// Runs the `ar` on PATH with operation `key` on one small member inside
/// `dir` and says whether the archive it wrote holds timestamps or owners;
/// `None` if no `ar` ran or it wrote no archive. For `cachefs doctor`.
pub fn try_ar(dir: &std::path::Path, key: &str) -> Option<bool> {
    let archive = format!("probe-{key}.a");
    std::fs::write(dir.join("member"), b"cachefs\n").ok()?;
    let ran = std::process::Command::new("ar")
        .args([key, &archive, "member"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    ran.success().then_some(())?;
    records_times_or_owners(&std::fs::read(dir.join(archive)).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn archive_creating_calls_are_cacheable() {
        for args in [
            &["rcu", "liblua.a", "a.o"][..],
            &["rcs", "lib.a", "a.o", "b.o"],
            &["-qc", "lib.a", "a.o"],
            &[
                "--plugin",
                "/usr/lib/gcc/x86_64-linux-gnu/12/liblto_plugin.so",
                "rcsD",
                "lib.a",
                "a.o",
            ],
            &["t", "lib.a"],
            &["x", "lib.a"],
            &["--version"],
        ] {
            assert_eq!(
                uncacheable_reason(b"/usr/bin/ar", &v(args)),
                None,
                "{args:?}"
            );
        }
        assert_eq!(uncacheable_reason(b"ranlib", &v(&["lib.a"])), None);
        assert_eq!(
            uncacheable_reason(b"gcc-ranlib-12", &v(&["-D", "lib.a"])),
            None
        );
    }

    #[test]
    fn timestamps_and_stdin_scripts_are_not() {
        assert!(uncacheable_reason(b"ar", &v(&["rcU", "lib.a", "a.o"])).is_some());
        assert!(uncacheable_reason(b"ar", &v(&["--plugin", "p.so", "-rU", "lib.a"])).is_some());
        assert!(uncacheable_reason(b"ar", &v(&["-M"])).is_some());
        assert!(uncacheable_reason(b"ar", &v(&["xo", "lib.a"])).is_some());
        assert!(uncacheable_reason(b"ranlib", &v(&["-U", "lib.a"])).is_some());
        // The plugin's path is an option value, not the key.
        assert!(uncacheable_reason(b"ar", &v(&["--plugin", "MU", "rc", "lib.a"])).is_none());
    }

    fn header(name: &str, mtime: &str, uid: &str, size: usize) -> Vec<u8> {
        let h = format!(
            "{name:<16}{mtime:<12}{uid:<6}{:<6}{:<8}{size:<10}`\n",
            "0", "644"
        );
        assert_eq!(h.len(), HEADER);
        h.into_bytes()
    }

    #[test]
    fn archive_headers_say_whether_they_hold_times() {
        let mut det = MAGIC.to_vec();
        det.extend(header("a.o/", "0", "0", 3));
        det.extend(b"abc\n");
        det.extend(header("b.o/", "0", "0", 2));
        det.extend(b"xy");
        assert_eq!(records_times_or_owners(&det), Some(false));

        let mut timed = MAGIC.to_vec();
        timed.extend(header("a.o/", "1764700000", "0", 1));
        timed.extend(b"a\n");
        assert_eq!(records_times_or_owners(&timed), Some(true));

        let mut owned = MAGIC.to_vec();
        owned.extend(header("a.o/", "0", "1000", 1));
        owned.extend(b"a\n");
        assert_eq!(records_times_or_owners(&owned), Some(true));

        let mut thin = THIN_MAGIC.to_vec();
        thin.extend(header("/", "0", "0", 4));
        thin.extend(b"\0\0\0\0");
        thin.extend(header("/0", "0", "0", 1000));
        assert_eq!(records_times_or_owners(&thin), Some(false));

        assert_eq!(records_times_or_owners(b"\x7fELF"), None);
        assert_eq!(records_times_or_owners(&det[..70]), None, "truncated");
    }

    #[test]
    fn the_system_ar_writes_deterministic_archives() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(try_ar(dir.path(), "rc"), Some(false));
        assert_eq!(try_ar(dir.path(), "rcU"), Some(true));
    }
}
