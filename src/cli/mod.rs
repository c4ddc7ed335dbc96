//! The command line: one file per subcommand.

mod inspect;
pub mod lifecycle;
mod run;
mod stats;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser)]
#[command(
    name = "cachefs",
    version,
    about = "A compiler cache that keys each compile by what it was observed to touch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a build command with every compiler call it makes cached
    /// (e.g. `cachefs run make -j8`).
    Run {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Show cache statistics.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Reset the counters (after showing them).
        #[arg(long)]
        zero: bool,
    },
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
    },
    /// Why the last compile of PATH missed: which input, argument or
    /// environment variable changed.
    Explain { path: std::path::PathBuf },
    /// Run the agent in the foreground (used by `start`).
    #[command(hide = true)]
    Agent,
}

/// Runs the command line and returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    crate::logging::init_quiet();
    let result = match cli.command {
        Command::Run { command } => run::run(command),
        Command::Stats { json, zero } => stats::stats(json, zero).map(|_| 0),
        Command::Start => lifecycle::start().map(|_| 0),
        Command::Stop => lifecycle::stop().map(|_| 0),
        Command::Agent => lifecycle::agent().map(|_| 0),
        Command::Runs => inspect::runs().map(|_| 0),
        Command::Deps { path, json } => inspect::deps(&path, json).map(|_| 0),
        Command::Graph {
            run,
            format,
            under,
            no_system,
        } => inspect::graph(run, format, under, no_system).map(|_| 0),
        Command::Explain { path } => inspect::explain(&path).map(|_| 0),
    };
    result.unwrap_or_else(|e| {
        eprintln!("cachefs: {e:#}");
        1
    })
}
