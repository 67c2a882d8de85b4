//! The ASGI `http` scope (spec version 2.4).

use http::request::Parts;
use http::Version;
use percent_encoding::percent_decode;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::net::Addrs;
use crate::tls::TlsInfo;

/// `http_version` as the scope spells it.
pub fn http_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
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
    pub asgi: Py<PyDict>,
    pub extensions: Py<PyDict>,
    pub root_path: String,
    pub state: Option<Py<PyDict>>,
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
    let scheme = if tls.is_some() { "wss" } else { "ws" };
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

/// Build the scope of one HTTP request.
pub fn http_scope<'py>(
    py: Python<'py>,
    base: &ScopeBase,
    parts: &Parts,
    addrs: &Addrs,
    tls: Option<&TlsInfo>,
) -> PyResult<Bound<'py, PyDict>> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    scope.set_item(intern!(py, "asgi"), base.asgi.bind(py))?;
    scope.set_item(
        intern!(py, "http_version"),
        PyString::intern(py, http_version(parts.version)),
    )?;
    scope.set_item(
        intern!(py, "method"),
        PyString::intern(py, parts.method.as_str()),
    )?;
    scope.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
    let raw_path = parts.uri.path();
    scope.set_item(intern!(py, "path"), full_path(&base.root_path, raw_path))?;
    scope.set_item(
        intern!(py, "raw_path"),
        PyBytes::new(py, raw_path.as_bytes()),
    )?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, parts.uri.query().unwrap_or("").as_bytes()),
    )?;
    scope.set_item(intern!(py, "root_path"), base.root_path.as_str())?;
    let headers = PyList::empty(py);
    if !parts.headers.contains_key(::http::header::HOST) {
        // HTTP/2 carries the host in `:authority` (RFC 9113 §8.3.1); applications look
        // for a `host` header, as an HTTP/1.1 request always has one.
        if let Some(authority) = parts.uri.authority() {
            headers.append(PyTuple::new(
                py,
                [
                    PyBytes::new(py, b"host"),
                    PyBytes::new(py, authority.as_str().as_bytes()),
                ],
            )?)?;
        }
    }
    for (name, value) in &parts.headers {
        headers.append(PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    let server = if addrs.peer.is_some() {
        (addrs.server_host.as_str(), addrs.server_port).into_py_any(py)?
    } else {
        (addrs.server_host.as_str(), py.None()).into_py_any(py)?
    };
    scope.set_item(intern!(py, "server"), server)?;
    match addrs.peer {
        Some(peer) => {
            scope.set_item(intern!(py, "client"), (peer.ip().to_string(), peer.port()))?
        }
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    if let Some(state) = &base.state {
        // Spec: a shallow copy per request, so requests cannot replace each other's keys.
        scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
    }
    match tls {
        None => scope.set_item(intern!(py, "extensions"), base.extensions.bind(py))?,
        Some(tls) => {
            let extensions = base.extensions.bind(py).copy()?;
            extensions.set_item("tls", tls_extension(py, tls)?)?;
            scope.set_item(intern!(py, "extensions"), extensions)?;
        }
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
