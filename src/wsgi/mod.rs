//! The WSGI bridge: a request becomes a [`Job`] for a Python thread, which builds the
//! environ, calls the application and drives its response (see `response.rs`).
//!
//! Where the job runs is the [`Dispatch`], one per WSGI execution mode
//! (`crate::config::ExecutionMode`): on a pool of Python threads beside a multi-thread
//! I/O runtime ([`Wsgi::pool`]), or — with one Python thread and one I/O thread — on
//! the I/O thread itself, between turns of its current-thread runtime ([`Wsgi::inline`],
//! see `inline.rs`), which saves two thread switches per request.
//!
//! Everything the application does wrong is caught here: an exception or invalid
//! output gives a 500 when nothing was sent yet (or aborts the connection when the
//! head is already out), one log line with the traceback, and the thread moves on.
//! The iterable's `close()` is always called, also when the client went away.

mod deadline;
mod environ;
mod file_wrapper;
mod inline;
mod input;
mod response;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::http::Incoming;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

pub use file_wrapper::FileWrapper;
pub use inline::run_inline;
pub use input::Input;
use input::Source;
pub use response::StartResponse;

use crate::access_log::{AccessLog, Record};
use crate::config::Config;
use crate::errors::{
    ClientDisconnected, RequestBodyError, RequestBodyTimeout, RequestBodyTooLarge,
};
use crate::http::request_body;
use crate::http::{error_response, ResponseBody};
use crate::log::{self, log_with};
use crate::net::{ActiveGuard, Addrs};
use crate::pool::{Pool, Task, Waiter};
use crate::server::{ConnCtx, Handler};
use crate::tls::TlsInfo;

/// What every request of this worker shares.
pub struct Shared {
    app: Py<PyAny>,
    base_environ: Py<PyDict>,
    config: Arc<Config>,
    /// For blocking work off the Python threads (sending files).
    runtime: Handle,
    /// How the Python threads wait for the network.
    waiter: Waiter,
    access: Option<AccessLog>,
    /// Threads stuck past `request_timeout` (`deadline.rs`).
    stuck: deadline::Stuck,
}

/// Where jobs run.
enum Dispatch {
    /// On `--threads` Python threads beside a multi-thread runtime.
    Pool(Pool<Job>),
    /// On the runtime's own thread, which takes them from this queue (`run_inline`).
    Inline(mpsc::UnboundedSender<Job>),
}

/// The WSGI [`Handler`]: hands requests to the Python threads.
pub struct Wsgi {
    dispatch: Dispatch,
    shared: Arc<Shared>,
}

impl Wsgi {
    /// The inline mode: jobs go to the returned queue, which the runtime's own thread
    /// serves with [`run_inline`].
    pub fn inline(
        py: Python<'_>,
        app: Py<PyAny>,
        config: Arc<Config>,
        runtime: &Arc<tokio::runtime::Runtime>,
        access: Option<AccessLog>,
    ) -> PyResult<(Self, mpsc::UnboundedReceiver<Job>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiter = Waiter::Driving(Arc::downgrade(runtime));
        let handle = runtime.handle().clone();
        let wsgi = Self::new(
            py,
            app,
            config,
            handle,
            waiter,
            access,
            Dispatch::Inline(tx),
        )?;
        Ok((wsgi, rx))
    }

    /// The pool mode: `config.threads` Python threads beside the runtime run the jobs.
    pub fn pool(
        py: Python<'_>,
        app: Py<PyAny>,
        config: Arc<Config>,
        runtime: Handle,
        access: Option<AccessLog>,
    ) -> PyResult<Self> {
        let pool = Dispatch::Pool(Pool::start(config.threads)?);
        let waiter = Waiter::Beside(runtime.clone());
        Self::new(py, app, config, runtime, waiter, access, pool)
    }

    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        config: Arc<Config>,
        runtime: Handle,
        waiter: Waiter,
        access: Option<AccessLog>,
        dispatch: Dispatch,
    ) -> PyResult<Self> {
        let errors = py
            .import("gristmill.logging")?
            .call_method0("wsgi_errors_stream")?;
        let file_wrapper = py.get_type::<FileWrapper>().into_any();
        let base = environ::base_environ(py, &config, errors, file_wrapper)?;
        let shared = Arc::new(Shared {
            app,
            base_environ: base.unbind(),
            stuck: deadline::Stuck::new(config.threads),
            config,
            runtime,
            waiter,
            access,
        });
        Ok(Wsgi { dispatch, shared })
    }
}

impl Handler for Wsgi {
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnCtx,
        guard: ActiveGuard,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let config = &self.shared.config;
        let body = match request_body::start(&parts, body, config.body_read_timeout).await {
            Ok(start) => Source::from(start),
            Err(stalled) => {
                return stalled.respond(self, &parts, conn, guard, started, config.server_header)
            }
        };
        let (reply, rx) = oneshot::channel();
        let sr = StartResponse::new(
            reply,
            guard,
            config.server_header,
            self.shared.waiter.clone(),
            config.send_timeout,
        );
        let deadline = config.request_timeout.map(|timeout| {
            let deadline = deadline::Deadline::new();
            let timer = deadline::Timer {
                deadline: deadline.clone(),
                responder: sr.responder(),
                parts: parts.clone(),
                peer: conn.addrs.peer,
                started,
                timeout,
                shared: self.shared.clone(),
            };
            tokio::spawn(timer.run());
            deadline
        });
        let job = Job {
            shared: self.shared.clone(),
            parts,
            body,
            addrs: conn.addrs.clone(),
            tls: conn.tls.clone(),
            sr,
            deadline,
            started,
        };
        let submitted = match &self.dispatch {
            Dispatch::Pool(pool) => pool.submit(job).is_ok(),
            Dispatch::Inline(jobs) => jobs.send(job).is_ok(),
        };
        if !submitted {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                self.shared.config.server_header,
            );
        }
        match rx.await {
            Ok(resp) => resp,
            // The task ended without answering: only possible if it panicked.
            Err(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                self.shared.config.server_header,
            ),
        }
    }

    fn access_log(&self) -> Option<&AccessLog> {
        self.shared.access.as_ref()
    }
}

/// One request on its way through the application.
pub struct Job {
    shared: Arc<Shared>,
    parts: Parts,
    body: Source,
    addrs: Arc<Addrs>,
    tls: Option<Arc<TlsInfo>>,
    /// Holds the reply channel and the connection's busy-guard.
    sr: StartResponse,
    /// Set under `request_timeout` (`deadline.rs`).
    deadline: Option<Arc<deadline::Deadline>>,
    started: Instant,
}

/// How the driving of a response ended, when it did not end well.
enum Failure {
    /// The application raised (also from `start_response` on invalid arguments).
    Raised(PyErr),
    /// The application's output broke the protocol in a way no exception reports.
    Invalid(String),
    /// The client went away.
    Gone,
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Raised(e)
    }
}

impl From<response::Gone> for Failure {
    fn from(_: response::Gone) -> Self {
        Failure::Gone
    }
}

/// Whether the file body continues on another thread (which then closes and logs).
enum Finished {
    Here,
    Detached,
}

impl Task for Job {
    fn run(self, py: Python<'_>) {
        let Job {
            shared,
            parts,
            body,
            addrs,
            tls,
            sr,
            deadline,
            started,
        } = self;
        if let Some(d) = &deadline {
            if !d.begin() {
                // Timed out while queued: its client has had its 504.
                return;
            }
        }
        let sr = match Bound::new(py, sr) {
            Ok(sr) => sr,
            Err(e) => {
                log_with(py, log::ERROR, "cannot create start_response", Some(&e));
                if let Some(d) = &deadline {
                    d.finish(&shared.stuck);
                }
                return;
            }
        };
        let mut finished = Finished::Here;
        let outcome = (|| -> Result<(), Failure> {
            let input = Bound::new(
                py,
                Input::new(
                    body,
                    shared.waiter.clone(),
                    shared.config.max_body_size,
                    shared.config.body_read_timeout,
                ),
            )?;
            let environ = environ::build(
                py,
                shared.base_environ.bind(py),
                &shared.config.root_path,
                &parts,
                &addrs,
                tls.as_deref(),
                input.into_any(),
            )?;
            let iterable = shared.app.bind(py).call1((environ, &sr))?;
            let driven = drive(py, &shared, &sr, &iterable, &parts, &addrs, started);
            match driven {
                Ok(Finished::Detached) => {
                    finished = Finished::Detached;
                    Ok(())
                }
                other => {
                    let closed = close_iterable(&iterable);
                    other?;
                    closed.map_err(Failure::Raised)
                }
            }
        })();
        let sr = sr.get();
        if let Some(d) = &deadline {
            if let deadline::Ended::Late { resumed } = d.finish(&shared.stuck) {
                // The client was answered at the deadline, and the access line written.
                d.report_late(&crate::http::describe(&parts), resumed);
                return;
            }
        }
        if let Err(failure) = outcome {
            report(py, sr, failure, &crate::http::describe(&parts));
        }
        if let Finished::Here = finished {
            if let Some(access) = &shared.access {
                let (status, bytes) = sr.progress(py);
                access.emit(py, &Record::new(&parts, addrs.peer, status, bytes, started));
            }
        }
    }
}

fn close_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // A list or tuple (the common response) has no close(): skip the lookup, whose
    // AttributeError (a formatted message) costs more than the rest of the call.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match iterable.getattr(pyo3::intern!(iterable.py(), "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

/// Log a failure and answer with the right status, as far as the protocol still allows.
fn report(py: Python<'_>, sr: &StartResponse, failure: Failure, what: &str) {
    match failure {
        Failure::Gone => {
            log::log(log::DEBUG, &format!("client went away during {what}"));
            sr.fail(py, StatusCode::BAD_REQUEST, "client went away");
        }
        Failure::Invalid(msg) => {
            log_with(
                py,
                log::ERROR,
                &format!("Invalid WSGI response to {what}: {msg}"),
                None,
            );
            sr.fail(
                py,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            );
        }
        Failure::Raised(e) if e.is_instance_of::<RequestBodyTooLarge>(py) => {
            log::log(log::INFO, &format!("{what}: {}", e.value(py)));
            crate::metrics::rejected(crate::metrics::Rejection::BodyTooLarge);
            sr.fail(py, StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
        }
        Failure::Raised(e) if e.is_instance_of::<RequestBodyTimeout>(py) => {
            log::log(log::INFO, &format!("{what}: {}", e.value(py)));
            crate::metrics::rejected(crate::metrics::Rejection::BodyTimeout);
            sr.fail(py, StatusCode::REQUEST_TIMEOUT, "Request Timeout");
        }
        Failure::Raised(e) if e.is_instance_of::<ClientDisconnected>(py) => {
            log::log(log::DEBUG, &format!("{what}: {}", e.value(py)));
            sr.fail(py, StatusCode::BAD_REQUEST, "Bad Request");
        }
        Failure::Raised(e) if e.is_instance_of::<RequestBodyError>(py) => {
            log::log(log::INFO, &format!("{what}: {}", e.value(py)));
            sr.fail(py, StatusCode::BAD_REQUEST, "Bad Request");
        }
        Failure::Raised(e) => {
            let when = if sr.started(py) {
                "after the response started; aborting the connection"
            } else {
                "sending 500"
            };
            log_with(
                py,
                log::ERROR,
                &format!("Error in WSGI application for {what} ({when})"),
                Some(&e),
            );
            sr.fail(
                py,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            );
        }
    }
}

/// Send what the application returned.
fn drive(
    py: Python<'_>,
    shared: &Arc<Shared>,
    sr: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
    parts: &Parts,
    addrs: &Arc<Addrs>,
    started: Instant,
) -> Result<Finished, Failure> {
    let srr = sr.get();
    // A list or tuple is the whole body: send it with a known length in one go.
    let seq = iterable
        .cast::<PyList>()
        .map(|l| l.as_sequence().clone())
        .or_else(|_| iterable.cast::<PyTuple>().map(|t| t.as_sequence().clone()));
    if let Ok(seq) = seq {
        if !srr.started(py) {
            let mut chunks = VecDeque::new();
            for item in seq.try_iter()? {
                let b = response::chunk_bytes(&item?)?;
                if !b.is_empty() {
                    chunks.push_back(b);
                }
            }
            if !srr.has_head(py) {
                return Err(no_head());
            }
            srr.finish_with(py, chunks)?;
            return Ok(Finished::Here);
        }
    }
    if let Ok(fw) = iterable.cast::<FileWrapper>() {
        if srr.has_head(py) && !srr.started(py) {
            if let Some(file) = fw.get().native(py) {
                let mut len = file.len;
                if let Some(declared) = srr.declared_length(py) {
                    len = len.min(declared);
                }
                // The same body as a static file: `sendfile` on cleartext HTTP/1.1.
                let body = crate::http::file::FileBody::range(file.fd.into(), file.offset, len);
                let done = FileSent(Some(FileSentJob {
                    shared: shared.clone(),
                    wrapper: fw.clone().into_any().unbind(),
                    sr: sr.clone().unbind(),
                    parts: parts.clone(),
                    addrs: addrs.clone(),
                    started,
                }));
                // Gone or not, `done` closes the wrapper and logs, once, when dropped.
                let _ = srr.send_file(py, body, Box::new(done));
                return Ok(Finished::Detached);
            }
        }
    }
    let mut iter = iterable.try_iter()?;
    while let Some(item) = iter.next() {
        let chunk = response::chunk_bytes(&item?)?;
        if chunk.is_empty() {
            continue;
        }
        if !srr.has_head(py) && !srr.started(py) {
            return Err(no_head());
        }
        // A first chunk as long as the declared Content-Length is usually the whole
        // body: look one item ahead, and if the iterable ends, send it in one go.
        if srr.declared_length(py) == Some(chunk.len() as u64) {
            let mut pending = VecDeque::from([chunk]);
            loop {
                match iter.next() {
                    None => {
                        srr.finish_with(py, pending)?;
                        return Ok(Finished::Here);
                    }
                    Some(next) => {
                        let b = response::chunk_bytes(&next?)?;
                        if !b.is_empty() {
                            pending.push_back(b);
                            break;
                        }
                    }
                }
            }
            for b in pending {
                srr.stream(py, b)?;
            }
            continue;
        }
        srr.stream(py, chunk)?;
    }
    if !srr.has_head(py) && !srr.started(py) {
        return Err(no_head());
    }
    srr.finish(py)?;
    Ok(Finished::Here)
}

/// Dropped with a `wsgi.file_wrapper` body once it is sent or abandoned: closes the
/// wrapper (PEP 3333) and writes the access-log line, on a blocking thread (it needs
/// the GIL, which an I/O thread must not wait for).
struct FileSent(Option<FileSentJob>);

struct FileSentJob {
    shared: Arc<Shared>,
    wrapper: Py<PyAny>,
    sr: Py<StartResponse>,
    parts: Parts,
    addrs: Arc<Addrs>,
    started: Instant,
}

impl FileSentJob {
    fn finish(self, py: Python<'_>) {
        if let Err(e) = self.wrapper.bind(py).call_method0("close") {
            log_with(py, log::ERROR, "file_wrapper close() failed", Some(&e));
        }
        if let Some(access) = &self.shared.access {
            let (status, bytes) = self.sr.get().progress(py);
            let record = Record::new(&self.parts, self.addrs.peer, status, bytes, self.started);
            access.emit(py, &record);
        }
    }
}

impl Drop for FileSent {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            let runtime = job.shared.runtime.clone();
            runtime.spawn_blocking(move || Python::attach(|py| job.finish(py)));
        }
    }
}

fn no_head() -> Failure {
    Failure::Invalid("the application returned a body without calling start_response()".into())
}
