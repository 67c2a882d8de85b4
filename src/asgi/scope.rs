//! The ASGI `http` scope (spec version 2.4).
//!
//! Behind a trusted proxy, what it forwarded (`crate::http::proxy`) replaces `client`,
//! `scheme`, `server`, `root_path` and the `host` header; the `tls` extension still
//! describes the connection itself.

use http::header::{self, HeaderName};
use http::request::Parts;
use http::Version;
use percent_encoding::percent_decode;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::http::proxy::Forwarded;
use crate::net::Addrs;
use crate::tls::TlsInfo;

/// `http_version` as the scope spells it.
pub fn http_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The decoded `path`, with `root_path` prepended when a proxy stripped it (ASGI's
/// `path` is the full path; `root_path` says which part is the mount point).
pub fn full_path(root_path: &str, raw_path: &str) -> String {
    let decoded =
        String::from_utf8_lossy(&percent_decode(raw_path.as_bytes()).collect::<Vec<u8>>())
            .into_owned();
    if root_path.is_empty()
        || decoded
            .strip_prefix(root_path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        decoded
    } else {
        format!("{root_path}{decoded}")
    }
}

/// What every scope of this worker shares.
pub struct ScopeBase {
    pub extensions: Py<PyDict>,
    pub root_path: String,
    pub state: Option<Py<PyDict>>,
    /// An HTTP scope with every key in place and the shared values set: a request's
    /// scope starts as a copy of it (one allocation, no growing), then gets its own.
    template: Py<PyDict>,
}

impl ScopeBase {
    pub fn new(
        py: Python<'_>,
        asgi: Bound<'_, PyDict>,
        extensions: Bound<'_, PyDict>,
        root_path: &str,
        state: Option<Py<PyDict>>,
    ) -> PyResult<Self> {
        let t = PyDict::new(py);
        let none = py.None();
        t.set_item(intern!(py, "type"), intern!(py, "http"))?;
        t.set_item(intern!(py, "asgi"), &asgi)?;
        t.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        t.set_item(intern!(py, "method"), &none)?;
        t.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
        t.set_item(intern!(py, "path"), &none)?;
        t.set_item(intern!(py, "raw_path"), &none)?;
        t.set_item(intern!(py, "query_string"), &none)?;
        t.set_item(intern!(py, "root_path"), root_path)?;
        t.set_item(intern!(py, "headers"), &none)?;
        t.set_item(intern!(py, "server"), &none)?;
        t.set_item(intern!(py, "client"), &none)?;
        if state.is_some() {
            t.set_item(intern!(py, "state"), &none)?;
        }
        t.set_item(intern!(py, "extensions"), &extensions)?;
        Ok(ScopeBase {
            extensions: extensions.unbind(),
            root_path: root_path.to_owned(),
            state,
            template: t.unbind(),
        })
    }
}

/// The ASGI `tls` extension of a TLS connection: versions and suites as IANA codes, the
/// verified client certificate (PEM) and its subject when there is one.
fn tls_extension<'py>(py: Python<'py>, tls: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("server_cert", py.None())?;
    let chain = PyList::empty(py);
    let mut name = None;
    if let Some(cert) = &tls.client_cert {
        chain.append(cert.pem.as_str())?;
        name = Some(cert.subject.as_str());
    }
    d.set_item("client_cert_chain", chain)?;
    d.set_item("client_cert_name", name)?;
    d.set_item("client_cert_error", py.None())?;
    d.set_item("tls_version", tls.version_code)?;
    d.set_item("cipher_suite", tls.cipher_code)?;
    Ok(d)
}

/// Build the scope of a WebSocket connection: the HTTP scope's keys (less `method`),
/// `type` `websocket`, and the requested `subprotocols`.
pub fn websocket_scope<'py>(
    py: Python<'py>,
    base: &ScopeBase,
    parts: &Parts,
    addrs: &Addrs,
    tls: Option<&TlsInfo>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = http_scope(py, base, parts, addrs, tls)?;
    scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    let https = crate::http::proxy::is_https(parts, tls.is_some());
    let scheme = if https { "wss" } else { "ws" };
    scope.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
    scope.del_item(intern!(py, "method"))?;
    let subprotocols = PyList::empty(py);
    for value in parts
        .headers
        .get_all(::http::header::SEC_WEBSOCKET_PROTOCOL)
    {
        if let Ok(s) = value.to_str() {
            for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                subprotocols.append(p)?;
            }
        }
    }
    scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
    Ok(scope)
}

/// Header names most requests carry: their `bytes` objects are made once and shared.
const COMMON_NAMES: [HeaderName; 14] = [
    header::HOST,
    header::USER_AGENT,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONNECTION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::COOKIE,
    header::REFERER,
    header::ORIGIN,
    header::CACHE_CONTROL,
    header::AUTHORIZATION,
    header::UPGRADE,
];

/// A header name as the scope's `bytes` (lower case, as hyper keeps it).
fn header_name<'py>(py: Python<'py>, name: &HeaderName) -> Bound<'py, PyBytes> {
    static SHARED: PyOnceLock<Vec<Py<PyBytes>>> = PyOnceLock::new();
    if let Some(i) = COMMON_NAMES.iter().position(|n| n == name) {
        let shared = SHARED.get_or_init(py, || {
            COMMON_NAMES
                .iter()
                .map(|n| PyBytes::new(py, n.as_str().as_bytes()).unbind())
                .collect()
        });
        return shared[i].bind(py).clone();
    }
    PyBytes::new(py, name.as_str().as_bytes())
}

/// Build the scope of one HTTP request.
pub fn http_scope<'py>(
    py: Python<'py>,
    base: &ScopeBase,
    parts: &Parts,
    addrs: &Addrs,
    tls: Option<&TlsInfo>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = base.template.bind(py).copy()?;
    if parts.version != Version::HTTP_11 {
        scope.set_item(
            intern!(py, "http_version"),
            PyString::intern(py, http_version(parts.version)),
        )?;
    }
    scope.set_item(
        intern!(py, "method"),
        PyString::intern(py, parts.method.as_str()),
    )?;
    // What a trusted proxy said about the request (`crate::http::proxy`), if anything.
    let fwd = Forwarded::of(parts);
    if crate::http::proxy::is_https(parts, tls.is_some()) {
        scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
    }
    let root_path = match fwd.and_then(|f| f.prefix.as_deref()) {
        Some(prefix) => {
            scope.set_item(intern!(py, "root_path"), prefix)?;
            prefix
        }
        None => &base.root_path,
    };
    let raw_path = parts.uri.path();
    scope.set_item(intern!(py, "path"), full_path(root_path, raw_path))?;
    scope.set_item(
        intern!(py, "raw_path"),
        PyBytes::new(py, raw_path.as_bytes()),
    )?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, parts.uri.query().unwrap_or("").as_bytes()),
    )?;
    let headers = PyList::empty(py);
    // A forwarded host replaces the `host` header: frameworks build URLs from it.
    let fwd_host = fwd.and_then(|f| f.host.as_deref());
    if !parts.headers.contains_key(::http::header::HOST) {
        // HTTP/2 carries the host in `:authority` (RFC 9113 §8.3.1); applications look
        // for a `host` header, as an HTTP/1.1 request always has one.
        if let Some(host) = fwd_host.or(parts.uri.authority().map(|a| a.as_str())) {
            headers.append(PyTuple::new(
                py,
                [PyBytes::new(py, b"host"), PyBytes::new(py, host.as_bytes())],
            )?)?;
        }
    }
    for (name, value) in &parts.headers {
        if let (Some(host), true) = (fwd_host, name == ::http::header::HOST) {
            headers.append(PyTuple::new(
                py,
                [header_name(py, name), PyBytes::new(py, host.as_bytes())],
            )?)?;
            continue;
        }
        headers.append(PyTuple::new(
            py,
            [header_name(py, name), PyBytes::new(py, value.as_bytes())],
        )?)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    let server = if let Some((name, port)) = fwd.and_then(|f| f.server.as_ref()) {
        (name.as_str(), *port).into_py_any(py)?
    } else if addrs.server_port != 0 {
        // TCP. (A Unix socket has no port; its peer may still have an address: the
        // PROXY protocol's.)
        (addrs.server_host.as_str(), addrs.server_port).into_py_any(py)?
    } else {
        (addrs.server_host.as_str(), py.None()).into_py_any(py)?
    };
    scope.set_item(intern!(py, "server"), server)?;
    match fwd.and_then(|f| f.client).or(addrs.peer) {
        Some(peer) => {
            scope.set_item(intern!(py, "client"), (peer.ip().to_string(), peer.port()))?
        }
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    if let Some(state) = &base.state {
        // Spec: a shallow copy per request, so requests cannot replace each other's keys.
        scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
    }
    // Response trailers go out over HTTP/2 and HTTP/3 (HTTP/1.1 clients rarely read
    // them, and hyper sends them only to a request with `TE: trailers`).
    let trailers = matches!(parts.version, Version::HTTP_2 | Version::HTTP_3);
    if tls.is_some() || trailers {
        let extensions = base.extensions.bind(py).copy()?;
        if let Some(tls) = tls {
            extensions.set_item("tls", tls_extension(py, tls)?)?;
        }
        if trailers {
            extensions.set_item("http.response.trailers", PyDict::new(py))?;
        }
        scope.set_item(intern!(py, "extensions"), extensions)?;
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(full_path("", "/caf%C3%A9"), "/café");
        assert_eq!(full_path("/app", "/app/x"), "/app/x");
        assert_eq!(full_path("/app", "/x"), "/app/x");
        assert_eq!(full_path("/app", "/apple"), "/app/apple");
        assert_eq!(full_path("", "/a%2Fb"), "/a/b");
    }

    #[test]
    fn versions() {
        assert_eq!(http_version(Version::HTTP_11), "1.1");
        assert_eq!(http_version(Version::HTTP_2), "2");
    }
}
