//! A memcached pool over the text protocol (`get`, `set`, `delete`), keys spread over the
//! servers by rendezvous hashing. (The `memcache` crate is not in this build's offline
//! registry; the protocol subset cachefs needs is small and its timeouts are ours to set.)

use super::server::{io, pick, read_data, read_line, reply_error, Conn, Server};
use super::{RemoteError, RemoteTier, ServerHealth};
use std::io::{BufRead, Write};
use std::time::Duration;

pub struct Memcached {
    servers: Vec<Server>,
}

impl Memcached {
    /// `urls`: `tcp://host:port` (or `host:port`) entries.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Memcached, RemoteError> {
        let mut servers = Vec::new();
        for u in urls {
            let addr = u.strip_prefix("tcp://").unwrap_or(u).trim_end_matches('/');
            if addr.is_empty() || !addr.contains(':') {
                return Err(RemoteError::Config(format!(
                    "memcached server {u:?} is not tcp://host:port"
                )));
            }
            servers.push(Server::new(addr.to_string(), timeout));
        }
        if servers.is_empty() {
            return Err(RemoteError::Config("no memcached server given".into()));
        }
        Ok(Memcached { servers })
    }

    /// The server that holds the entries routed by `route` (for tests and diagnostics).
    pub fn server_of(&self, route: &str) -> &str {
        &pick(&self.servers, route).addr
    }
}

impl RemoteTier for Memcached {
    fn kind(&self) -> &'static str {
        "memcached"
    }

    fn get(&self, route: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let server = pick(&self.servers, route);
        server.with_conn(|c| get(c, &server.addr, key), |_| Ok(()))
    }

    fn set(&self, route: &str, key: &str, value: &[u8]) -> Result<(), RemoteError> {
        let server = pick(&self.servers, route);
        server.with_conn(|c| set(c, &server.addr, key, value), |_| Ok(()))
    }

    fn delete(&self, route: &str, key: &str) -> Result<(), RemoteError> {
        let server = pick(&self.servers, route);
        server.with_conn(
            |c| {
                write!(c.writer, "delete {key}\r\n").map_err(io(&server.addr))?;
                c.writer.flush().map_err(io(&server.addr))?;
                let line = read_line(&mut c.reader, &server.addr)?;
                match line.as_str() {
                    "DELETED" | "NOT_FOUND" => Ok(()),
                    other => Err(reply_error(&server.addr, other)),
                }
            },
            |_| Ok(()),
        )
    }

    fn health(&self) -> Vec<ServerHealth> {
        self.servers.iter().map(ServerHealth::of).collect()
    }
}

fn get(c: &mut Conn, addr: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
    write!(c.writer, "get {key}\r\n").map_err(io(addr))?;
    c.writer.flush().map_err(io(addr))?;
    read_get_reply(&mut c.reader, addr, key)
}

/// The reply to `get {key}`: `END`, or `VALUE {key} <flags> <bytes>`, the bytes, `END`.
/// Public for the parser fuzz tests: whatever a server sends, this returns without
/// allocating more than `MAX_ITEM_LEN` and a line.
#[doc(hidden)]
pub fn read_get_reply(
    r: &mut impl BufRead,
    addr: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, RemoteError> {
    let line = read_line(r, addr)?;
    if line == "END" {
        return Ok(None);
    }
    let len = match line.split(' ').collect::<Vec<_>>()[..] {
        ["VALUE", k, _flags, len] if k == key => len.parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| reply_error(addr, &line))?;
    let data = read_data(r, addr, len)?;
    let end = read_line(r, addr)?;
    if end != "END" {
        return Err(reply_error(addr, &end));
    }
    Ok(Some(data))
}

fn set(c: &mut Conn, addr: &str, key: &str, value: &[u8]) -> Result<(), RemoteError> {
    write!(c.writer, "set {key} 0 0 {}\r\n", value.len()).map_err(io(addr))?;
    c.writer.write_all(value).map_err(io(addr))?;
    c.writer.write_all(b"\r\n").map_err(io(addr))?;
    c.writer.flush().map_err(io(addr))?;
    let line = read_line(&mut c.reader, addr)?;
    if line != "STORED" {
        return Err(reply_error(addr, &line));
    }
    Ok(())
}
