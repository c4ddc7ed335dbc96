//! What one FUSE round trip costs here, as the agent's lanes run them (the
//! daemon thread and the caller pinned to one CPU): a C probe program makes
//! N failed lookups (distinct names, so no negative dentry answers for the
//! daemon), N lookups of existing files, and N open+close pairs, natively and
//! inside a fresh view; the difference per operation is the price of the
//! requests it makes (LOOKUP, LOOKUP, OPEN + RELEASE). Rounds alternate
//! native and view runs; medians are printed.
//!
//! It gives the floor under the miss path: a compile's requests (DESIGN.md
//! "Where a miss's time goes" counts them) times this price is what
//! observing it through FUSE costs at the least, whatever the daemon does.
//!
//! Run as root, with gcc installed:
//! `cargo run --release -p cachefs-mirror --example request_cost [N [ROUNDS]]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;

use cachefs_mirror::MirrorOptions;

/// Prints, for each phase, the nanoseconds per operation.
const PROBE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static long long now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]); const char *dir = argv[2]; char p[4096]; struct stat st;
    long long t0 = now();
    for (int i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/absent-%d-%d", dir, getpid(), i); stat(p, &st); }
    long long t1 = now();
    for (int i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/f%d", dir, i); stat(p, &st); }
    long long t2 = now();
    for (int i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/f%d", dir, i); close(open(p, O_RDONLY)); }
    long long t3 = now();
    printf("%lld %lld %lld\n", (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n);
    return 0;
}
"#;

const PHASES: [&str; 3] = [
    "failed lookup (LOOKUP)",
    "lookup of a file (LOOKUP)",
    "open + close (OPEN, RELEASE)",
];

fn main() {
    let (n, rounds) = (common::arg(1, 2000), common::arg(2, 7));
    let work = common::workdir();
    let w = work.path();
    std::fs::write(w.join("probe.c"), PROBE).unwrap();
    let built = Command::new("gcc")
        .args(["-O2", "-o", "probe", "probe.c"])
        .current_dir(w)
        .status()
        .expect("gcc");
    assert!(built.success(), "cannot build the probe");
    for i in 0..n {
        std::fs::write(w.join(format!("f{i}")), b"x").unwrap();
    }
    let cpu = 0;
    let m = common::mount_with(MirrorOptions {
        threads: 1,
        cpus: vec![cpu],
        ..MirrorOptions::default()
    });
    let probe = w.join("probe");
    let probe = probe.to_str().unwrap();
    let count = n.to_string();
    let dir = w.to_str().unwrap();
    let (mut native, mut view) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        native.push(run(&mut pinned(probe, &count, dir, cpu)));
        let v = m.mirror.open_view();
        let mut cmd = pinned(probe, &count, dir, cpu);
        common::enter_view(&mut cmd, m.mirror.view_root(v), &["/usr", "/tmp"], w);
        view.push(run(&mut cmd));
        m.mirror.close_view(v);
    }
    println!("{n} operations per phase, {rounds} rounds, caller and daemon on CPU {cpu}");
    println!("| operation | native µs | in a view µs | FUSE round trips µs |");
    println!("|---|---|---|---|");
    for (i, phase) in PHASES.iter().enumerate() {
        let (a, b) = (median(&native, i), median(&view, i));
        println!("| {phase} | {a:.1} | {b:.1} | {:.1} |", b - a);
    }
}

fn pinned(probe: &str, n: &str, dir: &str, cpu: usize) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), probe, n, dir]);
    cmd
}

fn run(cmd: &mut Command) -> [f64; 3] {
    let out = cmd.output().expect("probe");
    common::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|s| s.parse::<f64>().unwrap() / 1000.0)
        .collect();
    [v[0], v[1], v[2]]
}

fn median(runs: &[[f64; 3]], i: usize) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
