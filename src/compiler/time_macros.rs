//! The preprocessor macros that make a C, C++ or CUDA compile's output
//! depend on the clock rather than on its inputs: `__DATE__` and `__TIME__`
//! (the time of the compile) and `__TIMESTAMP__` (the source file's mtime,
//! which no dep state records). A hit would replay the time of the compile
//! that was stored, which is not what the compiler would produce now.
//!
//! Every file a compile read is scanned once per content (with its hash, in
//! the stat cache); a compile that read one of the names is not cached,
//! unless gcc fixes the time through `SOURCE_DATE_EPOCH` (then the variable is
//! part of key1 like any other). ccache does the same for `__TIME__` and
//! `__TIMESTAMP__`. A mention in a comment counts too: the scan does not
//! parse C, so it errs on the side of running the compiler.

use super::Family;
use memchr::memmem;
use std::path::{Path, PathBuf};

/// Which of the three names a file's bytes contain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeMacros(u8);

impl TimeMacros {
    pub const NONE: TimeMacros = TimeMacros(0);
    pub const DATE: TimeMacros = TimeMacros(1);
    pub const TIME: TimeMacros = TimeMacros(2);
    pub const TIMESTAMP: TimeMacros = TimeMacros(4);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names as bits, for the saved stat cache.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Bits that name none of the three: `None`.
    pub fn from_bits(bits: u8) -> Option<TimeMacros> {
        (bits & !7 == 0).then_some(TimeMacros(bits))
    }

    pub fn union(self, other: TimeMacros) -> TimeMacros {
        TimeMacros(self.0 | other.0)
    }

    pub fn without(self, other: TimeMacros) -> TimeMacros {
        TimeMacros(self.0 & !other.0)
    }

    /// The first name found, for the reason shown in `cachefs stats`.
    pub fn first_name(self) -> Option<&'static str> {
        [
            (Self::TIME, "__TIME__"),
            (Self::DATE, "__DATE__"),
            (Self::TIMESTAMP, "__TIMESTAMP__"),
        ]
        .into_iter()
        .find(|(m, _)| self.0 & m.0 != 0)
        .map(|(_, name)| name)
    }
}

/// The inputs of a compile that name any of the macros, with what each names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockUse {
    files: Vec<(TimeMacros, PathBuf)>,
}

impl ClockUse {
    pub fn add(&mut self, found: TimeMacros, path: &Path) {
        if !found.is_empty() {
            self.files.push((found, path.to_path_buf()));
        }
    }
}

/// Longest name minus one: a name split across two chunks is still found.
const OVERLAP: usize = "__TIMESTAMP__".len() - 1;

/// Scans a file's content chunk by chunk, as it is hashed. Binaries (ELF,
/// `ar` archives) are skipped: cc1 itself holds the names as strings, and
/// no preprocessor reads a binary. The magic is taken from the first chunk
/// (a read of a regular file returns all it was asked for, up to the end).
#[derive(Default)]
pub struct Scanner {
    found: TimeMacros,
    started: bool,
    binary: bool,
    tail: Vec<u8>,
}

impl Scanner {
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.started {
            self.started = !chunk.is_empty();
            self.binary = chunk.starts_with(b"\x7fELF") || chunk.starts_with(b"!<arch>\n");
        }
        if self.binary || chunk.is_empty() {
            return;
        }
        // Only the join of the stream's last bytes and this chunk's head
        // needs copying; the chunk itself is scanned in place.
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(&chunk[..chunk.len().min(OVERLAP)]);
        self.found = self.found.union(scan(&window)).union(scan(chunk));
        let last: &[u8] = if chunk.len() >= OVERLAP {
            chunk
        } else {
            &window
        };
        self.tail = last[last.len().saturating_sub(OVERLAP)..].to_vec();
    }

    pub fn finish(self) -> TimeMacros {
        self.found
    }
}

fn scan(bytes: &[u8]) -> TimeMacros {
    let mut found = TimeMacros::NONE;
    if memmem::find(bytes, b"__DATE__").is_some() {
        found = found.union(TimeMacros::DATE);
    }
    for at in memmem::find_iter(bytes, b"__TIME") {
        let rest = &bytes[at + "__TIME".len()..];
        if rest.starts_with(b"__") {
            found = found.union(TimeMacros::TIME);
        } else if rest.starts_with(b"STAMP__") {
            found = found.union(TimeMacros::TIMESTAMP);
        }
    }
    found
}

/// The names whose value `env` fixes for this compiler: gcc takes `__DATE__`
/// and `__TIME__` from `SOURCE_DATE_EPOCH` (clang 14, Debian 12's, does not;
/// nvcc's steps are not all gcc). `__TIMESTAMP__` is never fixed.
pub fn fixed_by_env(family: Family, compiler: &Path, env: &[(Vec<u8>, Vec<u8>)]) -> TimeMacros {
    let epoch_set = env.iter().any(|(k, _)| k == b"SOURCE_DATE_EPOCH");
    if epoch_set && family == Family::CFamily && is_gcc(compiler) {
        TimeMacros::DATE.union(TimeMacros::TIME)
    } else {
        TimeMacros::NONE
    }
}

/// gcc by what the compiler's path resolves to (`cc` and `c++` are
/// symlinks to either gcc or clang).
fn is_gcc(compiler: &Path) -> bool {
    let real = std::fs::canonicalize(compiler).unwrap_or_else(|_| compiler.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (name.contains("gcc") || name.contains("g++")) && !name.contains("clang")
}

/// Why a compile that read `found` must not be cached, if it must not.
pub fn uncacheable_reason(clock: &ClockUse, fixed: TimeMacros) -> Option<String> {
    let (name, path) = clock
        .files
        .iter()
        .find_map(|(found, path)| Some((found.without(fixed).first_name()?, path)))?;
    Some(format!(
        "uses {name}: {} (the output depends on the clock; with gcc, SOURCE_DATE_EPOCH fixes __DATE__ and __TIME__)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(compiler: &Path, env: &[(Vec<u8>, Vec<u8>)]) -> TimeMacros {
        let family = crate::compiler::family(compiler.as_os_str().as_encoded_bytes());
        fixed_by_env(family, compiler, env)
    }

    fn scan_in_chunks(bytes: &[u8], size: usize) -> TimeMacros {
        let mut s = Scanner::default();
        for chunk in bytes.chunks(size) {
            s.feed(chunk);
        }
        s.finish()
    }

    #[test]
    fn finds_each_name_across_chunk_boundaries() {
        let text =
            b"int a;\nconst char *t = __TIME__;\nconst char *d = __DATE__;\n// __TIMESTAMP__\n";
        for size in 1..text.len() {
            let found = scan_in_chunks(text, size);
            assert_eq!(
                found,
                TimeMacros::TIME
                    .union(TimeMacros::DATE)
                    .union(TimeMacros::TIMESTAMP),
                "chunks of {size}"
            );
        }
        assert_eq!(
            scan_in_chunks(b"x __TIMESTAMP__ y", 4),
            TimeMacros::TIMESTAMP
        );
        assert_eq!(
            scan_in_chunks(b"__TIME_ __DATE_ TIME__", 3),
            TimeMacros::NONE
        );
    }

    #[test]
    fn binaries_are_not_scanned() {
        assert!(scan_in_chunks(b"\x7fELF\x02\x01 __TIME__ __DATE__", 64).is_empty());
        assert!(scan_in_chunks(b"!<arch>\n__TIME__", 8).is_empty());
    }

    #[test]
    fn source_date_epoch_fixes_date_and_time_for_gcc_only() {
        let env = vec![(b"SOURCE_DATE_EPOCH".to_vec(), b"0".to_vec())];
        let both = TimeMacros::DATE.union(TimeMacros::TIME);
        let p = Path::new;
        assert_eq!(fixed(p("/usr/bin/gcc"), &env), both);
        assert_eq!(fixed(p("/usr/bin/x86_64-linux-gnu-g++-12"), &env), both);
        assert_eq!(fixed(p("/usr/bin/clang"), &env), TimeMacros::NONE);
        assert_eq!(fixed(p("/usr/bin/gcc"), &[]), TimeMacros::NONE);
        let mut clock = ClockUse::default();
        clock.add(TimeMacros::NONE, p("a.h"));
        clock.add(TimeMacros::TIME, p("t.c"));
        assert!(uncacheable_reason(&clock, both).is_none());
        clock.add(TimeMacros::TIMESTAMP.union(TimeMacros::DATE), p("u.h"));
        let why = uncacheable_reason(&clock, both).unwrap();
        assert!(why.starts_with("uses __TIMESTAMP__: u.h"), "{why}");
        assert!(uncacheable_reason(&ClockUse::default(), TimeMacros::NONE).is_none());
    }
}
