//! How a request body starts, the same for both interfaces: what is read before the
//! application is called, and what a stall at that point gets.
//!
//! A body with a known length of at most [`PREFETCH_MAX`] bytes is read whole on the I/O
//! thread before the application runs, where waiting for it costs nothing: the
//! application's reads (`wsgi.input`, `receive()`) then never wait on the network, and
//! an inline or one-thread worker does not turn its runtime per read. Not when the
//! client sent `Expect: 100-continue`: `100 Continue` goes out when the application
//! first reads the body, so an application that answers without reading it (401, say)
//! never receives it, and reading it up front would send the `100` regardless.
//!
//! A small body that stalls for `body_read_timeout` is answered `408 Request Timeout`
//! here, with one log line and an access-log record, and the application is never
//! called: it could do nothing with half a body but fail. (A larger or chunked body
//! streams to the application, which then sees the timeout itself: see each
//! interface.) Any other failure (a malformed body, a client that went away) is handed
//! to the interface ([`Start::Failed`]), which reports it to the application its way.

use std::time::{Duration, Instant};

use crate::http::Incoming;
use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::Body as _;

use super::body::{read_whole, BodyReadError};
use super::{error_response, guarded, ResponseBody};
use crate::log;
use crate::net::ActiveGuard;
use crate::server::{ConnCtx, Handler};

/// Bodies with a known length up to this size are read before the application runs.
pub const PREFETCH_MAX: u64 = 64 * 1024;

/// Where the body of a request is when the application is about to be called.
pub enum Start {
    /// No body, or an empty one.
    Empty,
    /// A small body, read whole.
    Whole(Bytes),
    /// Still on the connection: read as the application asks for it.
    Stream(Incoming),
    /// Reading the small body failed (malformed, or the client went away).
    Failed(crate::http::BodyError),
}

/// A small body stalled for this long; answer with [`Stalled::respond`].
pub struct Stalled(pub Duration);

/// Take the body of a request (see the module docs): `Err` when it stalled before the
/// application was called.
pub async fn start(parts: &Parts, mut body: Incoming, timeout: Duration) -> Result<Start, Stalled> {
    if body.is_end_stream() {
        return Ok(Start::Empty);
    }
    let small = body.size_hint().exact().is_some_and(|n| n <= PREFETCH_MAX)
        && !parts.headers.contains_key(http::header::EXPECT);
    if !small {
        return Ok(Start::Stream(body));
    }
    // Boxed: only these requests read here, and inline the read would enlarge every
    // request's future, which hyper keeps room for on each connection and moves into
    // place on each request.
    match Box::pin(read_whole(&mut body, timeout)).await {
        Ok(b) => Ok(Start::Whole(b)),
        Err(BodyReadError::TimedOut(t)) => Err(Stalled(t)),
        Err(BodyReadError::Failed(e)) => Ok(Start::Failed(e)),
    }
}

impl Stalled {
    /// The 408 for the request of `parts`, logged (error log and access log).
    pub fn respond(
        self,
        handler: &impl Handler,
        parts: &Parts,
        conn: &ConnCtx,
        guard: ActiveGuard,
        started: Instant,
        server_header: bool,
    ) -> Response<ResponseBody> {
        log::log(
            log::INFO,
            &format!(
                "{} {}: no request body bytes arrived for {} s (body_read_timeout); \
                 answering 408",
                parts.method,
                parts.uri.path(),
                self.0.as_secs_f64()
            ),
        );
        crate::metrics::rejected(crate::metrics::Rejection::BodyTimeout);
        handler.log_rejected(parts, conn, StatusCode::REQUEST_TIMEOUT.as_u16(), started);
        guarded(
            error_response(StatusCode::REQUEST_TIMEOUT, server_header),
            guard,
        )
    }
}
