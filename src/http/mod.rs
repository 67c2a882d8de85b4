//! Interface-independent HTTP pieces: request checks, how a request body starts (what
//! is read before the application runs), the response body (also from files, by
//! `sendfile` where it can), and the small responses
//! the server writes itself (400, 408, 413, 500, 503).

pub mod body;
pub mod file;
pub mod framing;
pub mod head;
pub mod incoming;
pub mod proxy;
pub mod proxy_protocol;
pub mod request_body;
pub mod sendfile;
pub mod validate;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};

pub use body::ResponseBody;
pub use incoming::{BodyError, Incoming};

pub const SERVER_NAME: HeaderValue = HeaderValue::from_static("gristmill");

/// `resp` with the request's busy-guard attached to its body (see [`ResponseBody`]).
pub fn guarded(
    resp: Response<ResponseBody>,
    guard: crate::net::ActiveGuard,
) -> Response<ResponseBody> {
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.with_guard(guard))
}

/// The request as the error log names it (`GET /path`), for both interfaces. Built
/// only when something is logged, not for every request.
pub fn describe(parts: &http::request::Parts) -> String {
    format!("{} {}", parts.method, parts.uri.path())
}

/// The server's own answer for `status` (its reason phrase as the body), closing the
/// connection: the 500 when an application failed before its response started, the
/// 403 of a refused WebSocket, the 400 or 413 of a bad request body.
pub fn error_response(status: StatusCode, server_header: bool) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    plain_response(status, reason, true, server_header)
}

/// A plain-text response written by the server itself. `close` asks hyper to close the
/// connection afterwards (needed whenever the request body was not read).
pub fn plain_response(
    status: StatusCode,
    message: &str,
    close: bool,
    server_header: bool,
) -> Response<ResponseBody> {
    let body = format!("{} {}\n", status.as_u16(), message);
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if server_header {
        h.insert(SERVER, SERVER_NAME);
    }
    resp
}
