//! The environment a compile reads, observed like the files it reads. Inside a compile that runs in
//! an observation view (`CACHEFS_VIEW=1`, which the client sets for that compile only), each
//! variable a process looks up with getenv or secure_getenv is told to the view's mirror as a
//! lookup of a name that does not exist: `/usr/.cachefs-env=NAME`, the bytes of NAME outside
//! `[A-Za-z0-9_]` written as `%XX`. The mirror records it as a failed probe (once per view: the
//! kernel caches the negative entry, so a repeated read costs one cached lookup), and the agent
//! turns the probes into the compile's environment dependencies (`observe::env`).
//!
//! What the shim cannot see is said too, as `NAME` = `*`, which keys the compile by its whole
//! environment: a program started without the shim (statically linked, or given an `LD_PRELOAD`
//! without it), a script (its interpreter may walk `environ`, as a shell does), a name too long to
//! report. A view process also reports an empty name when it loads: a compile whose record has none
//! ran without the shim at all, and is keyed by its whole environment as well.

use core::ffi::c_char;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::cstr::{bytes, entries};
use crate::sys::{self, Envp};

/// The prefix of every report; `/usr` is bound from the mirror in every view.
pub const REPORT_PREFIX: &[u8] = b"/usr/.cachefs-env=";
/// `CACHEFS_VIEW=1`: this process is part of a compile observed in a view.
pub const VIEW: &[u8] = b"CACHEFS_VIEW=";
/// The name reported for reads the shim cannot see.
pub const UNSEEN: &[u8] = b"*";
/// Reports longer than this (a file name's limit) are reported as `UNSEEN`.
const MAX_REPORT: usize = 255;

/// Whether this process is in a view: 0 not yet known, 1 no, 2 yes. Known from the environment the
/// process started with, the first time it is asked (getenv may run before the shim's constructor).
static IN_VIEW: AtomicU8 = AtomicU8::new(0);

/// Whether this process is part of an observed compile.
pub fn in_view() -> bool {
    match IN_VIEW.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: environ is libc's, valid for the life of the process.
            let yes = unsafe { crate::env::lookup(sys::environ_now(), VIEW) } == Some(b"1");
            IN_VIEW.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        known => known == 2,
    }
}

/// getenv(3) as glibc does it: the value of the first `NAME=` entry of `environ`, or NULL (also for
/// an empty name). Told to the mirror when in a view.
///
/// # Safety
/// `name` is NULL or a valid string.
pub unsafe fn getenv(name: *const c_char) -> *mut c_char {
    if name.is_null() {
        return core::ptr::null_mut();
    }
    let name = bytes(name);
    let value = value_of(sys::environ_now(), name);
    if in_view() {
        report(name);
    }
    value.map_or(core::ptr::null_mut(), |v| v.cast_mut())
}

/// The value of `name` in `envp` (a pointer into the entry), or None.
///
/// # Safety
/// `envp` is NULL or a valid environment array.
unsafe fn value_of(envp: Envp, name: &[u8]) -> Option<*const c_char> {
    if name.is_empty() {
        return None;
    }
    entries(envp).find_map(|e| {
        let entry = bytes(e);
        (entry.len() > name.len() && entry.starts_with(name) && entry[name.len()] == b'=')
            .then(|| e.add(name.len() + 1))
    })
}

/// Tells the mirror that `name` was read. errno is left as it was: getenv never sets it.
pub fn report(name: &[u8]) {
    // Room for the prefix and a file name (MAX_REPORT): getenv may run on a small thread stack.
    let mut path = [0u8; "/usr/".len() + MAX_REPORT + 1];
    let len = report_path(name, &mut path)
        .unwrap_or_else(|| report_path(UNSEEN, &mut path).expect("the unseen report fits"));
    path[len] = 0;
    let saved = sys::errno();
    // SAFETY: a NUL-terminated path; the answer does not matter, only that the mirror saw it.
    unsafe { sys::access(path.as_ptr().cast(), sys::F_OK) };
    sys::set_errno(saved);
}

/// Writes the report path of `name` into `out` (not NUL-terminated); its length, or None when it
/// does not fit a file name.
pub fn report_path(name: &[u8], out: &mut [u8]) -> Option<usize> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.get_mut(..REPORT_PREFIX.len())?
        .copy_from_slice(REPORT_PREFIX);
    let mut n = REPORT_PREFIX.len();
    for &b in name {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || name == UNSEEN;
        let piece: &[u8] = if plain {
            &[b]
        } else {
            &[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]
        };
        if n + piece.len() - "/usr/".len() > MAX_REPORT || n + piece.len() >= out.len() {
            return None;
        }
        out[n..n + piece.len()].copy_from_slice(piece);
        n += piece.len();
    }
    Some(n)
}

/// What a file is to exec, by its first bytes and program headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Exec {
    /// A dynamically linked ELF program: the loader maps the shim into it.
    Dynamic,
    /// A statically linked one, a script, or anything else: the shim will not see what it reads.
    Unseen,
}

/// Reads the head of `path` to tell whether the shim will be loaded into it.
///
/// # Safety
/// `path` is a valid string.
pub unsafe fn exec_kind(path: *const c_char) -> Exec {
    let fd = sys::open(path, sys::O_RDONLY | sys::O_CLOEXEC);
    if fd < 0 {
        // The exec itself will fail (or is a path we cannot read): nothing runs unseen.
        return Exec::Dynamic;
    }
    let mut head = [0u8; 64];
    let got = sys::pread(fd, head.as_mut_ptr(), head.len(), 0);
    let kind = match usize::try_from(got) {
        Ok(n) => classify(&head[..n], |buf, at| {
            usize::try_from(sys::pread(fd, buf.as_mut_ptr(), buf.len(), at as i64)).ok()
        }),
        Err(_) => Exec::Dynamic,
    };
    sys::close(fd);
    kind
}

/// Classifies a program by its first bytes; `read_at` reads its program headers.
pub fn classify(head: &[u8], mut read_at: impl FnMut(&mut [u8], u64) -> Option<usize>) -> Exec {
    const PT_INTERP: u32 = 3;
    if !head.starts_with(b"\x7fELF") || head.len() < 64 {
        return Exec::Unseen;
    }
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]) as usize;
    let (phoff, phentsize, phnum) = match head[4] {
        2 => (
            u64::from_le_bytes(head[32..40].try_into().expect("8 bytes")),
            u16_at(54),
            u16_at(56),
        ),
        1 => (
            u32::from_le_bytes(head[28..32].try_into().expect("4 bytes")) as u64,
            u16_at(42),
            u16_at(44),
        ),
        _ => return Exec::Unseen,
    };
    let mut buf = [0u8; 4096];
    if phentsize < 4 || phentsize * phnum > buf.len() {
        return Exec::Unseen;
    }
    let table = &mut buf[..phentsize * phnum];
    if read_at(table, phoff) != Some(table.len()) {
        return Exec::Unseen;
    }
    let has_interp = table
        .chunks_exact(phentsize)
        .any(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP);
    if has_interp {
        Exec::Dynamic
    } else {
        Exec::Unseen
    }
}

/// Whether `envp` hands the next program the shim that this process runs with: the same
/// `LD_PRELOAD` (or none, which the exec hook re-injects) and `CACHEFS_VIEW` still 1.
///
/// # Safety
/// `envp` is NULL or a valid environment array.
pub unsafe fn passes_the_shim_on(envp: Envp, own_preload: Option<&[u8]>) -> bool {
    let preload = crate::env::lookup(envp, b"LD_PRELOAD=");
    let view = crate::env::lookup(envp, VIEW);
    (preload.is_none() || preload == own_preload) && view.is_none_or(|v| v == b"1")
}

/// The exec hook's part, in a view: says `*` when the next program runs unseen.
///
/// # Safety
/// `path` is NULL or a valid string; `envp` as for execve.
pub unsafe fn check_exec(path: *const c_char, envp: Envp, own_preload: Option<&[u8]>) {
    let unseen = !passes_the_shim_on(envp, own_preload)
        || (!path.is_null() && exec_kind(path) == Exec::Unseen);
    if unseen {
        report(UNSEEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::PATH_MAX;

    fn report_of(name: &[u8]) -> Option<String> {
        let mut out = [0u8; PATH_MAX];
        report_path(name, &mut out).map(|n| String::from_utf8(out[..n].to_vec()).unwrap())
    }

    #[test]
    fn names_are_reported_as_one_file_name() {
        assert_eq!(report_of(b"CPATH").unwrap(), "/usr/.cachefs-env=CPATH");
        assert_eq!(report_of(b"a/b=c").unwrap(), "/usr/.cachefs-env=a%2Fb%3Dc");
        assert_eq!(report_of(b"").unwrap(), "/usr/.cachefs-env=");
        assert_eq!(report_of(UNSEEN).unwrap(), "/usr/.cachefs-env=*");
        let longest = vec![b'X'; MAX_REPORT - ".cachefs-env=".len()];
        assert!(report_of(&longest).is_some());
        let too_long = vec![b'X'; longest.len() + 1];
        assert!(report_of(&too_long).is_none());
    }

    #[test]
    fn value_is_found_as_getenv_finds_it() {
        let (_o, env) = crate::test_util::envp(&["A=1", "AB=2", "B", "A=3", "C="]);
        let get =
            |n: &str| unsafe { value_of(env.as_ptr(), n.as_bytes()).map(|p| bytes(p).to_vec()) };
        assert_eq!(get("A"), Some(b"1".to_vec()));
        assert_eq!(get("AB"), Some(b"2".to_vec()));
        assert_eq!(get("B"), None);
        assert_eq!(get("C"), Some(Vec::new()));
        assert_eq!(get(""), None);
    }

    fn kind_of(path: &str) -> Exec {
        let c = std::ffi::CString::new(path).unwrap();
        unsafe { exec_kind(c.as_ptr()) }
    }

    #[test]
    fn dynamic_programs_are_seen_and_scripts_are_not() {
        assert_eq!(kind_of("/bin/sh"), Exec::Dynamic);
        assert_eq!(kind_of("/usr/bin/gcc"), Exec::Dynamic);
        let script = std::env::temp_dir().join(format!("cachefs-env-{}.sh", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(kind_of(script.to_str().unwrap()), Exec::Unseen);
        std::fs::remove_file(&script).unwrap();
    }

    #[test]
    fn a_static_program_is_unseen() {
        // An ELF header with one program header, PT_LOAD only.
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = 2;
        head[32..40].copy_from_slice(&64u64.to_le_bytes());
        head[54..56].copy_from_slice(&56u16.to_le_bytes());
        head[56..58].copy_from_slice(&1u16.to_le_bytes());
        let table = |ptype: u32| {
            move |buf: &mut [u8], at: u64| {
                assert_eq!(at, 64);
                buf.fill(0);
                buf[..4].copy_from_slice(&ptype.to_le_bytes());
                Some(buf.len())
            }
        };
        assert_eq!(classify(&head, table(1)), Exec::Unseen);
        assert_eq!(classify(&head, table(3)), Exec::Dynamic);
        assert_eq!(classify(b"\x7fEL", table(3)), Exec::Unseen);
    }

    #[test]
    fn an_exec_keeps_the_shim_only_with_the_same_preload_and_view() {
        let own = Some(&b"/lib/shim.so"[..]);
        let passes = |vars: &[&str]| {
            let (_o, env) = crate::test_util::envp(vars);
            unsafe { passes_the_shim_on(env.as_ptr(), own) }
        };
        assert!(passes(&["LD_PRELOAD=/lib/shim.so", "CACHEFS_VIEW=1"]));
        assert!(passes(&["PATH=/bin"]), "missing ones are re-injected");
        assert!(!passes(&["LD_PRELOAD=/other.so"]));
        assert!(!passes(&["CACHEFS_VIEW=0"]));
    }
}
