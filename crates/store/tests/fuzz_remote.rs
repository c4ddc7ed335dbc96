//! Fuzzing what comes from the network: memcached `get` replies, Redis `GET` replies and
//! chunk heads, parsed from bytes. Whatever the bytes, each parser must return (never hang:
//! the reader panics if it is asked to read on after its end too often), never allocate
//! more at once than its bound (a counting global allocator records the largest request of
//! the parsing thread, reset per case), and parse genuine replies exactly.
//!
//! The normal test run uses proptest's default case count (256 per property). For a long
//! run, set `PROPTEST_CASES`, in release mode so it goes faster:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test -p cachefs-store --release --test fuzz_remote
//! ```
//!
//! A failure prints the shrunk input; proptest also saves it under
//! `proptest-regressions/` for the next runs.

mod common;
use cachefs_store::remote::chunking::{
    parse_head, CHUNK_SIZE, HEAD_LEN, MAX_ITEM_LEN, MAX_VALUE_LEN,
};
use cachefs_store::remote::wire::{read_bulk_reply, read_get_reply, MAX_LINE_LEN};
use common::alloc::{largest, reset_largest};
use proptest::prelude::*;
use std::io::{BufRead, Read};

#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

const KEY: &str = "cachefs3:r:0123456789abcdef";
/// The start of memcached's reply line for `KEY`, before the stated length.
const VALUE_PREFIX: &str = "VALUE cachefs3:r:0123456789abcdef 0 ";

/// The most a reply parser may allocate at once: one item (its stated length, checked
/// against `MAX_ITEM_LEN`, plus CR LF), or a line buffer, with room for `Vec` growth.
const REPLY_BOUND: usize = MAX_ITEM_LEN + 2;

/// A finite reader that hands out its bytes `step` at a time (so a line or a value spans
/// several reads) and panics when asked for more after its end than any parser that
/// returns could need: a parser that loops on end-of-input fails instead of hanging.
struct Finite<'a> {
    bytes: &'a [u8],
    step: usize,
    reads_at_end: usize,
}

impl<'a> Finite<'a> {
    fn new(bytes: &'a [u8], step: usize) -> Finite<'a> {
        Finite {
            bytes,
            step: step.max(1),
            reads_at_end: 0,
        }
    }

    fn note_end(&mut self) {
        if self.bytes.is_empty() {
            self.reads_at_end += 1;
            assert!(
                self.reads_at_end < 100,
                "parser keeps reading after the end"
            );
        }
    }
}

impl Read for Finite<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.bytes[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Finite<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.note_end();
        Ok(&self.bytes[..self.step.min(self.bytes.len())])
    }

    fn consume(&mut self, n: usize) {
        self.bytes = &self.bytes[n..];
    }
}

/// Runs `parse` on a fresh count of this thread's allocations; returns its result and the
/// largest single allocation it asked for.
fn measured<T>(parse: impl FnOnce() -> T) -> (T, usize) {
    reset_largest();
    let out = parse();
    (out, largest())
}

/// The `len` bytes after the first line of `reply`.
fn data_after_first_line(reply: &[u8], len: usize) -> &[u8] {
    let start = reply.iter().position(|b| *b == b'\n').unwrap() + 1;
    &reply[start..start + len]
}

/// Lengths a forged reply might state: around the bound, and far past it.
fn stated_length() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..4096u64).prop_map(|n| n.to_string()),
        (MAX_ITEM_LEN as u64 - 2..MAX_ITEM_LEN as u64 + 2).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999999".to_string()),
        "[-+0-9 ]{0,24}",
    ]
}

/// Bytes that look like a reply: a prefix that a parser recognises, a stated length, and
/// whatever follows (maybe a long run with no newline).
fn forged_reply(prefix: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (
        stated_length(),
        prop::collection::vec(any::<u8>(), 0..512),
        prop_oneof![Just(0usize), 0..3 * MAX_LINE_LEN],
        any::<bool>(),
    )
        .prop_map(move |(len, tail, run, crlf)| {
            let mut reply = format!("{prefix}{len}").into_bytes();
            if crlf {
                reply.extend_from_slice(b"\r\n");
            }
            reply.resize(reply.len() + run, b'7');
            reply.extend_from_slice(&tail);
            reply
        })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

proptest! {
    #[test]
    fn memcached_replies_are_parsed_within_bounds(
        reply in prop_oneof![
            any_bytes(),
            forged_reply(VALUE_PREFIX),
            forged_reply("VALUE "),
            forged_reply("END"),
        ],
        step in 1..300usize,
    ) {
        let mut r = Finite::new(&reply, step);
        let (out, biggest) = measured(|| read_get_reply(&mut r, "fuzz", KEY));
        prop_assert!(biggest <= REPLY_BOUND, "allocated {biggest} at once");
        if let Ok(Some(data)) = out {
            // Only a reply for our key yields a value: the bytes after its first line.
            let ours = format!("VALUE {KEY} ");
            prop_assert!(reply.starts_with(ours.as_bytes()));
            prop_assert_eq!(data_after_first_line(&reply, data.len()), &data[..]);
        }
    }

    #[test]
    fn redis_replies_are_parsed_within_bounds(
        reply in prop_oneof![any_bytes(), forged_reply("$"), forged_reply("*"), forged_reply("-")],
        step in 1..300usize,
    ) {
        let mut r = Finite::new(&reply, step);
        let (out, biggest) = measured(|| read_bulk_reply(&mut r, "fuzz"));
        prop_assert!(biggest <= REPLY_BOUND, "allocated {biggest} at once");
        if let Ok(Some(data)) = out {
            prop_assert!(reply.starts_with(b"$"));
            prop_assert_eq!(data_after_first_line(&reply, data.len()), &data[..]);
        }
    }

    #[test]
    fn genuine_replies_parse_exactly(
        value in prop::collection::vec(any::<u8>(), 0..4096),
        flags in any::<u32>(),
        step in 1..300usize,
    ) {
        let mut mc = format!("VALUE {KEY} {flags} {}\r\n", value.len()).into_bytes();
        mc.extend_from_slice(&value);
        mc.extend_from_slice(b"\r\nEND\r\n");
        let got = read_get_reply(&mut Finite::new(&mc, step), "fuzz", KEY);
        prop_assert_eq!(got.unwrap(), Some(value.clone()));
        let miss = read_get_reply(&mut Finite::new(b"END\r\n", step), "fuzz", KEY);
        prop_assert_eq!(miss.unwrap(), None);

        let mut resp = format!("${}\r\n", value.len()).into_bytes();
        resp.extend_from_slice(&value);
        resp.extend_from_slice(b"\r\n");
        let got = read_bulk_reply(&mut Finite::new(&resp, step), "fuzz");
        prop_assert_eq!(got.unwrap(), Some(value));
        let nil = read_bulk_reply(&mut Finite::new(b"$-1\r\n", step), "fuzz");
        prop_assert_eq!(nil.unwrap(), None);
    }

    #[test]
    fn chunk_heads_are_parsed_within_bounds(head in forged_head()) {
        let (out, biggest) = measured(|| parse_head(&head));
        // A head's parts (chunk hashes or the inline value) are copies of its own bytes.
        prop_assert!(biggest <= head.len().max(64), "allocated {biggest} for {}", head.len());
        if let Ok(h) = out {
            prop_assert!(h.len <= MAX_VALUE_LEN);
            match &h.inline {
                Some(v) => prop_assert!(v.len() as u64 == h.len && h.chunks.is_empty()),
                None => prop_assert_eq!(head.len(), HEAD_LEN + 32 * h.chunks.len()),
            }
        }
    }
}

/// Heads: arbitrary bytes; heads whose length and chunk count are forged independently;
/// and heads whose forged count agrees with their forged length (as a forger would make
/// them, to get past that check), followed by some or all of the bytes they promise.
fn forged_head() -> impl Strategy<Value = Vec<u8>> {
    let independent = (
        prop_oneof![any::<u64>(), 0..MAX_VALUE_LEN + 2],
        prop_oneof![any::<u32>(), 0..4100u32],
        prop::collection::vec(any::<u8>(), 0..4096),
    );
    let chunk = CHUNK_SIZE as u64;
    let consistent = (
        prop_oneof![any::<u32>(), 1..4100u32, 1..8u32],
        0..chunk,
        any::<bool>(),
    )
        .prop_flat_map(move |(n, short, whole)| {
            let len = u64::from(n) * chunk - short;
            let promised = if whole { 32 * n as usize } else { 0 };
            let rest = prop::collection::vec(any::<u8>(), promised.min(4096 * 32));
            (Just(len), Just(n), rest)
        });
    let inline = prop::collection::vec(any::<u8>(), 0..4096)
        .prop_map(|rest| (rest.len() as u64, 0u32, rest));
    prop_oneof![
        any_bytes(),
        prop_oneof![independent, consistent, inline].prop_map(|(len, n, rest)| {
            let mut head = b"CFR3".to_vec();
            head.extend_from_slice(&[0; 32]); // the tag, not checked by parse_head
            head.extend_from_slice(&len.to_le_bytes());
            head.extend_from_slice(&[0; 32]);
            head.extend_from_slice(&n.to_le_bytes());
            head.extend_from_slice(&rest);
            head
        })
    ]
}
