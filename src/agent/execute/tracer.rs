//! The tracer a remote run is started under: its command line and its own files.

use super::*;

/// The tracer's command line around the compile's own: argv[0] as the build gave it,
/// found along the action's PATH as it was here.
pub(super) fn command(tracer: &Path, argv: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let mut cmd: Vec<String> = [
        &tracer.to_string_lossy(),
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=%file,getdents64,chdir,fchdir",
        "-o",
        TRACE,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for a in argv {
        cmd.push(text(a)?);
    }
    Ok(cmd)
}

pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The shared libraries `program` loads, as the loader here finds them (`ldd`).
pub(super) fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("cannot run ldd on {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!("ldd {} failed", program.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, right)) => right.split(" (").next()?,
                None => l.split(" (").next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path.trim()))
        })
        .collect())
}
