//! A Redis server over RESP (`GET`, `SET … [EX s]`, `DEL`, with `AUTH` and `SELECT` on each
//! new connection). (The `redis` crate's dependencies are not all in this build's offline
//! registry; the three commands cachefs needs are a few lines of RESP.)

use super::server::{io, read_data, read_line, reply_error, Conn, Server};
use super::{RemoteError, RemoteTier, ServerHealth};
use std::io::{BufRead, Write};
use std::time::Duration;

pub struct Redis {
    server: Server,
    password: Option<String>,
    db: u32,
    expiry_s: u64,
}

impl Redis {
    /// `url`: `redis://[:password@]host:port[/db]`.
    pub fn new(url: &str, timeout: Duration, expiry_s: u64) -> Result<Redis, RemoteError> {
        let bad =
            || RemoteError::Config(format!("{url:?} is not redis://[:password@]host:port/db"));
        let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a.trim_start_matches(':').to_string()), r),
            None => (None, rest),
        };
        let (addr, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (a, d.parse().map_err(|_| bad())?),
            None => (rest, 0),
        };
        if !addr.contains(':') {
            return Err(bad());
        }
        Ok(Redis {
            server: Server::new(addr.to_string(), timeout),
            password: auth.filter(|p| !p.is_empty()),
            db,
            expiry_s,
        })
    }

    fn setup(&self, c: &mut Conn) -> Result<(), RemoteError> {
        if let Some(p) = &self.password {
            self.simple(c, &[b"AUTH", p.as_bytes()])?;
        }
        if self.db != 0 {
            self.simple(c, &[b"SELECT", self.db.to_string().as_bytes()])?;
        }
        Ok(())
    }

    /// A command whose reply must be `+OK` (or an integer).
    fn simple(&self, c: &mut Conn, args: &[&[u8]]) -> Result<(), RemoteError> {
        send(c, &self.server.addr, args)?;
        let line = read_line(&mut c.reader, &self.server.addr)?;
        if line.starts_with('+') || line.starts_with(':') {
            Ok(())
        } else {
            Err(reply_error(&self.server.addr, &line))
        }
    }
}

impl RemoteTier for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn get(&self, _route: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let addr = &self.server.addr;
        self.server.with_conn(
            |c| {
                send(c, addr, &[b"GET", key.as_bytes()])?;
                read_bulk_reply(&mut c.reader, addr)
            },
            |c| self.setup(c),
        )
    }

    fn set(&self, _route: &str, key: &str, value: &[u8]) -> Result<(), RemoteError> {
        let expiry = self.expiry_s.to_string();
        self.server.with_conn(
            |c| {
                if self.expiry_s > 0 {
                    self.simple(
                        c,
                        &[b"SET", key.as_bytes(), value, b"EX", expiry.as_bytes()],
                    )
                } else {
                    self.simple(c, &[b"SET", key.as_bytes(), value])
                }
            },
            |c| self.setup(c),
        )
    }

    fn delete(&self, _route: &str, key: &str) -> Result<(), RemoteError> {
        self.server.with_conn(
            |c| self.simple(c, &[b"DEL", key.as_bytes()]),
            |c| self.setup(c),
        )
    }

    fn health(&self) -> Vec<ServerHealth> {
        vec![ServerHealth::of(&self.server)]
    }
}

/// The reply to `GET`: a bulk string `$<len>`, its bytes and CR LF, or the null bulk string
/// `$-1`. Public for the parser fuzz tests: whatever a server sends, this returns without
/// allocating more than `MAX_ITEM_LEN` and a line.
#[doc(hidden)]
pub fn read_bulk_reply(r: &mut impl BufRead, addr: &str) -> Result<Option<Vec<u8>>, RemoteError> {
    let line = read_line(r, addr)?;
    match line.strip_prefix('$').and_then(|n| n.parse::<i64>().ok()) {
        Some(-1) => Ok(None),
        Some(len) if len >= 0 => Ok(Some(read_data(r, addr, len as u64)?)),
        _ => Err(reply_error(addr, &line)),
    }
}

fn send(c: &mut Conn, addr: &str, args: &[&[u8]]) -> Result<(), RemoteError> {
    let w = &mut c.writer;
    (|| {
        write!(w, "*{}\r\n", args.len())?;
        for a in args {
            write!(w, "${}\r\n", a.len())?;
            w.write_all(a)?;
            w.write_all(b"\r\n")?;
        }
        w.flush()
    })()
    .map_err(io(addr))
}
