//! gristmill's Rust core, the extension module `gristmill._core`.
//!
//! The Python layer (supervisor, loader, logging) forks workers; each worker loads its
//! application and calls [`serve`], which runs the tokio runtime and hyper on the
//! sockets the supervisor bound. A WSGI application is called on a pool of Python
//! threads or, with one thread of each kind, inline on the I/O thread; an ASGI one runs
//! on the worker's event loop, in a thread of its own or turning the runtime itself.

mod access_log;
mod asgi;
mod config;
mod errors;
mod http;
mod lifecycle;
mod log;
mod net;
mod pool;
mod server;
mod stop;
mod tls;
mod wsgi;

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::access_log::AccessFormat;
use crate::config::{Config, HttpMode, Interface, TlsSettings};
use crate::server::Stop;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve `app` on the inherited listening sockets `fds` until told to stop.
/// See `_core.pyi` for the contract.
#[pyfunction]
#[pyo3(signature = (app, settings, fds, ready_fd, event_loop=None, state=None, context=None, driver=None))]
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
) -> PyResult<()> {
    let config = Arc::new(settings.extract::<Config>()?);
    log::init(py)?;
    let access = if config.access_log {
        let format =
            AccessFormat::parse(&config.access_log_format).map_err(PyValueError::new_err)?;
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("gristmill.access",))?;
        let enabled: bool = logger
            .call_method1("isEnabledFor", (log::INFO,))?
            .extract()?;
        enabled
            .then(|| -> PyResult<_> {
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
                Ok(access_log::AccessLog::new(format, sink))
            })
            .transpose()?
    } else {
        None
    };
    let stop_watch = stop::start(config.graceful_timeout)?;
    let inline = config.wsgi_inline();
    let runtime = if let Some(d) = &driver {
        d.get()
            .runtime()
            .ok_or_else(|| PyValueError::new_err("the driver's runtime was shut down"))?
    } else if inline {
        Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .thread_name("gristmill-io")
                .enable_all()
                .build()?,
        )
    } else {
        Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime_threads)
                .thread_name("gristmill-io")
                .enable_all()
                .build()?,
        )
    };
    let listeners = {
        let _enter = runtime.enter();
        fds.iter()
            .map(|&fd| net::Listener::from_inherited_fd(fd))
            .collect::<std::io::Result<Vec<_>>>()?
    };
    let run = |stop: std::io::Result<Stop>| -> PyResult<Stop> { Ok(stop?) };
    let stop = match config.interface {
        Interface::Wsgi => {
            log::log(
                log::DEBUG,
                &if inline {
                    "WSGI requests run inline on the I/O thread".to_string()
                } else {
                    format!("WSGI requests run on {} Python threads", config.threads)
                },
            );
            let waiter = if inline {
                pool::Waiter::Driving(Arc::downgrade(&runtime))
            } else {
                pool::Waiter::Beside(runtime.handle().clone())
            };
            let (handler, jobs) = wsgi::Wsgi::new(
                py,
                app,
                config.clone(),
                runtime.handle().clone(),
                waiter,
                access,
            )?;
            let serving = server::run(
                config.clone(),
                Arc::new(handler),
                listeners,
                stop_watch.decision.clone(),
                lifecycle::SupervisorPipe::new(ready_fd),
            );
            let stop = match jobs {
                Some(jobs) => wsgi::run_inline(py, &runtime, serving, jobs, config.busy_poll),
                None => py.detach(|| runtime.block_on(serving)),
            };
            stop_watch.finished();
            run(stop)?
        }
        Interface::Asgi => {
            let event_loop = event_loop.ok_or_else(|| {
                PyValueError::new_err("serving ASGI needs the running event loop (event_loop=)")
            })?;
            let handler = Arc::new(asgi::Asgi::new(
                py,
                app,
                config.clone(),
                runtime.handle().clone(),
                access,
                asgi::LoopSide {
                    event_loop: event_loop.clone_ref(py),
                    state,
                    context,
                    driven: driver.is_some(),
                },
            )?);
            let serving = server::run(
                config.clone(),
                handler.clone(),
                listeners,
                stop_watch.decision.clone(),
                lifecycle::SupervisorPipe::new(ready_fd),
            );
            let stop = match &driver {
                Some(d) => {
                    // One thread: the loop turns the runtime from its selector until the
                    // server stops, then stops itself.
                    let d = d.get();
                    d.start(handler.bridge(), runtime.spawn(serving), config.busy_poll);
                    if let Err(e) = event_loop.bind(py).call_method0("run_forever") {
                        // The loop failed (SystemExit from a task, say): stop serving
                        // and end the connections before the error goes up.
                        stop_watch.finished();
                        drop(runtime);
                        d.shutdown(py, std::time::Duration::ZERO);
                        return Err(e);
                    }
                    d.outcome().unwrap_or_else(|| {
                        Err(std::io::Error::other(
                            "the event loop stopped before the server did",
                        ))
                    })
                }
                None => py.detach(|| runtime.block_on(serving)),
            };
            stop_watch.finished();
            handler.detach(py)?;
            run(stop)?
        }
    };
    // In-flight Python calls may still hold pool threads; the worker exits right after.
    let wait = match stop {
        Stop::Graceful => std::time::Duration::from_millis(500),
        Stop::Immediate => std::time::Duration::ZERO,
    };
    if let Some(d) = &driver {
        // The driver holds the runtime: it shuts it down, and the loop (lifespan
        // shutdown) goes on without it.
        drop(runtime);
        d.get().shutdown(py, wait);
        return Ok(());
    }
    match Arc::try_unwrap(runtime) {
        Ok(runtime) => py.detach(|| runtime.shutdown_timeout(wait)),
        // A thread of the application is still reading a request body through the
        // runtime; the worker exits right after, so leave the runtime to the exit.
        Err(runtime) => std::mem::forget(runtime),
    }
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
