//! The `cachefs-cli` binary: the command line (`run`, `stats`, `agent`, …),
//! which `cachefs` execs for anything that is not a compile. It also has
//! compile mode, so that a shim pointed at it still works.

fn main() {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    if let Some(call) = cachefs::client::Call::from_wrapper_args() {
        cachefs::client::run(call);
    }
    std::process::exit(cachefs::cli::main());
}
