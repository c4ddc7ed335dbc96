//! The threads that accept client connections, each serving what it
//! accepted itself. A hit is answered in about a millisecond, and handing a
//! connection from an accepting thread to a worker cost one wake-up more
//! (a futex wake across the two vCPUs is ~35 µs on the VM measured; see
//! DESIGN "Hit path"). A connection never waits for a busy thread: a thread
//! that takes one while no other is waiting starts a new acceptor first,
//! so a miss that holds its thread for the whole compile delays nobody.
//! Extra acceptors leave after `IDLE_EXIT` without a connection.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// An acceptor beyond the one that always waits exits after this long
/// without a connection.
const IDLE_EXIT: Duration = Duration::from_secs(30);

struct Pool {
    listener: UnixListener,
    /// Threads blocked in accept().
    waiting: AtomicUsize,
    handler: Box<dyn Fn(UnixStream) + Send + Sync>,
}

/// Serves `listener` forever on this thread and as many more as
/// connections need at once.
pub fn serve(listener: UnixListener, handler: impl Fn(UnixStream) + Send + Sync + 'static) -> ! {
    accept_loop(&pool(listener, handler), true);
    unreachable!("the first acceptor never leaves")
}

fn pool(listener: UnixListener, handler: impl Fn(UnixStream) + Send + Sync + 'static) -> Arc<Pool> {
    if let Err(e) = nix::sys::socket::setsockopt(
        &listener,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(IDLE_EXIT.as_secs() as i64, 0),
    ) {
        log::debug!("no accept timeout on the agent socket ({e}): idle threads stay");
    }
    Arc::new(Pool {
        listener,
        waiting: AtomicUsize::new(0),
        handler: Box::new(handler),
    })
}

fn spawn(pool: &Arc<Pool>) {
    let pool = pool.clone();
    std::thread::spawn(move || accept_loop(&pool, false));
}

fn accept_loop(pool: &Arc<Pool>, stays: bool) {
    loop {
        pool.waiting.fetch_add(1, SeqCst);
        let accepted = pool.listener.accept();
        let others_waiting = pool.waiting.fetch_sub(1, SeqCst) - 1;
        match accepted {
            Ok((stream, _)) => {
                if others_waiting == 0 {
                    spawn(pool);
                }
                (pool.handler)(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !stays && others_waiting > 0 {
                    return;
                }
            }
            Err(e) => {
                log::warn!("accept on the agent socket failed: {e}");
                // Out of file descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc::{channel, sync_channel};
    use std::sync::Mutex;

    /// A connection that blocks (a miss waiting for its compile) never
    /// delays the next ones, which are served one after another by a thread
    /// that accepted them itself.
    #[test]
    fn a_busy_connection_never_delays_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let release_rx = Mutex::new(release_rx);
        let (threads_tx, threads_rx) = channel();
        let pool = pool(listener, move |mut s: UnixStream| {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            if b[0] == 0 {
                release_rx.lock().unwrap().recv().unwrap();
            }
            threads_tx.send(std::thread::current().id()).unwrap();
            s.write_all(&b).unwrap();
        });
        let first = pool.clone();
        std::thread::spawn(move || accept_loop(&first, true));
        let ask = |n: u8| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(&[n]).unwrap();
            s
        };
        let mut blocked = ask(0);
        let mut served_by = Vec::new();
        for n in 1..=20u8 {
            // From the second on, the thread that served the last one is
            // back in accept() beside the one started for it.
            while n > 1 && pool.waiting.load(SeqCst) < 2 {
                std::thread::yield_now();
            }
            let mut s = ask(n);
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .expect("waited behind the blocked connection");
            assert_eq!(b[0], n);
            served_by.push(threads_rx.recv().unwrap());
        }
        served_by.sort_by_key(|t| format!("{t:?}"));
        served_by.dedup();
        assert_eq!(served_by.len(), 2, "two threads served all twenty in turn");
        release_tx.send(()).unwrap();
        let mut b = [9u8; 1];
        blocked.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 0);
    }
}
