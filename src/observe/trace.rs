//! What a compile run elsewhere saw, from `strace`'s record of its file system calls,
//! replayed against the input root it ran in (see `agent::execute`).
//!
//! A remote executor runs the compile in a sandbox holding exactly its input root, so every
//! path the compile looked up resolves there as it does in the tree the input root was made
//! from: the replay walks each traced path through that tree (its symlinks too) and turns
//! it into the accesses the mirror would have recorded here. What it found nowhere must be
//! absent here too, and a directory it listed must list the same here: the caller checks
//! both before the result is believed (the input root may lack a file the compile only now
//! reaches). A traced answer that the replay does not reproduce, or a call the replay does
//! not know, makes the whole trace unusable.

use cachefs_mirror::{Access, Kind, Record, Stamp};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One node of the input root, by absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File,
    Dir,
    Symlink(PathBuf),
}

/// One traced call: its name, its arguments as strace printed them, and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub pid: u32,
    pub name: String,
    pub args: Vec<String>,
    /// The return value (`-1` with `errno` on failure).
    pub ret: i64,
    pub errno: Option<String>,
}

/// Reads strace's `-f -qq -y` output (one file for all processes).
pub fn parse(text: &str) -> Result<Vec<Call>, String> {
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let (pid, rest) = match line.split_once(' ') {
            Some((p, r)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (p.parse::<u32>().map_err(|e| e.to_string())?, r.trim_start())
            }
            _ => (0, line),
        };
        if rest.starts_with("---") || rest.starts_with("+++") || rest.is_empty() {
            continue;
        }
        let whole = if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, start.to_string());
            continue;
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let tail = resumed
                .split_once(" resumed>")
                .map(|(_, t)| t)
                .ok_or_else(|| format!("trace line not understood: {line}"))?;
            let head = pending
                .remove(&pid)
                .ok_or_else(|| format!("a resumed call that never started: {line}"))?;
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        calls.push(
            parse_call(pid, &whole).ok_or_else(|| format!("trace line not understood: {line}"))?,
        );
    }
    Ok(calls)
}

fn parse_call(pid: u32, text: &str) -> Option<Call> {
    let open = text.find('(')?;
    let name = text[..open].to_string();
    let (args, after) = split_args(&text[open + 1..])?;
    let result = after.trim_start().strip_prefix('=')?.trim_start();
    let mut words = result.split_whitespace();
    let ret_text = words.next()?;
    // `= 3</usr/include/stdio.h>`: the return value decorated with its path.
    let ret = ret_text
        .split('<')
        .next()?
        .parse::<i64>()
        .ok()
        .or_else(|| i64::from_str_radix(ret_text.strip_prefix("0x")?, 16).ok())?;
    let errno = (ret < 0)
        .then(|| words.next().map(str::to_string))
        .flatten();
    Some(Call {
        pid,
        name,
        args,
        ret,
        errno,
    })
}

/// The top-level arguments up to the closing parenthesis, and what follows it.
fn split_args(text: &str) -> Option<(Vec<String>, &str)> {
    let bytes = text.as_bytes();
    let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
    let mut args = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'(' | b'[' | b'{' | b'<' => depth += 1,
            b']' | b'}' | b'>' => depth -= 1,
            b')' if depth == 0 => {
                let last = text[start..i].trim();
                if !last.is_empty() {
                    args.push(last.to_string());
                }
                return Some((args, &text[i + 1..]));
            }
            b')' => depth -= 1,
            b',' if depth == 0 => {
                args.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// A quoted C string as strace prints it (`"…"`, possibly followed by `...` when cut).
fn unquote(arg: &str) -> Option<Vec<u8>> {
    let inner = arg.strip_prefix('"')?;
    let end = inner.rfind('"')?;
    if !inner[end + 1..].is_empty() {
        // Cut short (`"…"...`): not a whole path.
        return None;
    }
    unescape(&inner[..end])
}

fn unescape(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1)?;
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex = text.get(i..i + 2)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(u8::try_from(v).ok()?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// The path an fd argument is decorated with (`AT_FDCWD</src>`, `3</usr/include>`).
fn fd_path(arg: &str) -> Option<PathBuf> {
    let open = arg.find('<')?;
    let inner = arg[open + 1..].strip_suffix('>')?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(unescape(
        inner,
    )?)))
}

/// What the replay found, for the caller to check here and to analyse as a record.
#[derive(Debug, Default)]
pub struct Replayed {
    pub record: Record,
    /// Paths the compile looked up and found nothing at: they must be absent here too.
    pub absent: Vec<PathBuf>,
    /// Directories the compile listed, with the names it saw: the same names must be
    /// there here.
    pub listed: Vec<(PathBuf, Vec<Vec<u8>>)>,
}

/// How a call's path argument(s) are read.
enum Shape {
    /// (index of the dirfd argument, if any; index of the path argument).
    Lookup(Option<usize>, usize),
    Open(Option<usize>, usize, usize),
    Exec(Option<usize>, usize),
    ReadLink(Option<usize>, usize),
    Mkdir(Option<usize>, usize),
    Unlink(Option<usize>, usize),
    Rename(Option<usize>, usize, Option<usize>, usize),
    ListFd,
    /// chmod, chown, utimensat, truncate of a path.
    SetAttr(Option<usize>, usize),
    Ignore,
}

fn shape(name: &str) -> Option<Shape> {
    use Shape::*;
    Some(match name {
        "stat" | "lstat" | "access" | "statfs" | "getxattr" | "lgetxattr" | "listxattr"
        | "llistxattr" => Lookup(None, 0),
        "newfstatat" | "statx" | "faccessat" | "faccessat2" => Lookup(Some(0), 1),
        "open" => Open(None, 0, 1),
        "creat" => Open(None, 0, usize::MAX),
        "openat" | "openat2" => Open(Some(0), 1, 2),
        "execve" => Exec(None, 0),
        "execveat" => Exec(Some(0), 1),
        "readlink" => ReadLink(None, 0),
        "readlinkat" => ReadLink(Some(0), 1),
        "mkdir" => Mkdir(None, 0),
        "mkdirat" => Mkdir(Some(0), 1),
        "unlink" | "rmdir" => Unlink(None, 0),
        "unlinkat" => Unlink(Some(0), 1),
        "rename" => Rename(None, 0, None, 1),
        "renameat" | "renameat2" => Rename(Some(0), 1, Some(2), 3),
        "getdents64" | "getdents" => ListFd,
        "chmod" | "chown" | "lchown" | "truncate" => SetAttr(None, 0),
        "fchmodat" | "fchownat" | "utimensat" => SetAttr(Some(0), 1),
        // An fd's own metadata or an fd-relative call on no path: nothing new is reached.
        "fstatfs" | "fstat" | "fgetxattr" | "flistxattr" | "getcwd" => Ignore,
        _ => return None,
    })
}

/// Replays `calls` against the input root `tree`. `cwd` is where the compile started;
/// paths under one of `skip` (the sandbox's own /proc, /dev, the scratch directory) are
/// left out of the record.
pub fn replay(
    calls: &[Call],
    tree: &BTreeMap<PathBuf, Node>,
    cwd: &Path,
    skip: &[PathBuf],
) -> Result<Replayed, String> {
    let mut fs = Fs {
        tree: tree.clone(),
        out: Replayed::default(),
        skip,
    };
    for call in calls {
        let shape = shape(&call.name)
            .ok_or_else(|| format!("{} is not a call the replay knows", call.name))?;
        let path_at = |dirfd: Option<usize>, i: usize| -> Result<PathBuf, String> {
            let arg = call.args.get(i).ok_or("a call without its path")?;
            let p = PathBuf::from(std::ffi::OsString::from_vec(
                unquote(arg).ok_or_else(|| format!("path argument {arg} not understood"))?,
            ));
            if p.is_absolute() {
                return Ok(p);
            }
            let empty = p.as_os_str().is_empty();
            let base = match dirfd {
                None => cwd.to_path_buf(),
                Some(d) => fd_path(call.args.get(d).ok_or("no dirfd")?)
                    .ok_or_else(|| format!("dirfd {} not understood", call.args[d]))?,
            };
            // AT_EMPTY_PATH: the dirfd itself.
            Ok(if empty { base } else { base.join(p) })
        };
        let ok = call.ret >= 0;
        let not_found = matches!(call.errno.as_deref(), Some("ENOENT") | Some("ENOTDIR"));
        if !ok && !not_found {
            // EACCES, EEXIST, EINVAL (readlink of a non-link)...: the path was reached and
            // found; an existing node is recorded by the lookup below when it succeeds.
            if let Shape::Lookup(d, i) | Shape::ReadLink(d, i) = shape {
                fs.look(&path_at(d, i)?)?;
            }
            continue;
        }
        match shape {
            Shape::Ignore => {}
            Shape::Lookup(d, i) => {
                let follow = !(call.name == "lstat"
                    || call.args.iter().any(|a| a.contains("AT_SYMLINK_NOFOLLOW")));
                fs.expect(&path_at(d, i)?, follow, ok)?;
            }
            Shape::Exec(d, i) => {
                let p = path_at(d, i)?;
                if let Some(real) = fs.expect(&p, true, ok)? {
                    fs.push(read(real));
                }
            }
            Shape::ReadLink(d, i) => {
                fs.expect(&path_at(d, i)?, false, ok)?;
            }
            Shape::Open(d, i, f) => {
                let flags = call
                    .args
                    .get(f)
                    .map_or("O_WRONLY|O_CREAT|O_TRUNC", |s| s.as_str());
                let flags = if f == usize::MAX {
                    "O_WRONLY|O_CREAT|O_TRUNC"
                } else {
                    flags
                };
                fs.open(&path_at(d, i)?, flags, ok)?;
            }
            Shape::Mkdir(d, i) => {
                let p = path_at(d, i)?;
                let real = fs.parent_real(&p)?;
                fs.tree.insert(real.clone(), Node::Dir);
                fs.push(Access::Created {
                    path: real,
                    kind: Kind::Dir,
                });
            }
            Shape::Unlink(d, i) => {
                let p = path_at(d, i)?;
                if let Some(real) = fs.expect(&p, false, ok)? {
                    fs.tree.retain(|k, _| !k.starts_with(&real));
                    fs.push(Access::Removed { path: real });
                }
            }
            Shape::Rename(d1, i1, d2, i2) => {
                let (from, to) = (path_at(d1, i1)?, path_at(d2, i2)?);
                let from = fs.parent_real(&from)?;
                let to = fs.parent_real(&to)?;
                let moved: Vec<(PathBuf, Node)> = fs
                    .tree
                    .iter()
                    .filter(|(k, _)| k.starts_with(&from))
                    .map(|(k, v)| (to.join(k.strip_prefix(&from).unwrap()), v.clone()))
                    .collect();
                fs.tree
                    .retain(|k, _| !k.starts_with(&from) && !k.starts_with(&to));
                fs.tree.extend(moved);
                fs.push(Access::Renamed { from, to });
            }
            // utimensat(fd, NULL, …): the fd's file, already seen when it was opened.
            Shape::SetAttr(_, i) if call.args.get(i).is_some_and(|a| a == "NULL") => {}
            Shape::SetAttr(d, i) => {
                if let Some(real) = fs.expect(&path_at(d, i)?, true, ok)? {
                    fs.push(Access::SetAttr {
                        path: real,
                        size: None,
                    });
                }
            }
            Shape::ListFd => {
                let fd = call.args.first().ok_or("getdents without an fd")?;
                let dir = fd_path(fd).ok_or_else(|| format!("fd {fd} not understood"))?;
                fs.list(&dir);
            }
        }
    }
    Ok(fs.out)
}

struct Fs<'a> {
    tree: BTreeMap<PathBuf, Node>,
    out: Replayed,
    skip: &'a [PathBuf],
}

/// The walk through symlinks stops after this many, as the kernel's does (ELOOP).
const MAX_LINKS: usize = 40;

impl Fs<'_> {
    fn skipped(&self, path: &Path) -> bool {
        self.skip.iter().any(|s| path.starts_with(s))
    }

    fn push(&mut self, access: Access) {
        let path = match &access {
            Access::Found { path, .. }
            | Access::NotFound { path }
            | Access::Open { path, .. }
            | Access::ReadDir { path }
            | Access::ReadLink { path, .. }
            | Access::Created { path, .. }
            | Access::Removed { path }
            | Access::SetAttr { path, .. } => path.clone(),
            Access::Renamed { to, .. } => to.clone(),
            _ => PathBuf::new(),
        };
        if !self.skipped(&path) {
            self.out.record.accesses.push(access);
        }
    }

    /// Walks `path` through the tree as the kernel would, recording each symlink read and
    /// each directory passed; returns the real path it ends at and whether something is
    /// there.
    fn walk(&mut self, path: &Path, follow_last: bool) -> Result<(PathBuf, bool), String> {
        let mut todo: Vec<std::ffi::OsString> = components(path);
        todo.reverse();
        let mut at = PathBuf::from("/");
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                at.pop();
                continue;
            }
            let next = at.join(&name);
            let last = todo.is_empty();
            match self.tree.get(&next).cloned() {
                None if self.skipped(&next) => return Ok((rest(next, &todo), true)),
                None => return Ok((rest(next, &todo), false)),
                Some(Node::Symlink(target)) if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!("too many symlinks resolving {}", path.display()));
                    }
                    self.push(Access::ReadLink {
                        path: next.clone(),
                        target: target.clone(),
                    });
                    if target.is_absolute() {
                        at = PathBuf::from("/");
                    }
                    let mut more = components(&target);
                    more.reverse();
                    todo.extend(more);
                }
                Some(Node::File) if !last => {
                    // ENOTDIR: the lookup ends at a file.
                    return Ok((rest(next, &todo), false));
                }
                Some(node) => {
                    if !last {
                        self.push(Access::Found {
                            path: next.clone(),
                            kind: Kind::Dir,
                        });
                    }
                    at = next;
                    let _ = node;
                }
            }
        }
        Ok((at, true))
    }

    /// A lookup whose traced answer was `found`: the replay must agree. Returns the real
    /// path when something is there.
    fn expect(
        &mut self,
        path: &Path,
        follow: bool,
        found: bool,
    ) -> Result<Option<PathBuf>, String> {
        let (real, there) = self.walk(path, follow)?;
        if self.skipped(&real) {
            // The sandbox's own /proc, /dev and scratch space: not the input root's.
            return Ok(found.then_some(real));
        }
        if there != found {
            return Err(format!(
                "{} was {} in the sandbox but {} in its input root",
                path.display(),
                if found { "found" } else { "not found" },
                if there { "is" } else { "is not" }
            ));
        }
        self.record_lookup(&real, there);
        Ok(there.then_some(real))
    }

    /// A lookup of an existing node whose traced answer was an error other than absence.
    fn look(&mut self, path: &Path) -> Result<(), String> {
        let (real, there) = self.walk(path, true)?;
        self.record_lookup(&real, there);
        Ok(())
    }

    fn record_lookup(&mut self, real: &Path, there: bool) {
        if self.skipped(real) {
            return;
        }
        if !there {
            self.out.absent.push(real.to_path_buf());
            self.push(Access::NotFound {
                path: real.to_path_buf(),
            });
            return;
        }
        let kind = match self.tree.get(real) {
            Some(Node::Dir) | None => Kind::Dir,
            Some(Node::File) => Kind::File,
            Some(Node::Symlink(_)) => Kind::Symlink,
        };
        self.push(Access::Found {
            path: real.to_path_buf(),
            kind,
        });
    }

    /// The real path of `path`'s parent, joined with its last name (for calls that make,
    /// remove or rename the last component itself).
    fn parent_real(&mut self, path: &Path) -> Result<PathBuf, String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{} has no last name", path.display()))?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        let (real, there) = self.walk(parent, true)?;
        if !there {
            return Err(format!("{} made in a missing directory", path.display()));
        }
        Ok(real.join(name))
    }

    fn open(&mut self, path: &Path, flags: &str, ok: bool) -> Result<(), String> {
        let has = |f: &str| flags.split('|').any(|x| x.trim() == f);
        let write = has("O_WRONLY") || has("O_RDWR");
        let create = has("O_CREAT");
        if !write && !create {
            if let Some(real) = self.expect(path, !has("O_NOFOLLOW"), ok)? {
                if has("O_DIRECTORY") || matches!(self.tree.get(&real), Some(Node::Dir)) {
                    return Ok(());
                }
                self.push(read(real));
            }
            return Ok(());
        }
        if !ok {
            return self.expect(path, true, false).map(|_| ());
        }
        let real = self.parent_real(path)?;
        let existed = self.tree.contains_key(&real);
        let created = create && !existed;
        self.tree.insert(real.clone(), Node::File);
        self.push(Access::Open {
            path: real,
            read: has("O_RDWR"),
            write: true,
            truncate: has("O_TRUNC"),
            append: has("O_APPEND"),
            created,
            stamp: Stamp::default(),
        });
        Ok(())
    }

    fn list(&mut self, dir: &Path) {
        if self.skipped(dir) {
            return;
        }
        let names: Vec<Vec<u8>> = self
            .tree
            .keys()
            .filter(|k| k.parent() == Some(dir))
            .filter_map(|k| k.file_name().map(|n| n.as_bytes().to_vec()))
            .collect();
        if !self.out.listed.iter().any(|(d, _)| d == dir) {
            self.out.listed.push((dir.to_path_buf(), names));
        }
        self.push(Access::ReadDir {
            path: dir.to_path_buf(),
        });
    }
}

fn components(path: &Path) -> Vec<std::ffi::OsString> {
    use std::path::Component;
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// `at` with the components still to walk (in `todo`, reversed); never a trailing `/`,
/// which would make a file's path a directory's (and its check here fail for ENOTDIR).
fn rest(at: PathBuf, todo: &[std::ffi::OsString]) -> PathBuf {
    todo.iter().rev().fold(at, |p, c| p.join(c))
}

/// A read of `path`. The replay has no stamps: the caller fills them in from the disk here.
fn read(path: PathBuf) -> Access {
    Access::Open {
        path,
        read: true,
        write: false,
        truncate: false,
        append: false,
        created: false,
        stamp: Stamp::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> BTreeMap<PathBuf, Node> {
        let mut t = BTreeMap::new();
        for d in ["/usr", "/usr/lib", "/usr/include", "/src", "/tmp"] {
            t.insert(PathBuf::from(d), Node::Dir);
        }
        t.insert("/lib".into(), Node::Symlink("usr/lib".into()));
        t.insert("/usr/lib/libc.so.6".into(), Node::File);
        t.insert("/usr/include/stdio.h".into(), Node::File);
        t.insert("/src/a.c".into(), Node::File);
        t
    }

    const TRACE: &str = r#"7 execve("/usr/lib/libc.so.6", ["cc"], 0x7ffc /* 3 vars */) = 0
7 openat(AT_FDCWD</src>, "/lib/libc.so.6", O_RDONLY|O_CLOEXEC) = 3</usr/lib/libc.so.6>
7 openat(AT_FDCWD</src>, "a.c", O_RDONLY|O_NOCTTY <unfinished ...>
8 newfstatat(AT_FDCWD</src>, "/usr/include/x.h", 0x7ffd, 0) = -1 ENOENT (No such file or directory)
7 <... openat resumed>) = 4</src/a.c>
7 openat(AT_FDCWD</src>, "a.o", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 5</src/a.o>
7 getdents64(6</usr/include>, 0x55 /* 3 entries */, 32768) = 80
7 --- SIGCHLD {si_signo=SIGCHLD} ---
7 +++ exited with 0 +++
"#;

    #[test]
    fn a_trace_replays_into_the_accesses_the_mirror_would_record() {
        let calls = parse(TRACE).unwrap();
        assert_eq!(calls.len(), 6);
        assert_eq!(calls[2].name, "newfstatat");
        assert_eq!(calls[3].args[1], "\"a.c\"");
        let r = replay(&calls, &tree(), Path::new("/src"), &[]).unwrap();
        assert_eq!(r.absent, [PathBuf::from("/usr/include/x.h")]);
        // Exactly the path (no trailing `/`): it is checked here as a file's.
        assert_eq!(r.absent[0].as_os_str().len(), "/usr/include/x.h".len());
        assert_eq!(
            r.listed,
            [(PathBuf::from("/usr/include"), vec![b"stdio.h".to_vec()])]
        );
        let a = &r.record.accesses;
        assert!(a.contains(&Access::ReadLink {
            path: "/lib".into(),
            target: "usr/lib".into()
        }));
        assert!(a.iter().any(|x| matches!(x,
            Access::Open { path, read: true, .. } if path == Path::new("/usr/lib/libc.so.6"))));
        assert!(a.iter().any(|x| matches!(x,
            Access::Open { path, write: true, created: true, .. } if path == Path::new("/src/a.o"))));
    }

    #[test]
    fn an_answer_the_input_root_does_not_give_spoils_the_trace() {
        let found_nowhere = "1 openat(AT_FDCWD</src>, \"b.h\", O_RDONLY) = 3</src/b.h>\n";
        let calls = parse(found_nowhere).unwrap();
        assert!(replay(&calls, &tree(), Path::new("/src"), &[]).is_err());
        let unknown = "1 chdir(\"/src\") = 0\n";
        let calls = parse(unknown).unwrap();
        assert!(replay(&calls, &tree(), Path::new("/src"), &[]).is_err());
        assert!(parse("1 openat(AT_FDCWD, \"x\"").is_err());
    }

    #[test]
    fn escapes_are_decoded_and_cut_strings_refused() {
        assert_eq!(unquote(r#""a\"b\\c\x41\101\n""#).unwrap(), b"a\"b\\cAA\n");
        assert_eq!(unquote(r#""abc"..."#), None);
        assert_eq!(
            fd_path("AT_FDCWD</a b/c>").unwrap(),
            PathBuf::from("/a b/c")
        );
    }
}
