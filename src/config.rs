//! The server settings as the Rust core sees them.
//!
//! `gristmill.settings` is the one schema and the one place that validates: by the time
//! a `Settings` object reaches the core it has passed `settings.validate`. [`Config`] is
//! extracted from it in one step (`#[derive(FromPyObject)]`, by attribute name), so a
//! new setting is one field here plus the code that uses it. The converters below only
//! change a value's type (seconds to `Duration`, a choice to an enum, 0 to `None`);
//! they check nothing Python already checked, except where a bad value would panic or
//! break memory safety instead of failing, and each says so.
//!
//! How a worker runs is one of four [`ExecutionMode`]s. Python decides which
//! (`Settings.execution_mode`, from the interface, `threads`, `runtime_threads` and
//! `loop`) and the worker sets up its side from that same attribute; here it arrives
//! as the enum that `serve` in `lib.rs` dispatches on once, to one function per mode.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Frozen, typed configuration of one worker's server: the `Settings` attributes of the
/// same name, unless `attribute("…")` says otherwise.
#[derive(FromPyObject, Clone, Debug)]
pub struct Config {
    /// How this worker runs (`Settings.execution_mode`).
    #[pyo3(attribute("execution_mode"))]
    pub mode: ExecutionMode,
    pub threads: usize,
    /// More than one worker process (`wsgi.multiprocess`).
    #[pyo3(attribute("workers"), from_py_with = more_than_one)]
    pub multiprocess: bool,
    pub runtime_threads: usize,
    /// One-thread modes (WSGI inline, ASGI driven): how long to keep turning the runtime
    /// without sleeping after activity (`crate::busy_poll`).
    #[pyo3(from_py_with = microseconds)]
    pub busy_poll: Duration,
    pub root_path: String,
    #[pyo3(from_py_with = seconds)]
    pub header_read_timeout: Duration,
    #[pyo3(from_py_with = seconds)]
    pub body_read_timeout: Duration,
    #[pyo3(from_py_with = seconds)]
    pub send_timeout: Duration,
    #[pyo3(from_py_with = seconds)]
    pub keepalive_timeout: Duration,
    /// How long one application call may take (`--request-timeout`); `None`: no limit.
    #[pyo3(from_py_with = seconds_or_off)]
    pub request_timeout: Option<Duration>,
    #[pyo3(from_py_with = seconds)]
    pub graceful_timeout: Duration,
    /// How long the supervisor waits for a heartbeat (`--worker-timeout`,
    /// `crate::heartbeat`); `None`: no heartbeat.
    #[pyo3(from_py_with = seconds_or_off)]
    pub worker_timeout: Option<Duration>,
    pub max_header_size: usize,
    pub max_headers: usize,
    /// `None` means no limit (the setting's 0).
    #[pyo3(from_py_with = zero_is_none)]
    pub max_body_size: Option<u64>,
    pub max_connections: usize,
    /// Requests in flight per worker; `None` means no limit (the setting's 0).
    #[pyo3(from_py_with = zero_is_none)]
    pub limit_concurrency: Option<u64>,
    /// Requests after which the worker asks to be replaced, jitter included (the
    /// supervisor draws it per worker); 0: never.
    pub max_requests: u64,
    pub server_header: bool,
    /// Read proxy headers from trusted peers (`crate::http::proxy`).
    pub proxy_headers: bool,
    #[pyo3(from_py_with = crate::http::proxy::trusted_peers)]
    pub forwarded_allow_ips: crate::http::proxy::TrustedPeers,
    /// Read a PROXY protocol header first on every connection (`crate::http::proxy_protocol`).
    pub proxy_protocol: bool,
    pub access_log: bool,
    pub access_log_format: String,
    /// Start ASGI tasks eagerly (Python 3.12+).
    pub eager_tasks: bool,
    /// Serve WebSocket upgrades (ASGI).
    pub ws: bool,
    pub ws_max_size: usize,
    /// How long one WebSocket write may take before the connection is dropped.
    #[pyo3(from_py_with = seconds)]
    pub ws_send_timeout: Duration,
    /// Keepalive pings to WebSocket clients; `None`: none (the setting's 0).
    #[pyo3(from_py_with = seconds_or_off)]
    pub ws_ping_interval: Option<Duration>,
    /// How long a client has to answer a keepalive ping.
    #[pyo3(from_py_with = seconds)]
    pub ws_ping_timeout: Duration,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it.
    pub ws_per_message_deflate: bool,
    /// The largest LZ77 window (bits, 9-15) compressed with or asked of clients.
    pub ws_deflate_max_window_bits: u8,
    pub http: HttpMode,
    // HTTP/2 settings (RFC 9113 §6.5.2) and keep-alive pings.
    pub http2_max_concurrent_streams: u32,
    pub http2_initial_stream_window_size: u32,
    pub http2_initial_connection_window_size: u32,
    pub http2_adaptive_window: bool,
    pub http2_max_frame_size: u32,
    /// `None`: no pings (the setting's 0).
    #[pyo3(from_py_with = seconds_or_off)]
    pub http2_keep_alive_interval: Option<Duration>,
    #[pyo3(from_py_with = seconds)]
    pub http2_keep_alive_timeout: Duration,
    /// Serve HTTP/3 over QUIC beside each TLS listener (`crate::http3`).
    pub http3: bool,
    /// Advertise it with `Alt-Svc` on HTTP/1.1 and HTTP/2 TLS responses.
    pub http3_alt_svc: bool,
    pub http3_max_concurrent_streams: u32,
    #[pyo3(from_py_with = seconds)]
    pub http3_idle_timeout: Duration,
    /// The listen backlog; also bounds the QUIC connections waiting for a place.
    pub backlog: usize,
    /// `None` serves cleartext. `Settings.tls` is the settings object itself when it
    /// configures TLS, else `None`.
    pub tls: Option<TlsSettings>,
    /// `None` without `--static`; `Settings.static_files` is the settings object itself
    /// when it has mounts.
    pub static_files: Option<crate::static_files::StaticSettings>,
}

/// Where the TLS material is, from the `ssl_*` settings; loaded by `crate::tls`.
/// `gristmill.settings` checked that certificate and key come together, and that client
/// verification has its CAs.
#[derive(FromPyObject, Clone, Debug)]
pub struct TlsSettings {
    #[pyo3(attribute("ssl_certfile"))]
    pub certfile: String,
    #[pyo3(attribute("ssl_keyfile"))]
    pub keyfile: String,
    #[pyo3(attribute("ssl_keyfile_password"))]
    pub keyfile_password: Option<String>,
    #[pyo3(attribute("ssl_ca_certs"))]
    pub ca_certs: Option<String>,
    #[pyo3(attribute("ssl_client_verify"))]
    pub client_verify: ClientVerify,
    #[pyo3(attribute("ssl_min_version"))]
    pub min_version: TlsVersion,
}

/// How a worker runs: its interface and where the application is called. Decided in
/// Python (`Settings.execution_mode`, `gristmill.settings.ExecutionMode` names the same
/// four), which resolved the interface first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionMode {
    /// WSGI with one Python thread and one I/O thread: the application is called on the
    /// I/O thread, between turns of its current-thread runtime (`wsgi::inline`).
    WsgiInline,
    /// WSGI on a pool of `threads` Python threads beside a multi-thread runtime.
    WsgiPool,
    /// ASGI on one thread: the event loop's selector turns a current-thread runtime
    /// (`asgi::driven`).
    AsgiDriven,
    /// ASGI with the event loop in a thread of its own beside a multi-thread runtime.
    AsgiLoopThread,
}

impl ExecutionMode {
    /// An ASGI mode (the others are WSGI).
    pub fn is_asgi(self) -> bool {
        matches!(
            self,
            ExecutionMode::AsgiDriven | ExecutionMode::AsgiLoopThread
        )
    }
}

/// Which HTTP versions a connection may speak (`--http`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// HTTP/1.1, and HTTP/2 by ALPN over TLS or by prior knowledge in cleartext.
    Auto,
    Http1,
    Http2,
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

/// Extract an enum from the string of a setting with `choices`. The table maps each
/// choice to its variant; `settings.py` has already refused any other string, so the
/// error only fires for an object that did not go through it.
macro_rules! choice_enum {
    ($ty:ident, $what:literal, { $($name:literal => $variant:expr),+ $(,)? }) => {
        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;

            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let s: String = obj.extract()?;
                match s.as_str() {
                    $($name => Ok($variant),)+
                    other => Err(PyValueError::new_err(format!(
                        "{} must be one of {}; got {other:?}",
                        $what,
                        [$($name),+].join(", "),
                    ))),
                }
            }
        }
    };
}

choice_enum!(ExecutionMode, "execution_mode", {
    "wsgi-inline" => ExecutionMode::WsgiInline,
    "wsgi-pool" => ExecutionMode::WsgiPool,
    "asgi-driven" => ExecutionMode::AsgiDriven,
    "asgi-loop-thread" => ExecutionMode::AsgiLoopThread,
});
choice_enum!(HttpMode, "http", { "auto" => HttpMode::Auto, "1" => HttpMode::Http1, "2" => HttpMode::Http2 });
choice_enum!(ClientVerify, "ssl_client_verify", {
    "none" => ClientVerify::None,
    "optional" => ClientVerify::Optional,
    "required" => ClientVerify::Required,
});
choice_enum!(TlsVersion, "ssl_min_version", { "1.2" => TlsVersion::Tls12, "1.3" => TlsVersion::Tls13 });

/// Seconds (a float) as a `Duration`. `settings.py` checks the range; this stays a
/// checked conversion because `Duration::from_secs_f64` would panic on a negative,
/// NaN or overflowing value rather than fail.
fn seconds(obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = obj.extract()?;
    Duration::try_from_secs_f64(secs)
        .map_err(|e| PyValueError::new_err(format!("{secs} is not a number of seconds: {e}")))
}

/// Like [`seconds`], with the settings' 0 meaning off.
fn seconds_or_off(obj: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    let d = seconds(obj)?;
    Ok((!d.is_zero()).then_some(d))
}

fn microseconds(obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    Ok(Duration::from_micros(obj.extract()?))
}

fn zero_is_none(obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    let n: u64 = obj.extract()?;
    Ok((n > 0).then_some(n))
}

fn more_than_one(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.extract::<usize>()? > 1)
}
