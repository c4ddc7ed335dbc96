//! The `cachefs` binary: compile mode when the shim diverted a compiler exec
//! to us, otherwise the command line.

fn main() {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::logging::init_quiet();
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    std::process::exit(cachefs::cli::main());
}
