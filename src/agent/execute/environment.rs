//! What of the environment a remote run is sent, and the check that it read nothing else.

use super::*;

/// What the action's environment holds: every variable a compile seen by this agent read (its
/// shim reported it), those the earlier compile of the call read, those gcc documents, those
/// read inside glibc (loader, locale), and PATH; then the shim, preloaded in report mode, and
/// the scratch directory. Nothing else of the user's environment leaves the machine; a compile
/// that reads a variable not sent is caught by its reports (`check_reads`).
pub(super) fn environment(
    deps: &[Dep],
    learnt: &BTreeSet<Vec<u8>>,
    env: &[(Vec<u8>, Vec<u8>)],
    shim: &Path,
) -> Result<BTreeMap<String, String>, String> {
    let mut names: BTreeSet<&[u8]> = learnt.iter().map(Vec::as_slice).collect();
    names.extend(GCC_READS.iter().map(|n| n.as_bytes()));
    names.extend(
        deps.iter()
            .filter(|d| is_env(&d.state))
            .map(|d| d.path.as_slice()),
    );
    let patterns = [env::UNOBSERVED, env::LOCALE];
    let mut out = BTreeMap::new();
    for (k, v) in env {
        let wanted = names.contains(k.as_slice()) || patterns.iter().any(|p| env::matches(p, k));
        if wanted && !env::is_volatile_env(k) && k.as_slice() != b"LD_PRELOAD" {
            out.entry(text(k)?).or_insert(text(v)?);
        }
    }
    out.insert("LD_PRELOAD".into(), text(shim.as_os_str().as_bytes())?);
    out.insert("CACHEFS_VIEW".into(), "1".into());
    out.insert("TMPDIR".into(), SCRATCH.into());
    Ok(out)
}

/// The variables gcc, its programs and binutils document reading (gcc(1) "Environment",
/// ld(1)), sent whenever set, so that a first compile rarely reads one not sent.
pub(super) const GCC_READS: [&str; 23] = [
    "PATH",
    // getpwd(): the working directory's spelling for debug info.
    "PWD",
    "SOURCE_DATE_EPOCH",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
    "LIBRARY_PATH",
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "DEPENDENCIES_OUTPUT",
    "SUNPRO_DEPENDENCIES",
    "GCC_COMPARE_DEBUG",
    "GCC_COLORS",
    "GCC_URLS",
    "TERM_URLS",
    "COLUMNS",
    "GCC_EXTRA_DIAGNOSTIC_OUTPUT",
    "LD_RUN_PATH",
    "COLLECT_GCC_OPTIONS",
    "GNUTARGET",
    "LDEMULATION",
    "COLLECT_NO_DEMANGLE",
];

/// The variables the remote compile's shim reported reading (`observe::env`'s reports in
/// the replayed record): each must have been sent, or be unset here too; and the shim must
/// have loaded and seen every read. A variable read but not sent is learnt for the next run.
pub(super) fn check_reads(
    record: &Record,
    sent: &BTreeMap<String, String>,
    env: &[(Vec<u8>, Vec<u8>)],
    learnt: &std::sync::Mutex<BTreeSet<Vec<u8>>>,
) -> Result<(), String> {
    let mut probe = record.clone();
    let reads = crate::observe::env::take_reports(&mut probe);
    if !reads.observed {
        return Err("environment unobserved: the shim did not load remotely".into());
    }
    if reads.unseen {
        return Err("environment unobserved: a program read it where the shim cannot see".into());
    }
    let missing: Vec<&Vec<u8>> = reads
        .names
        .iter()
        .filter(|n| {
            // Volatile variables are in no key (jobserver, terminal, ours).
            let here = env::value(env, n).is_some() && !env::is_volatile_env(n);
            let was_sent = std::str::from_utf8(n).is_ok_and(|n| sent.contains_key(n));
            here && !was_sent
        })
        .collect();
    if let Some(first) = missing.first() {
        let name = String::from_utf8_lossy(first).into_owned();
        learnt
            .lock()
            .unwrap()
            .extend(missing.iter().map(|n| n.to_vec()));
        return Err(format!(
            "read a variable not sent: {name} (sent from now on)"
        ));
    }
    learnt.lock().unwrap().extend(reads.names);
    Ok(())
}

/// The shim the call was started with (`LD_PRELOAD`), shipped so that the remote compile
/// reports what it reads of its environment as the local one does.
pub(super) fn shim_of(env: &[(Vec<u8>, Vec<u8>)]) -> Option<PathBuf> {
    let preload = env::value(env, b"LD_PRELOAD")?;
    preload
        .split(|&b| b == b' ' || b == b':')
        .map(|p| Path::new(OsStr::from_bytes(p)))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"libcachefs_preload"))
        })
        .map(Path::to_path_buf)
}
