//! `cachefs start`, `cachefs stop` and the hidden `cachefs agent`.

use crate::client::{process_running, start_agent, START_TIMEOUT};
use crate::config::Config;
use crate::protocol::{self, Request, Response};
use anyhow::Result;
use std::os::unix::net::UnixStream;
use std::time::Instant;

pub fn start() -> Result<()> {
    let config = Config::from_env()?;
    let pid = start_agent(&config)?;
    eprintln!("cachefs: agent {pid} serving {}", config.dir.display());
    Ok(())
}

pub fn stop() -> Result<()> {
    let config = Config::from_env()?;
    match UnixStream::connect(config.socket_path()) {
        Ok(mut s) => {
            protocol::write_frame(&mut s, &Request::Shutdown)?;
            let pid = match protocol::read_frame::<Response, _>(&mut s) {
                Ok(Response::Pong { pid }) => Some(pid),
                _ => None,
            };
            // The agent exits right after answering. Wait for the process
            // itself to be gone, not just its socket: a caller that empties
            // the cache directory next must not race the old agent's writes.
            let gone = || match pid {
                Some(pid) => !process_running(pid),
                None => UnixStream::connect(config.socket_path()).is_err(),
            };
            let deadline = Instant::now() + START_TIMEOUT;
            while !gone() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            eprintln!("cachefs: agent stopped");
        }
        Err(_) => eprintln!("cachefs: no agent running for {}", config.dir.display()),
    }
    detach_dead_agents_mounts(&config);
    Ok(())
}

/// A killed agent leaves its FUSE mounts stale (every access ENOTCONN)
/// until the next agent of the cache directory starts; `stop` is where a
/// user cleans up after one, so it detaches them too.
fn detach_dead_agents_mounts(config: &Config) {
    use crate::fuse_mounts::place;
    let Ok(base) = place::base_dir() else {
        return;
    };
    for mnt in place::clean_dead_agents(&place::cache_dir_mounts(&base, &config.dir)) {
        eprintln!(
            "cachefs: detached {}, left by a killed agent",
            mnt.display()
        );
    }
}

pub fn agent() -> Result<()> {
    let config = Config::from_env()?;
    if !crate::agent::serve(config)? {
        log::info!("another agent already serves this cache directory");
    }
    Ok(())
}
