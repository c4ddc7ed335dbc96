//! What one small remote read costs through each tier, interleaved so both see the same
//! machine load: `cargo run --release -p cachefs-store --example remote_read_cost --
//! grpc://127.0.0.1:PORT tcp://127.0.0.1:PORT [READS]` (a REAPI server and a memcached;
//! scripts/bench/remote-read-cost.sh starts both). Prints the median and p90 of each.

use cachefs_store::remote::{Kind, Memcached, Reapi, ReapiConfig, Remote};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(reapi), Some(memcached)) = (args.first(), args.get(1)) else {
        eprintln!("usage: remote_read_cost grpc://HOST:PORT tcp://HOST:PORT [READS]");
        std::process::exit(2);
    };
    let reads: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let timeout = Duration::from_secs(2);
    let config = ReapiConfig {
        url: reapi.clone(),
        ..Default::default()
    };
    let tiers = [
        (
            "reapi",
            Remote::new(Box::new(Reapi::new(&config, timeout).unwrap()), false),
        ),
        (
            "memcached",
            Remote::new(
                Box::new(Memcached::new(std::slice::from_ref(memcached), timeout).unwrap()),
                false,
            ),
        ),
    ];
    for size in [100usize, 100_000] {
        let id = [size as u8; 32];
        let value = vec![7u8; size];
        let mut times = vec![Vec::with_capacity(reads); tiers.len()];
        for (_, t) in &tiers {
            t.put(Kind::Blob, &id, &id, &value);
        }
        for _ in 0..reads {
            for (i, (name, t)) in tiers.iter().enumerate() {
                let started = Instant::now();
                let got = t.get(Kind::Blob, &id, &id);
                times[i].push(started.elapsed());
                assert_eq!(got.as_ref(), Some(&value), "{name}");
            }
        }
        for (i, (name, _)) in tiers.iter().enumerate() {
            let t = &mut times[i];
            t.sort();
            println!(
                "{size:>7} bytes from {name:<9}: median {:>7.0} µs, p90 {:>7.0} µs ({reads} reads)",
                t[t.len() / 2].as_secs_f64() * 1e6,
                t[t.len() * 9 / 10].as_secs_f64() * 1e6
            );
        }
    }
}
