//! Threads for client connections, kept for reuse. A hit is answered in well
//! under a millisecond, and a thread started for it (stack mapped, guard page
//! set, both unmapped at exit) cost a noticeable share of that. A connection
//! never waits for a busy thread: with no idle one, a new one starts, so a
//! miss that holds its thread for the whole compile delays nobody.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An idle thread exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(30);

pub struct Workers<T: Send + 'static> {
    jobs: Sender<T>,
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    jobs: Mutex<Receiver<T>>,
    /// Threads waiting for work that no dispatched job has claimed yet: a
    /// job is sent only after claiming one, so none is ever left queued.
    idle: AtomicUsize,
    handler: Box<dyn Fn(T) + Send + Sync>,
}

impl<T: Send + 'static> Workers<T> {
    pub fn new(handler: impl Fn(T) + Send + Sync + 'static) -> Workers<T> {
        let (tx, rx) = channel();
        Workers {
            jobs: tx,
            shared: Arc::new(Shared {
                jobs: Mutex::new(rx),
                idle: AtomicUsize::new(0),
                handler: Box::new(handler),
            }),
        }
    }

    /// Runs `job` on an idle thread, or on a new one.
    pub fn dispatch(&self, job: T) {
        if claim(&self.shared.idle) {
            if let Err(returned) = self.jobs.send(job) {
                // Cannot happen while `self` holds the receiver's Arc.
                self.spawn(returned.0);
            }
        } else {
            self.spawn(job);
        }
    }

    fn spawn(&self, first: T) {
        let shared = self.shared.clone();
        std::thread::spawn(move || work(&shared, first));
    }

    /// Threads waiting for work now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.shared.idle.load(SeqCst)
    }
}

fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn work<T>(shared: &Shared<T>, first: T) {
    let mut job = first;
    loop {
        (shared.handler)(job);
        shared.idle.fetch_add(1, SeqCst);
        job = loop {
            let next = shared
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(IDLE_EXIT);
            match next {
                Ok(j) => break j,
                // Leave unless a dispatch has claimed this thread meanwhile:
                // its job is then on the way.
                Err(RecvTimeoutError::Timeout) if claim(&shared.idle) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A job that blocks (a miss waiting for its compile) never delays the
    /// next one, and finished threads are reused.
    #[test]
    fn busy_threads_never_delay_new_jobs_and_idle_ones_are_reused() {
        let (done_tx, done_rx) = channel::<u32>();
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let release_rx = Mutex::new(release_rx);
        let workers = Workers::new(move |n: u32| {
            if n == 0 {
                release_rx.lock().unwrap().recv().unwrap();
            }
            done_tx.send(n).unwrap();
        });
        workers.dispatch(0);
        for n in 1..=20 {
            workers.dispatch(n);
            let got = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, n, "job {n} waited behind the blocked one");
            while workers.idle() == 0 {
                std::thread::yield_now();
            }
        }
        // One thread served jobs 1..=20 one after another.
        assert_eq!(workers.idle(), 1);
        release_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
    }
}
