//! Make-format dependency files as gcc writes them (`-MD`, `-MMD`, `-MF`,
//! `-MP`), read into their names and written back byte for byte: CMake and
//! other generators name every file by its absolute path, so the depfile of
//! a compile carries the tree's location even when its object does not
//! (`-ffile-prefix-map`). A depfile whose names are rewritten for another
//! root is written again as gcc would write it there: lines are wrapped by
//! their length, so a longer root moves the breaks.
//!
//! gcc (libcpp's `mkdeps`) writes the targets, `:`, then each name after a
//! space, and before a name that would take the line past 72 columns ends
//! it with ` \` and starts the next with a space; `-MP` adds a line
//! `name:` for each name but the first. Only files in exactly that shape
//! are read (`parse` checks that `render` gives back every byte); clang's
//! (two-space continuation lines, another rule) and names with escapes are
//! not, and stay where they are.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The two layouts kept: gcc's (and its family's: lines wrapped by their
/// length) and rustc's `--emit=dep-info` (one line per rule, blank lines
/// between, `# env-dep:NAME=VALUE` lines; nothing wrapped, so a name
/// written longer moves nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Style {
    Gcc,
    Lines,
}

/// `text` in `style` with its names passed through `map`, laid out as the
/// compiler lays it out; `None` when it is not in that style.
pub fn rewrite_as(
    style: Style,
    text: &[u8],
    map: impl Fn(&[u8]) -> Cow<'_, [u8]>,
) -> Option<Vec<u8>> {
    if !is_text(text) {
        return None;
    }
    match style {
        Style::Gcc => rewrite(text, map),
        Style::Lines => rewrite_lines(text, map),
    }
}

/// Whether `data` is text (UTF-8): an object or archive that happens to
/// end with a line break is never taken for a depfile, whose names may be
/// rewritten to another length. (A NUL is allowed: a stored depfile holds
/// the root as a mark that starts with one; the compiler's own file is
/// checked for NULs where it is marked, in `entry::relocate`.)
fn is_text(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok()
}

/// rustc's layout: each line passed through `map` as a whole (its names
/// are separated by spaces and `:`), when no line is continued.
fn rewrite_lines(text: &[u8], map: impl Fn(&[u8]) -> Cow<'_, [u8]>) -> Option<Vec<u8>> {
    if !text.ends_with(b"\n") || text.split(|&b| b == b'\n').any(|l| l.ends_with(b"\\")) {
        return None;
    }
    let lines: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .map(|l| map(l).into_owned())
        .collect();
    Some(lines.join(&b'\n'))
}

/// gcc's column limit (`deps_write (…, 72)`).
const COLUMNS: usize = 72;

/// A depfile's rule and its `-MP` lines, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depfile {
    targets: Vec<Vec<u8>>,
    deps: Vec<Vec<u8>>,
    phony: Vec<Vec<u8>>,
}

impl Depfile {
    /// The depfile in `text`, if it is one in gcc's exact shape.
    pub fn parse(text: &[u8]) -> Option<Depfile> {
        let f = Self::read(text)?;
        (f.render() == text).then_some(f)
    }

    /// The names, less gcc's line breaks; any layout is accepted (see
    /// `rewrite`, whose output is read back this way).
    fn read(text: &[u8]) -> Option<Depfile> {
        if !is_text(text) {
            return None;
        }
        // Names with escapes (`\ `, `$$`, `\#`) are left alone.
        if text
            .iter()
            .any(|&b| matches!(b, b'$' | b'#' | b'\t' | b'\r'))
        {
            return None;
        }
        let end = rule_end(text)?;
        let rule = text[..end]
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b" \\").unwrap_or(l));
        let mut names = Vec::new();
        for line in rule {
            names.extend(line.split(|&b| b == b' ').filter(|n| !n.is_empty()));
        }
        if names.iter().any(|n| n.contains(&b'\\')) {
            return None;
        }
        let colon = names.iter().position(|n| n.ends_with(b":"))?;
        let mut targets: Vec<Vec<u8>> = names[..=colon].iter().map(|n| n.to_vec()).collect();
        targets[colon].pop();
        let deps = names[colon + 1..].iter().map(|n| n.to_vec()).collect();
        let mut phony = Vec::new();
        for line in text[end + 1..].split(|&b| b == b'\n') {
            match line.strip_suffix(b":") {
                Some(name) if !name.is_empty() && !name.contains(&b' ') => {
                    phony.push(name.to_vec())
                }
                _ if line.is_empty() => {}
                _ => return None,
            }
        }
        if !text.ends_with(b"\n") || targets.iter().any(Vec::is_empty) {
            return None;
        }
        Some(Depfile {
            targets,
            deps,
            phony,
        })
    }

    /// As gcc writes it.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut col = 0;
        for t in &self.targets {
            col = write_name(&mut out, col, t);
        }
        out.push(b':');
        col += 1;
        for d in &self.deps {
            col = write_name(&mut out, col, d);
        }
        out.push(b'\n');
        for p in &self.phony {
            out.extend_from_slice(p);
            out.extend_from_slice(b":\n");
        }
        out
    }

    /// Every name passed through `map`.
    pub fn map<'a>(&'a self, map: impl Fn(&'a [u8]) -> Cow<'a, [u8]>) -> Depfile {
        let each = |v: &'a [Vec<u8>]| v.iter().map(|n| map(n).into_owned()).collect();
        Depfile {
            targets: each(&self.targets),
            deps: each(&self.deps),
            phony: each(&self.phony),
        }
    }
}

/// `text` (a depfile in any layout `Depfile::read` accepts) with its names
/// passed through `map`, written as gcc would write them.
pub fn rewrite(text: &[u8], map: impl Fn(&[u8]) -> Cow<'_, [u8]>) -> Option<Vec<u8>> {
    let f = Depfile::read(text)?;
    let mapped = f.map(|n| Cow::Owned(map(n).into_owned()));
    Some(mapped.render())
}

/// Where the rule ends: the first line break not escaped by ` \`.
fn rule_end(text: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr(b'\n', &text[from..])?;
        if !text[..at].ends_with(b" \\") {
            return Some(at);
        }
        from = at + 1;
    }
}

/// libcpp's `make_write_name`: a name after the first on a line goes after
/// a space, on a new line when it would pass the column limit.
fn write_name(out: &mut Vec<u8>, mut col: usize, name: &[u8]) -> usize {
    if col > 0 {
        if col + name.len() > COLUMNS {
            out.extend_from_slice(b" \\\n");
            col = 0;
        }
        col += 1;
        out.push(b' ');
    }
    out.extend_from_slice(name);
    col + name.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcc_s_layout_is_read_and_written_back() {
        let text = b"CMakeFiles/h.dir/a.c.o: /tmp/dp/a/bbbbbbbbbbbbbbbbbbbbbbbbbb/x.c \\\n /usr/include/stdc-predef.h /usr/include/stdio.h \\\n /usr/include/x86_64-linux-gnu/bits/libc-header-start.h\n/usr/include/stdio.h:\n";
        let f = Depfile::parse(text).expect("gcc's shape");
        assert_eq!(f.render(), text);
        // clang's continuation lines start with two spaces.
        let clang = b"y.o: /tmp/x.c \\\n  /usr/include/stdio.h\n";
        assert_eq!(Depfile::parse(clang), None);
        assert_eq!(Depfile::parse(b"a\\ b.o: x.c\n"), None);
        // Binary data is never a depfile, whatever its bytes look like.
        assert_eq!(
            rewrite_as(Style::Lines, b"\x7fELF\xff /a/p/x\n", |n| Cow::Borrowed(n)),
            None
        );
    }

    /// The layout rule against gcc itself: its depfile for an include
    /// directory of every length from 1 to 80 is read back byte for byte.
    #[test]
    fn gcc_s_own_depfiles_at_every_name_length_are_reproduced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.c"),
            "#include <stdio.h>\n#include \"h.h\"\n",
        )
        .unwrap();
        for n in 1..=80 {
            let inc = dir.path().join("i".repeat(n));
            std::fs::create_dir_all(&inc).unwrap();
            std::fs::write(inc.join("h.h"), "").unwrap();
            let d = dir.path().join(format!("{n}.d"));
            let out = std::process::Command::new("gcc")
                .args(["-MD", "-MP", "-MT", "CMakeFiles/h.dir/x.c.o", "-MF"])
                .arg(&d)
                .arg(format!("-I{}", inc.display()))
                .args(["-c", "x.c", "-o", "/dev/null"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read(&d).unwrap();
            assert!(
                Depfile::parse(&text).is_some(),
                "{n}: {}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn a_longer_name_moves_the_line_breaks() {
        let short = Depfile {
            targets: vec![b"a.o".to_vec()],
            deps: vec![vec![b'x'; 40], vec![b'y'; 25]],
            phony: vec![],
        };
        let text = short.render();
        assert!(!text.contains(&b'\\'), "fits one line");
        let longer = rewrite(&text, |n| Cow::Owned([n, b"zzzz"].concat())).unwrap();
        assert!(longer.windows(3).any(|w| w == b" \\\n"), "now wraps");
        assert!(Depfile::parse(&longer).is_some());
    }
}
