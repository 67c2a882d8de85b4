//! Writing a handler's response to an HTTP/3 request stream.
//!
//! The head goes out as a HEADERS frame without the connection-specific fields that
//! HTTP/3 forbids (RFC 9114 §4.2: `Connection`, `Keep-Alive`, `Transfer-Encoding`,
//! `Upgrade`, `Proxy-Connection`; the server's own answers set `Connection: close`),
//! with a `Date` when the application gave none, as hyper adds over TCP. The body is
//! pulled from the [`ResponseBody`] one frame at a time and written only when the
//! stream takes it, so QUIC flow control is the backpressure the application sees.
//! Every write is bounded by `send_timeout`; a write that fails (the client reset the
//! stream or went away) drops the body, which tells the application as over TCP. A
//! body that fails mid-way resets the stream (`H3_INTERNAL_ERROR`), the honest signal
//! once the head is out.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestStream;
use http::header::{HeaderName, HeaderValue, CONNECTION, DATE, TRANSFER_ENCODING, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::http::ResponseBody;
use crate::log;

/// The sending half of a request stream.
pub type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Send `resp` on `stream` (see the module docs); `head_request`: the request was a
/// HEAD, so no body goes out.
pub async fn send(
    stream: &mut SendHalf,
    resp: Response<ResponseBody>,
    head_request: bool,
    send_timeout: Duration,
) {
    if !send_all(stream, resp, head_request, send_timeout).await {
        // Reset rather than leave it to the drop, which would end the stream as if the
        // body were complete.
        stream.stop_stream(Code::H3_INTERNAL_ERROR);
    }
}

/// Send the response; false when it could not be sent whole.
async fn send_all(
    stream: &mut SendHalf,
    resp: Response<ResponseBody>,
    head_request: bool,
    send_timeout: Duration,
) -> bool {
    let (mut parts, mut body) = resp.into_parts();
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        parts.headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        parts.headers.remove(HeaderName::from_static(name));
    }
    if !parts.headers.contains_key(DATE) {
        let now = httpdate::fmt_http_date(SystemTime::now());
        if let Ok(v) = HeaderValue::from_str(&now) {
            parts.headers.insert(DATE, v);
        }
    }
    let no_body = head_request
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let head = Response::from_parts(parts, ());
    if !within(send_timeout, stream.send_response(head)).await {
        return false;
    }
    if !no_body {
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    log::log(log::DEBUG, &format!("HTTP/3 response aborted: {e}"));
                    return false;
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    if !within(send_timeout, stream.send_data(data)).await {
                        return false;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if !within(send_timeout, stream.send_trailers(trailers)).await {
                            return false;
                        }
                        break;
                    }
                }
            }
        }
    }
    // The response is complete: release the application's side (and the request's
    // busy guard) before the FIN is acknowledged.
    drop(body);
    within(send_timeout, stream.finish()).await
}

/// Run one write; false when it failed or stayed blocked past `timeout`.
async fn within(
    timeout: Duration,
    write: impl std::future::Future<Output = Result<(), h3::error::StreamError>>,
) -> bool {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log::log(log::DEBUG, &format!("HTTP/3 response not sent: {e}"));
            false
        }
        Err(_) => {
            log::log(
                log::DEBUG,
                &format!(
                    "HTTP/3 client took none of the response for {} s (send_timeout)",
                    timeout.as_secs_f64()
                ),
            );
            false
        }
    }
}
