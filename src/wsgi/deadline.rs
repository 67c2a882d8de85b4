//! `--request-timeout` for WSGI: what happens when an application call takes too long.
//!
//! A Python thread cannot be cancelled, so the server answers in its place. Each request
//! gets a [`Deadline`] and a timer task on the I/O runtime when it is handed to the
//! Python threads; waiting for a free thread counts, since the client waits too. When
//! the timer fires before the call ended:
//! - the client gets `504 Gateway Timeout` if no response had started, or its response
//!   is aborted if one had (`response::time_out`), and the access line is written then;
//! - one error line names the request and the timeout and, when the call is running,
//!   carries the thread's Python stack (`sys._current_frames()`), so the log says where
//!   it is stuck;
//! - the thread counts as stuck until the call returns; its result is then discarded
//!   (the iterable is still closed, PEP 3333) and a line says so. A request still
//!   queued never reaches the application.
//!
//! When every thread of the pool is stuck ([`Stuck`]), nothing is left to serve with:
//! the worker stops accepting connections (new clients wait in the listen queue, where
//! another worker or the replacement takes them) and asks the supervisor for a
//! replacement (`lifecycle::STUCK`), which starts a new worker first and then stops this
//! one as on any recycling. Should a stuck call return meanwhile, accepting resumes.
//!
//! The timer only runs while the call does: the call's end wakes it ([`Deadline::done`]),
//! and it exits. So the cost when the timeout is on is one task per request; off, none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::sync::Notify;

use super::response::{time_out, Responder, TimedOut};
use super::Shared;
use crate::access_log::Record;
use crate::lifecycle;
use crate::log;

/// Where a timed request's application call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Waiting for a Python thread.
    Queued,
    /// Running on the thread with this `threading.get_ident()`.
    Running(u64),
    /// Past its deadline; `true` while the call still runs (its thread is stuck).
    Expired(bool),
    /// The call ended within the timeout.
    Finished,
}

/// One request's deadline, shared by its timer task and the thread that runs it.
pub struct Deadline {
    run: Mutex<Run>,
    /// Wakes the timer when the call ended in time.
    done: Notify,
    started: Instant,
}

/// How many of the pool's threads are stuck in calls past their deadline. The count and
/// the pause of the accept loops change together, under one lock, so two threads
/// getting stuck and free at once cannot leave the worker paused with a thread free.
pub struct Stuck {
    count: Mutex<usize>,
    threads: usize,
    /// The supervisor was asked for a replacement (once per worker).
    reported: AtomicBool,
}

impl Stuck {
    pub fn new(threads: usize) -> Self {
        Stuck {
            count: Mutex::new(0),
            threads,
            reported: AtomicBool::new(false),
        }
    }

    /// One more thread is stuck. `true` when that made all of them: accepting is paused.
    fn add(&self) -> bool {
        let mut n = self.count.lock();
        *n += 1;
        let all = *n == self.threads;
        if all {
            lifecycle::pause_accepting(true);
        }
        all
    }

    /// A stuck thread is free again. `true` when all were stuck: accepting resumes.
    fn remove(&self) -> bool {
        let mut n = self.count.lock();
        let was_all = *n == self.threads;
        *n = n.saturating_sub(1);
        if was_all {
            lifecycle::pause_accepting(false);
        }
        was_all
    }

    /// Every thread just got stuck: say so, and ask for a replacement (once).
    fn all_stuck(&self, timeout: Duration) {
        log::log(
            log::WARNING,
            "accepting no new connections until a Python thread is free",
        );
        if !self.reported.swap(true, Ordering::AcqRel) {
            log::log(
                log::ERROR,
                &format!(
                    "all {} Python threads of this worker are stuck in application calls \
                     past request_timeout ({} s); asking the supervisor for a replacement",
                    self.threads,
                    timeout.as_secs_f64()
                ),
            );
            lifecycle::send(lifecycle::STUCK);
        }
    }
}

/// How an application call under a deadline ended ([`Deadline::finish`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Within the timeout: its response stands.
    InTime,
    /// After its deadline: the client was answered, the result is discarded.
    /// `resumed`: its thread was the one that lets the worker accept again.
    Late { resumed: bool },
}

/// The identity `sys._current_frames()` knows this thread by (`threading.get_ident()`,
/// which is `pthread_self()` on POSIX).
fn thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// What the timer needs to answer for the application.
pub struct Timer {
    pub deadline: Arc<Deadline>,
    pub responder: Responder,
    pub parts: Parts,
    pub peer: Option<std::net::SocketAddr>,
    /// When the request arrived (for the access line).
    pub started: Instant,
    pub timeout: Duration,
    pub shared: Arc<Shared>,
}

impl Deadline {
    pub fn new() -> Arc<Self> {
        Arc::new(Deadline {
            run: Mutex::new(Run::Queued),
            done: Notify::new(),
            started: Instant::now(),
        })
    }

    /// The call starts on this thread; `false` if the request timed out while queued
    /// (its client has had its 504: do not run it).
    pub fn begin(&self) -> bool {
        let mut run = self.run.lock();
        if *run != Run::Queued {
            return false;
        }
        *run = Run::Running(thread_ident());
        true
    }

    /// The call ended (`stuck` counts it free again if it was stuck).
    pub fn finish(&self, stuck: &Stuck) -> Ended {
        let mut run = self.run.lock();
        match std::mem::replace(&mut *run, Run::Finished) {
            Run::Expired(true) => Ended::Late {
                resumed: stuck.remove(),
            },
            Run::Expired(false) => Ended::Late { resumed: false },
            _ => {
                self.done.notify_one();
                Ended::InTime
            }
        }
    }

    /// After [`finish`](Self::finish) said [`Ended::Late`]: the log lines.
    pub fn report_late(&self, what: &str, resumed: bool) {
        log::log(
            log::WARNING,
            &format!(
                "the application call for {what} returned after {:.1} s, past \
                 request_timeout; its result was discarded",
                self.started.elapsed().as_secs_f64()
            ),
        );
        if resumed {
            log::log(
                log::WARNING,
                "a Python thread is free again; accepting connections",
            );
        }
    }

    /// At the deadline: the state before, if the call had not ended, and whether this
    /// made every thread stuck.
    fn expire(&self, stuck: &Stuck) -> Option<(Run, bool)> {
        let mut run = self.run.lock();
        let before = *run;
        let all = match before {
            Run::Queued => {
                *run = Run::Expired(false);
                false
            }
            Run::Running(_) => {
                *run = Run::Expired(true);
                stuck.add()
            }
            Run::Expired(_) | Run::Finished => return None,
        };
        Some((before, all))
    }
}

impl Timer {
    /// Wait for the deadline (or the end of the call, whichever comes first) and act.
    pub async fn run(self) {
        let done = self.deadline.done.notified();
        tokio::select! {
            _ = done => return,
            _ = tokio::time::sleep_until((self.deadline.started + self.timeout).into()) => {}
        }
        let shared = &self.shared;
        let Some((before, all_stuck)) = self.deadline.expire(&shared.stuck) else {
            return;
        };
        let (outcome, bytes) = time_out(&self.responder, shared.config.server_header);
        let what = crate::http::describe(&self.parts);
        let secs = self.timeout.as_secs_f64();
        let (status, then) = match outcome {
            TimedOut::Answered => (504, "sent 504 Gateway Timeout".to_owned()),
            TimedOut::Aborted(s) => (s, format!("aborted its response (status {s} sent)")),
            TimedOut::Complete(s) => (s, "its response was complete".to_owned()),
        };
        if let Some(access) = &shared.access {
            let record = Record::new(&self.parts, self.peer, status, bytes, self.started);
            access.emit_detached(&record);
        }
        let thread = match before {
            Run::Running(thread) => thread,
            _ => {
                log::log(
                    log::ERROR,
                    &format!(
                        "request timeout: {what} waited {secs} s (request_timeout) for a \
                         free Python thread; {then}"
                    ),
                );
                return;
            }
        };
        if all_stuck {
            shared.stuck.all_stuck(self.timeout);
        }
        let msg = format!(
            "request timeout: the application call for {what} is still running after \
             {secs} s (request_timeout); {then}. Its thread cannot be stopped and stays \
             busy until the call returns; it is at"
        );
        // The stack needs the GIL, which a busy application thread holds most of the
        // time: take it on a blocking thread, not on an I/O thread.
        tokio::task::spawn_blocking(move || {
            Python::attach(|py| {
                let stack = thread_stack(py, thread)
                    .unwrap_or_else(|e| format!("  (stack unavailable: {e})\n"));
                log::log_with(
                    py,
                    log::ERROR,
                    &format!("{msg}:\n{}", stack.trim_end()),
                    None,
                );
            })
        });
    }
}

/// The Python stack of the thread `ident`, formatted like a traceback (innermost last).
fn thread_stack(py: Python<'_>, ident: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let Some(frame) = frames
        .call_method1("get", (ident,))?
        .extract::<Option<Bound<'_, PyAny>>>()?
    else {
        return Ok("  (the thread has no Python frame now)\n".to_owned());
    };
    let lines = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?;
    let text: Vec<String> = lines.extract()?;
    Ok(text.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_ends_in_time_stands() {
        let stuck = Stuck::new(1);
        let d = Deadline::new();
        assert!(d.begin());
        assert_eq!(d.finish(&stuck), Ended::InTime);
        assert_eq!(d.expire(&stuck), None); // the timer, late: nothing to do
        assert_eq!(*stuck.count.lock(), 0);
    }

    #[test]
    fn a_request_that_expires_queued_never_runs() {
        let stuck = Stuck::new(1);
        let d = Deadline::new();
        assert_eq!(d.expire(&stuck), Some((Run::Queued, false)));
        assert!(!d.begin());
        assert_eq!(d.finish(&stuck), Ended::Late { resumed: false });
        assert_eq!(*stuck.count.lock(), 0);
    }

    #[test]
    fn stuck_threads_are_counted_until_their_calls_return() {
        // Two threads: the first stuck call is not all of them, the second is; the
        // first to return frees one (and resumes accepting), the second none.
        let stuck = Stuck::new(2);
        let (a, b) = (Deadline::new(), Deadline::new());
        assert!(a.begin() && b.begin());
        assert!(matches!(a.expire(&stuck), Some((Run::Running(_), false))));
        assert!(matches!(b.expire(&stuck), Some((Run::Running(_), true))));
        assert!(lifecycle::accepting_is_paused());
        assert_eq!(*stuck.count.lock(), 2);
        assert_eq!(a.finish(&stuck), Ended::Late { resumed: true });
        assert!(!lifecycle::accepting_is_paused());
        assert_eq!(b.finish(&stuck), Ended::Late { resumed: false });
        assert_eq!(*stuck.count.lock(), 0);
    }
}
