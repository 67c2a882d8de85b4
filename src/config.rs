//! The server settings as the Rust core sees them.
//!
//! The Python `gristmill.settings.Settings` dataclass is the one schema; this struct is
//! extracted from it attribute by attribute (field names match), validated there, and
//! frozen here behind an `Arc` for the life of the worker.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The application interface a worker serves. Resolved before the core starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Wsgi,
    Asgi,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Interface {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s: String = obj.extract()?;
        match s.as_str() {
            "wsgi" => Ok(Interface::Wsgi),
            "asgi" => Ok(Interface::Asgi),
            other => Err(PyValueError::new_err(format!(
                "the Rust core serves 'wsgi' or 'asgi', got {other:?} (resolve 'auto' first)"
            ))),
        }
    }
}

/// The subset of `Settings` the core uses, extracted by attribute name.
#[derive(FromPyObject, Clone, Debug)]
pub struct RawSettings {
    pub interface: Interface,
    pub threads: usize,
    pub workers: usize,
    pub runtime_threads: usize,
    pub root_path: String,
    pub header_read_timeout: f64,
    pub keepalive_timeout: f64,
    pub graceful_timeout: f64,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_body_size: u64,
    pub max_connections: usize,
    pub server_header: bool,
    pub access_log: bool,
    pub access_log_format: String,
    pub ws: bool,
    pub ws_max_size: usize,
}

/// Frozen, typed configuration of one worker's server.
#[derive(Clone, Debug)]
pub struct Config {
    pub interface: Interface,
    pub threads: usize,
    pub multiprocess: bool,
    pub runtime_threads: usize,
    pub root_path: String,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub graceful_timeout: Duration,
    pub max_header_size: usize,
    pub max_headers: usize,
    /// `None` means no limit.
    pub max_body_size: Option<u64>,
    pub max_connections: usize,
    pub server_header: bool,
    pub access_log: bool,
    pub access_log_format: String,
    /// Serve WebSocket upgrades (ASGI).
    pub ws: bool,
    pub ws_max_size: usize,
}

fn seconds(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be a positive number")))
}

impl TryFrom<RawSettings> for Config {
    type Error = PyErr;

    fn try_from(r: RawSettings) -> PyResult<Config> {
        if r.threads == 0 || r.runtime_threads == 0 || r.max_connections == 0 {
            return Err(PyValueError::new_err(
                "threads, runtime_threads and max_connections must be at least 1",
            ));
        }
        Ok(Config {
            interface: r.interface,
            threads: r.threads,
            multiprocess: r.workers > 1,
            runtime_threads: r.runtime_threads,
            root_path: r.root_path,
            header_read_timeout: seconds("header_read_timeout", r.header_read_timeout)?,
            keepalive_timeout: seconds("keepalive_timeout", r.keepalive_timeout)?,
            graceful_timeout: seconds("graceful_timeout", r.graceful_timeout)?,
            max_header_size: r.max_header_size,
            max_headers: r.max_headers,
            max_body_size: (r.max_body_size > 0).then_some(r.max_body_size),
            max_connections: r.max_connections,
            server_header: r.server_header,
            access_log: r.access_log,
            access_log_format: r.access_log_format,
            ws: r.ws,
            ws_max_size: r.ws_max_size,
        })
    }
}
