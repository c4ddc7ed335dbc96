//! `cachefs config`: the effective settings and where each came from.

use crate::config::Config;
use anyhow::Result;

pub fn print() -> Result<()> {
    let config = Config::from_env()?;
    match &config.file {
        Some(f) if f.is_file() => println!("config file: {}", f.display()),
        Some(f) => println!("config file: {} (not present)", f.display()),
        None => println!("config file: none (no HOME or XDG_CONFIG_HOME)"),
    }
    let width = config
        .origins
        .iter()
        .map(|(_, v, _)| v.len())
        .max()
        .unwrap_or(0);
    for (key, value, source) in &config.origins {
        println!("{key:<13} {value:<width$}  ({source})");
    }
    Ok(())
}
