//! The one-thread ASGI mode: the event loop's selector turns the tokio runtime.
//!
//! asyncio's `SelectorEventLoop` asks its selector once per iteration which of its
//! descriptors are ready, with a timeout (`select(timeout)`).
//! `gristmill._asgi.DrivenSelector` answers by calling [`Driver::turn`], which runs a
//! current-thread tokio runtime on this same thread — accepting, parsing, writing
//! responses — until there is Python work (a request to start, a future to complete),
//! one of the loop's own descriptors is ready, or the loop's timeout passes. Then the
//! queued Python work runs, and the loop carries on with its callbacks.
//!
//! One thread serves both sides, so a request costs no wake-up and no thread switch
//! between the I/O thread and the loop thread — on a busy core the largest cost of the
//! two-thread mode (`bench/NOTES.md`). While Python code runs, no socket is served (with
//! one Python thread no other request could run anyway); the GIL is released whenever
//! the runtime turns, so the application's own threads keep running. After a turn that
//! moved work, the wait is preceded by `--busy-poll` of turning without sleeping
//! (`crate::busy_poll`).

use std::future::poll_fn;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::Bridge;
use crate::stop::Stop;

/// The runtime a one-thread ASGI worker turns from its event loop's selector.
#[pyclass(module = "gristmill._core", frozen)]
pub struct Driver {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// None once the server stopped and the runtime was shut down ([`Driver::shutdown`]);
    /// the loop then waits on its own descriptors alone.
    rt: Option<Arc<Runtime>>,
    /// The loop's epoll descriptor, watched by the runtime.
    loop_fds: Option<AsyncFd<OwnedFd>>,
    /// The same descriptor once the runtime is gone.
    loop_fds_alone: Option<OwnedFd>,
    bridge: Option<Arc<Bridge>>,
    serving: Option<JoinHandle<std::io::Result<Stop>>>,
    /// `--busy-poll`, while serving.
    busy_poll: Duration,
    /// The last turn moved work between the runtime and Python: only then is the next
    /// wait preceded by busy polling (not after a wake-up for the loop's own timers).
    active: bool,
    outcome: Option<std::io::Result<Stop>>,
}

impl Driver {
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.state.lock().rt.clone()
    }

    /// Start serving: `bridge` carries the work for Python, `serving` is the server.
    pub fn start(
        &self,
        bridge: Arc<Bridge>,
        serving: JoinHandle<std::io::Result<Stop>>,
        busy_poll: Duration,
    ) {
        let mut st = self.state.lock();
        st.bridge = Some(bridge);
        st.serving = Some(serving);
        st.busy_poll = busy_poll;
    }

    /// How serving ended, once [`Driver::ENDED`] was reported (None before).
    pub fn outcome(&self) -> Option<std::io::Result<Stop>> {
        self.state.lock().outcome.take()
    }

    /// The server stopped (or failed): stop serving if it has not, and shut the runtime
    /// down within `wait`, ending the connections still open — as the two-thread mode
    /// does — so lifespan shutdown runs with no traffic. The loop keeps working on its
    /// own descriptors.
    pub fn shutdown(&self, py: Python<'_>, wait: Duration) {
        let rt = {
            let mut st = self.state.lock();
            if let Some(serving) = st.serving.take() {
                serving.abort();
            }
            let rt = st.rt.take();
            if let (Some(rt), Some(watched)) = (&rt, st.loop_fds.take()) {
                // Unregistered while the runtime still runs.
                let _enter = rt.enter();
                st.loop_fds_alone = Some(watched.into_inner());
            }
            rt
        };
        match rt.map(Arc::try_unwrap) {
            Some(Ok(rt)) => py.detach(|| rt.shutdown_timeout(wait)),
            // Still referenced (the worker is failing on its way out): left to the exit.
            Some(Err(rt)) => std::mem::forget(rt),
            None => {}
        }
    }
}

/// Wait up to `timeout` (None: no limit, 0: just look) for `fd` to be readable.
fn wait_readable(fd: RawFd, timeout: Option<f64>) -> bool {
    let ms = match timeout {
        None => -1,
        Some(t) if t <= 0.0 || t.is_nan() => 0,
        Some(t) => (t * 1000.0).ceil().min(i32::MAX as f64) as i32,
    };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Why a blocking turn ended.
enum Woke {
    Ended(std::io::Result<Stop>),
    Other,
}

#[pymethods]
impl Driver {
    /// [`Driver::turn`]'s answer: the loop's own descriptors may be ready (select them).
    /// Exported to Python as `Driver.LOOP_FDS`, so the flags are defined here only.
    #[classattr]
    const LOOP_FDS: u8 = 1;
    /// [`Driver::turn`]'s answer: the server stopped; the loop should stop too
    /// (`Driver.ENDED`).
    #[classattr]
    const ENDED: u8 = 2;

    #[new]
    fn new() -> PyResult<Self> {
        let rt = crate::current_thread_runtime()?;
        Ok(Driver {
            state: Mutex::new(State {
                rt: Some(Arc::new(rt)),
                ..State::default()
            }),
        })
    }

    /// Watch the event loop's selector descriptor `fd` (an epoll instance; a duplicate
    /// is kept, so closing the loop's does not matter here).
    fn watch(&self, fd: RawFd) -> PyResult<()> {
        // SAFETY: `fd` is borrowed only for the duplicate; `dup` checks that it is open.
        let own = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        let mut st = self.state.lock();
        let rt = st
            .rt
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the runtime was shut down"))?;
        let _enter = rt.enter();
        // SAFETY: the AsyncFd owns `own`, which stays open and the same until it drops.
        let watched = unsafe { AsyncFd::register_with_interest(own, Interest::READABLE) }
            .map_err(|e| PyErr::from(std::io::Error::from(e)))?;
        st.loop_fds = Some(watched);
        Ok(())
    }

    /// Turn the runtime for up to `timeout` seconds (None: no limit, 0: one pass that
    /// does not sleep), run the Python work it produced, and say what else is due: a
    /// bit set of `LOOP_FDS` (select the loop's descriptors) and `ENDED` (stop the loop).
    #[pyo3(signature = (timeout=None))]
    fn turn(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u8> {
        // Never re-entered: Python code runs only after the runtime was left, with the
        // state unlocked; a nested loop run from it (`run_until_complete` inside a
        // callback) is an error, as asyncio makes it one.
        let Some(mut guard) = self.state.try_lock() else {
            return Err(PyRuntimeError::new_err(
                "the event loop's selector was entered again from inside itself",
            ));
        };
        let st = &mut *guard;
        let Some(rt) = st.rt.clone() else {
            // Shut down: wait on the loop's descriptors alone.
            // What the connections' ends queued (a `receive()` told of the disconnect)
            // still reaches the application.
            let Some(fd) = st.loop_fds_alone.as_ref().map(|f| f.as_raw_fd()) else {
                return Err(PyRuntimeError::new_err("Driver.watch() was not called"));
            };
            let bridge = st.bridge.clone();
            drop(guard);
            let queued = bridge.as_ref().is_some_and(|b| b.has_work());
            let ready = py.detach(|| wait_readable(fd, if queued { Some(0.0) } else { timeout }));
            if let (Some(b), true) = (&bridge, queued) {
                b.drain(py)?;
            }
            return Ok(if ready { Self::LOOP_FDS } else { 0 });
        };
        let Some(loop_fds) = st.loop_fds.as_ref() else {
            return Err(PyRuntimeError::new_err("Driver.watch() was not called"));
        };
        let bridge = st.bridge.clone();
        let queued = bridge.as_ref().is_some_and(|b| b.has_work());
        // Python work already queued (by Python code itself) is run without sleeping.
        let limit = match timeout {
            _ if queued => Some(Duration::ZERO),
            Some(t) if t <= 0.0 || t.is_nan() => Some(Duration::ZERO),
            Some(t) => Some(Duration::from_secs_f64(t.min(86_400.0))),
            None => None,
        };
        let busy_poll = if st.active {
            st.busy_poll
        } else {
            Duration::ZERO
        };
        let serving = &mut st.serving;
        let (woke, fds, sent) = py.detach(|| {
            rt.block_on(async {
                let sent = bridge.as_ref().is_some_and(|b| b.run_outbox());
                let ended = poll_fn(|cx| match serving.as_mut() {
                    Some(h) => std::future::Future::poll(std::pin::Pin::new(h), cx),
                    None => Poll::Pending,
                });
                let woke = if limit == Some(Duration::ZERO) {
                    // One pass: ready tasks, then a poll of the sockets that does not sleep.
                    tokio::select! {
                        biased;
                        r = ended => Woke::Ended(flatten(r)),
                        () = tokio::task::yield_now() => Woke::Other,
                    }
                } else {
                    let work = async {
                        match &bridge {
                            Some(b) => b.work_queued().await,
                            None => std::future::pending().await,
                        }
                    };
                    let sleep = async {
                        match limit {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    // First keep turning without sleeping for a moment (--busy-poll): a
                    // request arriving meanwhile skips an idle core's wake-up.
                    let spin = limit.map_or(busy_poll, |d| d.min(busy_poll));
                    crate::busy_poll::wait(spin, async {
                        tokio::select! {
                            biased;
                            r = ended => Woke::Ended(flatten(r)),
                            () = work => Woke::Other,
                            () = readable(loop_fds) => Woke::Other,
                            () = sleep => Woke::Other,
                        }
                    })
                    .await
                };
                // Whether the loop's descriptors signalled since the last look; the
                // loop then polls them all (level-triggered), so the signal is used up.
                let fds = poll_fn(|cx| {
                    Poll::Ready(match loop_fds.poll_read_ready(cx) {
                        Poll::Ready(Ok(mut ready)) => {
                            ready.clear_ready();
                            true
                        }
                        Poll::Ready(Err(_)) => true,
                        Poll::Pending => false,
                    })
                })
                .await;
                (woke, fds, sent)
            })
        });
        let queued = bridge.as_ref().is_some_and(|b| b.has_work());
        st.active = sent || queued;
        let mut flags = if fds { Self::LOOP_FDS } else { 0 };
        if let Woke::Ended(outcome) = woke {
            st.serving = None;
            st.outcome = Some(outcome);
            flags |= Self::ENDED;
        }
        drop(guard);
        if let (Some(b), true) = (&bridge, queued) {
            b.drain(py)?;
        }
        Ok(flags)
    }
}

fn flatten(r: Result<std::io::Result<Stop>, tokio::task::JoinError>) -> std::io::Result<Stop> {
    r.map_err(std::io::Error::other).and_then(|r| r)
}

/// Until `fd` (a level-triggered epoll instance) has events; a stale signal is cleared.
async fn readable(fd: &AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        if wait_readable(fd.get_ref().as_raw_fd(), Some(0.0)) {
            ready.retain_ready();
            return;
        }
        ready.clear_ready();
    }
}
