//! The `cachefs` binary: compile mode when the shim diverted a compiler exec
//! to us or when called as a compiler wrapper (`cachefs gcc -c x.c`,
//! `RUSTC_WRAPPER=cachefs`, `CMAKE_C_COMPILER_LAUNCHER=cachefs`), otherwise
//! the command line.

fn main() {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    if let Some(call) = cachefs::client::Call::from_wrapper_args() {
        cachefs::client::run(call);
    }
    std::process::exit(cachefs::cli::main());
}
