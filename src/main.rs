//! The `cachefs` binary users and builds start: compile mode when the shim
//! diverted a compiler exec to it or when called as a compiler wrapper
//! (`cachefs gcc -c x.c`, `RUSTC_WRAPPER=cachefs`,
//! `CMAKE_C_COMPILER_LAUNCHER=cachefs`); anything else is the command line,
//! which lives in `cachefs-cli` beside it. Every compile of a build starts
//! this binary, so it links the client only: on this project's VM each page
//! the loader maps costs a fault of ~10 µs (DESIGN.md, "Hit path").

use std::os::unix::process::CommandExt;

fn main() {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    if let Some(call) = cachefs::client::Call::from_wrapper_args() {
        cachefs::client::run(call);
    }
    let cli = match cachefs::client::cli_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("cachefs: {e}");
            std::process::exit(2);
        }
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "cachefs".into());
    let err = std::process::Command::new(&cli)
        .arg0(argv0)
        .args(args)
        .exec();
    eprintln!(
        "cachefs: cannot run {}: {err}; reinstall with scripts/install.sh",
        cli.display()
    );
    std::process::exit(2);
}
