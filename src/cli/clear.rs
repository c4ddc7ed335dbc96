//! `cachefs clear`: empty the local cache (ccache's `-C`).

use super::stats::human;
use crate::client::{request, start_agent};
use crate::config::Config;
use crate::protocol::{Request, Response};
use anyhow::{bail, Result};

pub fn clear() -> Result<()> {
    let config = Config::from_env()?;
    // The agent owns the index (redb allows one process), so it does the work.
    start_agent(&config)?;
    match request(&config, &Request::Clear)? {
        Response::Cleared { entries, bytes } => {
            println!(
                "Cleared {} ({entries} cached results, {}); statistics kept (`cachefs stats --zero` resets them)",
                config.dir.display(),
                human(bytes)
            );
            Ok(())
        }
        Response::Error { message } => {
            bail!("{message} (cache directory {})", config.dir.display())
        }
        other => bail!("the agent answered a clear request with {other:?}"),
    }
}
