//! The worker's end of its pipe to the supervisor, the request count behind
//! `--max-requests`, and the pause of the accept loops while no thread can serve.
//!
//! The supervisor gives each worker the write end of a pipe. The worker writes
//! [`READY`] once it accepts connections, and [`RETIRE`] once it has served its share
//! of requests (`max_requests`, with the jitter the supervisor drew for it already
//! added), or [`STUCK`] once all its Python threads are stuck in calls past
//! `request_timeout`. It then goes on serving (with what it has left): the supervisor
//! starts a replacement, waits until that one is ready, and only then sends this worker
//! SIGTERM, so it drains as on any stop and no request is refused
//! (`docs/server-behavior.md`, "Worker recycling"). A worker with every thread stuck
//! also stops accepting ([`pause_accepting`]) until one is free again. The pipe closes
//! when the server stops; the supervisor reads the end of file as "nothing more from
//! this worker". The heartbeat (`crate::heartbeat`) writes its short lines on the same
//! pipe ([`send_bytes`]).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log;

/// The byte that says "accepting connections".
pub const READY: u8 = b'1';
/// The byte that says "served `max_requests`: replace me".
pub const RETIRE: u8 = b'M';
/// The byte that says "every Python thread is stuck past `request_timeout`: replace me"
/// (`crate::wsgi::deadline`).
pub const STUCK: u8 = b'T';

/// The worker's pipe, for those who report without a handle to it (set by the server;
/// weak, so the pipe still closes when the server stops).
static PUBLISHED: std::sync::Mutex<std::sync::Weak<SupervisorPipe>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// Make `pipe` reachable through [`send`].
pub fn publish(pipe: &std::sync::Arc<SupervisorPipe>) {
    *PUBLISHED.lock().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::downgrade(pipe);
}

/// Write `byte` to the published pipe, if the server still runs.
pub fn send(byte: u8) {
    send_bytes(&[byte]);
}

/// Write `msg` (one message, shorter than `PIPE_BUF` so that it is written at once)
/// to the published pipe, if the server still runs (`crate::heartbeat`).
pub fn send_bytes(msg: &[u8]) {
    let pipe = PUBLISHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .upgrade();
    if let Some(pipe) = pipe {
        pipe.send_bytes(msg);
    }
}

/// The write end of the pipe to the supervisor; `-1` when there is none (a server run
/// outside the supervisor). Closed on drop.
pub struct SupervisorPipe {
    fd: RawFd,
}

impl SupervisorPipe {
    pub fn new(fd: RawFd) -> Self {
        Self { fd }
    }

    pub fn send(&self, byte: u8) {
        self.send_bytes(&[byte]);
    }

    /// Write `msg` in one `write`: atomic on a pipe below `PIPE_BUF` (4096) bytes.
    pub fn send_bytes(&self, msg: &[u8]) {
        if self.fd >= 0 {
            // SAFETY: the fd was handed to us for these writes and is closed only on
            // drop. A short message to a pipe the supervisor drains never blocks for long.
            unsafe {
                libc::write(self.fd, msg.as_ptr().cast(), msg.len());
            }
        }
    }
}

impl Drop for SupervisorPipe {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: ours since `new`, closed once.
            unsafe {
                libc::close(self.fd);
            }
        }
    }
}

/// Whether the accept loops take no new connections (all threads stuck), and what wakes
/// them when that changes.
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static PAUSE_CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Stop (`true`) or resume taking new connections: while no request could run, new
/// clients are better off in the listen queue, where the replacement worker finds them.
/// Takes no lock and logs nothing, so it may be called under the caller's lock.
pub fn pause_accepting(paused: bool) {
    if PAUSED.swap(paused, Ordering::AcqRel) != paused {
        PAUSE_CHANGED.notify_waiters();
    }
}

/// Whether accepting is paused now.
#[cfg(test)]
pub fn accepting_is_paused() -> bool {
    PAUSED.load(Ordering::Acquire)
}

/// Resolves once accepting is paused (`true`) or resumed (`false`).
pub async fn accepting_paused(paused: bool) {
    loop {
        let changed = PAUSE_CHANGED.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if PAUSED.load(Ordering::Acquire) == paused {
            return;
        }
        changed.await;
    }
}

/// Requests served by this worker (all connections, all threads, both interfaces),
/// and the limit after which it asks to be replaced.
pub struct RequestCount {
    served: AtomicU64,
    /// 0: no limit; nothing is counted.
    limit: u64,
    pipe: std::sync::Arc<SupervisorPipe>,
}

impl RequestCount {
    pub fn new(limit: u64, pipe: std::sync::Arc<SupervisorPipe>) -> Self {
        Self {
            served: AtomicU64::new(0),
            limit,
            pipe,
        }
    }

    /// Count one request; the one that reaches the limit tells the supervisor (once).
    #[inline]
    pub fn count(&self) {
        if self.limit == 0 {
            return;
        }
        // Relaxed: the count orders nothing else, and exactly one caller sees the limit.
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            log::log(
                log::DEBUG,
                &format!(
                    "served {} requests (max-requests); asking the supervisor for a replacement",
                    self.limit
                ),
            );
            self.pipe.send(RETIRE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Count up to the limit on many threads; return what reached the pipe.
    fn counted(limit: u64, requests: u64) -> Vec<u8> {
        let mut fds = [0; 2];
        // SAFETY: a fresh pipe, both ends ours.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let count = Arc::new(RequestCount::new(
            limit,
            Arc::new(SupervisorPipe::new(fds[1])),
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let count = count.clone();
                std::thread::spawn(move || (0..requests / 4).for_each(|_| count.count()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(count); // closes the write end
        let mut out = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: ours, closed once.
        unsafe { libc::close(fds[0]) };
        out
    }

    #[test]
    fn tells_the_supervisor_once_at_the_limit() {
        assert_eq!(counted(1000, 4000), vec![RETIRE]);
        assert_eq!(counted(1000, 996), Vec::<u8>::new());
        assert_eq!(counted(0, 4000), Vec::<u8>::new());
    }
}
