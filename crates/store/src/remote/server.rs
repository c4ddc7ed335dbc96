//! One remote server: its address, a small pool of open connections with short timeouts,
//! and its circuit breaker. The protocol (memcached text, Redis RESP) is the caller's.

use super::breaker::Breaker;
use super::chunking::MAX_ITEM_LEN;
use super::RemoteError;
use std::io::{BufRead, BufReader, BufWriter, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one item may take to arrive beyond the idle timeout: `MAX_ITEM_LEN` (about
/// 1 MiB) at 1 MiB/s, far slower than any network a shared cache is worth using over. The
/// idle timeout alone bounds each read, not a reply: a server that sends a byte just within
/// it could hold one request for a day.
const ITEM_TRANSFER: Duration = Duration::from_secs(1);

pub struct Conn {
    pub reader: BufReader<Timed>,
    pub writer: BufWriter<TcpStream>,
}

/// The socket replies are read from: each read waits at most the idle timeout, and all the
/// reads of one request together end by its deadline (`start`).
pub struct Timed {
    stream: TcpStream,
    idle: Duration,
    deadline: Instant,
    /// The socket's read timeout was lowered below `idle` to meet the deadline.
    lowered: bool,
}

impl Timed {
    /// Starts a request: its reads must end within `budget`.
    fn start(&mut self, budget: Duration) -> std::io::Result<()> {
        self.deadline = Instant::now() + budget;
        if self.lowered {
            self.stream.set_read_timeout(Some(self.idle))?;
            self.lowered = false;
        }
        Ok(())
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the reply did not arrive within the request's time budget",
            ));
        }
        if left < self.idle {
            self.stream.set_read_timeout(Some(left))?;
            self.lowered = true;
        }
        self.stream.read(buf)
    }
}

pub struct Server {
    /// As configured, e.g. `127.0.0.1:11211`.
    pub addr: String,
    pub breaker: Breaker,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

impl Server {
    pub fn new(addr: String, timeout: Duration) -> Server {
        Server {
            addr,
            breaker: Breaker::default(),
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs one request on a pooled connection. A connection that failed is dropped (its
    /// stream may hold half a reply) and the breaker opens; a server skipped by its breaker
    /// answers `Skipped` at once.
    pub fn with_conn<T>(
        &self,
        request: impl FnOnce(&mut Conn) -> Result<T, RemoteError>,
        setup: impl FnOnce(&mut Conn) -> Result<(), RemoteError>,
    ) -> Result<T, RemoteError> {
        if !self.breaker.allows() {
            return Err(RemoteError::Skipped(self.addr.clone()));
        }
        let pooled = self.idle.lock().unwrap().pop();
        let budget = self.timeout + ITEM_TRANSFER;
        let start = |c: &mut Conn| c.reader.get_mut().start(budget).map_err(io(&self.addr));
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .connect()
                .and_then(|mut c| start(&mut c).and_then(|()| setup(&mut c)).map(|()| c))?,
        };
        match start(&mut conn).and_then(|()| request(&mut conn)) {
            Ok(v) => {
                self.breaker.succeeded();
                self.idle.lock().unwrap().push(conn);
                Ok(v)
            }
            Err(e) => {
                if e.is_connection_failure() {
                    self.breaker.failed(&e.to_string());
                }
                Err(e)
            }
        }
        .inspect_err(|e| log::debug!("remote {}: {e}", self.addr))
    }

    fn connect(&self) -> Result<Conn, RemoteError> {
        let io = |e: std::io::Error| RemoteError::Io {
            server: self.addr.clone(),
            source: e,
        };
        let addrs: Vec<SocketAddr> = self.addr.to_socket_addrs().map_err(io)?.collect();
        let mut last = std::io::Error::other("address resolves to nothing");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                    s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                    let _ = s.set_nodelay(true);
                    let w = s.try_clone().map_err(io)?;
                    let timed = Timed {
                        stream: s,
                        idle: self.timeout,
                        deadline: Instant::now(),
                        lowered: false,
                    };
                    return Ok(Conn {
                        reader: BufReader::new(timed),
                        writer: BufWriter::new(w),
                    });
                }
                Err(e) => last = e,
            }
        }
        let error = io(last);
        self.breaker.failed(&error.to_string());
        Err(error)
    }
}

/// Rendezvous (highest random weight) hashing: each key goes to the server with the highest
/// hash of (server, key), so adding or removing a server moves only the keys it wins or held.
pub fn pick<'a>(servers: &'a [Server], key: &str) -> &'a Server {
    servers
        .iter()
        .max_by_key(|s| {
            let mut h = blake3::Hasher::new();
            h.update(s.addr.as_bytes());
            h.update(&[0]);
            h.update(key.as_bytes());
            *h.finalize().as_bytes()
        })
        .expect("at least one server")
}

/// The longest reply line cachefs accepts. Its lines are short: memcached's
/// `VALUE <key> <flags> <bytes> [<cas>]` (keys are at most 250 bytes), RESP's `$<len>`, `+OK`
/// and error lines. A longer one is not a reply to our request, and reading on would let a
/// server that never sends a newline make the agent buffer without bound.
pub const MAX_LINE_LEN: usize = 4096;

/// One reply line of a line-based protocol (memcached's text protocol, RESP), without its
/// CR LF, read from at most `MAX_LINE_LEN` bytes.
pub fn read_line(r: &mut impl BufRead, addr: &str) -> Result<String, RemoteError> {
    let mut line = Vec::new();
    let limit = MAX_LINE_LEN as u64 + 1;
    r.by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(io(addr))?;
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE_LEN {
            return Err(too_large(
                addr,
                "reply line",
                line.len() as u64,
                MAX_LINE_LEN,
            ));
        }
        return Err(io(addr)(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let line = String::from_utf8(line)
        .map_err(|e| reply_error(addr, &String::from_utf8_lossy(e.as_bytes())))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The `len` bytes of a value and the CR LF after them (both protocols frame data so),
/// refused before anything is allocated when `len` is over `MAX_ITEM_LEN`: the length comes
/// from the server, and no item cachefs writes is larger.
pub fn read_data(r: &mut impl Read, addr: &str, len: u64) -> Result<Vec<u8>, RemoteError> {
    let len = usize::try_from(len)
        .ok()
        .filter(|n| *n <= MAX_ITEM_LEN)
        .ok_or_else(|| too_large(addr, "value", len, MAX_ITEM_LEN))?;
    let mut data = vec![0; len + 2];
    r.read_exact(&mut data).map_err(io(addr))?;
    if !data.ends_with(b"\r\n") {
        return Err(reply_error(addr, "a value not followed by CR LF"));
    }
    data.truncate(len);
    Ok(data)
}

fn too_large(addr: &str, what: &'static str, len: u64, limit: usize) -> RemoteError {
    RemoteError::TooLarge {
        server: addr.to_string(),
        what,
        len,
        limit: limit as u64,
    }
}

pub fn io(addr: &str) -> impl Fn(std::io::Error) -> RemoteError + '_ {
    move |source| RemoteError::Io {
        server: addr.to_string(),
        source,
    }
}

pub fn reply_error(addr: &str, line: &str) -> RemoteError {
    RemoteError::Reply {
        server: addr.to_string(),
        reply: line.chars().take(200).collect(),
    }
}
