//! Whether a result may be served where the tree lies elsewhere, and the
//! dep set and outputs written so (`location` marks the root).
//!
//! The argument: a compile at root B whose key and dep set match one at
//! root A (paths under the root compared as marked, every other input the
//! same) saw A's world with A written as B. It writes A's outputs with A
//! written as B; so where they do not carry A at all, they are B's
//! byte for byte. That holds only while every way the compile reached the
//! tree went through a spelling of the root or the working directory, so
//! a result is pinned to its root (served there only, as before) when:
//! - an output, stdout or stderr carries the root (`compiler::carries`,
//!   which also reads compressed debug sections and archive members and
//!   counts what it cannot read as carrying it): `-g` without a prefix map.
//!   A depfile (a text file named `*.d`) in gcc's exact layout or rustc's
//!   dep-info, and rustc's JSON messages, are the exception: kept with the
//!   root marked in their names and written at a hit as the compiler would
//!   write them there (`compiler::depfile`), since they name, by design,
//!   where things are;
//! - it read, probed or wrote beside the tree (under a directory above the
//!   root other than `/`), which a `..` may have reached: another root's
//!   `..` reaches another place;
//! - an argument or a variable it read climbs out of the tree with `..`;
//! - a symbolic link it followed leads into the tree or above it by an
//!   absolute path, or out of the tree by a relative one;
//! - a program it found along `PATH` lies in the tree (`PATH` is compared
//!   by resolution, not by its marked value).
//!
//! What cannot be seen, and is assumed: that a compiler depends on its
//! location only through the paths it reads and writes (not, say, through
//! a hash of its working directory written into an object), and that no
//! source file includes another by a relative path climbing through `/`
//! (`#include "../../../usr/include/x.h"`, which reaches another file at
//! another depth).

use super::capture::Captured;
use super::dep_set::{Dep, DepSet, DepState, Kind};
use super::env::Env;
use super::location::{Root, MARK};
use super::result::{CachedResult, Output};
use super::validate::Mismatch;
use crate::compiler::carries::carries;
use crate::compiler::depfile::{self, Depfile, Style};
use crate::compiler::Family;
use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What of a finished compile decides whether it relocates.
pub struct Finished<'a> {
    pub family: Family,
    pub argv: &'a [Vec<u8>],
    pub cwd: &'a [u8],
    /// The call's environment as the client sent it (values unmarked).
    pub env: &'a Env,
    pub deps: &'a [Dep],
    pub outputs: &'a [Captured],
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
}

/// How a result that may move is stored, besides its root marked in paths.
#[derive(Debug, Default)]
pub struct Moves {
    /// The outputs (by index) that are depfiles naming the root, which move
    /// rewritten (`compiler::depfile`), with their text as stored (the root
    /// marked).
    pub depfiles: Vec<(usize, Style, Vec<u8>)>,
    /// stdout and stderr with the root marked, when they name it: rustc's
    /// messages (`--error-format=json` names every artifact by its path),
    /// lines laid out by nothing but their content.
    pub streams: Option<(Vec<u8>, Vec<u8>)>,
}

/// Whether the result may move: `Ok` with how it is stored, `Err` with why
/// it must stay at its root.
pub fn decide(root: &Root, f: &Finished) -> Result<Moves, String> {
    let at = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    if let Some(a) = f.argv.iter().skip(1).find(|a| root.climbs_out(a, f.cwd)) {
        return Err(format!("argument {} climbs out of the tree", at(a)));
    }
    for dep in f.deps {
        if let Some(why) = dep_pins(root, dep, f) {
            return Err(why);
        }
    }
    let mut depfiles = Vec::new();
    for (i, o) in f.outputs.iter().enumerate() {
        if let Some(why) = place_pins(root, o) {
            return Err(why);
        }
        match (content_pins(root, o), o) {
            (None, _) => {}
            (Some(why), Captured::File(file)) if is_depfile_name(&file.path) => {
                match marked_depfile(root, f.family, &file.data) {
                    Some((style, marked)) => depfiles.push((i, style, marked)),
                    None => return Err(why),
                }
            }
            (Some(why), _) => return Err(why),
        }
    }
    let spellings: Vec<&[u8]> = root.spellings().collect();
    let mut marked = Vec::new();
    for (name, text) in [("stdout", f.stdout), ("stderr", f.stderr)] {
        match carries(text, &spellings) {
            None => marked.push(text.to_vec()),
            Some(why) => match marked_stream(root, f.family, text) {
                Some(m) => marked.push(m),
                None => return Err(format!("{CARRIED}: its {name} {why}")),
            },
        }
    }
    let streams = (marked[0] != f.stdout || marked[1] != f.stderr)
        .then(|| (marked.remove(0), marked.remove(0)));
    Ok(Moves { depfiles, streams })
}

/// Whether an output is named as a depfile: gcc's `-MF` files and rustc's
/// dep-info end in `.d` in every build system measured (make, CMake,
/// cargo); nothing else is read as one.
fn is_depfile_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "d")
}

/// rustc's stdout or stderr with the root marked, when the root appears
/// nowhere else in it (other compilers' messages are not rewritten).
fn marked_stream(root: &Root, family: Family, text: &[u8]) -> Option<Vec<u8>> {
    if family != Family::Rustc {
        return None;
    }
    let marked = depfile::rewrite_as(Style::Lines, text, |l| root.mark_text(l))?;
    let spellings: Vec<&[u8]> = root.spellings().collect();
    carries(&marked, &spellings).is_none().then_some(marked)
}

/// A depfile in its compiler's exact layout (gcc's for the C family,
/// rustc's dep-info for rustc) with the root marked in its names, when the
/// root appears nowhere else in it.
fn marked_depfile(root: &Root, family: Family, data: &[u8]) -> Option<(Style, Vec<u8>)> {
    // Text only: no NUL, which would also read as part of a mark.
    if memchr::memchr(0, data).is_some() {
        return None;
    }
    let style = match family {
        Family::Rustc => Style::Lines,
        _ => Style::Gcc,
    };
    if style == Style::Gcc {
        Depfile::parse(data)?;
    }
    let marked = depfile::rewrite_as(style, data, |n| root.mark_text(n))?;
    let spellings: Vec<&[u8]> = root.spellings().collect();
    carries(&marked, &spellings)
        .is_none()
        .then_some((style, marked))
}

/// The depfiles `decide` found, their text replaced by the marked one.
pub fn mark_depfiles(captured: &mut [Captured], moves: &mut Moves) {
    for (i, _, marked) in &mut moves.depfiles {
        if let Captured::File(f) = &mut captured[*i] {
            f.data = std::mem::take(marked);
        }
    }
}

fn dep_pins(root: &Root, dep: &Dep, f: &Finished) -> Option<String> {
    let at = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let path = &dep.path;
    match &dep.state {
        DepState::Env(Some(_)) => {
            let value = super::env::value(f.env, path).unwrap_or_default();
            root.climbs_out(value, f.cwd).then(|| {
                format!(
                    "variable {} climbs out of the tree: {}",
                    at(path),
                    at(value)
                )
            })
        }
        DepState::Env(None) | DepState::EnvMatching(_) => None,
        DepState::Resolved(found) => found
            .iter()
            .filter_map(|(name, to)| to.as_ref().map(|(p, real)| (name, p, real)))
            .find(|(_, p, real)| root.contains(p) || root.contains(real))
            .map(|(name, _, real)| format!("runs {} = {} from the tree", at(name), at(real))),
        // The walk down to the root: the location itself, left out.
        DepState::Exists(Kind::Dir) if root.is_at_or_above(path) => None,
        _ if root.is_beside(path) || (root.is_at_or_above(path) && !root.contains(path)) => {
            Some(format!("it read or probed {}, beside the tree", at(path)))
        }
        DepState::Symlink(target) => link_pins(root, path, target),
        _ => None,
    }
}

fn link_pins(root: &Root, link: &[u8], target: &[u8]) -> Option<String> {
    let to = if target.starts_with(b"/") {
        normalize(target)
    } else {
        let dir = Path::new(std::ffi::OsStr::from_bytes(link))
            .parent()
            .unwrap_or(Path::new("/"));
        normalize(
            dir.join(std::ffi::OsStr::from_bytes(target))
                .as_os_str()
                .as_bytes(),
        )
    };
    let into_or_above = root.contains(&to) || root.is_at_or_above(&to) || root.is_beside(&to);
    let pinned = if target.starts_with(b"/") || !root.contains(link) {
        into_or_above
    } else {
        !root.contains(&to)
    };
    pinned.then(|| {
        format!(
            "it followed {} -> {}",
            String::from_utf8_lossy(link),
            String::from_utf8_lossy(target)
        )
    })
}

fn place_pins(root: &Root, o: &Captured) -> Option<String> {
    let path = PathBuf::from(o.path_string());
    let bytes = path.as_os_str().as_bytes();
    (root.is_beside(bytes) || (root.is_at_or_above(bytes) && !root.contains(bytes)))
        .then(|| format!("it wrote {}, beside the tree", path.display()))
}

fn content_pins(root: &Root, o: &Captured) -> Option<String> {
    let path = PathBuf::from(o.path_string());
    let spellings: Vec<&[u8]> = root.spellings().collect();
    let carried = match o {
        Captured::File(f) => carries(&f.data, &spellings),
        Captured::Symlink { target, .. } => carries(target.as_os_str().as_bytes(), &spellings),
        Captured::Dir { .. } => None,
    };
    carried.map(|why| format!("{CARRIED}: {} {why}", path.display()))
}

/// `path` with `.` and `..` resolved by name.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    [b"/".as_slice(), &out.join(&b'/')].concat()
}

/// A relocatable compile's deps with the root marked, less the walk down
/// to the root.
pub fn mark_deps(root: &Root, deps: Vec<Dep>) -> Vec<Dep> {
    deps.into_iter()
        .filter(|d| !(d.state == DepState::Exists(Kind::Dir) && root.is_at_or_above(&d.path)))
        .map(|d| match d.state {
            DepState::Env(_) | DepState::EnvMatching(_) | DepState::Resolved(_) => d,
            _ => Dep {
                path: root.mark_path(&d.path).unwrap_or(d.path),
                state: d.state,
            },
        })
        .collect()
}

/// A pinned compile's deps: first, what pins them to `root`.
pub fn pin_deps(root: &Root, why: String, mut deps: Vec<Dep>) -> Vec<Dep> {
    deps.insert(
        0,
        Dep {
            path: root.path.clone(),
            state: DepState::Pinned(why),
        },
    );
    deps
}

/// A relocatable result's output paths with the root marked, and its
/// depfiles (by index, as `decide` found them) kept as such.
pub fn mark_outputs(root: &Root, outputs: &mut [Output], moves: &Moves) {
    for &(i, style, _) in &moves.depfiles {
        if let Output::File { path, mode, blob } = &outputs[i] {
            outputs[i] = Output::Depfile {
                path: path.clone(),
                mode: *mode,
                blob: *blob,
                style,
            };
        }
    }
    for o in outputs {
        let path = o.path_mut();
        if let Some(marked) = root.mark_path(path) {
            *path = marked;
        }
    }
}

/// A stored dep set as it reads at this call's root: marked paths written
/// as the root; a set pinned to another root does not hold here.
pub fn set_here<'a>(set: &'a DepSet, root: Option<&Root>) -> Result<Cow<'a, DepSet>, Mismatch> {
    if let Some(Dep {
        path,
        state: DepState::Pinned(why),
    }) = set.deps.first()
    {
        let here = root.map(|r| r.path.as_slice());
        if here == Some(path.as_slice()) {
            return Ok(Cow::Borrowed(set));
        }
        let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        return Err(Mismatch {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            input: LOCATION.into(),
            expected: format!("built at {}, and {why}", text(path)),
            now: Some(here.map_or_else(|| "/".into(), text)),
        });
    }
    let marked = |d: &Dep| d.path.starts_with(MARK);
    if !set.deps.iter().any(marked) {
        return Ok(Cow::Borrowed(set));
    }
    let Some(root) = root else {
        return Err(Mismatch {
            path: PathBuf::from("/"),
            input: LOCATION.into(),
            expected: "a tree root".into(),
            now: Some("/".into()),
        });
    };
    let deps = set
        .deps
        .iter()
        .map(|d| match marked(d) {
            true => Dep {
                path: root.unmark(&d.path).into_owned(),
                state: d.state.clone(),
            },
            false => d.clone(),
        })
        .collect();
    Ok(Cow::Owned(DepSet {
        deps,
        result: set.result,
    }))
}

/// How a reason to pin that is the result's own content begins.
pub const CARRIED: &str = "its outputs carry that location";

/// What a pinned set's mismatch names as its input (`cachefs explain`).
pub const LOCATION: &str = "the tree's location";

/// A stored result as it writes at this call's root.
pub fn result_here<'a>(result: &'a CachedResult, root: Option<&Root>) -> Cow<'a, CachedResult> {
    let marked = |o: &Output| o.path().starts_with(MARK);
    match root {
        Some(root) if result.streams_marked || result.outputs.iter().any(marked) => {
            let mut here = result.clone();
            for o in &mut here.outputs {
                let path = o.path_mut();
                *path = root.unmark(path).into_owned();
            }
            if here.streams_marked {
                here.stdout = root.unmark(&here.stdout).into_owned();
                here.stderr = root.unmark(&here.stderr).into_owned();
                here.streams_marked = false;
            }
            Cow::Owned(here)
        }
        _ => Cow::Borrowed(result),
    }
}
