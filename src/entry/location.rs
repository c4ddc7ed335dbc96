//! Where a compile ran, said without saying where. A call's tree root R
//! (`Root`) is written as a mark in its key, in the paths of its dep set
//! and in its outputs' paths, so that the same tree at another path
//! reaches the same entry. Whether a result may be served at another root
//! is decided by `relocate`; this module only rewrites.

use super::env::Env;
use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What stands for the root in keys, dep paths and output paths. A NUL
/// byte: no argument, path or environment value can hold one, so a marked
/// text is never mistaken for a real one.
pub const MARK: &[u8] = b"\0R";

/// The variable `cachefs run` sets to the directory it was started in.
pub const ENV_RUN_DIR: &str = "CACHEFS_RUN_DIR";

/// Bytes before which a path may start inside an argument or a value:
/// `-ffile-prefix-map=/a/p=.`, `-Wl,-rpath,/a/p`, `CPATH=/a/p:/b`, quoted
/// `-DDIR="/a/p"`.
const SEPARATORS: &[u8] = b"=,:; \"'";

/// Options that take a path glued to their name (`-isystem/a/p`); a
/// one-letter option (`-I/a/p`, `-o/a/p`) is recognised by its shape.
const GLUED: &[&[u8]] = &[
    b"-isystem",
    b"-iquote",
    b"-idirafter",
    b"-include",
    b"-imacros",
    b"-isysroot",
    b"-iprefix",
    b"-iwithprefix",
    b"-iwithprefixbefore",
    b"-MF",
    b"-MT",
    b"-MQ",
];

/// A call's tree root: the directory whose location its key does not
/// hold. The first of `base_dir` (the user's choice: ccache's `base_dir`,
/// `CACHEFS_BASEDIR`), the directory `cachefs run` was started in, and the
/// working directory itself, that holds the working directory; never `/`
/// (a root of `/` would say nothing), nor a path with characters outside
/// `plain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The physical path, as the working directory and the mirror's
    /// records spell it.
    pub path: Vec<u8>,
    /// Other spellings of it a compiler may write: the logical path that
    /// `PWD` gives (gcc writes `DW_AT_comp_dir` from it).
    pub also: Vec<Vec<u8>>,
}

impl Root {
    /// `base_dir` is a physical path (see `canonical`).
    pub fn of(cwd: &[u8], env: &Env, base_dir: Option<&[u8]>) -> Option<Root> {
        let value = |name: &str| super::env::value(env, name.as_bytes());
        let candidates = [base_dir, value(ENV_RUN_DIR), Some(cwd)];
        let path = candidates
            .into_iter()
            .flatten()
            .map(trim_slashes)
            .find(|r| r.len() > 1 && r.starts_with(b"/") && plain(r) && under(cwd, r))?
            .to_vec();
        let also = logical(&path, cwd, value("PWD")).into_iter().collect();
        Some(Root { path, also })
    }

    /// Every spelling of the root, for finding it in what a compile wrote.
    pub fn spellings(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.path.as_slice()).chain(self.also.iter().map(Vec::as_slice))
    }

    /// Whether `path` is the root or lies under it.
    pub fn contains(&self, path: &[u8]) -> bool {
        under(path, &self.path)
    }

    /// Whether `path` is the root or one of the directories above it.
    pub fn is_at_or_above(&self, path: &[u8]) -> bool {
        under(&self.path, path)
    }

    /// Whether `path`, outside the root, shares a directory other than `/`
    /// with it: a sibling's file that a relative path climbing out of the
    /// tree (`../common/x.h`) may have reached, and would reach elsewhere
    /// at another root.
    pub fn is_beside(&self, path: &[u8]) -> bool {
        let top_len = self.path[1..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(self.path.len(), |i| i + 1);
        let has_parent = top_len < self.path.len();
        has_parent && !self.contains(path) && under(path, &self.path[..top_len])
    }

    /// `path` with the root written as `MARK`, when it lies under it.
    pub fn mark_path(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.contains(path)
            .then(|| [MARK, &path[self.path.len()..]].concat())
    }

    /// `text` with every path that starts at the root written with `MARK`:
    /// the root where a path begins (at the start, after a separator, or
    /// glued to an option) and ends there or goes on with `/`. An
    /// occurrence inside a longer path (`/x/a/p` for a root `/a/p`) is left,
    /// since it names another place.
    pub fn mark_text<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let starts: Vec<usize> = memchr::memmem::find_iter(text, &self.path)
            .filter(|&i| path_starts_at(text, i) && path_ends_at(text, i + self.path.len()))
            .collect();
        if starts.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        let mut from = 0;
        for i in starts {
            out.extend_from_slice(&text[from..i]);
            out.extend_from_slice(MARK);
            from = i + self.path.len();
        }
        out.extend_from_slice(&text[from..]);
        Cow::Owned(out)
    }

    /// A marked text with the mark written as this root.
    pub fn unmark<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        unmark_with(text, &self.path)
    }

    /// The call's environment with every value's root marked, except
    /// `PATH`, which is resolved, not compared (see `env::resolved`).
    pub fn mark_env<'a>(&self, env: &'a Env) -> Cow<'a, Env> {
        let marked = |(k, v): &(Vec<u8>, Vec<u8>)| {
            k != b"PATH" && matches!(self.mark_text(v), Cow::Owned(_))
        };
        if !env.iter().any(marked) {
            return Cow::Borrowed(env);
        }
        let env = env
            .iter()
            .map(|(k, v)| match k.as_slice() {
                b"PATH" => (k.clone(), v.clone()),
                _ => (k.clone(), self.mark_text(v).into_owned()),
            })
            .collect();
        Cow::Owned(env)
    }

    /// Whether `text` (an argument, or a variable's value) names a path
    /// that climbs out of the root with `..`, relative to the working
    /// directory `cwd` or starting at the root: such a path reaches
    /// another place when the tree lies elsewhere.
    pub fn climbs_out(&self, text: &[u8], cwd: &[u8]) -> bool {
        if memchr::memmem::find(text, b"..").is_none() {
            return false;
        }
        let cwd_depth = depth(&cwd[self.path.len().min(cwd.len())..]);
        text.split(|b| SEPARATORS.contains(b))
            .map(|s| match s.first() {
                // An option's glued path (`-I../x`): from its first `.` or `/`.
                Some(b'-') => s
                    .iter()
                    .position(|&b| b == b'.' || b == b'/')
                    .map_or(&[][..], |i| &s[i..]),
                _ => s,
            })
            .any(|s| match s.first() {
                Some(b'/') => self.contains(s) && climbs(&s[self.path.len()..], 0),
                Some(_) => climbs(s, cwd_depth),
                None => false,
            })
    }
}

/// A user's `base_dir` as the working directory and the mirror spell it:
/// its physical path; `None` when it does not exist.
pub fn canonical(path: &[u8]) -> Option<Vec<u8>> {
    let p = std::fs::canonicalize(OsStr::from_bytes(path)).ok()?;
    Some(p.into_os_string().into_vec())
}

/// A marked text with the mark written as `root`.
pub fn unmark_with<'a>(text: &'a [u8], root: &[u8]) -> Cow<'a, [u8]> {
    if memchr::memchr(0, text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + root.len());
    let mut from = 0;
    for i in memchr::memmem::find_iter(text, MARK) {
        out.extend_from_slice(&text[from..i]);
        out.extend_from_slice(root);
        from = i + MARK.len();
    }
    out.extend_from_slice(&text[from..]);
    Cow::Owned(out)
}

/// Whether `path` is `dir` or lies under it, by name.
fn under(path: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || path.starts_with(dir) && matches!(path.get(dir.len()), None | Some(b'/'))
}

/// Whether a root is spelt the same everywhere it may be written: no
/// spaces, quotes or characters a depfile or a shell escapes. A tree under
/// another path keeps the key of its absolute location, as before.
fn plain(root: &[u8]) -> bool {
    root.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+-@~".contains(b))
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let mut end = p.len();
    while end > 1 && p[end - 1] == b'/' {
        end -= 1;
    }
    &p[..end]
}

/// How `PWD` may spell the working directory's place, when it is another
/// (symlinked) path: gcc writes `PWD` as `DW_AT_comp_dir` when it is the
/// working directory. The root under another head when `PWD` ends with the
/// same tail; else `PWD` itself.
fn logical(root: &[u8], cwd: &[u8], pwd: Option<&[u8]>) -> Option<Vec<u8>> {
    let pwd = trim_slashes(pwd?);
    if pwd == cwd || !pwd.starts_with(b"/") || pwd.len() < 2 || under(pwd, root) {
        return None;
    }
    let tail = &cwd[root.len()..];
    match pwd.strip_suffix(tail) {
        Some(head) if head.len() > 1 => Some(head.to_vec()),
        _ => Some(pwd.to_vec()),
    }
}

fn path_starts_at(text: &[u8], i: usize) -> bool {
    let before = &text[..i];
    match before.last() {
        None => true,
        Some(b) if SEPARATORS.contains(b) => true,
        _ => {
            let is_short_option = before.len() == 2 && before[0] == b'-';
            is_short_option || GLUED.contains(&before)
        }
    }
}

fn path_ends_at(text: &[u8], end: usize) -> bool {
    match text.get(end) {
        None => true,
        Some(b) => *b == b'/' || SEPARATORS.contains(b),
    }
}

/// Directories below the root that `rel` (a path under it, less the root)
/// goes down.
fn depth(rel: &[u8]) -> i64 {
    rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).count() as i64
}

/// Whether the relative path `rel`, starting `from` directories below the
/// root, goes above it at some point.
fn climbs(rel: &[u8], from: i64) -> bool {
    let mut d = from;
    for c in rel.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                d -= 1;
                if d < 0 {
                    return true;
                }
            }
            _ => d += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(path: &str) -> Root {
        Root {
            path: path.as_bytes().to_vec(),
            also: Vec::new(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_root_is_the_first_candidate_that_holds_the_working_directory() {
        let run = env(&[(ENV_RUN_DIR, "/a/p/")]);
        assert_eq!(Root::of(b"/a/p/src", &run, None).unwrap().path, b"/a/p");
        // A run started elsewhere: the working directory itself.
        assert_eq!(Root::of(b"/b/q", &run, None).unwrap().path, b"/b/q");
        assert_eq!(Root::of(b"/", &run, None), None);
        assert_eq!(Root::of(b"/a b/p", &[], None), None);
        // PWD through a symlink: the logical spelling too.
        let linked = env(&[(ENV_RUN_DIR, "/data/u/p"), ("PWD", "/home/u/p/src")]);
        let r = Root::of(b"/data/u/p/src", &linked, None).unwrap();
        assert_eq!(r.also, vec![b"/home/u/p".to_vec()]);
        let other = env(&[(ENV_RUN_DIR, "/data/u/p"), ("PWD", "/home/u/link")]);
        let r = Root::of(b"/data/u/p/src", &other, None).unwrap();
        assert_eq!(r.also, vec![b"/home/u/link".to_vec()]);
    }

    #[test]
    fn only_paths_that_start_at_the_root_are_marked() {
        let r = root("/a/p");
        let m = |t: &str| String::from_utf8(r.mark_text(t.as_bytes()).into_owned()).unwrap();
        assert_eq!(m("/a/p/x.c"), "\0R/x.c");
        assert_eq!(m("-I/a/p/include"), "-I\0R/include");
        assert_eq!(m("-isystem/a/p"), "-isystem\0R");
        assert_eq!(m("-ffile-prefix-map=/a/p=."), "-ffile-prefix-map=\0R=.");
        assert_eq!(m("-Wl,-rpath,/a/p/lib:/a/p"), "-Wl,-rpath,\0R/lib:\0R");
        // Another place that merely contains the root's name.
        assert_eq!(m("/x/a/p/f"), "/x/a/p/f");
        assert_eq!(m("-I/x/a/p"), "-I/x/a/p");
        assert_eq!(m("-Irel/a/p"), "-Irel/a/p");
        assert_eq!(m("/a/pq/f"), "/a/pq/f");
        for t in ["/a/p/x.c", "-Wl,-rpath,/a/p/lib:/a/p", "/x/a/p"] {
            assert_eq!(r.unmark(&r.mark_text(t.as_bytes())), t.as_bytes());
        }
        assert_eq!(
            root("/b/q").unmark(&r.mark_text(b"-I/a/p/i")),
            &b"-I/b/q/i"[..]
        );
    }

    #[test]
    fn climbing_out_of_the_root_is_seen_in_arguments_and_values() {
        let r = root("/a/p");
        let cwd = b"/a/p/build";
        assert!(!r.climbs_out(b"-I../include", cwd));
        assert!(r.climbs_out(b"-I../../include", cwd));
        assert!(r.climbs_out(b"../../x.c", cwd));
        assert!(r.climbs_out(b"inc:../../common", cwd));
        assert!(r.climbs_out(b"-isystem/a/p/../q", cwd));
        assert!(!r.climbs_out(b"/usr/../usr/include", cwd));
        assert!(!r.climbs_out(b"-DX=a..b", cwd));
        assert!(!r.climbs_out(b"src/../lib/x.c", cwd));
    }

    #[test]
    fn beside_is_under_a_directory_above_the_root_other_than_slash() {
        let r = root("/a/p");
        assert!(r.is_beside(b"/a/common/x.h"));
        assert!(!r.is_beside(b"/a/p/x.h"));
        assert!(!r.is_beside(b"/usr/include/stdio.h"));
        assert!(!root("/p").is_beside(b"/q/x.h"));
        assert!(r.is_at_or_above(b"/a") && r.is_at_or_above(b"/a/p"));
        assert!(!r.is_at_or_above(b"/a/p/x"));
        assert_eq!(r.mark_path(b"/a/p/x.h").unwrap(), b"\0R/x.h");
        assert_eq!(r.mark_path(b"/a/px.h"), None);
    }
}
