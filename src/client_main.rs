//! The `cachefs-client` binary: what the shim runs in place of a compiler
//! under `cachefs run`. The same client as `cachefs`'s compile mode, in a
//! binary that links nothing else (no command line, store, or mirror): every
//! compile of a build starts it, and on this project's VM each page the
//! loader maps costs a fault of ~10 µs (measured in DESIGN.md, "Hit path").

fn main() {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    eprintln!(
        "cachefs-client: runs only in place of a compiler under `cachefs run`; \
         to cache one compile by hand, use `cachefs gcc …`"
    );
    std::process::exit(2);
}
