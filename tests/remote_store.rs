//! The shared-cache tiers against real memcached and redis-server processes: chunking of
//! large values, verification, spreading over servers, dead and silent servers.

mod common;
use cachefs_store::remote::{
    chunk_key, remote_key, route_key, Kind, Memcached, Redis, Remote, FORMAT_VERSION,
};
use common::servers::{self, Blackhole};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(100);
/// The route (an entry's key1) of test values that all belong to one entry.
const R: [u8; 32] = [7; 32];
const RS: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn memcached_remote(addrs: &[String]) -> Remote {
    let urls: Vec<String> = addrs.iter().map(|a| format!("tcp://{a}")).collect();
    Remote::new(Box::new(Memcached::new(&urls, TIMEOUT).unwrap()), false)
}

fn id(n: u32) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// Deterministic bytes that zstd or memcached cannot shrink into something trivial.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut h = blake3::hash(&seed.to_le_bytes());
    while out.len() < len {
        out.extend_from_slice(h.as_bytes());
        h = blake3::hash(h.as_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_value_over_one_megabyte_round_trips_in_chunks() {
    let server = servers::memcached();
    let remote = memcached_remote(&[server.addr()]);
    let value = noise(3 * 1024 * 1024 + 123, 1);
    remote.put(Kind::Blob, &id(1), &R, &value);
    assert_eq!(
        remote.get(Kind::Blob, &id(1), &R).as_deref(),
        Some(&value[..])
    );
    let key = remote_key(Kind::Blob, &id(1));
    assert!(
        key.starts_with(&format!("cachefs{FORMAT_VERSION}:b:")),
        "key carries the format version: {key}"
    );
    // Stored as 4 chunks, none of which alone exceeds memcached's 1 MiB item limit.
    for i in 0..4 {
        let chunk = remote.tier().get(RS, &chunk_key(&key, i)).unwrap().unwrap();
        assert!(chunk.len() < 1024 * 1024);
    }
    assert!(remote
        .tier()
        .get(RS, &chunk_key(&key, 4))
        .unwrap()
        .is_none());
    let r = remote.report();
    assert_eq!((r.gets_found, r.errors), (1, 0));
    assert!(r.bytes_read > value.len() as u64 && r.bytes_written > value.len() as u64);
}

#[test]
fn a_corrupt_or_missing_chunk_is_a_miss() {
    let server = servers::memcached();
    let remote = memcached_remote(&[server.addr()]);
    let value = noise(2 * 1024 * 1024 + 5, 2);
    remote.put(Kind::Blob, &id(2), &R, &value);
    let key = remote_key(Kind::Blob, &id(2));

    let mut chunk = remote.tier().get(RS, &chunk_key(&key, 1)).unwrap().unwrap();
    chunk[1000] ^= 0x40;
    remote.tier().set(RS, &chunk_key(&key, 1), &chunk).unwrap();
    assert_eq!(
        remote.get(Kind::Blob, &id(2), &R),
        None,
        "corrupt chunk must miss"
    );

    remote.put(Kind::Blob, &id(2), &R, &value);
    assert_eq!(
        remote.get(Kind::Blob, &id(2), &R).as_deref(),
        Some(&value[..])
    );
    remote.tier().delete(RS, &chunk_key(&key, 2)).unwrap();
    assert_eq!(
        remote.get(Kind::Blob, &id(2), &R),
        None,
        "missing chunk must miss"
    );

    // A small value's head is checksummed too.
    remote.put(Kind::Manifest, &id(3), &R, b"small manifest");
    let mkey = remote_key(Kind::Manifest, &id(3));
    let mut head = remote.tier().get(RS, &mkey).unwrap().unwrap();
    *head.last_mut().unwrap() ^= 1;
    remote.tier().set(RS, &mkey, &head).unwrap();
    assert_eq!(remote.get(Kind::Manifest, &id(3), &R), None);
    assert_eq!(remote.report().errors, 3);
}

#[test]
fn entries_spread_over_two_servers_and_survive_one_dying() {
    let mut a = servers::memcached();
    let b = servers::memcached();
    let addrs = [a.addr(), b.addr()];
    let remote = memcached_remote(&addrs);
    let placement = Memcached::new(&addrs.map(|s| format!("tcp://{s}")), TIMEOUT).unwrap();
    let n = 60;
    for i in 0..n {
        remote.put(Kind::Result, &id(i), &id(i), &noise(200, i));
    }
    let on_a: Vec<u32> = (0..n)
        .filter(|i| placement.server_of(&route_key(&id(*i))) == a.addr())
        .collect();
    assert!(
        !on_a.is_empty() && on_a.len() < n as usize,
        "keys not spread: {} of {n} on one server",
        on_a.len()
    );
    for i in 0..n {
        assert!(remote.get(Kind::Result, &id(i), &id(i)).is_some());
    }

    a.kill();
    for i in 0..n {
        let got = remote.get(Kind::Result, &id(i), &id(i));
        if on_a.contains(&i) {
            assert_eq!(got, None, "entry {i} lived on the killed server");
        } else {
            assert_eq!(got.as_deref(), Some(&noise(200, i)[..]), "entry {i}");
        }
    }
    let health = remote.report().servers;
    let dead = health.iter().find(|s| s.server == a.addr()).unwrap();
    let alive = health.iter().find(|s| s.server == b.addr()).unwrap();
    assert!(!dead.healthy && alive.healthy, "{health:?}");
    // Refused once (or reset once per pooled connection), then skipped by the breaker.
    assert!(dead.failures <= 2, "{dead:?}");
}

#[test]
fn a_silent_server_costs_one_timeout_then_is_skipped() {
    let hole = Blackhole::new();
    let remote = memcached_remote(&[hole.addr()]);
    for i in 0..20 {
        assert_eq!(remote.get(Kind::Manifest, &id(i), &R), None);
    }
    remote.put(Kind::Blob, &id(99), &R, b"never arrives");
    let r = remote.report();
    assert_eq!(r.errors, 21, "every operation is a counted error");
    assert_eq!(r.servers.len(), 1);
    assert_eq!(
        r.servers[0].failures, 1,
        "only the first operation waited: {r:?}"
    );
    assert!(!r.servers[0].healthy);
    let last = r.servers[0].last_error.clone().unwrap_or_default();
    assert!(
        last.contains(&hole.addr()),
        "the error names the server: {last}"
    );
}

#[test]
fn redis_round_trips_small_and_chunked_values() {
    let server = servers::redis();
    let url = format!("redis://{}/2", server.addr());
    let remote = Remote::new(Box::new(Redis::new(&url, TIMEOUT, 3600).unwrap()), false);
    let big = noise(1536 * 1024, 4);
    remote.put(Kind::Blob, &id(4), &R, &big);
    remote.put(Kind::Manifest, &id(5), &R, b"m");
    assert_eq!(
        remote.get(Kind::Blob, &id(4), &R).as_deref(),
        Some(&big[..])
    );
    assert_eq!(
        remote.get(Kind::Manifest, &id(5), &R).as_deref(),
        Some(&b"m"[..])
    );
    assert_eq!(remote.get(Kind::Manifest, &id(6), &R), None);
    let r = remote.report();
    assert_eq!((r.gets_found, r.gets_missing, r.errors), (2, 1, 0), "{r:?}");
}

#[test]
fn read_only_remote_writes_nothing() {
    let server = servers::memcached();
    let urls = [format!("tcp://{}", server.addr())];
    let reader = Remote::new(Box::new(Memcached::new(&urls, TIMEOUT).unwrap()), true);
    reader.put(Kind::Manifest, &id(7), &R, b"x");
    let writer = memcached_remote(&[server.addr()]);
    assert_eq!(writer.get(Kind::Manifest, &id(7), &R), None);
    writer.put(Kind::Manifest, &id(7), &R, b"x");
    assert_eq!(
        reader.get(Kind::Manifest, &id(7), &R).as_deref(),
        Some(&b"x"[..])
    );
}

#[test]
fn bad_settings_are_reported_by_name() {
    let e = Memcached::new(&["localhost".into()], TIMEOUT)
        .err()
        .unwrap();
    assert!(e.to_string().contains("tcp://host:port"), "{e}");
    let e = Redis::new("http://x:1", TIMEOUT, 0).err().unwrap();
    assert!(e.to_string().contains("redis://"), "{e}");
}

#[test]
fn redis_with_a_password_and_a_database() {
    let server = servers::redis();
    let addr = server.addr();
    let open = |url: &str| Remote::new(Box::new(Redis::new(url, TIMEOUT, 0).unwrap()), false);
    // Set a password on the running server with a raw RESP command.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n")
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "+OK");
    }
    let good = open(&format!("redis://:secret@{addr}/3"));
    good.put(Kind::Manifest, &id(8), &R, b"db 3");
    assert_eq!(
        good.get(Kind::Manifest, &id(8), &R).as_deref(),
        Some(&b"db 3"[..])
    );
    let other_db = open(&format!("redis://:secret@{addr}/4"));
    assert_eq!(other_db.get(Kind::Manifest, &id(8), &R), None);
    let wrong = open(&format!("redis://:nope@{addr}/3"));
    assert_eq!(wrong.get(Kind::Manifest, &id(8), &R), None);
    assert_eq!(
        wrong.report().errors,
        1,
        "a refused login is a counted miss"
    );
}

/// With CACHEFS_REMOTE_KEY, entries are authenticated: a machine without the
/// key (or with another) cannot plant an entry that keyed readers use.
#[test]
fn keyed_entries_cannot_be_planted_without_the_key() {
    use cachefs_store::remote::chunking::seal_from_secret;
    let server = servers::memcached();
    let team =
        || memcached_remote(&[server.addr()]).with_key(Some(seal_from_secret("team secret")));
    let value = noise(1500 * 1024, 9);
    team().put(Kind::Blob, &id(90), &R, &value);
    assert_eq!(
        team().get(Kind::Blob, &id(90), &R).as_deref(),
        Some(&value[..])
    );
    // Readers without the key, or with another, do not accept it.
    assert_eq!(
        memcached_remote(&[server.addr()]).get(Kind::Blob, &id(90), &R),
        None
    );
    let outsider = memcached_remote(&[server.addr()]).with_key(Some(seal_from_secret("guess")));
    assert_eq!(outsider.get(Kind::Blob, &id(90), &R), None);
    // An entry planted without the key (or with a wrong one) is refused by the team.
    memcached_remote(&[server.addr()]).put(Kind::Blob, &id(91), &R, b"planted object");
    outsider.put(Kind::Blob, &id(92), &R, b"planted object");
    let reader = team();
    assert_eq!(reader.get(Kind::Blob, &id(91), &R), None);
    assert_eq!(reader.get(Kind::Blob, &id(92), &R), None);
    let r = reader.report();
    assert!(r.authenticated);
    assert_eq!(
        (r.gets_found, r.errors),
        (0, 2),
        "forgeries count as errors, never hits"
    );
}

/// README: "entries are spread over the servers by rendezvous hashing …; adding or
/// removing a server moves only the entries it gains or held". Real servers: after
/// adding a third, exactly the entries it now owns miss, all others are still found
/// where they were; after removing one, exactly the entries it held miss.
#[test]
fn adding_or_removing_a_server_moves_only_the_entries_it_gains_or_held() {
    let (a, b, c) = (
        servers::memcached(),
        servers::memcached(),
        servers::memcached(),
    );
    let n = 90u32;
    let place = |addrs: &[String]| {
        let m = Memcached::new(
            &addrs
                .iter()
                .map(|s| format!("tcp://{s}"))
                .collect::<Vec<_>>(),
            TIMEOUT,
        )
        .unwrap();
        (0..n)
            .map(|i| m.server_of(&route_key(&id(i))).to_string())
            .collect::<Vec<_>>()
    };
    let ab = [a.addr(), b.addr()];
    let abc = [a.addr(), b.addr(), c.addr()];
    let ac = [a.addr(), c.addr()];
    let (on_ab, on_abc, on_ac) = (place(&ab), place(&abc), place(&ac));
    let two = memcached_remote(&ab);
    for i in 0..n {
        two.put(Kind::Result, &id(i), &id(i), &noise(100, i));
    }

    // Adding c: an entry changes server only if c wins it.
    let gained: Vec<u32> = (0..n).filter(|&i| on_abc[i as usize] == c.addr()).collect();
    for i in 0..n {
        let (was, now) = (&on_ab[i as usize], &on_abc[i as usize]);
        assert!(
            was == now || *now == c.addr(),
            "entry {i} moved from {was} to {now}"
        );
    }
    assert!(
        !gained.is_empty() && gained.len() < n as usize / 2,
        "c gains some entries: {}",
        gained.len()
    );
    let three = memcached_remote(&abc);
    for i in 0..n {
        let got = three.get(Kind::Result, &id(i), &id(i));
        if gained.contains(&i) {
            assert_eq!(got, None, "entry {i} now belongs to the new, empty server");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(&noise(100, i)[..]),
                "entry {i} stayed put"
            );
        }
    }
    let r = three.report();
    assert_eq!(
        (r.gets_found, r.gets_missing, r.errors),
        ((n as usize - gained.len()) as u64, gained.len() as u64, 0)
    );

    // Every entry where three servers put it; then b is removed.
    for &i in &gained {
        three.put(Kind::Result, &id(i), &id(i), &noise(100, i));
    }
    let held: Vec<u32> = (0..n).filter(|&i| on_abc[i as usize] == b.addr()).collect();
    for i in 0..n {
        let (was, now) = (&on_abc[i as usize], &on_ac[i as usize]);
        assert!(
            was == now || *was == b.addr(),
            "entry {i} moved from {was} to {now}"
        );
    }
    assert!(!held.is_empty(), "b held some entries");
    let without_b = memcached_remote(&ac);
    for i in 0..n {
        let got = without_b.get(Kind::Result, &id(i), &id(i));
        if held.contains(&i) {
            assert_eq!(got, None, "entry {i} was on the removed server");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(&noise(100, i)[..]),
                "entry {i} stayed put"
            );
        }
    }
}

/// README: a failed server "costs one timeout, then its circuit breaker skips it for
/// 30 s". A server that was refused is skipped (not even tried: no new failure, and
/// an entry put there meanwhile is not found) until the cool-down ends; the first
/// request after it reaches the server again. Takes the 30 s.
#[test]
fn a_skipped_server_is_tried_again_after_its_cool_down() {
    const COOL_DOWN: Duration = Duration::from_secs(30);
    let mut server = servers::memcached();
    let port = server.port;
    let remote = memcached_remote(&[server.addr()]);
    remote.put(Kind::Manifest, &id(50), &R, b"before");
    assert!(remote.get(Kind::Manifest, &id(50), &R).is_some());

    server.kill();
    assert_eq!(remote.get(Kind::Manifest, &id(50), &R), None);
    let failed_at = std::time::Instant::now();
    let health = |r: &Remote| {
        let s = &r.report().servers[0];
        (s.healthy, s.failures)
    };
    assert_eq!(health(&remote), (false, 1), "refused: the breaker opens");

    // Back on the same port, with the entry: the breaker still skips it.
    let server = servers::memcached_on(Some(port));
    memcached_remote(&[server.addr()]).put(Kind::Manifest, &id(50), &R, b"after");
    std::thread::sleep(COOL_DOWN - Duration::from_secs(5));
    assert_eq!(
        remote.get(Kind::Manifest, &id(50), &R),
        None,
        "skipped during the cool-down"
    );
    assert_eq!(health(&remote), (false, 1), "skipped, not tried");

    let end = failed_at + COOL_DOWN + Duration::from_millis(500);
    std::thread::sleep(end.saturating_duration_since(std::time::Instant::now()));
    assert_eq!(
        remote.get(Kind::Manifest, &id(50), &R).as_deref(),
        Some(&b"after"[..]),
        "tried again after the cool-down"
    );
    assert_eq!(health(&remote), (true, 1));
}
