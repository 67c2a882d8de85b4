//! gristmill's Rust core, the extension module `gristmill._core`.
//!
//! The Python layer (supervisor, loader, logging) forks workers; each worker loads its
//! application and calls [`serve`], which runs the tokio runtime and hyper on the
//! sockets the supervisor bound. How is the worker's [`ExecutionMode`], decided once in
//! Python (`Settings.execution_mode`) and dispatched on once here, to one function per
//! mode: a WSGI application is called inline on the I/O thread ([`serve_wsgi_inline`])
//! or on a pool of Python threads ([`serve_wsgi_pool`]); an ASGI one runs on the
//! worker's event loop, turning the runtime itself on one thread
//! ([`serve_asgi_driven`]) or in a thread of its own ([`serve_asgi_loop_thread`]).
//! Everything else (the server, the handlers, the limits) is the same in every mode.

mod access_log;
mod asgi;
mod busy_poll;
mod config;
mod errors;
mod handoff;
mod heartbeat;
mod http;
mod http3;
mod immortal;
mod lifecycle;
mod log;
mod metrics;
mod net;
mod pool;
mod server;
mod static_files;
mod stop;
mod tls;
mod wsgi;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::access_log::AccessFormat;
use crate::config::{Config, ExecutionMode, HttpMode, TlsSettings};
use crate::server::Stop;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve `app` on the inherited listening sockets `fds` until told to stop.
/// See `_core.pyi` for the contract.
#[pyfunction]
#[pyo3(signature = (app, settings, fds, ready_fd, event_loop=None, state=None, context=None, driver=None, handoff=None))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    app: Py<PyAny>,
    settings: &Bound<'_, PyAny>,
    fds: Vec<i32>,
    ready_fd: i32,
    event_loop: Option<Py<PyAny>>,
    state: Option<Py<pyo3::types::PyDict>>,
    context: Option<Py<PyAny>>,
    driver: Option<Py<asgi::Driver>>,
    handoff: Option<(i32, i32)>,
) -> PyResult<()> {
    let config = Arc::new(settings.extract::<Config>()?);
    log::init(py)?;
    let mode = config.mode;
    metrics::set_interface(mode.is_asgi());
    let loop_side = |event_loop: Option<Py<PyAny>>| -> PyResult<asgi::LoopSide> {
        Ok(asgi::LoopSide {
            event_loop: event_loop.ok_or_else(|| {
                PyValueError::new_err("serving ASGI needs the running event loop (event_loop=)")
            })?,
            state,
            context,
        })
    };
    let access = access_log(py, &config)?;
    let worker = |access| -> PyResult<Worker> {
        Ok(Worker {
            stop_watch: stop::start(config.graceful_timeout)?,
            config: config.clone(),
            access,
            fds,
            ready_fd,
            handoff,
        })
    };
    match (mode, driver) {
        (ExecutionMode::WsgiInline, None) => serve_wsgi_inline(py, app, worker(access)?),
        (ExecutionMode::WsgiPool, None) => serve_wsgi_pool(py, app, worker(access)?),
        (ExecutionMode::AsgiDriven, Some(driver)) => {
            let side = loop_side(event_loop)?;
            serve_asgi_driven(py, app, worker(access)?, side, driver)
        }
        (ExecutionMode::AsgiLoopThread, None) => {
            let side = loop_side(event_loop)?;
            serve_asgi_loop_thread(py, app, worker(access)?, side)
        }
        (ExecutionMode::AsgiDriven, None) => Err(PyValueError::new_err(
            "the asgi-driven execution mode needs the loop's driver (driver=)",
        )),
        (mode, Some(_)) => Err(PyValueError::new_err(format!(
            "a driver is for the asgi-driven execution mode only, not {mode:?}"
        ))),
    }
}

/// The access log, when it is on and its logger enabled: written to the log handler's
/// file descriptor directly when `gristmill.logging` found one, else through `logging`.
fn access_log(py: Python<'_>, config: &Config) -> PyResult<Option<access_log::AccessLog>> {
    if !config.access_log {
        return Ok(None);
    }
    let format = AccessFormat::parse(&config.access_log_format).map_err(PyValueError::new_err)?;
    let logger = py
        .import("logging")?
        .call_method1("getLogger", ("gristmill.access",))?;
    let enabled: bool = logger
        .call_method1("isEnabledFor", (log::INFO,))?
        .extract()?;
    if !enabled {
        return Ok(None);
    }
    let fd: Option<i32> = py
        .import("gristmill.logging")?
        .call_method0("access_log_fd")?
        .extract()?;
    let sink = match fd {
        Some(fd) => {
            log::log(
                log::DEBUG,
                &format!("access lines are written to fd {fd} directly, batched"),
            );
            access_log::Sink::Fd(access_log::FdSink::new(fd))
        }
        None => access_log::Sink::Logger(logger.getattr("info")?.unbind()),
    };
    Ok(Some(access_log::AccessLog::new(format, sink)))
}

/// What every execution mode serves with.
struct Worker {
    config: Arc<Config>,
    /// Taken by the interface's handler.
    access: Option<access_log::AccessLog>,
    stop_watch: stop::StopWatch,
    fds: Vec<i32>,
    ready_fd: i32,
    /// The ends of the supervisor's socket pair for passing connections on (sending,
    /// receiving; `crate::handoff`).
    handoff: Option<(i32, i32)>,
}

impl Worker {
    /// `--worker-timeout`: the heartbeat to the supervisor while the guard lives.
    fn heartbeat(
        &self,
        runtime: &tokio::runtime::Handle,
        event_loop: Option<Py<PyAny>>,
    ) -> PyResult<Option<heartbeat::Heartbeat>> {
        let timeout = self.config.worker_timeout;
        Ok(heartbeat::start(
            timeout,
            self.ready_fd,
            runtime,
            event_loop,
        )?)
    }

    /// The server's main future: `handler` on the inherited listeners, which are
    /// registered with `runtime`.
    fn server<H: server::Handler>(
        &self,
        runtime: &Runtime,
        handler: Arc<H>,
    ) -> PyResult<impl Future<Output = std::io::Result<Stop>> + Send + 'static> {
        let (listeners, handoff) = {
            let _enter = runtime.enter();
            let listeners = self
                .fds
                .iter()
                .map(|&fd| net::Listener::from_inherited_fd(fd))
                .collect::<std::io::Result<Vec<_>>>()?;
            let handoff = match self.handoff {
                Some((send, recv)) => Some(Arc::new(handoff::Handoff::from_inherited(send, recv)?)),
                None => None,
            };
            (listeners, handoff)
        };
        let ready_fd = self.ready_fd;
        Ok(server::run(
            self.config.clone(),
            handler,
            listeners,
            self.stop_watch.decision.clone(),
            lifecycle::SupervisorPipe::new(ready_fd),
            handoff,
        ))
    }
}

/// The runtime of a one-thread mode: the serving thread turns it itself.
fn current_thread_runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("gristmill-io")
        .enable_all()
        .build()
}

/// The runtime of a two-thread mode: `threads` I/O threads beside the Python ones.
fn multi_thread_runtime(threads: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("gristmill-io")
        .enable_all()
        .build()
}

/// How long in-flight Python calls get once serving stopped; the worker exits right
/// after (they may still hold pool threads).
fn grace(stop: Stop) -> Duration {
    match stop {
        Stop::Graceful => Duration::from_millis(500),
        Stop::Immediate => Duration::ZERO,
    }
}

/// Shut down a runtime the worker owns, within [`grace`].
fn shut_down(py: Python<'_>, runtime: Arc<Runtime>, stop: Stop) {
    match Arc::try_unwrap(runtime) {
        Ok(runtime) => py.detach(|| runtime.shutdown_timeout(grace(stop))),
        // A thread of the application is still reading a request body through the
        // runtime; the worker exits right after, so leave the runtime to the exit.
        Err(runtime) => std::mem::forget(runtime),
    }
}

/// [`ExecutionMode::WsgiInline`]: this thread turns a current-thread runtime and calls
/// the application between turns (`wsgi::inline`).
fn serve_wsgi_inline(py: Python<'_>, app: Py<PyAny>, mut w: Worker) -> PyResult<()> {
    log::log(log::DEBUG, "WSGI requests run inline on the I/O thread");
    let runtime = Arc::new(current_thread_runtime()?);
    let (handler, jobs) = wsgi::Wsgi::inline(py, app, w.config.clone(), &runtime, w.access.take())?;
    let serving = w.server(&runtime, Arc::new(handler))?;
    let heartbeat = w.heartbeat(runtime.handle(), None)?;
    let stop = wsgi::run_inline(py, &runtime, serving, jobs, w.config.busy_poll);
    drop(heartbeat);
    w.stop_watch.finished();
    shut_down(py, runtime, stop?);
    Ok(())
}

/// [`ExecutionMode::WsgiPool`]: `threads` Python threads beside a multi-thread runtime;
/// this thread waits with the GIL released.
fn serve_wsgi_pool(py: Python<'_>, app: Py<PyAny>, mut w: Worker) -> PyResult<()> {
    log::log(
        log::DEBUG,
        &format!("WSGI requests run on {} Python threads", w.config.threads),
    );
    let runtime = Arc::new(multi_thread_runtime(w.config.runtime_threads)?);
    let handler = wsgi::Wsgi::pool(
        py,
        app,
        w.config.clone(),
        runtime.handle().clone(),
        w.access.take(),
    )?;
    let serving = w.server(&runtime, Arc::new(handler))?;
    let heartbeat = w.heartbeat(runtime.handle(), None)?;
    let stop = py.detach(|| runtime.block_on(serving));
    drop(heartbeat);
    w.stop_watch.finished();
    shut_down(py, runtime, stop?);
    Ok(())
}

/// [`ExecutionMode::AsgiLoopThread`]: the event loop runs in its own thread (started by
/// the worker) beside a multi-thread runtime; this thread waits with the GIL released.
fn serve_asgi_loop_thread(
    py: Python<'_>,
    app: Py<PyAny>,
    mut w: Worker,
    side: asgi::LoopSide,
) -> PyResult<()> {
    let runtime = Arc::new(multi_thread_runtime(w.config.runtime_threads)?);
    let heartbeat = w.heartbeat(runtime.handle(), Some(side.event_loop.clone_ref(py)))?;
    let handler = Arc::new(asgi::Asgi::new(
        py,
        app,
        w.config.clone(),
        runtime.handle().clone(),
        w.access.take(),
        side,
    )?);
    let serving = w.server(&runtime, handler.clone())?;
    let stop = py.detach(|| runtime.block_on(serving));
    drop(heartbeat);
    w.stop_watch.finished();
    handler.detach(py)?;
    shut_down(py, runtime, stop?);
    Ok(())
}

/// [`ExecutionMode::AsgiDriven`]: one thread. The loop (not running yet) runs here, and
/// its selector turns the driver's current-thread runtime until the server stops, then
/// stops itself (`asgi::driven`).
fn serve_asgi_driven(
    py: Python<'_>,
    app: Py<PyAny>,
    mut w: Worker,
    side: asgi::LoopSide,
    driver: Py<asgi::Driver>,
) -> PyResult<()> {
    let d = driver.get();
    let runtime = d
        .runtime()
        .ok_or_else(|| PyValueError::new_err("the driver's runtime was shut down"))?;
    let event_loop = side.event_loop.clone_ref(py);
    let heartbeat = w.heartbeat(runtime.handle(), Some(event_loop.clone_ref(py)))?;
    let handler = Arc::new(asgi::Asgi::new(
        py,
        app,
        w.config.clone(),
        runtime.handle().clone(),
        w.access.take(),
        side,
    )?);
    let serving = w.server(&runtime, handler.clone())?;
    d.start(handler.bridge(), runtime.spawn(serving), w.config.busy_poll);
    if let Err(e) = event_loop.bind(py).call_method0("run_forever") {
        // The loop failed (SystemExit from a task, say): stop serving and end the
        // connections before the error goes up.
        drop(heartbeat);
        w.stop_watch.finished();
        drop(runtime);
        d.shutdown(py, Duration::ZERO);
        return Err(e);
    }
    let stop = d.outcome().unwrap_or_else(|| {
        Err(std::io::Error::other(
            "the event loop stopped before the server did",
        ))
    });
    drop(heartbeat);
    w.stop_watch.finished();
    let stop = stop?;
    // The driver holds the runtime: it shuts it down, and the loop (lifespan shutdown)
    // goes on without it.
    drop(runtime);
    d.shutdown(py, grace(stop));
    Ok(())
}

/// Check the TLS settings of `settings` (no-op without TLS); raises ValueError with a
/// message naming the file and the problem. The supervisor calls it before forking.
#[pyfunction]
fn check_tls(settings: &Bound<'_, PyAny>) -> PyResult<()> {
    let tls: Option<TlsSettings> = settings
        .getattr(pyo3::intern!(settings.py(), "tls"))?
        .extract()?;
    if let Some(t) = tls {
        let http: HttpMode = settings
            .getattr(pyo3::intern!(settings.py(), "http"))?
            .extract()?;
        tls::check(&t, http)?;
    }
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(check_tls, m)?)?;
    m.add_function(wrap_pyfunction!(immortal::immortalize, m)?)?;
    m.add_function(wrap_pyfunction!(immortal::can_immortalize, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::py::metrics_attach, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::py::metrics_layout, m)?)?;
    m.add_class::<metrics::py::MetricsSegment>()?;
    m.add_class::<wsgi::FileWrapper>()?;
    m.add_class::<wsgi::Input>()?;
    m.add_class::<wsgi::StartResponse>()?;
    m.add_class::<asgi::Driver>()?;
    m.add_class::<asgi::HttpProtocol>()?;
    m.add_class::<asgi::Ready>()?;
    m.add_class::<asgi::WsProtocol>()?;
    m.add(
        "RequestBodyError",
        py.get_type::<errors::RequestBodyError>(),
    )?;
    m.add(
        "RequestBodyTooLarge",
        py.get_type::<errors::RequestBodyTooLarge>(),
    )?;
    m.add(
        "ClientDisconnected",
        py.get_type::<errors::ClientDisconnected>(),
    )?;
    m.add(
        "RequestBodyTimeout",
        py.get_type::<errors::RequestBodyTimeout>(),
    )?;
    Ok(())
}
