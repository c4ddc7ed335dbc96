//! `cachefs runs`, `deps`, `graph` and `explain`: reading the run logs the
//! agent wrote (no agent needed).

use crate::config::Config;
use crate::entry::relocate;
use crate::runlog::graph::{self, Filter};
use crate::runlog::{self, CompileRecord, MissReason};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Json,
    Dot,
    Svg,
}

pub fn runs() -> Result<()> {
    let config = Config::from_env()?;
    let ids = runlog::list_ids(&config.dir);
    if ids.is_empty() {
        println!(
            "no runs recorded in {} yet: build with `cachefs run …`",
            config.dir.display()
        );
    }
    for id in ids.iter().rev() {
        let run = runlog::load(&config.dir, id).map_err(|e| anyhow!(e))?;
        let count = |o: &str| run.compiles.iter().filter(|c| c.outcome == o).count();
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(run.started_unix_ms),
        );
        if run.is_mount() {
            println!(
                "{id}  {when}  {} processes observed  {}",
                run.compiles.len(),
                run.command.join(" ")
            );
            continue;
        }
        println!(
            "{id}  {when}  {} compiles ({} hits, {} misses)  {}  in {}",
            run.compiles.len(),
            count("hit"),
            count("miss"),
            run.command.join(" "),
            run.cwd
        );
    }
    Ok(())
}

/// An absolute, lexically clean path as the compile's records name it.
fn absolute(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))?;
    let real = abs.canonicalize().unwrap_or(abs);
    Ok(real.to_string_lossy().into_owned())
}

fn writer_of(config: &Config, path: &Path) -> Result<(runlog::RunRecord, usize, String)> {
    let target = absolute(path)?;
    let found = runlog::last_writer(&config.dir, &target).or_else(|| {
        // A source file of a `cachefs mount`, recorded under its mountpoint.
        let shown = runlog::mount_path_of(&config.dir, &target)?;
        runlog::last_writer(&config.dir, &shown)
    });
    let (run, i) = found.ok_or_else(|| {
        anyhow!("no recorded compile wrote {target}: build it with `cachefs run` first (the last {} runs are kept)", runlog::KEEP_RUNS)
    })?;
    Ok((run, i, target))
}

pub fn deps(path: &Path, json: bool) -> Result<()> {
    let config = Config::from_env()?;
    let (run, i, _) = writer_of(&config, path)?;
    let c = &run.compiles[i];
    let step = run.is_mount().then(|| ProcessTree::of(&run, i));
    if json {
        let mut value = serde_json::to_value(c)?;
        if let Some(step) = &step {
            value["step"] = serde_json::to_value(step)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("produced by: {}", c.argv.join(" "));
    println!("in: {}", c.cwd);
    println!(
        "outcome: {} (run {}, at {} ms since the epoch)",
        c.outcome, run.id, c.unix_ms
    );
    let mut up = c.parent;
    while let Some(p) = up.filter(|&p| p < i) {
        println!("started by: {}", run.compiles[p].argv.join(" "));
        up = run.compiles[p].parent.filter(|&q| q < p);
    }
    let section = |title: &str, items: &[String]| {
        println!("{title} ({}):", items.len());
        for p in items {
            println!("  {p}");
        }
    };
    section("read", &c.reads);
    section("looked for, not found", &c.absent);
    section("listed", &c.listed);
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    section("environment read", &env);
    section("wrote", &c.written);
    if let Some(step) = step.filter(|t| t.processes.len() > 1) {
        println!(
            "as part of the build step `{}`, whose {} processes ({}) together:",
            step.processes[0],
            step.processes.len(),
            step.processes.join("; ")
        );
        section("  read", &step.reads);
        section("  looked for, not found", &step.absent);
        section("  wrote", &step.written);
    }
    Ok(())
}

/// In a mount session, what a build step (a process and everything it
/// started) did: a generator script's shell may only set up a redirection
/// while a child reads the input and another renames the result into place.
#[derive(serde::Serialize)]
struct ProcessTree {
    processes: Vec<String>,
    reads: Vec<String>,
    absent: Vec<String>,
    listed: Vec<String>,
    written: Vec<String>,
}

impl ProcessTree {
    /// The step record `i` belongs to, as `RunRecord::steps` has it.
    fn of(run: &runlog::RunRecord, i: usize) -> ProcessTree {
        let index = run.step_index();
        let step = run.steps_by(&index).compiles.swap_remove(index[i]);
        ProcessTree {
            processes: (0..run.compiles.len())
                .filter(|&j| index[j] == index[i])
                .map(|j| run.compiles[j].argv.join(" "))
                .collect(),
            reads: step.reads,
            absent: step.absent,
            listed: step.listed,
            written: step.written,
        }
    }
}

pub fn graph(
    run: Option<String>,
    format: Format,
    under: Option<String>,
    no_system: bool,
    processes: bool,
) -> Result<()> {
    let config = Config::from_env()?;
    let id = match run {
        Some(id) => id,
        None => runlog::list_ids(&config.dir)
            .pop()
            .ok_or_else(|| anyhow!("no runs recorded yet: build with `cachefs run …` first"))?,
    };
    let run = runlog::load(&config.dir, &id).map_err(|e| anyhow!(e))?;
    let under = under.map(|u| absolute(Path::new(&u))).transpose()?;
    let filter = Filter {
        under,
        no_system,
        processes,
    };
    let g = graph::build(&run, &filter);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&g)?),
        Format::Dot => print!("{}", graph::to_dot(&g)),
        Format::Svg => std::io::stdout().write_all(&render_svg(&graph::to_dot(&g))?)?,
    }
    Ok(())
}

fn render_svg(dot: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|_| anyhow!("Graphviz `dot` is not installed: install it (apt-get install graphviz) or use --format dot"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "Graphviz `dot` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

pub fn explain(path: &Path) -> Result<()> {
    let config = Config::from_env()?;
    let (run, i, target) = writer_of(&config, path)?;
    let c = &run.compiles[i];
    println!("last compile of {target}: {}", c.argv.join(" "));
    match c.outcome.as_str() {
        "hit" => println!("it was a hit: nothing changed since the stored result"),
        "miss" => match &c.miss {
            Some(MissReason::Changed { path, was, now }) if path == relocate::LOCATION => {
                let why = match was.split_once(", and ") {
                    Some((_, why)) if why.starts_with(relocate::CARRIED) => relocate::CARRIED,
                    Some((_, why)) => why,
                    None => was,
                };
                println!("it missed because it was built at another location, and {why}");
                println!("  stored: {was}");
                println!("  here:   {now}");
            }
            Some(MissReason::Changed { path, was, now }) => {
                println!("it missed because an input changed: {path}");
                println!("  stored: {was}");
                println!("  now:    {now}");
            }
            Some(MissReason::Recache) => {
                println!("it missed because CACHEFS_RECACHE was set: compiled and stored again")
            }
            _ => explain_no_entry(&config, &run.id, i, &target, c),
        },
        "observed" => println!(
            "it was written by a command inside `cachefs mount` (run {}), which is recorded, not cached: `cachefs deps {target}` shows its inputs",
            run.id
        ),
        other => println!("it was {other}: {}", c.reason.clone().unwrap_or_default()),
    }
    if c.outcome == "miss" {
        // Set by remote execution (`agent::execute`): where the compile ran.
        match &c.reason {
            Some(where_) => println!("where it ran: {where_}"),
            None => println!("where it ran: here, observed"),
        }
    }
    Ok(())
}

/// No stored entry for this key: compare with the previous compile of the
/// same output to name the argument or directory that differs (the environment
/// is not in key1: a variable the compile read is a dep, see `Changed`).
fn explain_no_entry(config: &Config, run: &str, i: usize, target: &str, c: &CompileRecord) {
    let Some(prev) = runlog::previous_writer(&config.dir, target, run, i) else {
        println!("it missed: no earlier compile of {target} is recorded (first build of it)");
        return;
    };
    let mut said = false;
    let old: BTreeSet<&String> = prev.argv.iter().skip(1).collect();
    let new: BTreeSet<&String> = c.argv.iter().skip(1).collect();
    for a in new.difference(&old) {
        println!("it missed because the command line changed: argument {a} added");
        said = true;
    }
    for a in old.difference(&new) {
        println!("it missed because the command line changed: argument {a} removed");
        said = true;
    }
    if !said && prev.argv.get(1..) != c.argv.get(1..) {
        // The same arguments in another order: the order matters (`-I`
        // search order, later flags winning), so it is another key.
        println!("it missed because the command line changed: the same arguments, reordered");
        said = true;
    }
    if prev.cwd != c.cwd {
        println!(
            "it missed because the directory changed: {} → {}",
            prev.cwd, c.cwd
        );
        said = true;
    }
    if !said {
        println!("it missed: same command line and directory as before, so the compiler itself changed (or its entry was evicted)");
    }
}
