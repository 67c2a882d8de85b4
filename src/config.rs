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
    pub busy_poll: u64,
    pub root_path: String,
    pub header_read_timeout: f64,
    pub body_read_timeout: f64,
    pub send_timeout: f64,
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
    pub ws_send_timeout: f64,
    pub http: HttpMode,
    pub http2_max_concurrent_streams: u32,
    pub http2_initial_stream_window_size: u32,
    pub http2_initial_connection_window_size: u32,
    pub http2_adaptive_window: bool,
    pub http2_max_frame_size: u32,
    pub http2_keep_alive_interval: f64,
    pub http2_keep_alive_timeout: f64,
}

/// The TLS settings alone, extracted by attribute name (also checked by the supervisor
/// before it forks, see `check_tls`).
#[derive(FromPyObject, Clone, Debug)]
pub struct RawTls {
    pub http: HttpMode,
    pub ssl_certfile: Option<String>,
    pub ssl_keyfile: Option<String>,
    pub ssl_keyfile_password: Option<String>,
    pub ssl_ca_certs: Option<String>,
    pub ssl_client_verify: ClientVerify,
    pub ssl_min_version: TlsVersion,
}

/// Frozen, typed configuration of one worker's server.
#[derive(Clone, Debug)]
pub struct Config {
    pub interface: Interface,
    pub threads: usize,
    pub multiprocess: bool,
    pub runtime_threads: usize,
    /// Inline WSGI: how long to poll for more work before sleeping.
    pub busy_poll: Duration,
    pub root_path: String,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub send_timeout: Duration,
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
    /// How long one WebSocket write may take before the connection is dropped.
    pub ws_send_timeout: Duration,
    pub http: HttpMode,
    pub http2: Http2Config,
    /// `None` serves cleartext.
    pub tls: Option<TlsSettings>,
}

/// Which HTTP versions a connection may speak (`--http`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// HTTP/1.1, and HTTP/2 by ALPN over TLS or by prior knowledge in cleartext.
    Auto,
    Http1,
    Http2,
}

/// HTTP/2 settings (RFC 9113 §6.5.2) and keep-alive pings.
#[derive(Clone, Debug)]
pub struct Http2Config {
    pub max_concurrent_streams: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub adaptive_window: bool,
    pub max_frame_size: u32,
    /// `None`: no pings.
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_timeout: Duration,
}

/// Whether and how clients present a certificate (`--ssl-client-verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientVerify {
    None,
    Optional,
    Required,
}

/// The lowest TLS version accepted (`--ssl-min-version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Where the TLS material is; loaded by `crate::tls`.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub certfile: String,
    pub keyfile: String,
    pub keyfile_password: Option<String>,
    pub ca_certs: Option<String>,
    pub client_verify: ClientVerify,
    pub min_version: TlsVersion,
}

/// Extract an enum from one of its documented names.
macro_rules! str_enum {
    ($ty:ident, $what:literal, { $($name:literal => $variant:expr),+ $(,)? }) => {
        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;

            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let s: String = obj.extract()?;
                match s.as_str() {
                    $($name => Ok($variant),)+
                    other => Err(PyValueError::new_err(format!(
                        concat!("invalid ", $what, ": {:?}"), other
                    ))),
                }
            }
        }
    };
}

str_enum!(HttpMode, "http mode", { "auto" => HttpMode::Auto, "1" => HttpMode::Http1, "2" => HttpMode::Http2 });
str_enum!(ClientVerify, "ssl_client_verify", {
    "none" => ClientVerify::None,
    "optional" => ClientVerify::Optional,
    "required" => ClientVerify::Required,
});
str_enum!(TlsVersion, "ssl_min_version", { "1.2" => TlsVersion::Tls12, "1.3" => TlsVersion::Tls13 });

impl RawTls {
    /// `None` when serving cleartext.
    pub fn tls(&self) -> PyResult<Option<TlsSettings>> {
        match (&self.ssl_certfile, &self.ssl_keyfile) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsSettings {
                certfile: cert.clone(),
                keyfile: key.clone(),
                keyfile_password: self.ssl_keyfile_password.clone(),
                ca_certs: self.ssl_ca_certs.clone(),
                client_verify: self.ssl_client_verify,
                min_version: self.ssl_min_version,
            })),
            _ => Err(PyValueError::new_err(
                "ssl_certfile and ssl_keyfile must be given together",
            )),
        }
    }
}

fn seconds(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be a positive number")))
}

impl TryFrom<(RawSettings, RawTls)> for Config {
    type Error = PyErr;

    fn try_from((r, raw_tls): (RawSettings, RawTls)) -> PyResult<Config> {
        if r.threads == 0 || r.runtime_threads == 0 || r.max_connections == 0 {
            return Err(PyValueError::new_err(
                "threads, runtime_threads and max_connections must be at least 1",
            ));
        }
        let tls = raw_tls.tls()?;
        Ok(Config {
            interface: r.interface,
            threads: r.threads,
            multiprocess: r.workers > 1,
            runtime_threads: r.runtime_threads,
            busy_poll: Duration::from_micros(r.busy_poll),
            root_path: r.root_path,
            header_read_timeout: seconds("header_read_timeout", r.header_read_timeout)?,
            body_read_timeout: seconds("body_read_timeout", r.body_read_timeout)?,
            send_timeout: seconds("send_timeout", r.send_timeout)?,
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
            ws_send_timeout: seconds("ws_send_timeout", r.ws_send_timeout)?,
            http: r.http,
            http2: Http2Config {
                max_concurrent_streams: r.http2_max_concurrent_streams,
                initial_stream_window_size: r.http2_initial_stream_window_size,
                initial_connection_window_size: r.http2_initial_connection_window_size,
                adaptive_window: r.http2_adaptive_window,
                max_frame_size: r.http2_max_frame_size,
                keep_alive_interval: (r.http2_keep_alive_interval > 0.0)
                    .then(|| seconds("http2_keep_alive_interval", r.http2_keep_alive_interval))
                    .transpose()?,
                keep_alive_timeout: seconds(
                    "http2_keep_alive_timeout",
                    r.http2_keep_alive_timeout,
                )?,
            },
            tls,
        })
    }
}

impl Config {
    /// Whether a WSGI worker runs its application on the I/O thread itself: with one
    /// Python thread and one I/O thread, a second thread would only add a hand-off per
    /// request (see `wsgi::inline`).
    pub fn wsgi_inline(&self) -> bool {
        self.interface == Interface::Wsgi && self.threads == 1 && self.runtime_threads == 1
    }
}
