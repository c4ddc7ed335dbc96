//! The command line: one file per subcommand.

mod clear;
mod config;
mod doctor;
mod generate;
mod inspect;
mod lifecycle;
mod mount;
mod progress;
mod run;
mod stats;
mod summary;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser)]
#[command(
    name = "cachefs",
    version,
    about = "A compiler cache that keys each compile by what it was observed to touch",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Show cache statistics (sccache's flag; same as `cachefs stats`).
    #[arg(long, short = 's', help_heading = "sccache compatibility")]
    show_stats: bool,
    /// Reset the statistics (sccache's flag; `cachefs stats --zero`).
    #[arg(long, short = 'z', help_heading = "sccache compatibility")]
    zero_stats: bool,
    /// Start the agent (sccache's flag; same as `cachefs start`).
    #[arg(long, help_heading = "sccache compatibility")]
    start_server: bool,
    /// Stop the agent (sccache's flag; same as `cachefs stop`).
    #[arg(long, help_heading = "sccache compatibility")]
    stop_server: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a build command with every compiler call it makes cached
    /// (e.g. `cachefs run make -j8`).
    Run {
        /// Show a live line (compiles done, hits, misses) while the build
        /// runs; only when stderr is a terminal.
        #[arg(long)]
        progress: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Show cache statistics.
    Stats {
        /// Machine-readable output (fields listed in the README).
        #[arg(long)]
        json: bool,
        /// Reset the counters (after showing them).
        #[arg(long)]
        zero: bool,
    },
    /// Remove every cached result from the local cache (ccache's `-C`);
    /// statistics and a shared memcached/Redis cache are kept.
    Clear,
    /// Start the agent for this cache directory (it also starts on demand).
    Start,
    /// Stop the agent for this cache directory.
    Stop,
    /// List the recorded runs (newest first).
    Runs,
    /// Show what compile produced PATH and everything it read, looked for
    /// and did not find, listed and wrote.
    Deps {
        path: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The observed dependency graph of the last run (or of --run ID).
    Graph {
        #[arg(long)]
        run: Option<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: inspect::Format,
        /// Keep only files under DIR.
        #[arg(long, value_name = "DIR")]
        under: Option<String>,
        /// Leave out system files (/usr, /lib, /etc, /opt).
        #[arg(long)]
        no_system: bool,
        /// For a `cachefs mount` session: one node per process instead of
        /// one per build step.
        #[arg(long)]
        processes: bool,
    },
    /// Why the last compile of PATH missed: which input, argument or
    /// environment variable changed.
    Explain { path: std::path::PathBuf },
    /// Mirror SRC at MNT and record what every command run inside MNT
    /// reads, looks for, lists and writes, per process (`cachefs graph`,
    /// `deps`); `cachefs run` inside MNT caches as usual.
    Mount {
        src: std::path::PathBuf,
        mnt: std::path::PathBuf,
        /// Serve the mount in this process until Ctrl-C instead of in the
        /// background.
        #[arg(long)]
        foreground: bool,
    },
    /// Unmount a `cachefs mount` (its record is kept), or clean up a stale
    /// mount left by a killed one or by a killed agent.
    Umount { mnt: std::path::PathBuf },
    /// Print the effective settings and where each came from.
    Config,
    /// Check FUSE, namespaces, the preload shim, the agent and the store,
    /// and say what to fix.
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
    /// Run the agent in the foreground (used by `start`).
    #[command(hide = true)]
    Agent,
}

/// Runs the command line and returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    crate::logging::init_quiet();
    let result = match cli.command {
        Some(command) => dispatch(command),
        None => sccache_flags(&cli),
    };
    result.unwrap_or_else(|e| {
        eprintln!("cachefs: {e:#}");
        1
    })
}

/// Commands that only print: piped into `head`, they end quietly, as `cat`
/// does, instead of panicking on the closed pipe (Rust ignores SIGPIPE).
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Stats { .. }
            | Command::Config
            | Command::Doctor
            | Command::Completions { .. }
            | Command::Man
            | Command::Runs
            | Command::Deps { .. }
            | Command::Graph { .. }
            | Command::Explain { .. }
    )
}

fn dispatch(command: Command) -> anyhow::Result<i32> {
    if prints_only(&command) {
        // SAFETY: restoring a default disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match command {
        Command::Run { progress, command } => run::run(command, progress),
        Command::Stats { json, zero } => stats::stats(json, zero).map(|_| 0),
        Command::Clear => clear::clear().map(|_| 0),
        Command::Start => lifecycle::start().map(|_| 0),
        Command::Stop => lifecycle::stop().map(|_| 0),
        Command::Config => config::print().map(|_| 0),
        Command::Doctor => Ok(doctor::doctor()),
        Command::Completions { shell } => generate::completions(shell).map(|_| 0),
        Command::Man => generate::man().map(|_| 0),
        Command::Agent => lifecycle::agent().map(|_| 0),
        Command::Runs => inspect::runs().map(|_| 0),
        Command::Mount {
            src,
            mnt,
            foreground,
        } => mount::mount(&src, &mnt, foreground).map(|_| 0),
        Command::Umount { mnt } => mount::umount(&mnt).map(|_| 0),
        Command::Deps { path, json } => inspect::deps(&path, json).map(|_| 0),
        Command::Graph {
            run,
            format,
            under,
            no_system,
            processes,
        } => inspect::graph(run, format, under, no_system, processes).map(|_| 0),
        Command::Explain { path } => inspect::explain(&path).map(|_| 0),
    }
}

/// `--show-stats`, `--zero-stats`, `--start-server`, `--stop-server`, as
/// sccache users type them.
fn sccache_flags(cli: &Cli) -> anyhow::Result<i32> {
    if cli.start_server {
        lifecycle::start()?;
    }
    if cli.show_stats {
        stats::stats(false, cli.zero_stats)?;
    } else if cli.zero_stats {
        stats::zero()?;
    }
    if cli.stop_server {
        lifecycle::stop()?;
    }
    Ok(0)
}
