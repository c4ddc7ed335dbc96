//! Measures what the mirror costs a small compile: `gcc -O2 -c hello.c`
//! natively and through a fresh view each run (/usr and /tmp bound, as the
//! client does), passthrough on/off, TTL 60 s / 0. Native and view runs
//! alternate so that load from other processes hits both alike; medians of
//! warm runs are printed.
//!
//! Run as root:
//! `cargo run --release -p cachefs-mirror --example overhead [RUNS [THREADS]]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cachefs_mirror::MirrorOptions;

const WARMUP: usize = 3;
const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";
const GCC: [&str; 5] = ["-O2", "-c", "hello.c", "-o", "hello.o"];

fn main() {
    let (runs, threads) = (
        common::arg(1, 10),
        common::arg(2, MirrorOptions::default().threads),
    );
    let work = common::workdir();
    std::fs::write(work.path().join("hello.c"), HELLO).unwrap();
    let w = work.path();

    let (plain, ns) = medians(runs, || native(w, false), || native(w, true));
    println!(
        "native {} | native in a private mount namespace {}",
        ms(plain),
        ms(ns)
    );
    println!("{runs} runs each, {threads} daemon threads");
    for passthrough in [true, false] {
        for ttl in [60, 0] {
            let m = common::mount_with(MirrorOptions {
                passthrough,
                ttl: Duration::from_secs(ttl),
                threads,
                ..MirrorOptions::default()
            });
            let mut accesses = 0;
            let before = m.mirror.request_counts();
            let in_view = || {
                let v = m.mirror.open_view();
                let start = Instant::now();
                let out =
                    common::run_in_view(&m.mirror, v, &["/usr", "/tmp"], w, "/usr/bin/gcc", &GCC);
                let took = start.elapsed();
                common::assert_ok(&out);
                accesses = m.mirror.close_view(v).unwrap().accesses.len();
                took
            };
            let (native, view) = medians(runs, || native(w, false), in_view);
            println!(
                "passthrough {:<3} (active {:<3}) TTL {ttl:>2}s: native {} view {} (+{:.0}%), {accesses} accesses recorded",
                on(passthrough),
                on(m.mirror.passthrough_active()),
                ms(native),
                ms(view),
                (view.median.as_secs_f64() / native.median.as_secs_f64() - 1.0) * 100.0
            );
            let compiles = (WARMUP + runs) as u64;
            let per_compile: Vec<String> = m
                .mirror
                .request_counts()
                .iter()
                .zip(&before)
                .map(|((name, n), (_, b))| (name, (n - b) / compiles))
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            println!("    requests per compile: {}", per_compile.join(", "));
        }
    }
}

fn native(w: &Path, namespace: bool) -> Duration {
    let mut cmd = Command::new("/usr/bin/gcc");
    cmd.args(GCC).current_dir(w);
    if namespace {
        common::enter_view(&mut cmd, "/".into(), &[], w);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let took = start.elapsed();
    common::assert_ok(&out);
    took
}

/// Timings of `a` and `b`, run alternately.
fn medians(
    runs: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (Timing, Timing) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + runs {
        let (x, y) = (a(), b());
        if i >= WARMUP {
            ta.push(x);
            tb.push(y);
        }
    }
    (Timing::of(ta), Timing::of(tb))
}

/// Median, and minimum: the least disturbed by other load on the machine.
#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    min: Duration,
}

impl Timing {
    fn of(mut times: Vec<Duration>) -> Timing {
        times.sort();
        Timing {
            median: times[times.len() / 2],
            min: times[0],
        }
    }
}

fn ms(t: Timing) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("{:5.1} ms (min {:5.1})", ms(t.median), ms(t.min))
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
