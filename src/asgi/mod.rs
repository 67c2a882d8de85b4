//! The ASGI bridge: requests from the I/O threads run as tasks on the worker's asyncio
//! event loop. In the `AsgiDriven` execution mode (`crate::config::ExecutionMode`: one
//! runtime thread and `--loop auto` or `asyncio`, the defaults) the loop's selector turns
//! the runtime on the same thread (see `driven.rs`); in `AsgiLoopThread` the loop
//! (uvloop when installed) runs in its own Python thread.
//!
//! The I/O threads never take the GIL to talk to the loop. They push [`Event`]s onto a
//! queue and, only when the queue was idle, wake the loop (an eventfd it watches with
//! `loop.add_reader`, or in one-thread mode a notification that ends the runtime's
//! turn); the loop drains everything queued in one go. Awaitables that
//! can complete at once (a buffered body, room in the response channel) are returned
//! already complete ([`ready::Ready`]), so the common request costs one loop wake-up.

mod driven;
mod http;
mod ready;
mod scope;
mod ws;
mod ws_deflate;
mod ws_frames;
mod ws_keepalive;
mod ws_yawc;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::http::Incoming;
use ::http::request::Parts;
use ::http::{Request, Response, StatusCode};
use bytes::Bytes;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use self::driven::Driver;
pub use self::http::HttpProtocol;
pub use ready::Ready;
pub use ws::WsProtocol;

use self::http::{BodySource, HttpShared};
use crate::access_log::AccessLog;
use crate::config::{Config, ExecutionMode};
use crate::http::request_body::{self, Start};
use crate::http::{error_response, plain_response, ResponseBody};
use crate::log::{self, log_with};
use crate::net::{ActiveGuard, Addrs, ConnSlot};
use crate::server::{ConnCtx, Handler};

/// Work for the event loop thread.
pub enum Event {
    Request(Box<NewRequest>),
    /// A body read finished: hand the body back and answer the waiting `receive()`.
    Body {
        shared: Arc<HttpShared>,
        fut: Py<PyAny>,
        body: Option<Incoming>,
        read: BodyRead,
    },
    /// Complete a future the application awaits.
    Resolve {
        fut: Py<PyAny>,
        outcome: Outcome,
    },
    /// A WebSocket message arrived for a waiting `receive()`.
    WsDeliver {
        shared: Arc<ws::WsShared>,
        fut: Py<PyAny>,
    },
    WsOpen(Box<NewSocket>),
}

/// A WebSocket handshake on its way to the loop.
pub struct NewSocket {
    shared: Arc<ws::WsShared>,
    parts: Parts,
    addrs: Arc<Addrs>,
    tls: Option<Arc<crate::tls::TlsInfo>>,
    started: Instant,
    slot: Arc<ConnSlot>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// What a body read produced.
pub enum BodyRead {
    Data(Bytes, bool),
    End,
    TooLarge,
    Failed(String),
}

/// How to complete a future.
pub enum Outcome {
    Disconnect,
    Sent,
    SendFailed,
    /// Raise this from the awaited `send()`.
    Raise(PyErr),
}

/// A request on its way to the loop.
pub struct NewRequest {
    shared: Arc<HttpShared>,
    parts: Parts,
    addrs: Arc<Addrs>,
    tls: Option<Arc<crate::tls::TlsInfo>>,
    started: Instant,
}

/// Python objects the loop thread uses.
struct PyParts {
    app: Py<PyAny>,
    /// `gristmill._asgi.run_app`: runs the application for a request or a WebSocket.
    run_app: Py<PyAny>,
    create_future: Py<PyAny>,
    /// Makes the request's task: `asyncio.Task` itself (called with `task_kw`, the
    /// loop), which skips the Python layers of `loop.create_task`, unless the loop has
    /// a task factory, which then gets `loop.create_task`.
    new_task: Py<PyAny>,
    task_kw: Option<Py<PyDict>>,
    /// The context lifespan startup left behind; request tasks start in copies of it.
    context_run: Option<Py<PyAny>>,
    scope: scope::ScopeBase,
}

/// How queued work gets the loop's attention.
enum Wake {
    /// The loop runs in its own thread and watches this eventfd (`loop.add_reader`).
    Eventfd(OwnedFd),
    /// The loop's thread turns the runtime itself ([`Driver`]) and waits for this.
    Notify(tokio::sync::Notify),
}

/// Shared by the I/O threads (which push) and the loop thread (which drains).
pub struct Bridge {
    queue: Mutex<Vec<Event>>,
    wake_pending: AtomicBool,
    wake: Wake,
    /// One-thread mode: work for the runtime from Python code (sends that wake a
    /// connection, spawns), done at the start of the next turn. Waking a task from
    /// inside the runtime is a queue push; from outside it also writes to the runtime's
    /// eventfd, a system call per request.
    outbox: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    runtime: Handle,
    config: Arc<Config>,
    access: Option<AccessLog>,
    py: PyParts,
}

impl Bridge {
    /// Queue an event; wake the loop only if it is not already due to drain.
    pub fn push(&self, ev: Event) {
        self.queue.lock().push(ev);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            match &self.wake {
                Wake::Eventfd(efd) => {
                    let one: u64 = 1;
                    // SAFETY: writing 8 bytes from a live u64 to our own eventfd.
                    unsafe {
                        libc::write(efd.as_raw_fd(), (&one as *const u64).cast(), 8);
                    }
                }
                Wake::Notify(n) => n.notify_one(),
            }
        }
    }

    /// Run `f` where it wakes the runtime's tasks cheaply: now (two-thread mode), or at
    /// the start of the runtime's next turn, which follows the current loop iteration.
    ///
    /// Called on the loop's thread between turns, or inside the runtime (where `f` runs
    /// at once: a wake-up there is cheap already).
    fn later(&self, f: impl FnOnce() + Send + 'static) {
        match self.wake {
            Wake::Notify(_) if tokio::runtime::Handle::try_current().is_err() => {
                self.outbox.lock().push(Box::new(f))
            }
            _ => f(),
        }
    }

    /// Spawn `task` on the runtime (see [`Bridge::later`]).
    fn spawn_io<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = self.runtime.clone();
        self.later(move || drop(runtime.spawn(task)));
    }

    /// Whether `send`s to the runtime are deferred to its next turn ([`Bridge::later`]).
    fn driven(&self) -> bool {
        matches!(self.wake, Wake::Notify(_))
    }

    /// Do what [`Bridge::later`] put off; called inside the runtime. Whether there was any.
    fn run_outbox(&self) -> bool {
        let work = std::mem::take(&mut *self.outbox.lock());
        let any = !work.is_empty();
        for f in work {
            f();
        }
        any
    }

    /// Whether events are queued that the loop has not drained yet.
    fn has_work(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire)
    }

    /// Until events are queued (one-thread mode).
    async fn work_queued(&self) {
        match &self.wake {
            Wake::Notify(n) => n.notified().await,
            Wake::Eventfd(_) => std::future::pending().await,
        }
    }

    /// Start and resume what the runtime queued. An application that raised
    /// `SystemExit` or `KeyboardInterrupt` while its task started (tasks start eagerly
    /// on Python 3.12+) makes this return that exception once the batch is done, so it
    /// ends the loop as it would from a task step.
    fn drain(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        if let Wake::Eventfd(efd) = &self.wake {
            let mut buf: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our own nonblocking eventfd.
            unsafe {
                libc::read(efd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8);
            }
        }
        // Clear the flag before taking the queue: a push racing with us either lands in
        // this batch or sees the flag clear and wakes us again.
        self.wake_pending.store(false, Ordering::Release);
        let events = std::mem::take(&mut *self.queue.lock());
        let mut fatal = None;
        for ev in events {
            match ev {
                Event::Request(req) => self.start(py, *req, &mut fatal),
                Event::Body {
                    shared,
                    fut,
                    body,
                    read,
                } => http::body_read(py, self, &shared, fut, body, read),
                Event::Resolve { fut, outcome } => http::resolve(py, fut.bind(py), outcome),
                Event::WsDeliver { shared, fut } => ws::deliver_to_waiter(py, &shared, fut),
                Event::WsOpen(sock) => self.start_socket(py, *sock, &mut fatal),
            }
        }
        fatal.map_or(Ok(()), Err)
    }

    fn start(self: &Arc<Self>, py: Python<'_>, req: NewRequest, fatal: &mut Option<PyErr>) {
        let NewRequest {
            shared,
            parts,
            addrs,
            tls,
            started,
        } = req;
        let result = (|| -> PyResult<()> {
            let scope = scope::http_scope(py, &self.py.scope, &parts, &addrs, tls.as_deref())?;
            let proto = Bound::new(
                py,
                HttpProtocol::new(shared.clone(), self.clone(), parts, addrs, started),
            )?;
            let coro = self
                .py
                .run_app
                .call1(py, (self.py.app.bind(py), scope, proto))?;
            self.spawn(py, coro)?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            // `run_app` saw it and finished the request; the loop must end.
            Err(e) if is_fatal(py, &e) => *fatal = fatal.take().or(Some(e)),
            Err(e) => {
                log_with(
                    py,
                    log::ERROR,
                    "could not start the ASGI request task",
                    Some(&e),
                );
                shared.fail_to_start(self, StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    }

    fn start_socket(self: &Arc<Self>, py: Python<'_>, sock: NewSocket, fatal: &mut Option<PyErr>) {
        let NewSocket {
            shared,
            parts,
            addrs,
            tls,
            started,
            slot,
            shutdown,
        } = sock;
        let result = (|| -> PyResult<()> {
            let scope = scope::websocket_scope(py, &self.py.scope, &parts, &addrs, tls.as_deref())?;
            let proto = Bound::new(
                py,
                WsProtocol::new(
                    shared.clone(),
                    self.clone(),
                    parts,
                    addrs,
                    started,
                    slot,
                    shutdown,
                ),
            )?;
            let coro = self
                .py
                .run_app
                .call1(py, (self.py.app.bind(py), scope, proto.clone()))?;
            self.spawn(py, coro)?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if is_fatal(py, &e) => *fatal = fatal.take().or(Some(e)),
            Err(e) => log_with(
                py,
                log::ERROR,
                "could not start the ASGI websocket task",
                Some(&e),
            ),
        }
    }

    /// Start `coro` as a task: inside the lifespan context when there is one (a task
    /// copies the context it is created in, so each request gets its own copy).
    fn spawn(&self, py: Python<'_>, coro: Py<PyAny>) -> PyResult<()> {
        let kw = self.py.task_kw.as_ref().map(|k| k.bind(py));
        match &self.py.context_run {
            Some(run) => run.call(py, (self.py.new_task.bind(py), coro), kw)?,
            None => self.py.new_task.call(py, (coro,), kw)?,
        };
        Ok(())
    }

    fn create_future(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.py.create_future.call0(py)
    }
}

/// `SystemExit`, `KeyboardInterrupt`: a `BaseException` that is not an `Exception`, which
/// asyncio lets end the loop.
fn is_fatal(py: Python<'_>, e: &PyErr) -> bool {
    !e.is_instance_of::<pyo3::exceptions::PyException>(py)
}

/// The loop's reader callback: drains the bridge.
#[pyclass(module = "gristmill._core", frozen)]
pub struct Drainer {
    bridge: Arc<Bridge>,
}

#[pymethods]
impl Drainer {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.bridge.drain(py)
    }
}

/// What the worker's Python side prepared: the loop and what lifespan left.
pub struct LoopSide {
    pub event_loop: Py<PyAny>,
    pub state: Option<Py<PyDict>>,
    pub context: Option<Py<PyAny>>,
}

/// The ASGI [`Handler`].
pub struct Asgi {
    bridge: Arc<Bridge>,
    event_loop: Py<PyAny>,
}

impl Asgi {
    /// Set up the bridge; in the two-thread mode also register it with the loop.
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        config: Arc<Config>,
        runtime: Handle,
        access: Option<AccessLog>,
        lp: LoopSide,
    ) -> PyResult<Self> {
        let LoopSide {
            event_loop,
            state,
            context,
        } = lp;
        // The loop turns the runtime on its own thread, or runs in a thread of its own.
        let wake = if config.mode == ExecutionMode::AsgiDriven {
            Wake::Notify(tokio::sync::Notify::new())
        } else {
            // SAFETY: eventfd returns a new descriptor or -1 (checked).
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            // SAFETY: `fd` is fresh and owned by nobody else.
            Wake::Eventfd(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        let extensions = PyDict::new(py);
        extensions.set_item("http.response.pathsend", PyDict::new(py))?;
        extensions.set_item("websocket.http.response", PyDict::new(py))?;
        let lp = event_loop.bind(py);
        let (new_task, task_kw) = if lp.call_method0("get_task_factory")?.is_none() {
            let kw = PyDict::new(py);
            kw.set_item("loop", lp)?;
            if config.eager_tasks && py.version_info() >= (3, 12) {
                // The task's first step runs at once, in the drain, not in a later
                // iteration of the loop: a request that needs no I/O completes without
                // being scheduled at all (`bench/RESULTS.md`, "eager task start").
                kw.set_item("eager_start", true)?;
            }
            (py.import("asyncio")?.getattr("Task")?, Some(kw.unbind()))
        } else {
            (lp.getattr("create_task")?, None)
        };
        let bridge = Arc::new(Bridge {
            queue: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            wake,
            outbox: Mutex::new(Vec::new()),
            runtime,
            config: config.clone(),
            access,
            py: PyParts {
                app,
                run_app: match config.request_timeout {
                    None => py.import("gristmill._asgi")?.getattr("run_app")?,
                    Some(t) => py
                        .import("gristmill._asgi")?
                        .call_method1("run_app_within", (t.as_secs_f64(),))?,
                }
                .unbind(),
                create_future: lp.getattr("create_future")?.unbind(),
                new_task: new_task.unbind(),
                task_kw,
                context_run: context
                    .map(|c| c.bind(py).getattr("run").map(Bound::unbind))
                    .transpose()?,
                scope: scope::ScopeBase::new(py, asgi, extensions, &config.root_path, state)?,
            },
        });
        if let Wake::Eventfd(efd) = &bridge.wake {
            let drainer = Bound::new(
                py,
                Drainer {
                    bridge: bridge.clone(),
                },
            )?;
            lp.call_method1(
                "call_soon_threadsafe",
                (lp.getattr("add_reader")?, efd.as_raw_fd(), drainer),
            )?;
        }
        Ok(Asgi { bridge, event_loop })
    }

    pub fn bridge(&self) -> Arc<Bridge> {
        self.bridge.clone()
    }

    /// Unregister from the loop (the worker is stopping).
    pub fn detach(&self, py: Python<'_>) -> PyResult<()> {
        if let Wake::Eventfd(efd) = &self.bridge.wake {
            let lp = self.event_loop.bind(py);
            lp.call_method1(
                "call_soon_threadsafe",
                (lp.getattr("remove_reader")?, efd.as_raw_fd()),
            )?;
        }
        Ok(())
    }
}

/// Runs its callback if the connection drops the request before it was answered.
struct ServiceGuard(Option<Box<dyn FnOnce() + Send>>);

impl ServiceGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        if let Some(on_drop) = self.0.take() {
            on_drop();
        }
    }
}

impl Asgi {
    async fn handle_websocket(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnCtx,
        guard: ActiveGuard,
        started: Instant,
    ) -> Response<ResponseBody> {
        let upgrade = hyper::upgrade::on(&mut req);
        let (parts, _body) = req.into_parts();
        let key = parts
            .headers
            .get(::http::header::SEC_WEBSOCKET_KEY)
            .and_then(|k| k.to_str().ok())
            .map(str::to_owned);
        let version_ok = parts
            .headers
            .get(::http::header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
        // RFC 8441 §5: over HTTP/2 there is no key to answer, only the version.
        let http2 = parts.version == ::http::Version::HTTP_2;
        let key = match (version_ok, http2, key) {
            (true, true, _) => Some(None),
            (true, false, Some(key)) => Some(Some(key)),
            _ => None,
        };
        let Some(key) = key else {
            // RFC 6455 §4.4: tell the client which version we speak.
            let mut resp = plain_response(
                StatusCode::BAD_REQUEST,
                "invalid WebSocket handshake (Sec-WebSocket-Key and Version 13 required)",
                true,
                self.bridge.config.server_header,
            );
            resp.headers_mut().insert(
                ::http::header::SEC_WEBSOCKET_VERSION,
                ::http::HeaderValue::from_static("13"),
            );
            return crate::http::guarded(resp, guard);
        };
        let (reply, rx) = oneshot::channel();
        let shared = Arc::new(ws::WsShared::new(reply, guard, upgrade, key));
        let on_gone = {
            let (shared, bridge) = (shared.clone(), self.bridge.clone());
            move || shared.client_gone(&bridge, &shared)
        };
        let socket = NewSocket {
            shared,
            parts,
            addrs: conn.addrs.clone(),
            tls: conn.tls.clone(),
            started,
            slot: conn.slot.clone(),
            shutdown: conn.shutdown.clone(),
        };
        self.dispatch(Event::WsOpen(Box::new(socket)), rx, Box::new(on_gone))
            .await
    }

    /// Hand `event` to the loop and wait for the response it produces on `rx`.
    /// `on_gone` runs if the connection drops the request before the answer; a request
    /// dropped unanswered on the loop side (its task could not start) gets a 500.
    async fn dispatch(
        &self,
        event: Event,
        rx: oneshot::Receiver<Response<ResponseBody>>,
        on_gone: Box<dyn FnOnce() + Send>,
    ) -> Response<ResponseBody> {
        let mut watch = ServiceGuard(Some(on_gone));
        self.bridge.push(event);
        let resp = rx.await;
        watch.disarm();
        resp.unwrap_or_else(|_| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                self.bridge.config.server_header,
            )
        })
    }
}

impl Handler for Asgi {
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnCtx,
        guard: ActiveGuard,
        started: Instant,
    ) -> Response<ResponseBody> {
        if self.bridge.config.ws && ws::is_upgrade_request(&req) {
            // Boxed: inline, the handshake's future would enlarge every request's
            // future, which hyper keeps room for on each connection (2.7 → 2.0 KiB).
            return Box::pin(self.handle_websocket(req, conn, guard, started)).await;
        }
        let (parts, body) = req.into_parts();
        let config = &self.bridge.config;
        let source = match request_body::start(&parts, body, config.body_read_timeout).await {
            Ok(Start::Empty) => BodySource::Buffered(Bytes::new()),
            Ok(Start::Whole(b)) => BodySource::Buffered(b),
            Ok(Start::Stream(body)) => BodySource::Stream(body),
            Ok(Start::Failed(e)) => {
                // The application's first `receive()` gets `http.disconnect`.
                log::log(log::DEBUG, &format!("request body read failed: {e}"));
                BodySource::Failed
            }
            Err(stalled) => {
                return stalled.respond(self, &parts, conn, guard, started, config.server_header)
            }
        };
        let (reply, rx) = oneshot::channel();
        // The application task takes a share of the connection's slot: it may keep
        // running after its response ended (and the connection closed).
        let slot = conn.slot.share();
        let shared = Arc::new(HttpShared::new(source, reply, guard, slot));
        let on_gone = {
            let (shared, bridge) = (shared.clone(), self.bridge.clone());
            move || shared.client_gone(&bridge)
        };
        let request = NewRequest {
            shared,
            parts,
            addrs: conn.addrs.clone(),
            tls: conn.tls.clone(),
            started,
        };
        self.dispatch(Event::Request(Box::new(request)), rx, Box::new(on_gone))
            .await
    }

    fn access_log(&self) -> Option<&AccessLog> {
        self.bridge.access.as_ref()
    }
}
