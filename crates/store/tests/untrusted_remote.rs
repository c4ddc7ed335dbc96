//! The shared cache is untrusted input: whoever can write to the memcached or Redis servers
//! (or sit between them and the agent) must not be able to make the agent allocate without
//! bound, hang, or accept a genuine value somewhere it was not written. Every such attempt is
//! a miss, counted as a remote error. Real memcached and redis-server processes hold forged
//! items; a forged reply line (which no real server would send) comes from a tiny hostile
//! TCP server that answers every request with fixed bytes.

mod common;
use cachefs_store::remote::chunking::{seal_from_secret, split, Place, HEAD_LEN};
use cachefs_store::remote::{chunk_key, remote_key, route_key, Kind, Memcached, Redis, Remote};
use common::alloc::{largest, reset_largest};
use common::{noise, servers};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

const TIMEOUT: Duration = Duration::from_millis(100);
/// The route (an entry's key1) of the test values.
const R: [u8; 32] = [7; 32];
/// No single allocation while reading one remote value may exceed this: a chunk is under
/// 1 MiB, and a reply is read into one buffer of its (bounded) stated length.
const ALLOC_BOUND: usize = 4 << 20;
/// A forged reply must be turned into a miss well within this (the timeout is 100 ms).
const TIME_BOUND: Duration = Duration::from_secs(3);
/// Where a head (`chunking`) holds the value's length and its chunk count.
const LEN_AT: usize = 4 + 32;
const COUNT_AT: usize = HEAD_LEN - 4;

fn id(n: u32) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

fn memcached(addr: &str) -> Remote {
    let urls = [format!("tcp://{addr}")];
    Remote::new(Box::new(Memcached::new(&urls, TIMEOUT).unwrap()), false)
}

fn redis(addr: &str) -> Remote {
    let url = format!("redis://{addr}");
    Remote::new(Box::new(Redis::new(&url, TIMEOUT, 0).unwrap()), false)
}

/// `remote.get`, asserting that it missed quickly, counted one more error, and never asked
/// for an allocation above `ALLOC_BOUND`.
fn assert_counted_miss(remote: &Remote, kind: Kind, id: &[u8; 32], what: &str) {
    let errors = remote.report().errors;
    let start = Instant::now();
    reset_largest();
    let got = remote.get(kind, id, &R);
    let biggest = largest();
    assert_eq!(got, None, "{what}: must be a miss");
    assert!(
        start.elapsed() < TIME_BOUND,
        "{what}: took {:?}",
        start.elapsed()
    );
    assert!(
        biggest <= ALLOC_BOUND,
        "{what}: allocated {biggest} bytes at once"
    );
    assert_eq!(
        remote.report().errors,
        errors + 1,
        "{what}: counted as a remote error"
    );
}

/// A genuine (unkeyed) head item with its total length and chunk count replaced: the head
/// of a value of 2^32 chunks of 1000 KiB, `HEAD_LEN` (80) bytes long.
fn forged_head(remote: &Remote) -> Vec<u8> {
    let key = remote_key(Kind::Result, &id(1));
    remote.put(Kind::Result, &id(1), &R, b"genuine");
    let genuine = remote.tier().get(&route_key(&R), &key).unwrap().unwrap();
    let mut head = genuine[..HEAD_LEN].to_vec();
    head[LEN_AT..LEN_AT + 8].copy_from_slice(&(u64::from(u32::MAX) * 1000 * 1024).to_le_bytes());
    head[COUNT_AT..].copy_from_slice(&u32::MAX.to_le_bytes());
    head
}

fn forged_head_is_a_counted_miss(remote: Remote) {
    let head = forged_head(&remote);
    let key = remote_key(Kind::Result, &id(2));
    remote.tier().set(&route_key(&R), &key, &head).unwrap();
    assert_counted_miss(&remote, Kind::Result, &id(2), "head of 2^32 chunks");
    // Fewer chunks than the stated length needs, or more chunk hashes than stated: malformed.
    let mut short = head.clone();
    short[COUNT_AT..HEAD_LEN].copy_from_slice(&3u32.to_le_bytes());
    short.extend_from_slice(&[0; 96]);
    remote.tier().set(&route_key(&R), &key, &short).unwrap();
    assert_counted_miss(&remote, Kind::Result, &id(2), "3 chunks for 4 GiB");
}

#[test]
fn a_forged_head_of_2_pow_32_chunks_on_memcached_is_a_counted_miss() {
    let server = servers::memcached();
    forged_head_is_a_counted_miss(memcached(&server.addr()));
}

#[test]
fn a_forged_head_of_2_pow_32_chunks_on_redis_is_a_counted_miss() {
    let server = servers::redis();
    forged_head_is_a_counted_miss(redis(&server.addr()));
}

/// A TCP server on 127.0.0.1 that answers each request (its first read) with `reply`, then
/// keeps the connection open without a further byte until the client goes away.
fn hostile_server(reply: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                if conn.read(&mut request).unwrap_or(0) == 0 {
                    return;
                }
                let _ = conn.write_all(&reply);
                let _ = conn.read(&mut request);
            });
        }
    });
    addr
}

/// The memcached reply line that announces a value for the head key of `id(3)`.
fn value_line(len: &str) -> Vec<u8> {
    format!("VALUE {} 0 {len}\r\n", remote_key(Kind::Manifest, &id(3))).into_bytes()
}

#[test]
fn a_forged_memcached_value_length_is_a_counted_miss() {
    for len in ["4294967295", "18446744073709551615", "18446744073709551616"] {
        let mut reply = value_line(len);
        reply.extend_from_slice(b"a few bytes");
        let remote = memcached(&hostile_server(reply));
        assert_counted_miss(&remote, Kind::Manifest, &id(3), &format!("VALUE of {len}"));
    }
}

#[test]
fn a_forged_redis_bulk_length_is_a_counted_miss() {
    for len in [
        "9999999999",
        "9223372036854775807",
        "-2",
        "99999999999999999999",
    ] {
        let reply = format!("${len}\r\na few bytes").into_bytes();
        let remote = redis(&hostile_server(reply));
        assert_counted_miss(&remote, Kind::Manifest, &id(3), &format!("${len}"));
    }
}

/// A reply line that never ends: 64 MiB without a newline (finite, so that the code before
/// this fix, which buffered the whole line, fails the allocation bound instead of taking the
/// machine's memory).
#[test]
fn an_endless_reply_line_is_a_counted_miss() {
    let endless = |prefix: &[u8]| {
        let mut reply = prefix.to_vec();
        reply.resize(64 << 20, b'7');
        reply
    };
    let remote = memcached(&hostile_server(endless(b"VALUE ")));
    assert_counted_miss(&remote, Kind::Manifest, &id(3), "endless memcached line");
    let remote = redis(&hostile_server(endless(b"$")));
    assert_counted_miss(&remote, Kind::Manifest, &id(3), "endless redis line");
}

/// Copies the raw items of `from` (head and chunks) to the key of `to`, as someone with
/// write access to the servers but without CACHEFS_REMOTE_KEY could.
fn copy_items(remote: &Remote, from: (Kind, u32), to: (Kind, u32)) {
    let route = route_key(&R);
    let (from, to) = (remote_key(from.0, &id(from.1)), remote_key(to.0, &id(to.1)));
    let tier = remote.tier();
    let head = tier.get(&route, &from).unwrap().expect("the genuine head");
    for i in 0.. {
        let Some(chunk) = tier.get(&route, &chunk_key(&from, i)).unwrap() else {
            break;
        };
        tier.set(&route, &chunk_key(&to, i), &chunk).unwrap();
    }
    tier.set(&route, &to, &head).unwrap();
}

fn genuine_values_only_open_where_they_were_written(open: impl Fn() -> Remote) {
    let team = || open().with_key(Some(seal_from_secret("team secret")));
    let writer = team();
    let small = b"a manifest".to_vec();
    let big = noise(10, 1500 * 1024);
    writer.put(Kind::Result, &id(10), &R, &small);
    writer.put(Kind::Blob, &id(11), &R, &big);
    let reader = team();
    assert_eq!(reader.get(Kind::Result, &id(10), &R), Some(small.clone()));
    assert_eq!(reader.get(Kind::Blob, &id(11), &R), Some(big));

    copy_items(&writer, (Kind::Result, 10), (Kind::Result, 12));
    assert_counted_miss(&reader, Kind::Result, &id(12), "result under another key");
    copy_items(&writer, (Kind::Result, 10), (Kind::Manifest, 10));
    assert_counted_miss(&reader, Kind::Manifest, &id(10), "result as a manifest");
    copy_items(&writer, (Kind::Result, 10), (Kind::Blob, 13));
    assert_counted_miss(&reader, Kind::Blob, &id(13), "result as a blob");
    copy_items(&writer, (Kind::Blob, 11), (Kind::Blob, 14));
    assert_counted_miss(
        &reader,
        Kind::Blob,
        &id(14),
        "chunked blob under another key",
    );
    copy_items(&writer, (Kind::Blob, 11), (Kind::Result, 11));
    assert_counted_miss(&reader, Kind::Result, &id(11), "chunked blob as a result");
    // The originals still open where they were written.
    assert_eq!(reader.get(Kind::Result, &id(10), &R), Some(small));
    let r = reader.report();
    assert_eq!((r.gets_found, r.errors), (3, 5), "{r:?}");
}

#[test]
fn keyed_values_copied_to_another_key_or_kind_are_counted_misses_on_memcached() {
    let server = servers::memcached();
    genuine_values_only_open_where_they_were_written(|| memcached(&server.addr()));
}

#[test]
fn keyed_values_copied_to_another_key_or_kind_are_counted_misses_on_redis() {
    let server = servers::redis();
    genuine_values_only_open_where_they_were_written(|| redis(&server.addr()));
}

/// Without a key, values are checked as before: whole and chunk hashes catch corruption
/// and truncation (anyone with write access can write anything, so copies are not refused).
#[test]
fn unkeyed_values_keep_their_checks() {
    let server = servers::memcached();
    let remote = memcached(&server.addr());
    let big = noise(20, 1500 * 1024);
    remote.put(Kind::Blob, &id(20), &R, &big);
    remote.put(Kind::Manifest, &id(21), &R, b"manifest");
    assert_eq!(remote.get(Kind::Blob, &id(20), &R), Some(big));
    assert_eq!(
        remote.get(Kind::Manifest, &id(21), &R).as_deref(),
        Some(&b"manifest"[..])
    );
    let (route, key) = (route_key(&R), remote_key(Kind::Manifest, &id(21)));
    let mut head = remote.tier().get(&route, &key).unwrap().unwrap();
    *head.last_mut().unwrap() ^= 1;
    remote.tier().set(&route, &key, &head).unwrap();
    assert_counted_miss(&remote, Kind::Manifest, &id(21), "corrupt unkeyed value");
    let chunk = chunk_key(&remote_key(Kind::Blob, &id(20)), 1);
    remote.tier().set(&route, &chunk, b"short").unwrap();
    assert_counted_miss(&remote, Kind::Blob, &id(20), "truncated unkeyed chunk");
}

/// With a key, a head is authenticated before any chunk is fetched: a genuine head whose
/// chunk hashes were rewritten (to match chunks planted alongside) costs one item read.
#[test]
fn a_keyed_reader_refuses_a_rewritten_head_before_fetching_chunks() {
    let server = servers::memcached();
    let team = memcached(&server.addr()).with_key(Some(seal_from_secret("team secret")));
    let value = noise(40, 2500 * 1024);
    team.put(Kind::Blob, &id(40), &R, &value);
    let (route, key) = (route_key(&R), remote_key(Kind::Blob, &id(40)));
    let mut head = team.tier().get(&route, &key).unwrap().unwrap();
    let planted = noise(41, 1000 * 1024);
    head[HEAD_LEN..HEAD_LEN + 32].copy_from_slice(blake3::hash(&planted).as_bytes());
    team.tier()
        .set(&route, &chunk_key(&key, 0), &planted)
        .unwrap();
    team.tier().set(&route, &key, &head).unwrap();
    let before = team.report().bytes_read;
    assert_counted_miss(&team, Kind::Blob, &id(40), "rewritten keyed head");
    assert_eq!(
        team.report().bytes_read - before,
        head.len() as u64,
        "only the head was read"
    );
}

/// A TCP server on 127.0.0.1 that answers each request with `reply`, one byte every
/// `every`: each byte comes within the idle timeout, the whole reply far later.
fn trickling_server(reply: Vec<u8>, every: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                if conn.read(&mut request).unwrap_or(0) == 0 {
                    return;
                }
                for b in reply {
                    std::thread::sleep(every);
                    if conn.write_all(&[b]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A server that sends a reply slowly, each byte within the timeout, cannot hold a read
/// for longer than the request's budget (the timeout plus 1 s per item).
#[test]
fn a_trickling_server_costs_one_request_budget() {
    let slow = Duration::from_millis(40);
    let mut mc = value_line("1000");
    mc.extend_from_slice(&[b'x'; 1000]);
    let remote = memcached(&trickling_server(mc, slow));
    assert_counted_miss(&remote, Kind::Manifest, &id(3), "trickled memcached value");
    let mut resp = b"$1000\r\n".to_vec();
    resp.extend_from_slice(&[b'x'; 1000]);
    let remote = redis(&trickling_server(resp, slow));
    assert_counted_miss(&remote, Kind::Manifest, &id(3), "trickled redis value");
}

/// A reader's own limit (`with_max_value`, e.g. the largest result the agent caches) is
/// checked on the head, before any chunk is fetched; a writer does not send what is over it.
#[test]
fn a_value_over_the_readers_limit_is_refused_at_its_head() {
    let server = servers::memcached();
    let limit = 2 << 20;
    let limited = || memcached(&server.addr()).with_max_value(limit);
    let value = noise(50, 3 << 20);
    limited().put(Kind::Blob, &id(50), &R, &value);
    assert_eq!(memcached(&server.addr()).get(Kind::Blob, &id(50), &R), None);

    memcached(&server.addr()).put(Kind::Blob, &id(51), &R, &value);
    let reader = limited();
    assert_counted_miss(
        &reader,
        Kind::Blob,
        &id(51),
        "value over the reader's limit",
    );
    let head = reader
        .tier()
        .get(&route_key(&R), &remote_key(Kind::Blob, &id(51)))
        .unwrap()
        .unwrap();
    assert_eq!(
        reader.report().bytes_read,
        head.len() as u64,
        "only the head was read"
    );
    let small = noise(52, limit as usize);
    reader.put(Kind::Blob, &id(52), &R, &small);
    assert_eq!(reader.get(Kind::Blob, &id(52), &R), Some(small));
}

/// Plants `stored` (a value's stored bytes: codec header and body) under `id`'s result key
/// with genuine unkeyed checksums, as anyone with write access to the server can.
fn plant_stored(remote: &Remote, n: u32, stored: &[u8]) {
    let key = remote_key(Kind::Result, &id(n));
    let place = Place {
        kind: Kind::Result,
        key: &key,
    };
    let (head, chunks) = split(stored, &None, place);
    assert!(chunks.is_empty(), "small enough to ride in the head");
    remote.tier().set(&route_key(&R), &key, &head).unwrap();
}

/// Remote values are zstd-compressed: a zstd bomb (a few kilobytes that inflate to 256 MiB)
/// is refused, whatever length it states, without the reader allocating what it inflates
/// to; and a stated length over the reader's limit is refused before zstd runs at all.
#[test]
fn a_zstd_bomb_is_a_counted_miss_without_inflating() {
    let server = servers::memcached();
    let remote = memcached(&server.addr()).with_max_value(64 << 20);
    let bomb = zstd::bulk::compress(&vec![0u8; 256 << 20], 19).unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let stated = |len: u64| {
        let mut s = vec![1u8]; // zstd
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(&bomb);
        s
    };
    for (n, len, what) in [
        (
            60,
            256 << 20,
            "the bomb's true length, over the reader's limit",
        ),
        (
            61,
            60 << 20,
            "under the limit, over the ratio to its stored size",
        ),
        (62, 1000, "a small length, the frame inflating past it"),
        (63, u64::MAX, "the largest length"),
    ] {
        plant_stored(&remote, n, &stated(len));
        assert_counted_miss(&remote, Kind::Result, &id(n), what);
    }
    // A genuine compressed value in the same place is read.
    let value = b"int main(void) { return 0; }\n".repeat(1000);
    remote.put(Kind::Result, &id(64), &R, &value);
    assert_eq!(remote.get(Kind::Result, &id(64), &R), Some(value));
}
