//! The two-phase key: key1 from the static facts of a call, then the dep sets
//! observed under it, each validated against the disk.

use crate::compiler::host_target;
use crate::compiler::time_macros::{self, TimeMacros};
use crate::protocol::CompileRequest;
use nix::sys::statfs;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub type Hash = [u8; 32];

/// Bumped whenever the meaning of a key or a stored record changes, so that
/// entries from another format are never read as ours.
pub const FORMAT_VERSION: u32 = 2;

/// Environment variables that do not change what a compiler produces but do
/// change between otherwise identical builds (jobserver fds, shells, the
/// terminal, our own plumbing). Every other variable is part of key1.
const VOLATILE_ENV: &[&str] = &[
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
    "MAKE_TERMOUT",
    "MAKE_TERMERR",
    "CARGO_MAKEFLAGS",
    // Name the wrapper of rustc calls (us, in wrapper mode); rustc does not
    // read them, and keeping them out lets `RUSTC_WRAPPER=cachefs` and
    // `cachefs run` share results.
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "TERM",
    "COLORTERM",
    "_",
    "LD_PRELOAD",
    "DISPLAY",
    "WINDOWID",
    "XAUTHORITY",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "LS_COLORS",
    "NINJA_STATUS",
    // Set per login session or per terminal window, read by no compiler: a
    // build in a new terminal or after a new login must still hit.
    "DBUS_SESSION_BUS_ADDRESS",
    "SESSION_MANAGER",
    "DESKTOP_STARTUP_ID",
    "WAYLAND_DISPLAY",
    "WINDOWPATH",
    "GPG_AGENT_INFO",
    "VTE_VERSION",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TERM_SESSION_ID",
    "WT_SESSION",
];
const VOLATILE_ENV_PREFIXES: &[&str] = &[
    "CACHEFS_",
    "SSH_",
    "TMUX",
    "STY",
    "XDG_SESSION_",
    "XDG_SEAT",
    "XDG_VTNR",
    "XDG_ACTIVATION_TOKEN",
    "GNOME_TERMINAL_",
    "KONSOLE_",
    "KITTY_",
    "ALACRITTY_",
];

pub fn is_volatile_env(name: &[u8]) -> bool {
    VOLATILE_ENV.iter().any(|v| v.as_bytes() == name)
        || VOLATILE_ENV_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
}

/// key1 = what is known before the compile runs: the compiler's content, the
/// name it was called by (clang picks its mode from argv[0]), the arguments,
/// the working directory and the environment minus volatile variables;
/// for a compile that targets the host CPU, that CPU's identity.
pub fn key1(req: &CompileRequest, compiler_hash: &Hash) -> Hash {
    let host = host_target::targets_host_cpu(&req.argv)
        .then(|| host_target::host_cpu_identity().unwrap_or_default());
    key1_on(req, compiler_hash, host)
}

fn key1_on(req: &CompileRequest, compiler_hash: &Hash, host_cpu: Option<Hash>) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-key1");
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(compiler_hash);
    let argv0 = req.argv.first().map(|a| basename(a)).unwrap_or_default();
    field(&mut h, argv0);
    h.update(&(req.argv.len() as u64).to_le_bytes());
    for a in req.argv.iter().skip(1) {
        field(&mut h, a);
    }
    field(&mut h, &req.cwd);
    // `-march=native` and kin: what the compiler sees of the CPU.
    if let Some(cpu) = host_cpu {
        h.update(b"host-cpu");
        h.update(&cpu);
    }
    let mut env: Vec<_> = req
        .env
        .iter()
        .filter(|(k, _)| !is_volatile_env(k))
        .collect();
    env.sort();
    h.update(&(env.len() as u64).to_le_bytes());
    for (k, v) in env {
        field(&mut h, k);
        field(&mut h, v);
    }
    *h.finalize().as_bytes()
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// What a compile observed at one path; a dep set holds only if every path is
/// still in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepState {
    /// A regular file that was read, by content hash.
    File(Hash),
    /// Looked up and not found: a file appearing here later invalidates.
    Absent,
    /// A directory whose entries were listed, by the hash of its names.
    Listing(Hash),
    Symlink(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Looked up (stat'ed, walked through) but not read.
    Exists(Kind),
    /// A library search directory (rustc `-L`), by the hash of the crate
    /// candidates in it for the crate stems (`lib<crate>`) the compile loaded:
    /// a new candidate for one of those crates invalidates, other crates'
    /// files do not (see `compiler::rustc`).
    Candidates {
        stems: Vec<Vec<u8>>,
        hash: Hash,
    },
}

impl std::fmt::Display for DepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |h: &Hash| {
            h[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        match self {
            DepState::File(h) => write!(f, "file {}", short(h)),
            DepState::Absent => write!(f, "absent"),
            DepState::Listing(h) => write!(f, "directory listing {}", short(h)),
            DepState::Symlink(t) => write!(f, "symlink to {}", String::from_utf8_lossy(t)),
            DepState::Exists(k) => write!(f, "existing {k:?}"),
            DepState::Candidates { stems, hash } => {
                let stems: Vec<_> = stems.iter().map(|s| String::from_utf8_lossy(s)).collect();
                write!(
                    f,
                    "crate candidates {} for {}",
                    short(hash),
                    stems.join(" ")
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dep {
    #[serde(with = "crate::bytes")]
    pub path: Vec<u8>,
    pub state: DepState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepSet {
    pub deps: Vec<Dep>,
    pub result: Hash,
}

/// The dep sets seen under one key1, most recent first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub sets: Vec<DepSet>,
}

/// Enough dep sets for a few configurations that alternate (branches, a
/// generated header that flips) without scanning forever on every lookup.
pub const MAX_DEP_SETS: usize = 16;

impl Manifest {
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        postcard::from_bytes(bytes).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("manifest serialises")
    }

    /// Puts `set` first, dropping an identical older one and the oldest
    /// beyond the limit.
    /// Puts `set` first, replacing a set with the same deps and dropping the
    /// oldest beyond `MAX_DEP_SETS`. Returns the results no set refers to
    /// any more: nothing reaches them through this key.
    pub fn add(&mut self, set: DepSet) -> Vec<Hash> {
        let mut dropped: Vec<Hash> = Vec::new();
        self.sets.retain(|s| {
            let keep = s.deps != set.deps;
            if !keep {
                dropped.push(s.result);
            }
            keep
        });
        self.sets.insert(0, set);
        if self.sets.len() > MAX_DEP_SETS {
            dropped.extend(self.sets.drain(MAX_DEP_SETS..).map(|s| s.result));
        }
        dropped.retain(|r| self.sets.iter().all(|s| s.result != *r));
        dropped
    }
}

/// The identity of a file's content as stat reports it; any change means the
/// content may have changed (ctime catches a rewrite with the old mtime put back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// A file changed within the last moments may change again within the
    /// same timestamp tick, invisibly to stat: such stamps are not cached
    /// (the "racy git" problem).
    fn is_settled(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as i128;
        let margin = 2_000_000_000;
        self.mtime_ns < now_ns - margin && self.ctime_ns < now_ns - margin
    }
}

/// Content hashes by path and stamp, so validating a hit re-hashes only files
/// whose stat changed; and paths found absent, by the stamp their directory
/// had, so that a compile's many failed probes (a header looked for in each
/// include directory) cost one stat per directory instead of one per probe.
#[derive(Default)]
pub struct StatCache {
    entries: Mutex<HashMap<PathBuf, (Stamp, Digest)>>,
    absent: Mutex<HashMap<PathBuf, Stamp>>,
    /// Something was learnt since the last `take_dirty` (see
    /// `stat_cache_file`, which keeps both maps across agent restarts).
    dirty: std::sync::atomic::AtomicBool,
    /// Per device: whether its file system is known to update a directory's
    /// mtime and ctime whenever an entry is added, removed or renamed.
    dir_stamps_trusted: Mutex<HashMap<u64, bool>>,
}

/// A file the stat cache hashed, with the stamp the hash is valid for.
pub type HashedFile = (PathBuf, Stamp, Digest);
/// A path found absent, with the stamp its directory had then.
pub type AbsentPath = (PathBuf, Stamp);

/// Local file systems whose directory timestamps follow POSIX: ext2/3/4
/// (one magic number), xfs, btrfs, tmpfs, overlayfs. Others (FUSE, network
/// file systems) are checked probe by probe.
const DIR_STAMP_FILESYSTEMS: &[statfs::FsType] = &[
    statfs::EXT4_SUPER_MAGIC,
    statfs::XFS_SUPER_MAGIC,
    statfs::BTRFS_SUPER_MAGIC,
    statfs::TMPFS_MAGIC,
    statfs::OVERLAYFS_SUPER_MAGIC,
];

impl StatCache {
    fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hashed files and absent paths known.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len() + self.absent.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anything was learnt since the last call.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Both maps, for saving: hashed files and paths found absent, each with
    /// the stamp it is valid for.
    pub fn export(&self) -> (Vec<HashedFile>, Vec<AbsentPath>) {
        let files = self.entries.lock().unwrap();
        let files = files
            .iter()
            .map(|(p, (s, d))| (p.clone(), *s, *d))
            .collect();
        let absent = self.absent.lock().unwrap();
        let absent = absent.iter().map(|(p, s)| (p.clone(), *s)).collect();
        (files, absent)
    }

    /// A cache holding what `export` gave: every entry is still checked
    /// against the file's stamp before use, as a learnt one is.
    pub fn import(files: Vec<HashedFile>, absent: Vec<AbsentPath>) -> StatCache {
        StatCache {
            entries: Mutex::new(files.into_iter().map(|(p, s, d)| (p, (s, d))).collect()),
            absent: Mutex::new(absent.into_iter().collect()),
            ..StatCache::default()
        }
    }

    /// Hash of the regular file at `path` (not following a final symlink),
    /// with the stamp it had. `None` if it is missing or not a regular file.
    pub fn file_hash(&self, path: &Path) -> std::io::Result<Option<(Stamp, Hash)>> {
        Ok(self.file_digest(path)?.map(|(stamp, d)| (stamp, d.hash)))
    }

    /// `file_hash` with what else was learnt from the content while hashing.
    pub fn file_digest(&self, path: &Path) -> std::io::Result<Option<(Stamp, Digest)>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let stamp = Stamp::of(&meta);
        if let Some((s, d)) = self.entries.lock().unwrap().get(path) {
            if *s == stamp {
                return Ok(Some((stamp, *d)));
            }
        }
        let digest = digest_file(path)?;
        // Only trust the pairing if the file did not change while we read it.
        let after = Stamp::of(&std::fs::symlink_metadata(path)?);
        if after != stamp {
            return Ok(None);
        }
        if stamp.is_settled(SystemTime::now()) {
            self.entries
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), (stamp, digest));
            self.mark_dirty();
        }
        Ok(Some((stamp, digest)))
    }

    /// Whether `path` is absent (lstat fails with ENOENT or ENOTDIR).
    /// `dirs` memoizes directory stamps within one validation. A directory
    /// whose stamp is unchanged since the path was last found absent in it
    /// gained no entry since: any creation, rename or link into it updates
    /// its mtime and ctime. Only settled stamps are remembered (a change
    /// within the same timestamp tick would be invisible), and only on file
    /// systems known to keep directory timestamps that way.
    fn is_absent(&self, path: &Path, dirs: &mut DirStamps) -> bool {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let before = dir.and_then(|d| self.dir_stamp(d, dirs));
        if let Some(stamp) = before {
            if self.absent.lock().unwrap().get(path) == Some(&stamp) {
                return true;
            }
        }
        let absent = matches!(std::fs::symlink_metadata(path), Err(e) if is_not_found(&e));
        match before {
            // The stamp was taken before the lookup: an entry created after
            // it changes the directory's stamp and is seen next time.
            Some(stamp) if absent && stamp.is_settled(SystemTime::now()) => {
                self.absent
                    .lock()
                    .unwrap()
                    .insert(path.to_path_buf(), stamp);
                self.mark_dirty();
            }
            _ => {}
        }
        absent
    }

    /// The stamp of directory `dir` if shortcuts through it can be trusted.
    fn dir_stamp(&self, dir: &Path, dirs: &mut DirStamps) -> Option<Stamp> {
        if let Some(known) = dirs.get(dir) {
            return *known;
        }
        let stamp = std::fs::metadata(dir)
            .ok()
            .filter(|m| m.is_dir() && self.trusts_dir_stamps(m.dev(), dir))
            .map(|m| Stamp::of(&m));
        dirs.insert(dir.to_path_buf(), stamp);
        stamp
    }

    fn trusts_dir_stamps(&self, dev: u64, dir: &Path) -> bool {
        if let Some(t) = self.dir_stamps_trusted.lock().unwrap().get(&dev) {
            return *t;
        }
        let trusted = statfs::statfs(dir)
            .is_ok_and(|fs| DIR_STAMP_FILESYSTEMS.contains(&fs.filesystem_type()));
        self.dir_stamps_trusted.lock().unwrap().insert(dev, trusted);
        trusted
    }

    /// Hash following symlinks: for the compiler binary named in key1.
    pub fn resolved_file_hash(&self, path: &Path) -> std::io::Result<Hash> {
        let real = std::fs::canonicalize(path)?;
        self.file_hash(&real)?.map(|(_, h)| h).ok_or_else(|| {
            std::io::Error::other(format!("{} changed while hashing", real.display()))
        })
    }
}

pub fn is_not_found(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// A file's content hash, and which clock macros its bytes name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub hash: Hash,
    pub time_macros: TimeMacros,
}

fn digest_file(path: &Path) -> std::io::Result<Digest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut scan = time_macros::Scanner::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        scan.feed(&buf[..n]);
    }
    Ok(Digest {
        hash: *h.finalize().as_bytes(),
        time_macros: scan.finish(),
    })
}

/// Hash of a directory's entry names and kinds, leaving out `skip` (entries
/// the compile created itself).
pub fn listing_hash(dir: &Path, skip: &dyn Fn(&OsStr) -> bool) -> std::io::Result<Hash> {
    let mut names: Vec<(Vec<u8>, u8)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip(&name) {
            continue;
        }
        let kind = entry.file_type().map(|t| kind_byte(&t)).unwrap_or(0);
        names.push((name.as_bytes().to_vec(), kind));
    }
    names.sort();
    let mut h = blake3::Hasher::new();
    for (n, k) in names {
        field(&mut h, &n);
        h.update(&[k]);
    }
    Ok(*h.finalize().as_bytes())
}

/// Hash of the crate candidates in `dir` for `stems` (each `.rlib`/`.rmeta`
/// pair once), leaving out `skip` (entries the compile created itself).
pub fn candidates_hash(
    dir: &Path,
    stems: &[Vec<u8>],
    skip: &dyn Fn(&OsStr) -> bool,
) -> std::io::Result<Hash> {
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-candidates");
    for n in candidates(dir, stems, skip)? {
        field(&mut h, &n);
    }
    Ok(*h.finalize().as_bytes())
}

/// The crate candidates in `dir` for `stems`, sorted, each once.
pub fn candidates(
    dir: &Path,
    stems: &[Vec<u8>],
    skip: &dyn Fn(&OsStr) -> bool,
) -> std::io::Result<std::collections::BTreeSet<Vec<u8>>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if skip(&name) {
            continue;
        }
        if let Some(c) = crate::compiler::rustc::candidate(name.as_bytes(), stems) {
            names.insert(c.to_vec());
        }
    }
    Ok(names)
}

fn kind_byte(t: &std::fs::FileType) -> u8 {
    if t.is_symlink() {
        3
    } else if t.is_dir() {
        2
    } else if t.is_file() {
        1
    } else {
        4
    }
}

/// Why a stored dep set no longer holds; `cachefs explain` will show these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: PathBuf,
    pub expected: String,
}

/// Directory stamps seen during one validation (`None`: not to be trusted).
type DirStamps = HashMap<PathBuf, Option<Stamp>>;

/// Checks every dep against the disk; the first that differs is returned.
pub fn validate(set: &DepSet, cache: &StatCache) -> Result<(), Mismatch> {
    let mut dirs = DirStamps::new();
    for dep in &set.deps {
        let path = Path::new(OsStr::from_bytes(&dep.path));
        if !holds(path, &dep.state, cache, &mut dirs) {
            return Err(Mismatch {
                path: path.to_path_buf(),
                expected: describe(path, &dep.state),
            });
        }
    }
    Ok(())
}

/// A dep state for messages: a search directory's candidates by name.
fn describe(path: &Path, state: &DepState) -> String {
    match state {
        DepState::Candidates { stems, .. } => {
            let names = candidates(path, stems, &|_| false).unwrap_or_default();
            let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
            format!(
                "the same candidates for {} (now: {})",
                stems.iter().map(|s| text(s)).collect::<Vec<_>>().join(" "),
                names.iter().map(|s| text(s)).collect::<Vec<_>>().join(" ")
            )
        }
        _ => state.to_string(),
    }
}

fn holds(path: &Path, state: &DepState, cache: &StatCache, dirs: &mut DirStamps) -> bool {
    match state {
        DepState::File(hash) => matches!(cache.file_hash(path), Ok(Some((_, h))) if h == *hash),
        DepState::Absent => cache.is_absent(path, dirs),
        DepState::Exists(kind) => {
            matches!(std::fs::symlink_metadata(path), Ok(m) if Kind::of(&m) == *kind)
        }
        DepState::Symlink(target) => {
            matches!(std::fs::read_link(path), Ok(t) if t.as_os_str().as_bytes() == target.as_slice())
        }
        DepState::Listing(hash) => matches!(listing_hash(path, &|_| false), Ok(h) if h == *hash),
        DepState::Candidates { stems, hash } => {
            matches!(candidates_hash(path, stems, &|_| false), Ok(h) if h == *hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str], env: &[(&str, &str)]) -> CompileRequest {
        CompileRequest {
            compiler: b"/usr/bin/gcc".to_vec(),
            argv: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            cwd: b"/src".to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            run_id: None,
        }
    }

    #[test]
    fn key1_ignores_volatile_env_and_argv0_dir() {
        let h = [7u8; 32];
        let a = key1(
            &req(
                &["gcc", "-c", "x.c"],
                &[("MAKEFLAGS", "-j2 --jobserver-auth=3,4"), ("CPATH", "/a")],
            ),
            &h,
        );
        let b = key1(
            &req(
                &["/usr/bin/gcc", "-c", "x.c"],
                &[
                    ("CPATH", "/a"),
                    ("PWD", "/x"),
                    ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
                    ("XDG_SESSION_ID", "4"),
                    ("GNOME_TERMINAL_SCREEN", "/org/gnome/Terminal/screen/1"),
                ],
            ),
            &h,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn manifest_add_reports_the_results_it_no_longer_reaches() {
        let set = |dep: u8, result: u8| DepSet {
            deps: vec![Dep {
                path: vec![dep],
                state: DepState::Absent,
            }],
            result: [result; 32],
        };
        let mut m = Manifest::default();
        assert!(m.add(set(1, 10)).is_empty());
        assert!(m.add(set(2, 20)).is_empty());
        // Same deps, new result: the old one is dropped.
        assert_eq!(m.add(set(1, 11)), vec![[10; 32]]);
        // Same deps and the same result: nothing is lost.
        assert!(m.add(set(1, 11)).is_empty());
        let mut last = Vec::new();
        for i in 0..MAX_DEP_SETS as u8 {
            last = m.add(set(100 + i, 20));
        }
        // Sets 2 and 1 fell off the end; result 20 is still referenced.
        assert_eq!(last, vec![[11; 32]]);
        assert_eq!(m.sets.len(), MAX_DEP_SETS);
        assert!(m.sets.iter().all(|s| s.result == [20; 32]));
    }

    #[test]
    fn key1_of_a_native_cpu_compile_is_the_cpu_s() {
        let h = [7u8; 32];
        let native = req(&["gcc", "-O2", "-march=native", "-c", "x.c"], &[]);
        let (cpu_a, cpu_b) = (Some([1u8; 32]), Some([2u8; 32]));
        assert_eq!(key1_on(&native, &h, cpu_a), key1_on(&native, &h, cpu_a));
        assert_ne!(key1_on(&native, &h, cpu_a), key1_on(&native, &h, cpu_b));
        assert_eq!(key1(&native, &h), key1(&native, &h));
        let generic = req(&["gcc", "-O2", "-c", "x.c"], &[]);
        assert_eq!(key1(&generic, &h), key1_on(&generic, &h, None));
    }

    #[test]
    fn key1_sees_flags_env_and_argv0_name() {
        let h = [7u8; 32];
        let base = key1(&req(&["gcc", "-c", "x.c"], &[]), &h);
        assert_ne!(base, key1(&req(&["gcc", "-O2", "-c", "x.c"], &[]), &h));
        assert_ne!(
            base,
            key1(&req(&["gcc", "-c", "x.c"], &[("CPATH", "/a")]), &h)
        );
        assert_ne!(base, key1(&req(&["clang", "-c", "x.c"], &[]), &h));
        assert_ne!(base, key1(&req(&["gcc", "-c", "x.c"], &[]), &[8u8; 32]));
        // Argument boundaries matter: "-c x.c" vs "-cx .c" style merges.
        assert_ne!(
            key1(&req(&["gcc", "-DA", "B"], &[]), &h),
            key1(&req(&["gcc", "-DAB"], &[]), &h)
        );
    }

    #[test]
    fn same_size_rewrite_with_old_mtime_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.h");
        std::fs::write(&p, "int a;").unwrap();
        let old = std::fs::metadata(&p).unwrap().modified().unwrap();
        let cache = StatCache::default();
        let (_, h1) = cache.file_hash(&p).unwrap().unwrap();
        std::fs::write(&p, "int b;").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (_, h2) = cache.file_hash(&p).unwrap().unwrap();
        assert_ne!(h1, h2);
    }

    /// The one-stat-per-directory shortcut for failed probes must still see
    /// a header that appears later, however it appears.
    #[test]
    fn absent_probes_see_files_created_or_renamed_into_a_settled_directory() {
        let written = tempfile::tempdir().unwrap();
        let renamed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let probe = |dir: &tempfile::TempDir| DepSet {
            deps: vec![Dep {
                path: dir.path().join("shadow.h").as_os_str().as_bytes().to_vec(),
                state: DepState::Absent,
            }],
            result: [0; 32],
        };
        let (a, b) = (probe(&written), probe(&renamed));
        let cache = StatCache::default();
        // Directory stamps are trusted only once settled.
        std::thread::sleep(Duration::from_millis(2100));
        for set in [&a, &b] {
            assert!(validate(set, &cache).is_ok());
            assert!(validate(set, &cache).is_ok());
        }
        let dev = std::fs::metadata(written.path()).unwrap().dev();
        if cache.trusts_dir_stamps(dev, written.path()) {
            assert_eq!(cache.absent.lock().unwrap().len(), 2, "shortcut in use");
        }
        std::fs::write(written.path().join("shadow.h"), "").unwrap();
        let other = elsewhere.path().join("shadow.h");
        std::fs::write(&other, "").unwrap();
        std::fs::rename(&other, renamed.path().join("shadow.h")).unwrap();
        for (set, dir) in [(&a, &written), (&b, &renamed)] {
            let m = validate(set, &cache).unwrap_err();
            assert_eq!(m.path, dir.path().join("shadow.h"));
        }
    }

    #[test]
    fn validate_checks_each_state() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.h");
        std::fs::write(&f, "x").unwrap();
        let cache = StatCache::default();
        let (_, h) = cache.file_hash(&f).unwrap().unwrap();
        let missing = dir.path().join("b.h");
        let b = |p: &Path| p.as_os_str().as_bytes().to_vec();
        let set = DepSet {
            deps: vec![
                Dep {
                    path: b(&f),
                    state: DepState::File(h),
                },
                Dep {
                    path: b(&missing),
                    state: DepState::Absent,
                },
                Dep {
                    path: b(dir.path()),
                    state: DepState::Exists(Kind::Dir),
                },
            ],
            result: [0; 32],
        };
        assert!(validate(&set, &cache).is_ok());
        std::fs::write(&missing, "").unwrap();
        assert_eq!(validate(&set, &cache).unwrap_err().path, missing);
    }
}
