//! Logging through `log`: quiet unless RUST_LOG asks; to the file named by
//! `CACHEFS_LOG` (or `log` in the config file) when set, else stderr.

pub fn init_quiet() {
    let log_file = crate::config::Config::from_env().ok().and_then(|c| c.log);
    init_to(log_file.as_deref());
}

/// For callers that have read the configuration already (the client: a hit
/// should not read it twice).
pub fn init_to(log_file: Option<&std::path::Path>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    builder.format_timestamp_millis();
    if let Some(path) = log_file {
        match std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            Ok(f) => {
                builder.target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => eprintln!("cachefs: cannot open the log file {}: {e}", path.display()),
        }
    }
    let _ = builder.try_init();
}
