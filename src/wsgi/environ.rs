//! The PEP 3333 environ, built in Rust.
//!
//! Constant entries (`wsgi.version`, `wsgi.errors`, `wsgi.multithread`, …) live in a base
//! dict made once per worker and copied per request. Strings are "native strings" in
//! the PEP's sense: bytes decoded as latin-1, so every byte survives (`PATH_INFO` is
//! percent-decoded first). Header names containing `_` are dropped, so `X_Forwarded_For`
//! cannot pose as `X-Forwarded-For` (both would map to `HTTP_X_FORWARDED_FOR`). The
//! server's own process environment is never copied in.
//!
//! On TLS connections `wsgi.url_scheme` is `https` and the mod_ssl-style keys `HTTPS`,
//! `SSL_PROTOCOL`, `SSL_CIPHER` and `SSL_CLIENT_VERIFY` are set; with a verified client
//! certificate also `SSL_CLIENT_CERT` (PEM), `SSL_CLIENT_S_DN` and `SSL_CLIENT_I_DN`
//! (RFC 4514). Over HTTP/2 the `:authority` pseudo-header stands in for a missing
//! `Host` (RFC 9113 §8.3.1), so `HTTP_HOST` is set as applications expect.
//!
//! Behind a trusted proxy, what it forwarded (`crate::http::proxy`) replaces
//! `REMOTE_ADDR`/`REMOTE_PORT`, `wsgi.url_scheme`, `HTTP_HOST`, `SERVER_NAME`/
//! `SERVER_PORT` and `SCRIPT_NAME`; the TLS keys still describe the connection itself.

use std::borrow::Cow;

use http::header::{COOKIE, HOST};
use http::request::Parts;
use percent_encoding::percent_decode;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use pyo3::{intern, Bound};

use crate::access_log::protocol;
use crate::config::Config;
use crate::http::proxy::Forwarded;
use crate::net::Addrs;
use crate::tls::TlsInfo;

/// Decode bytes as latin-1 into a Python str (a "native string").
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(b) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => PyString::new(py, &latin1_string(b)),
    }
}

/// Bytes as latin-1 text: each byte is the code point of the same value.
pub fn latin1_string(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// The environ keys of the most common request headers as Python strings made once per
/// process (their hash cached), instead of a new string per request.
fn common_key<'py>(py: Python<'py>, name: &str) -> Option<&'py Bound<'py, PyString>> {
    Some(match name {
        "host" => intern!(py, "HTTP_HOST"),
        "content-type" => intern!(py, "CONTENT_TYPE"),
        "content-length" => intern!(py, "CONTENT_LENGTH"),
        "user-agent" => intern!(py, "HTTP_USER_AGENT"),
        "accept" => intern!(py, "HTTP_ACCEPT"),
        "accept-encoding" => intern!(py, "HTTP_ACCEPT_ENCODING"),
        "accept-language" => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        "connection" => intern!(py, "HTTP_CONNECTION"),
        "cookie" => intern!(py, "HTTP_COOKIE"),
        "authorization" => intern!(py, "HTTP_AUTHORIZATION"),
        "cache-control" => intern!(py, "HTTP_CACHE_CONTROL"),
        "referer" => intern!(py, "HTTP_REFERER"),
        "origin" => intern!(py, "HTTP_ORIGIN"),
        "x-forwarded-for" => intern!(py, "HTTP_X_FORWARDED_FOR"),
        "x-forwarded-proto" => intern!(py, "HTTP_X_FORWARDED_PROTO"),
        "x-request-id" => intern!(py, "HTTP_X_REQUEST_ID"),
        _ => return None,
    })
}

/// The environ key of a request header, or `None` for names that must be dropped.
pub fn header_key(name: &str) -> Option<Cow<'static, str>> {
    if name.contains('_') {
        return None;
    }
    Some(match name {
        "content-type" => Cow::Borrowed("CONTENT_TYPE"),
        "content-length" => Cow::Borrowed("CONTENT_LENGTH"),
        "host" => Cow::Borrowed("HTTP_HOST"),
        "user-agent" => Cow::Borrowed("HTTP_USER_AGENT"),
        "accept" => Cow::Borrowed("HTTP_ACCEPT"),
        "accept-encoding" => Cow::Borrowed("HTTP_ACCEPT_ENCODING"),
        "connection" => Cow::Borrowed("HTTP_CONNECTION"),
        "cookie" => Cow::Borrowed("HTTP_COOKIE"),
        _ => {
            let mut k = String::with_capacity(5 + name.len());
            k.push_str("HTTP_");
            k.extend(name.bytes().map(|b| {
                if b == b'-' {
                    '_'
                } else {
                    b.to_ascii_uppercase() as char
                }
            }));
            Cow::Owned(k)
        }
    })
}

/// Split the percent-decoded path into (`SCRIPT_NAME`, `PATH_INFO`) for `root_path`.
pub fn split_root<'a>(root: &str, path: &'a [u8]) -> &'a [u8] {
    if root.is_empty() {
        return path;
    }
    match path.strip_prefix(root.as_bytes()) {
        Some(rest) if rest.is_empty() || rest[0] == b'/' => rest,
        _ => path,
    }
}

/// The per-worker constant part of the environ.
pub fn base_environ<'py>(
    py: Python<'py>,
    cfg: &Config,
    errors: Bound<'py, PyAny>,
    file_wrapper: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    d.set_item("wsgi.url_scheme", "http")?;
    d.set_item("wsgi.errors", errors)?;
    d.set_item("wsgi.multithread", PyBool::new(py, cfg.threads > 1))?;
    d.set_item("wsgi.multiprocess", PyBool::new(py, cfg.multiprocess))?;
    d.set_item("wsgi.run_once", false)?;
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.file_wrapper", file_wrapper)?;
    d.set_item("SCRIPT_NAME", cfg.root_path.as_str())?;
    Ok(d)
}

/// Build one request's environ from the base and the request head.
pub fn build<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyDict>,
    root_path: &str,
    parts: &Parts,
    addrs: &Addrs,
    tls: Option<&TlsInfo>,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = base.copy()?;
    // What a trusted proxy said about the request (`crate::http::proxy`), if anything.
    let fwd = Forwarded::of(parts);
    let root_path = match fwd.and_then(|f| f.prefix.as_deref()) {
        Some(prefix) => {
            env.set_item(intern!(py, "SCRIPT_NAME"), prefix)?;
            prefix
        }
        None => root_path,
    };
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        PyString::intern(py, parts.method.as_str()),
    )?;
    let decoded: Cow<'_, [u8]> = percent_decode(parts.uri.path().as_bytes()).into();
    env.set_item(
        intern!(py, "PATH_INFO"),
        latin1(py, split_root(root_path, &decoded)),
    )?;
    env.set_item(
        intern!(py, "QUERY_STRING"),
        latin1(py, parts.uri.query().unwrap_or("").as_bytes()),
    )?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        PyString::intern(py, protocol(parts.version)),
    )?;
    let (server_name, server_port) = match fwd.and_then(|f| f.server.as_ref()) {
        Some((name, port)) => (name.as_str(), *port),
        None => (addrs.server_host.as_str(), addrs.server_port),
    };
    env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
    env.set_item(intern!(py, "SERVER_PORT"), server_port.to_string())?;
    if let Some(peer) = fwd.and_then(|f| f.client).or(addrs.peer) {
        env.set_item(intern!(py, "REMOTE_ADDR"), peer.ip().to_string())?;
        env.set_item(intern!(py, "REMOTE_PORT"), peer.port().to_string())?;
    }
    for name in parts.headers.keys() {
        let Some(key) = header_key(name.as_str()) else {
            continue;
        };
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        let value = match values.next() {
            None => latin1(py, first),
            Some(second) => {
                // Repeated fields are one comma-separated list (RFC 9110 §5.3), except
                // Cookie, whose pairs are joined with "; " (RFC 6265 §5.4).
                let sep: &[u8] = if name == COOKIE { b"; " } else { b"," };
                let mut joined = first.to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                latin1(py, &joined)
            }
        };
        match common_key(py, name.as_str()) {
            Some(interned) => env.set_item(interned, value)?,
            None => env.set_item(&*key, value)?,
        }
    }
    if let Some(host) = fwd.and_then(|f| f.host.as_deref()) {
        env.set_item(intern!(py, "HTTP_HOST"), host)?;
    } else if !parts.headers.contains_key(HOST) {
        if let Some(authority) = parts.uri.authority() {
            env.set_item(intern!(py, "HTTP_HOST"), authority.as_str())?;
        }
    }
    if let Some(tls) = tls {
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
        env.set_item(intern!(py, "SSL_PROTOCOL"), tls.protocol)?;
        env.set_item(intern!(py, "SSL_CIPHER"), tls.cipher.as_str())?;
        match &tls.client_cert {
            Some(cert) => {
                env.set_item(intern!(py, "SSL_CLIENT_VERIFY"), intern!(py, "SUCCESS"))?;
                env.set_item(intern!(py, "SSL_CLIENT_CERT"), cert.pem.as_str())?;
                env.set_item(intern!(py, "SSL_CLIENT_S_DN"), cert.subject.as_str())?;
                env.set_item(intern!(py, "SSL_CLIENT_I_DN"), cert.issuer.as_str())?;
            }
            None => env.set_item(intern!(py, "SSL_CLIENT_VERIFY"), intern!(py, "NONE"))?,
        }
    }
    if let Some(https) = fwd.and_then(|f| f.https) {
        let scheme = if https { "https" } else { "http" };
        env.set_item(intern!(py, "wsgi.url_scheme"), PyString::intern(py, scheme))?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        assert_eq!(
            header_key("x-forwarded-for").unwrap(),
            "HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(header_key("content-type").unwrap(), "CONTENT_TYPE");
        assert!(header_key("x_forwarded_for").is_none());
    }

    #[test]
    fn latin1_keeps_every_byte() {
        assert_eq!(latin1_string(b"/caf\xc3\xa9"), "/caf\u{c3}\u{a9}");
    }

    #[test]
    fn root_path_split() {
        assert_eq!(split_root("/app", b"/app/x"), b"/x");
        assert_eq!(split_root("/app", b"/app"), b"");
        assert_eq!(split_root("/app", b"/apple"), b"/apple");
        assert_eq!(split_root("", b"/x"), b"/x");
    }
}
