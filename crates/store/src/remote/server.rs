//! One remote server: its address, a small pool of open connections with short timeouts,
//! and its circuit breaker. The protocol (memcached text, Redis RESP) is the caller's.

use super::breaker::Breaker;
use super::RemoteError;
use std::io::{BufRead, BufReader, BufWriter};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub writer: BufWriter<TcpStream>,
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
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().and_then(|mut c| setup(&mut c).map(|()| c))?,
        };
        match request(&mut conn) {
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
                    return Ok(Conn {
                        reader: BufReader::new(s),
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

/// One reply line of a line-based protocol (memcached's text protocol,
/// RESP), without its CR LF.
pub fn read_line(c: &mut Conn, addr: &str) -> Result<String, RemoteError> {
    let mut line = String::new();
    let n = c.reader.read_line(&mut line).map_err(io(addr))?;
    if n == 0 {
        return Err(io(addr)(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
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
