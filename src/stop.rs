//! How a worker learns that it must stop, and the backstop that makes sure it does.
//!
//! A thread of its own (with a tiny current-thread runtime) waits for SIGTERM (drain,
//! then stop), SIGUSR2 (drain as a replaced worker: hand the idle connections to a
//! sibling, `crate::handoff`; a SIGTERM after it, the whole server stopping, ends the
//! handing over), SIGQUIT (stop now) and for the supervisor to disappear (checked every
//! second: an orphaned worker drains and stops). It also hears SIGUSR1, which the
//! supervisor forwards after logrotate: the log files are reopened on a short-lived
//! thread of its own, which waits for the GIL without holding up a stop. It publishes the decision on a watch
//! channel the server reads. Because it does not depend on the serving thread, a stop
//! is noticed even while that thread runs a long application call — which, in the
//! inline WSGI mode, is also the thread that would otherwise read the signal.
//!
//! The backstop: if the worker has not finished [`LATE`] after its deadline
//! (`graceful_timeout` after SIGTERM, at once after SIGQUIT), an application call is
//! holding the serving thread; the watcher logs that and ends the process, as the
//! drain would have done on its own (its exit status is the same as after a drain).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use pyo3::prelude::*;

use crate::log;

/// Why a worker stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Graceful,
    Immediate,
}

/// Grace beyond the deadline before the backstop ends the process: the normal path
/// (the server returns, the runtime shuts down within 0.5 s) takes less.
const LATE: Duration = Duration::from_secs(1);

/// The worker's side of the watcher: read the decision, say when serving is over.
pub struct StopWatch {
    pub decision: watch::Receiver<Option<Stop>>,
    finished: Arc<AtomicBool>,
}

impl StopWatch {
    /// Serving is over: the backstop must not fire.
    pub fn finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

/// Install the signal handlers and start the watcher thread.
pub fn start(graceful_timeout: Duration) -> std::io::Result<StopWatch> {
    let (tx, rx) = watch::channel(None);
    let finished = Arc::new(AtomicBool::new(false));
    let (installed_tx, installed_rx) = std::sync::mpsc::sync_channel(1);
    let done = finished.clone();
    std::thread::Builder::new()
        .name("gristmill-stop".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(installed_tx.send(Err(e))),
            };
            rt.block_on(async move {
                let signals = signal(SignalKind::terminate()).and_then(|term| {
                    Ok((
                        term,
                        signal(SignalKind::quit())?,
                        signal(SignalKind::user_defined1())?,
                        signal(SignalKind::user_defined2())?,
                    ))
                });
                let (mut term, mut quit, mut usr1, mut usr2) = match signals {
                    Ok(s) => {
                        let _ = installed_tx.send(Ok(()));
                        s
                    }
                    Err(e) => return drop(installed_tx.send(Err(e))),
                };
                let parent = unsafe { libc::getppid() };
                let mut orphan_check = tokio::time::interval(Duration::from_secs(1));
                let stop = loop {
                    tokio::select! {
                        _ = term.recv() => break Stop::Graceful,
                        // Replaced by a worker already serving: drain the same way, but
                        // pass the idle connections on (`crate::handoff`).
                        _ = usr2.recv() => {
                            crate::handoff::retire();
                            break Stop::Graceful;
                        }
                        _ = quit.recv() => break Stop::Immediate,
                        _ = usr1.recv() => reopen_log_files(),
                        _ = orphan_check.tick() => {
                            if unsafe { libc::getppid() } != parent {
                                log::log(log::WARNING, "supervisor went away; stopping");
                                break Stop::Graceful;
                            }
                        }
                    }
                };
                let _ = tx.send(Some(stop));
                let mut deadline = Instant::now() + LATE;
                if stop == Stop::Graceful {
                    deadline += graceful_timeout;
                    let mut replaced = crate::handoff::retiring();
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            _ = quit.recv() => {
                                let _ = tx.send(Some(Stop::Immediate));
                                deadline = Instant::now() + LATE;
                                break;
                            }
                            // The whole server stops while this replaced worker drains:
                            // its siblings stop too, so nothing more is passed to them.
                            _ = term.recv(), if replaced => {
                                replaced = false;
                                crate::handoff::abandon();
                            }
                        }
                    }
                }
                tokio::time::sleep_until(deadline).await;
                if !done.load(Ordering::SeqCst) {
                    exit_late();
                }
            })
        })?;
    installed_rx
        .recv()
        .map_err(|_| std::io::Error::other("the stop watcher thread died"))??;
    Ok(StopWatch {
        decision: rx,
        finished,
    })
}

/// SIGUSR1: reopen the worker's log files (`gristmill.logging.reopen_files`).
fn reopen_log_files() {
    let _ = std::thread::Builder::new()
        .name("gristmill-reopen".into())
        .spawn(|| {
            Python::attach(|py| {
                let reopened = py
                    .import("gristmill.logging")
                    .and_then(|m| m.call_method0("reopen_files"))
                    .and_then(|n| n.extract::<usize>());
                match reopened {
                    Ok(0) => {}
                    Ok(n) => log::log_with(
                        py,
                        log::INFO,
                        &format!("Worker reopened {n} log file{}", log::plural(n as u64)),
                        None,
                    ),
                    Err(e) => {
                        log::log_with(py, log::ERROR, "could not reopen the log files", Some(&e))
                    }
                }
            })
        });
}

/// End the process: an application call still holds the serving thread.
fn exit_late() -> ! {
    // Logging needs the GIL, which an application stuck in C code may hold: give it a
    // moment on a thread of its own, then exit regardless.
    let (said, heard) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().spawn(move || {
        log::log(
            log::WARNING,
            "an application call is still running past the stop deadline; exiting",
        );
        let _ = said.send(());
    });
    let _ = heard.recv_timeout(Duration::from_secs(1));
    unsafe { libc::_exit(0) }
}
