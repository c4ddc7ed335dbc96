//! Logging through `log`: quiet unless RUST_LOG asks.

pub fn init_quiet() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .try_init();
}
