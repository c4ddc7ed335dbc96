//! The client ↔ agent wire format: versioned, length-prefixed postcard frames
//! over the agent's unix socket.
//!
//! A frame is `MAGIC (4) | VERSION (u16 LE) | LEN (u32 LE) | postcard body`.
//! A peer that speaks another version gets `ProtocolError::Version`, so an old
//! client talking to a new agent runs its compile uncached instead of
//! misreading a frame.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

pub const MAGIC: [u8; 4] = *b"CFS\x01";
/// 2: `StatsReport` gained `local_hits`, `remote_hits` and `remote`.
/// 4: `RunSummary` gained `notices`.
pub const VERSION: u16 = 4;
/// Larger frames are refused before any allocation: a malformed length must
/// not make the agent allocate gigabytes.
pub const MAX_FRAME: u32 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("agent connection closed")]
    Closed,
    #[error("agent socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a cachefs frame (bad magic): the peer is not a cachefs agent or client")]
    Magic,
    #[error("peer speaks protocol version {0}, this cachefs speaks {VERSION}: restart the agent with `cachefs stop`")]
    Version(u16),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    #[error("malformed frame body: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn write_frame<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let body = postcard::to_allocvec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&VERSION.to_le_bytes());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    Ok(())
}

pub fn read_frame<T: DeserializeOwned, R: Read>(r: &mut R) -> Result<T, ProtocolError> {
    let mut header = [0u8; 10];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    if header[..4] != MAGIC {
        return Err(ProtocolError::Magic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(ProtocolError::Version(version));
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    // Grow with the bytes that actually arrive: a frame announcing a large
    // body and sending nothing costs nothing.
    let mut body = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut body)?;
    if body.len() != len as usize {
        return Err(ProtocolError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(postcard::from_bytes(&body)?)
}

/// Raw bytes: paths, arguments and environment values need not be UTF-8.
pub type Bytes = Vec<u8>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileRequest {
    /// The real compiler the build asked for, as the shim resolved it.
    pub compiler: Bytes,
    /// argv exactly as the build passed it, argv[0] included.
    pub argv: Vec<Bytes>,
    pub cwd: Bytes,
    pub env: Vec<(Bytes, Bytes)>,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: Bytes,
    pub stderr: Bytes,
    /// False when stdout/stderr were too large to keep: not cacheable.
    pub output_complete: bool,
    pub wall_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Start of a compile. Answered by `Hit`, `Miss` or `RunPlain`; after a
    /// `Miss` the client runs the compile and sends `Finished` or `Abandon` on
    /// the same connection.
    Compile(CompileRequest),
    Finished(Finished),
    /// The client could not run the compile in the view (namespace or mount
    /// failure); it runs it plain instead.
    Abandon {
        reason: String,
    },
    Stats {
        zero: bool,
    },
    /// A run's counts so far. `ended` (the run's command and directory) says
    /// the run is over: the agent then also writes its run log.
    RunSummary {
        run_id: String,
        ended: Option<(Vec<String>, String)>,
    },
    Ping,
    Shutdown,
    /// Empty the local cache (`cachefs clear`); answered by `Cleared`.
    Clear,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Outputs are already restored; replay these and exit.
    Hit {
        stdout: Bytes,
        stderr: Bytes,
        exit: Exit,
    },
    /// Run the compile inside the view: bind `view_root/<top>` over `/<top>`
    /// for every top-level directory in `binds`.
    /// `cpus`: run the compile on these CPUs, those of the daemon thread
    /// serving its view (empty: anywhere; see `agent::lanes`). `probe`:
    /// look this path up once the compile has ended, before `Finished`
    /// (`cachefs_mirror::Mirror::new_probe`: the agent may not).
    Miss {
        view_root: Bytes,
        binds: Vec<Bytes>,
        cpus: Vec<u32>,
        probe: Bytes,
    },
    /// Run the compiler directly, unobserved (uncacheable or no observation).
    RunPlain {
        reason: String,
        warn: bool,
    },
    Stored,
    Stats(StatsReport),
    Summary(RunSummary),
    Pong {
        pid: u32,
    },
    /// What the cache held before `Clear` emptied it.
    Cleared {
        entries: u64,
        bytes: u64,
    },
    Error {
        message: String,
    },
}

/// Counters shown by `cachefs stats`; the JSON field names are stable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub uncacheable: u64,
    pub uncacheable_reasons: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_reasons: BTreeMap<String, u64>,
    pub entries: u64,
    pub bytes: u64,
    pub limit: u64,
    pub time_saved_ms: u64,
    pub observation: String,
    /// Hits served from the local store, and from the shared remote tier.
    #[serde(default)]
    pub local_hits: u64,
    #[serde(default)]
    pub remote_hits: u64,
    /// The shared tier in use (memcached or Redis), its servers' health and traffic.
    #[serde(default)]
    pub remote: Option<Box<cachefs_store::remote::RemoteReport>>,
    /// Per language ("C", "C++", "Rust", "CUDA"), only those seen.
    #[serde(default)]
    pub languages: BTreeMap<String, LanguageCounts>,
    /// Misses run on a REAPI executor (`[remote] execute`) and served from there.
    #[serde(default)]
    pub remote_executions: u64,
    /// Remote runs that failed, by reason (each then compiled here: `local_fallbacks`).
    #[serde(default)]
    pub remote_execution_failures: BTreeMap<String, u64>,
    #[serde(default)]
    pub local_fallbacks: u64,
    /// Misses never sent, by reason (a class of compile that cannot run remotely, or one
    /// not observed yet).
    #[serde(default)]
    pub not_run_remotely: BTreeMap<String, u64>,
    /// Blobs the remote actions named (input files, directories, command), how many of
    /// them the server lacked and were sent, and their bytes.
    #[serde(default)]
    pub remote_execution_blobs: u64,
    #[serde(default)]
    pub remote_execution_blobs_uploaded: u64,
    #[serde(default)]
    pub remote_execution_bytes_uploaded: u64,
}

/// One language's row in `cachefs stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LanguageCounts {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub uncacheable: u64,
    pub errors: u64,
}

/// What one `cachefs run` did, for its closing summary line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub compiles: u64,
    pub hits: u64,
    pub misses: u64,
    pub uncacheable: u64,
    pub errors: u64,
    pub time_saved_ms: u64,
    /// Lines for the user at the end of the run: a shared-cache tier that is off and what
    /// to set (otherwise said only in agent.log and by `doctor`).
    pub notices: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Ping).unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).unwrap();
        assert!(matches!(back, Request::Ping));
    }

    #[test]
    fn rejects_other_version_and_garbage() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Ping).unwrap();
        buf[4] = 9;
        assert!(matches!(
            read_frame::<Request, _>(&mut buf.as_slice()),
            Err(ProtocolError::Version(9))
        ));
        let garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert!(matches!(
            read_frame::<Request, _>(&mut garbage.as_slice()),
            Err(ProtocolError::Magic)
        ));
    }

    #[test]
    fn refuses_huge_length_without_allocating() {
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame::<Request, _>(&mut buf.as_slice()),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Stats { zero: true }).unwrap();
        buf.truncate(buf.len() - 1);
        assert!(read_frame::<Request, _>(&mut buf.as_slice()).is_err());
    }
}

/// Decoding arbitrary bytes never panics, never hangs and never allocates
/// beyond the frame limit. `PROPTEST_CASES=1000000 cargo test --release -p
/// cachefs --lib protocol::fuzz` runs the long version the README documents.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn header(version: u16, len: u32) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_rejected_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_frame::<Request, _>(&mut bytes.as_slice());
            let _ = read_frame::<Response, _>(&mut bytes.as_slice());
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = header(VERSION, body.len() as u32);
            frame.extend_from_slice(&body);
            let _ = read_frame::<Request, _>(&mut frame.as_slice());
            let _ = read_frame::<Response, _>(&mut frame.as_slice());
        }

        #[test]
        fn mutated_valid_frames(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let req = Request::Compile(CompileRequest {
                compiler: b"/usr/bin/gcc".to_vec(),
                argv: vec![b"gcc".to_vec(), b"-c".to_vec(), seed.to_le_bytes().to_vec()],
                cwd: b"/src".to_vec(),
                env: vec![(b"PATH".to_vec(), b"/usr/bin".to_vec())],
                run_id: Some("r".into()),
            });
            let mut frame = Vec::new();
            write_frame(&mut frame, &req).unwrap();
            for (at, x) in flips {
                let i = at % frame.len();
                frame[i] ^= x;
            }
            let _ = read_frame::<Request, _>(&mut frame.as_slice());
        }
    }
}
