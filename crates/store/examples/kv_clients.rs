//! Our hand-written memcached and Redis clients against the ecosystem's (`memcache` 0.21,
//! `redis` 1.8, both synchronous, as ours are): what one hit costs for a 100-byte and a
//! 100-KiB item (reads interleaved, so every client sees the same machine load), and what a
//! dead server costs: connection refused, and a server that accepts and never answers, each
//! with a 200 ms timeout. The question is whether to move our tiers onto a client
//! crate; DESIGN.md ("memcached and Redis clients: measured") has the answer.
//!   cargo run --release -p cachefs-store --example kv_clients -- \
//!       tcp://127.0.0.1:MC redis://127.0.0.1:RD [READS]
//! (scripts/bench/kv-clients.sh starts both servers.)

use cachefs_store::remote::{Memcached, Redis, RemoteTier};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(200);

/// One client, as a get of a raw item and a set.
trait Client {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
}

struct Ours(Box<dyn RemoteTier>);

impl Client for Ours {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get("route", key).map_err(|e| e.to_string())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set("route", key, value).map_err(|e| e.to_string())
    }
}

struct MemcacheCrate(memcache::Client);

impl Client for MemcacheCrate {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get::<Vec<u8>>(key).map_err(|e| e.to_string())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value, 0).map_err(|e| e.to_string())
    }
}

struct RedisCrate(redis::Connection);

impl Client for RedisCrate {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        redis::cmd("GET")
            .arg(key)
            .query::<Option<Vec<u8>>>(&mut self.0)
            .map_err(|e| e.to_string())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut self.0)
            .map_err(|e| e.to_string())
    }
}

fn ours_memcached(addr: &str) -> Result<Box<dyn Client>, String> {
    let tier = Memcached::new(&[format!("tcp://{addr}")], TIMEOUT).map_err(|e| e.to_string())?;
    Ok(Box::new(Ours(Box::new(tier))))
}

fn ours_redis(addr: &str) -> Result<Box<dyn Client>, String> {
    let tier = Redis::new(&format!("redis://{addr}"), TIMEOUT, 0).map_err(|e| e.to_string())?;
    Ok(Box::new(Ours(Box::new(tier))))
}

fn memcache_crate(addr: &str) -> Result<Box<dyn Client>, String> {
    // The ASCII protocol, as ours. The socket timeouts must be in the URL: the builder's
    // read timeout is applied through a pooled connection whose check-out test (a
    // `version` request) has none yet, and blocks for ever on a silent server (seen here).
    // The check-out test is off: it is one more round trip per get (210 against 27 µs for
    // 100 bytes with it on, in a first run).
    let url = memcache::Url::parse(&format!(
        "memcache://{addr}?protocol=ascii&timeout={}",
        TIMEOUT.as_secs_f64()
    ))
    .map_err(|e| e.to_string())?;
    let pool = memcache::Pool::builder()
        .max_size(1)
        .test_on_check_out(false)
        .connection_timeout(TIMEOUT)
        .build(memcache::ConnectionManager::new(url))
        .map_err(|e| e.to_string())?;
    let client = memcache::Client::with_pool(pool).map_err(|e| e.to_string())?;
    Ok(Box::new(MemcacheCrate(client)))
}

fn redis_crate(addr: &str) -> Result<Box<dyn Client>, String> {
    let client = redis::Client::open(format!("redis://{addr}")).map_err(|e| e.to_string())?;
    let con = client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| con.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(Box::new(RedisCrate(con)))
}

type Open = fn(&str) -> Result<Box<dyn Client>, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mc), Some(rd)) = (args.first(), args.get(1)) else {
        eprintln!("usage: kv_clients tcp://HOST:PORT redis://HOST:PORT [READS]");
        std::process::exit(2);
    };
    let (mc, rd) = (
        mc.trim_start_matches("tcp://"),
        rd.trim_start_matches("redis://"),
    );
    let reads: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let clients: [(&str, Open, &str); 4] = [
        ("ours, memcached", ours_memcached, mc),
        ("memcache crate", memcache_crate, mc),
        ("ours, redis", ours_redis, rd),
        ("redis crate", redis_crate, rd),
    ];
    hits(&clients, reads);
    dead(&clients);
}

/// Median and p90 of a hit, per client and size.
fn hits(clients: &[(&str, Open, &str)], reads: usize) {
    let mut open: Vec<Box<dyn Client>> = clients
        .iter()
        .map(|(name, f, addr)| f(addr).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect();
    for size in [100usize, 100 * 1024] {
        let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let key = |i: usize| format!("kv-clients:{i}:{size}");
        for (i, c) in open.iter_mut().enumerate() {
            c.set(&key(i), &value).unwrap();
        }
        let mut times = vec![Vec::with_capacity(reads); open.len()];
        for _ in 0..reads {
            for (i, c) in open.iter_mut().enumerate() {
                let started = Instant::now();
                let got = c.get(&key(i)).unwrap();
                times[i].push(started.elapsed());
                assert_eq!(got.as_deref(), Some(&value[..]), "{}", clients[i].0);
            }
        }
        for (i, t) in times.iter_mut().enumerate() {
            t.sort();
            println!(
                "hit, {size:>6} bytes, {:<16}: median {:>5.0} µs, p90 {:>5.0} µs ({reads} reads)",
                clients[i].0,
                t[t.len() / 2].as_secs_f64() * 1e6,
                t[t.len() * 9 / 10].as_secs_f64() * 1e6
            );
        }
    }
}

/// A port nothing listens on, and one that accepts and never answers.
fn dead(clients: &[(&str, Open, &str)]) {
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    for (what, addr) in [("refused", &refused), ("silent", &silent_addr)] {
        for (name, open, _) in clients {
            let started = Instant::now();
            let mut line = format!("dead server ({what}), {name:<16}:");
            match open(addr) {
                Err(e) => line.push_str(&format!(
                    " opening failed after {:.0} ms ({})",
                    ms(started),
                    first_words(&e)
                )),
                Ok(mut c) => {
                    line.push_str(&format!(" opened in {:.0} ms;", ms(started)));
                    for n in 1..=3 {
                        let started = Instant::now();
                        let got = c.get("kv-clients:dead");
                        line.push_str(&format!(
                            " get {n}: {:.0} ms{}",
                            ms(started),
                            if got.is_ok() { " (answered!)" } else { "" }
                        ));
                    }
                }
            }
            println!("{line}");
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn first_words(e: &str) -> String {
    e.chars().take(60).collect()
}
