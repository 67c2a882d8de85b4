//! `start_response`, `write()` and the way a WSGI response reaches hyper.
//!
//! The head is held back until the first non-empty body chunk or `write()` call (PEP
//! 3333), so an application may still replace it with `exc_info`. Then it is handed to
//! the waiting connection either with the whole body (when it is known to be complete:
//! a list of chunks, or a first chunk as long as the declared Content-Length) or with a
//! bounded channel the body is streamed through. A closed channel means the client went
//! away; the caller stops iterating and the iterable's `close()` runs.

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{HeaderMap, Response, StatusCode};
use hyper::ext::ReasonPhrase;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::errors::ClientDisconnected;
use crate::http::body::{abort_stream, Chunk};
use crate::http::head::Head;
use crate::http::{plain_response, validate::parse_content_length, ResponseBody};
use crate::net::ActiveGuard;
use crate::pool::Waiter;

/// Chunks in flight between the application thread and the connection.
const STREAM_DEPTH: usize = 4;

enum Phase {
    /// Nothing sent yet: the connection waits on `reply`.
    Pending(oneshot::Sender<Response<ResponseBody>>, ActiveGuard),
    Streaming(mpsc::Sender<Chunk>),
    Done,
}

/// The client is gone; stop producing.
#[derive(Debug)]
pub struct Gone;

struct State {
    head: Option<Head>,
    phase: Phase,
    status: u16,
    bytes: u64,
    /// Answered by the deadline ([`time_out`]): what the application still sends goes
    /// nowhere, and `start_response` is no error for it.
    timed_out: bool,
}

/// The `start_response` callable of one request; also owns the response's progress.
#[pyclass(module = "gristmill._core", frozen)]
pub struct StartResponse {
    /// Shared with the request's deadline, when there is one (`deadline.rs`): the
    /// server answers in the application's place when it takes too long.
    state: Arc<Mutex<State>>,
    server_header: bool,
    waiter: Waiter,
    /// How long a streamed chunk may wait for room (`send_timeout`).
    send_timeout: Duration,
}

/// Status line text to (code, reason kept when it is not the standard one).
pub fn parse_status(s: &str) -> Result<(StatusCode, Option<ReasonPhrase>), String> {
    let b = s.as_bytes();
    if b.len() < 4 || b[3] != b' ' || !b[..3].iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "status must look like '200 OK' (three digits, a space, a reason), got {s:?}"
        ));
    }
    let code =
        StatusCode::from_bytes(&b[..3]).map_err(|_| format!("invalid status code in {s:?}"))?;
    let reason = &s[4..];
    if code.canonical_reason() == Some(reason) || reason.is_empty() {
        return Ok((code, None));
    }
    let bytes = latin1_bytes(reason).ok_or_else(|| format!("status {s:?} is not latin-1"))?;
    let phrase = ReasonPhrase::try_from(bytes)
        .map_err(|_| format!("status reason contains forbidden characters: {s:?}"))?;
    Ok((code, Some(phrase)))
}

/// Encode a native string as latin-1, `None` when a character is beyond U+00FF.
pub fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Hop-by-hop headers an application must not set (PEP 3333, RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn invalid(msg: String) -> PyErr {
    PyValueError::new_err(format!("invalid WSGI response: {msg}"))
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let mut map = HeaderMap::new();
    let mut content_length = None;
    for item in headers.try_iter().map_err(|_| {
        PyTypeError::new_err(
            "invalid WSGI response: headers must be a list of (name, value) tuples",
        )
    })? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "invalid WSGI response: each header must be a (name, value) tuple, got {}",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
            return Err(PyTypeError::new_err(format!(
                "invalid WSGI response: header name and value must be str, got {}",
                pair.repr()?
            )));
        };
        let (name, value) = (name.to_str()?, value.to_str()?);
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
        if value.contains(['\r', '\n', '\0']) {
            return Err(invalid(format!(
                "header {name:?} has a value containing CR, LF or NUL: {value:?}"
            )));
        }
        let hvalue = latin1_bytes(value)
            .and_then(|b| HeaderValue::from_bytes(&b).ok())
            .ok_or_else(|| invalid(format!("header {name:?} has an invalid value {value:?}")))?;
        if hname == CONTENT_LENGTH {
            content_length =
                Some(parse_content_length(hvalue.as_bytes()).ok_or_else(|| {
                    invalid(format!("Content-Length must be digits, got {value:?}"))
                })?);
        }
        if is_hop_by_hop(&hname) {
            // `Connection: close` is honoured (hyper closes after the response); the
            // rest are connection-level and the server's business, so they are dropped.
            let close = hname == CONNECTION && value.to_ascii_lowercase().contains("close");
            if !close {
                crate::log::log(
                    crate::log::WARNING,
                    &format!("dropped hop-by-hop header {name:?} set by the application"),
                );
                continue;
            }
        }
        map.append(hname, hvalue);
    }
    Ok((map, content_length))
}

/// A body chunk from the application: bytes-like, else a clear error.
pub fn chunk_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(crate::http::body::body_bytes(b));
    }
    if item.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "invalid WSGI response: body chunks must be bytes, got str (encode it)",
        ));
    }
    item.extract::<Vec<u8>>().map(Bytes::from).map_err(|_| {
        PyTypeError::new_err(format!(
            "invalid WSGI response: body chunks must be bytes, got {}",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

impl StartResponse {
    pub fn new(
        reply: oneshot::Sender<Response<ResponseBody>>,
        guard: ActiveGuard,
        server_header: bool,
        waiter: Waiter,
        send_timeout: Duration,
    ) -> Self {
        StartResponse {
            state: Arc::new(Mutex::new(State {
                head: None,
                phase: Phase::Pending(reply, guard),
                status: 0,
                bytes: 0,
                timed_out: false,
            })),
            server_header,
            waiter,
            send_timeout,
        }
    }

    /// The response, for the request's deadline (see [`time_out`]).
    pub fn responder(&self) -> Responder {
        Responder(self.state.clone())
    }

    fn lock<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, State> {
        crate::pool::lock_releasing_gil(py, &self.state)
    }

    /// (status sent or 0, body bytes handed to the connection) for the access log.
    pub fn progress(&self, py: Python<'_>) -> (u16, u64) {
        let st = self.lock(py);
        (st.status, st.bytes)
    }

    /// The head is on its way (or the request is over): errors can no longer be a 500.
    pub fn started(&self, py: Python<'_>) -> bool {
        !matches!(self.lock(py).phase, Phase::Pending(..))
    }

    pub fn has_head(&self, py: Python<'_>) -> bool {
        self.lock(py).head.is_some()
    }

    /// The declared Content-Length, if any, while the head is still held back.
    pub fn declared_length(&self, py: Python<'_>) -> Option<u64> {
        let st = self.lock(py);
        match st.phase {
            Phase::Pending(..) => st.head.as_ref().and_then(|h| h.content_length),
            _ => None,
        }
    }

    /// Send the head with a body built from `make_body` (which gets the guard).
    fn send_head(
        &self,
        py: Python<'_>,
        st: &mut State,
        make_body: impl FnOnce(ActiveGuard) -> ResponseBody,
    ) -> Result<(), Gone> {
        let Phase::Pending(..) = st.phase else {
            return Ok(());
        };
        let Phase::Pending(reply, guard) = std::mem::replace(&mut st.phase, Phase::Done) else {
            unreachable!()
        };
        let head = st.head.take().expect("send_head requires a head");
        st.status = head.status.as_u16();
        let resp = head.into_response(make_body(guard), self.server_header);
        self.waiter
            .hand_over(py, move || reply.send(resp).map_err(drop))
            .map_err(|_| Gone)
    }

    /// Hand over the complete body.
    pub fn finish_with(&self, py: Python<'_>, chunks: VecDeque<Bytes>) -> Result<(), Gone> {
        let mut st = self.lock(py);
        st.bytes += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        self.send_head(py, &mut st, |g| ResponseBody::chunks(chunks).with_guard(g))
    }

    /// Stream one chunk, sending the head first if needed; blocks (GIL released) while
    /// the client is slower than the application.
    pub fn stream(&self, py: Python<'_>, chunk: Bytes) -> Result<(), Gone> {
        let mut st = self.lock(py);
        if let Phase::Pending(..) = st.phase {
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            self.send_head(py, &mut st, |g| ResponseBody::stream(rx).with_guard(g))?;
            st.phase = Phase::Streaming(tx);
        }
        let Phase::Streaming(tx) = &st.phase else {
            return Err(Gone);
        };
        let n = chunk.len() as u64;
        let tx = tx.clone();
        let limit = self.send_timeout;
        // (the chunk is in the channel, the connection took everything queued); None:
        // the connection took nothing for `send_timeout` (an HTTP/2 stream whose window
        // the client keeps shut — the socket itself is watched by the connection).
        let (sent, taken) = if self.waiter.drives() {
            // Inline, nothing sends while the application runs: hand the chunk over
            // inside the runtime and wait, in the same turn, until the connection took
            // every chunk, or a generator that pauses between chunks (server-sent
            // events, progress output) would hold them back.
            let waited = self.waiter.wait(py, async {
                if timeout(limit, tx.send(Ok(chunk))).await.ok()?.is_err() {
                    return Some((false, false));
                }
                let all_taken = timeout(limit, tx.reserve_many(STREAM_DEPTH)).await.ok()?;
                Some((true, all_taken.is_ok()))
            });
            match waited {
                Some(Some(r)) => r,
                Some(None) => return Err(self.stalled()),
                None => (false, false),
            }
        } else {
            let sent = match tx.try_send(Ok(chunk)) {
                Ok(()) => !tx.is_closed(),
                Err(mpsc::error::TrySendError::Full(chunk)) => {
                    // (the timer is made inside the runtime, where it must be)
                    let send = async { timeout(limit, tx.send(chunk)).await };
                    match self.waiter.wait(py, send) {
                        Some(Ok(r)) => r.is_ok(),
                        Some(Err(_)) => return Err(self.stalled()),
                        None => false,
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
            (sent, sent)
        };
        if sent {
            st.bytes += n;
        }
        if taken {
            Ok(())
        } else {
            Err(Gone)
        }
    }

    /// The connection took none of the response for `send_timeout`: say so, and give
    /// the application's thread back (the response is aborted by [`Self::fail`]).
    fn stalled(&self) -> Gone {
        crate::log::log(
            crate::log::INFO,
            &format!(
                "the client took none of the response for {} s (send_timeout); ending it",
                self.send_timeout.as_secs_f64()
            ),
        );
        Gone
    }

    /// End the response normally.
    pub fn finish(&self, py: Python<'_>) -> Result<(), Gone> {
        let pending = matches!(self.lock(py).phase, Phase::Pending(..));
        if pending {
            return self.finish_with(py, VecDeque::new());
        }
        let phase = std::mem::replace(&mut self.lock(py).phase, Phase::Done);
        self.waiter.hand_over(py, move || drop(phase)); // drops the sender: end of stream
        Ok(())
    }

    /// Send a file body (`wsgi.file_wrapper`; `sendfile` where the connection allows).
    /// `done` is dropped once the body is sent or abandoned, or at once when the
    /// response cannot start any more.
    pub fn send_file(
        &self,
        py: Python<'_>,
        body: crate::http::file::FileBody,
        done: Box<dyn Send>,
    ) -> Result<(), Gone> {
        let mut st = self.lock(py);
        if let Some(head) = st.head.as_mut() {
            head.set_length_if_missing(body.len());
        }
        st.bytes += body.len();
        self.send_head(py, &mut st, |g| {
            ResponseBody::file(body).with_guard(g).with_notifier(done)
        })
    }

    /// The request failed: a plain error response if nothing was sent, else abort the
    /// connection so the client cannot mistake a truncated body for a complete one.
    pub fn fail(&self, py: Python<'_>, status: StatusCode, message: &str) {
        let mut st = self.lock(py);
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Pending(reply, guard) => {
                st.status = status.as_u16();
                let resp = plain_response(status, message, true, self.server_header);
                let resp = crate::http::guarded(resp, guard);
                let _ = self
                    .waiter
                    .hand_over(py, move || reply.send(resp).map_err(drop));
            }
            Phase::Streaming(tx) => {
                let reason = message.to_owned();
                let wait = self.waiter.hand_over(py, move || abort_stream(tx, reason));
                if let Some(wait) = wait {
                    self.waiter.spawn(wait);
                }
            }
            Phase::Done => {}
        }
    }
}

/// A request's response as its deadline sees it: ended by [`time_out`] from an I/O
/// thread, without the GIL, while the application still runs.
pub struct Responder(Arc<Mutex<State>>);

/// What the deadline did to the response.
pub enum TimedOut {
    /// Nothing was sent yet: the client got a 504.
    Answered,
    /// The head (with this status) was sent: the body is aborted.
    Aborted(u16),
    /// The response was complete already.
    Complete(u16),
}

/// End the response of a request past its deadline: a 504 if nothing was sent, else an
/// aborted body (after the chunks already queued). The application's later output
/// finds the response over: `send_head` does nothing, `stream` reports the client gone.
/// Also returns the bytes handed to the connection so far, for the access log.
pub fn time_out(resp: &Responder, server_header: bool) -> (TimedOut, u64) {
    crate::metrics::rejected(crate::metrics::Rejection::RequestTimeout);
    let mut st = resp.0.lock();
    st.timed_out = true;
    let outcome = match std::mem::replace(&mut st.phase, Phase::Done) {
        Phase::Pending(reply, guard) => {
            st.status = StatusCode::GATEWAY_TIMEOUT.as_u16();
            st.bytes = 0;
            let resp = crate::http::error_response(StatusCode::GATEWAY_TIMEOUT, server_header);
            let _ = reply.send(crate::http::guarded(resp, guard));
            TimedOut::Answered
        }
        Phase::Streaming(tx) => {
            if let Some(wait) = abort_stream(tx, "request_timeout".into()) {
                tokio::spawn(wait);
            }
            TimedOut::Aborted(st.status)
        }
        Phase::Done => TimedOut::Complete(st.status),
    };
    (outcome, st.bytes)
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)` → `write`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = this.lock(py);
            let sent = !matches!(st.phase, Phase::Pending(..)) && !st.timed_out;
            match exc_info {
                Some(info) if sent => {
                    // PEP 3333: too late to change the head; re-raise the app's error.
                    drop(st);
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if st.head.is_some() || sent => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called a second time without exc_info (PEP 3333)",
                    ));
                }
                _ => {}
            }
        }
        let status = status.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "invalid WSGI response: status must be a str like '200 OK', got {}",
                status.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let (code, reason) = parse_status(status.to_str()?).map_err(invalid)?;
        let (headers, content_length) = parse_headers(headers)?;
        this.lock(py).head = Some(Head {
            status: code,
            reason,
            headers,
            content_length,
        });
        slf.getattr(pyo3::intern!(py, "write"))
    }

    /// The PEP 3333 `write()` callable: sends `data` now, headers first.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.has_head(py) && !self.started(py) {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        let chunk = chunk_bytes(data)?;
        if chunk.is_empty() {
            return Ok(());
        }
        self.stream(py, chunk)
            .map_err(|_| ClientDisconnected::new_err("client disconnected"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("200 OK").unwrap().0, StatusCode::OK);
        assert!(parse_status("200 OK").unwrap().1.is_none());
        let (code, reason) = parse_status("299 Custom Reason").unwrap();
        assert_eq!(code.as_u16(), 299);
        assert_eq!(reason.unwrap().as_bytes(), b"Custom Reason");
        for bad in ["200", "20 OK", "abc OK", "200OK", "099 Low", "200 a\r\nb"] {
            assert!(parse_status(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn latin1_encoding() {
        assert_eq!(latin1_bytes("caf\u{e9}").unwrap(), b"caf\xe9");
        assert!(latin1_bytes("\u{20ac}").is_none());
    }
}
