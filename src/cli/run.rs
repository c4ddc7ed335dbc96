//! `cachefs run CMD…`: run a build with the shim preloaded so that every
//! compiler call in it goes through the cache, then print one summary line.

use crate::client::start_agent;
use crate::config::{Config, ENV_CLIENT, ENV_DIR, ENV_RUN_ID};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(command: Vec<OsString>, progress: bool) -> Result<i32> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // A bad setting must not cost the user their build.
            eprintln!("cachefs: building without the cache: {e}");
            return run_plain(&command);
        }
    };
    let exe = std::env::current_exe().context("cannot find the cachefs executable")?;
    let shim = find_shim(&exe, &config.dir)?;
    let run_id = crate::runlog::new_run_id();
    let agent_up = match start_agent(&config) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("cachefs: building without the cache: {e:#}");
            false
        }
    };
    // What the shim runs in place of a compiler: `cachefs` beside this
    // binary (`cachefs-cli`), which holds the client only and so starts
    // faster; else this binary, whose compile mode is the same client.
    let client = crate::client::sibling_binary(&exe, crate::client::CLIENT_NAME)
        .unwrap_or_else(|| exe.clone());
    // `cachefs run -- gcc …`: the command is itself a compile, which the
    // shim (diverting only what the command starts) would never see.
    let is_compile = agent_up
        && Path::new(&command[0])
            .file_name()
            .is_some_and(|n| cachefs_preload::is_cached_program_name(n.as_encoded_bytes()));
    let mut cmd = if is_compile {
        let mut c = Command::new(&client);
        c.args(&command);
        c
    } else {
        let mut c = Command::new(&command[0]);
        c.args(&command[1..]);
        c
    };
    if agent_up {
        cmd.env("LD_PRELOAD", preload_value(&shim))
            .env(ENV_CLIENT, &client)
            .env(ENV_DIR, &config.dir)
            .env(ENV_RUN_ID, &run_id)
            .env(
                crate::entry::location::ENV_RUN_DIR,
                std::env::current_dir()?,
            );
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", command[0].to_string_lossy()))?;
    let status = if progress && agent_up {
        super::progress::wait_showing_progress(&mut child, &config, &run_id)?
    } else {
        child.wait()?
    };
    if agent_up {
        super::summary::print_summary(&config, &run_id, &command);
    }
    let _ = std::fs::remove_file(config.dir.join(format!("warned-{run_id}")));
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn run_plain(command: &[OsString]) -> Result<i32> {
    let status = Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("cannot run {}", command[0].to_string_lossy()))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The shim lives next to the binary (cargo's target dir) or in the installed
/// lib dir; failing that, the copy built into this binary is written into the
/// cache directory (`cargo install` ships binaries only).
pub(super) fn find_shim(exe: &Path, cache_dir: &Path) -> Result<PathBuf> {
    match crate::client::installed_shim(exe) {
        Some(found) => Ok(found),
        None => extract_shim(cache_dir),
    }
}

fn extract_shim(cache_dir: &Path) -> Result<PathBuf> {
    let hash = blake3::hash(cachefs_preload::SHIM_SO).to_hex();
    let path = cache_dir
        .join("lib")
        .join(format!("libcachefs_preload-{}.so", &hash[..16]));
    if path.is_file() {
        return Ok(path);
    }
    let parent = path.parent().expect("has a parent");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, cachefs_preload::SHIM_SO)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write the preload library to {}", path.display()))?;
    Ok(path)
}

fn preload_value(shim: &Path) -> OsString {
    let mut value = shim.as_os_str().to_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        value.push(" ");
        value.push(existing);
    }
    value
}
