//! One HTTP request's `receive` and `send`, and the checks that hold the application
//! to the ASGI HTTP protocol.
//!
//! The head from `http.response.start` is held until the first `http.response.body`:
//! a single body message without `more_body` becomes a response with a known length
//! sent in one go; otherwise the body streams through a bounded channel, and a full
//! channel makes `send()` return a future that completes when there is room
//! (backpressure). Every protocol violation raises from `send()` with what was
//! expected and what came, and the request ends with a 500 if nothing was sent.
//!
//! Response trailers (`"trailers": true` in `http.response.start`): the body always
//! streams, the `http.response.body` without `more_body` leaves it open, and the
//! `http.response.trailers` without `more_trailers` ends it with the trailers (sent
//! over HTTP/2 and HTTP/3, which the scope's `http.response.trailers` extension
//! announces; see `crate::http::body`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::http::Incoming;
use ::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use ::http::request::Parts;
use ::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};
use tokio::sync::{mpsc, oneshot};

use super::ready::Ready;
use super::{BodyRead, Bridge, Event, Outcome};
use crate::access_log::Record;
use crate::errors::ClientDisconnected;
use crate::http::body::{abort_stream, Chunk};
use crate::http::head::Head;
use crate::http::validate::parse_content_length;
use crate::http::{error_response, ResponseBody};
use crate::log::{self, log_with};
use crate::net::{ActiveGuard, Addrs, SlotShare};

/// Chunks in flight between the application and the connection.
const STREAM_DEPTH: usize = 4;

/// Where the request body is.
pub enum BodySource {
    /// The whole body, read before the application started.
    Buffered(Bytes),
    /// Still on the connection.
    Stream(Incoming),
    /// A read is in progress on the I/O threads.
    Reading,
    /// Fully delivered.
    Done,
    /// Reading it failed before the application started (client went away).
    Failed,
}

enum Phase {
    Pending(oneshot::Sender<Response<ResponseBody>>, ActiveGuard),
    Streaming(mpsc::Sender<Chunk>),
    Done,
}

struct State {
    body: BodySource,
    head: Option<Head>,
    phase: Phase,
    trailers: bool,
    /// With `trailers`: where they go, taken when they are sent.
    trailers_tx: Option<oneshot::Sender<HeaderMap>>,
    /// Trailers gathered from `http.response.trailers` with `more_trailers`.
    trailers_sofar: HeaderMap,
    /// With `trailers`: the body is complete, the trailers are still to come.
    awaiting_trailers: bool,
    disconnected: bool,
    /// A `receive()` waiting for `http.disconnect`.
    waiter: Option<Py<PyAny>>,
    status: u16,
    bytes: u64,
    /// Request body bytes handed to the application (for `max_body_size`).
    received: u64,
    /// A body chunk read for a `receive()` the application cancelled: the next
    /// `receive()` gets it, so no part of the body is lost.
    pending: Option<(Bytes, bool)>,
    /// The application task's share of the connection's slot under `max_connections`,
    /// dropped when the task returns: an application that keeps working after its
    /// response still counts, and the graceful drain waits for it (as for WebSocket).
    slot: Option<SlotShare>,
    /// Ended by `request_timeout` (`HttpProtocol::timed_out`).
    timed_out: bool,
}

impl State {
    /// Answer a `receive()` waiting for `http.disconnect`, if one is.
    fn wake_waiter(&mut self, bridge: &Bridge) {
        if let Some(fut) = self.waiter.take() {
            bridge.push(Event::Resolve {
                fut,
                outcome: Outcome::Disconnect,
            });
        }
    }
}

/// The state of one request, shared by the loop thread and the I/O threads.
pub struct HttpShared {
    state: Mutex<State>,
}

impl HttpShared {
    pub fn new(
        body: BodySource,
        reply: oneshot::Sender<Response<ResponseBody>>,
        guard: ActiveGuard,
        slot: Option<SlotShare>,
    ) -> Self {
        let disconnected = matches!(body, BodySource::Failed);
        HttpShared {
            state: Mutex::new(State {
                body,
                head: None,
                phase: Phase::Pending(reply, guard),
                trailers: false,
                trailers_tx: None,
                trailers_sofar: HeaderMap::new(),
                awaiting_trailers: false,
                disconnected,
                waiter: None,
                status: 0,
                bytes: 0,
                received: 0,
                pending: None,
                slot,
                timed_out: false,
            }),
        }
    }

    /// The client went away (from any thread): wake a `receive()` waiting for it.
    pub fn client_gone(&self, bridge: &Bridge) {
        let mut st = self.state.lock();
        st.disconnected = true;
        st.wake_waiter(bridge);
    }

    /// Send the held head with `body`; the body keeps a notifier for `receive()`.
    fn send_head(
        self: &Arc<Self>,
        bridge: &Arc<Bridge>,
        st: &mut State,
        body: ResponseBody,
    ) -> Result<(), ()> {
        let Phase::Pending(..) = st.phase else {
            return Err(());
        };
        let Phase::Pending(reply, guard) = std::mem::replace(&mut st.phase, Phase::Done) else {
            unreachable!()
        };
        let head = st.head.take().ok_or(())?;
        st.status = head.status.as_u16();
        let armed = Arc::new(AtomicBool::new(true));
        let body = body
            .with_guard(guard)
            .with_notifier(Box::new(BodyDropNotifier {
                shared: self.clone(),
                bridge: bridge.clone(),
                armed: armed.clone(),
            }));
        let resp = head.into_response(body, bridge.config.server_header);
        if bridge.driven() && !reply.is_closed() {
            // Refused after all (the client left meanwhile): the dropped response's
            // notifier reports that, as when the connection drops it later.
            bridge.later(move || drop(reply.send(resp)));
            return Ok(());
        }
        match reply.send(resp) {
            Ok(()) => Ok(()),
            Err(unwanted) => {
                // Ours again, and dropped here while our caller holds the state lock.
                armed.store(false, Ordering::Release);
                drop(unwanted);
                Err(())
            }
        }
    }

    fn gone(st: &mut State) -> PyErr {
        st.disconnected = true;
        st.phase = Phase::Done;
        ClientDisconnected::new_err("client disconnected")
    }

    fn response_finished(bridge: &Bridge, st: &mut State) {
        st.phase = Phase::Done;
        st.wake_waiter(bridge);
    }

    /// Start the response to `http.response.pathsend` with the file's body (cut to a
    /// declared Content-Length).
    fn start_file(
        self: &Arc<Self>,
        bridge: &Arc<Bridge>,
        mut body: crate::http::file::FileBody,
    ) -> PyResult<()> {
        let mut st = self.state.lock();
        if !(matches!(st.phase, Phase::Pending(..)) && st.head.is_some()) {
            // Another send() got in while the file was opened.
            if st.disconnected {
                return Err(ClientDisconnected::new_err("client disconnected"));
            }
            return Err(unexpected(
                "'http.response.start'",
                "http.response.pathsend",
            ));
        }
        if let Some(head) = st.head.as_mut() {
            if let Some(declared) = head.content_length {
                body.truncate(declared);
            }
            head.set_length_if_missing(body.len());
        }
        let len = body.len();
        // The same body as a static file: `sendfile` on cleartext HTTP/1.1.
        self.send_head(bridge, &mut st, ResponseBody::file(body))
            .map_err(|_| HttpShared::gone(&mut st))?;
        st.bytes += len;
        HttpShared::response_finished(bridge, &mut st);
        Ok(())
    }

    /// The application task could not start: answer with a plain error (nothing was
    /// sent) and give up the task's share of the connection slot.
    pub fn fail_to_start(&self, bridge: &Bridge, status: StatusCode) {
        let mut st = self.state.lock();
        fail_locked(&mut st, bridge, status);
        let slot = st.slot.take();
        drop(st);
        drop(slot);
    }
}

/// End the response: `status` if nothing was sent yet, else abort the body after the
/// chunks already queued (in their order: see [`Bridge::later`]).
fn fail_locked(st: &mut State, bridge: &Bridge, status: StatusCode) {
    match std::mem::replace(&mut st.phase, Phase::Done) {
        Phase::Pending(reply, guard) => {
            st.status = status.as_u16();
            let resp = error_response(status, bridge.config.server_header);
            let _ = reply.send(crate::http::guarded(resp, guard));
        }
        Phase::Streaming(tx) => {
            let runtime = bridge.runtime.clone();
            bridge.later(move || {
                if let Some(wait) = abort_stream(tx, "the application failed".into()) {
                    runtime.spawn(wait);
                }
            });
        }
        Phase::Done => {}
    }
}

/// Wakes a waiting `receive()` when the response body is finished or abandoned.
///
/// Disarmed when the connection no longer wanted the response: it is then dropped on the
/// loop thread while the request's state is locked, and must not lock it again.
struct BodyDropNotifier {
    shared: Arc<HttpShared>,
    bridge: Arc<Bridge>,
    armed: Arc<AtomicBool>,
}

impl Drop for BodyDropNotifier {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let streaming = matches!(self.shared.state.lock().phase, Phase::Streaming(_));
        if streaming {
            self.shared.client_gone(&self.bridge);
        } else {
            self.shared.state.lock().wake_waiter(&self.bridge);
        }
    }
}

fn disconnect_message(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d.into_any().unbind())
}

fn request_message(py: Python<'_>, body: &[u8], more: bool) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    d.set_item(intern!(py, "more_body"), PyBool::new(py, more))?;
    Ok(d.into_any().unbind())
}

pub(super) fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    if value.is_none(py) {
        return done(py);
    }
    Bound::new(py, Ready::new(value)).map(|r| r.into_any().unbind())
}

/// An awaitable that returns None at once: one shared object (a `Ready` does not change
/// when awaited), as most `send()`s return it.
fn done(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static DONE: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    DONE.get_or_try_init(py, || {
        Bound::new(py, Ready::new(py.None())).map(|r| r.into_any().unbind())
    })
    .map(|d| d.clone_ref(py))
}

/// Whether a future is done (cancelled by the application, typically).
pub(super) fn future_done(fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0("done")
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// Set a future's result unless the application cancelled it meanwhile.
pub(super) fn set_result(fut: &Bound<'_, PyAny>, value: Py<PyAny>) {
    if !future_done(fut) {
        let _ = fut.call_method1("set_result", (value,));
    }
}

/// Complete a future with an [`Outcome`].
pub fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, outcome: Outcome) {
    match outcome {
        Outcome::Disconnect => match disconnect_message(py) {
            Ok(m) => set_result(fut, m),
            Err(e) => log_with(py, log::ERROR, "building http.disconnect failed", Some(&e)),
        },
        Outcome::Sent => set_result(fut, py.None()),
        Outcome::Raise(err) => {
            if !future_done(fut) {
                let _ = fut.call_method1("set_exception", (err.value(py),));
            }
        }
        Outcome::SendFailed => {
            if !fut
                .call_method0("done")
                .and_then(|d| d.is_truthy())
                .unwrap_or(true)
            {
                let err = ClientDisconnected::new_err("client disconnected");
                let _ = fut.call_method1("set_exception", (err.value(py),));
            }
        }
    }
}

/// A body read finished on the I/O threads (see [`Event::Body`]).
pub fn body_read(
    py: Python<'_>,
    bridge: &Bridge,
    shared: &HttpShared,
    fut: Py<PyAny>,
    body: Option<Incoming>,
    read: BodyRead,
) {
    let mut st = shared.state.lock();
    st.body = match body {
        Some(b) => BodySource::Stream(b),
        None => BodySource::Done,
    };
    if future_done(fut.bind(py)) {
        match read {
            BodyRead::Data(data, more) => {
                st.received += data.len() as u64;
                st.pending = Some((data, more));
                return;
            }
            BodyRead::End => {
                st.pending = Some((Bytes::new(), false));
                return;
            }
            _ => {} // failures are handled below; the answer is http.disconnect anyway
        }
    }
    // What to log, once the state is unlocked (logging runs Python handlers).
    let mut note = None;
    let msg = match read {
        BodyRead::Data(data, more) => {
            st.received += data.len() as u64;
            request_message(py, &data, more)
        }
        BodyRead::End => request_message(py, b"", false),
        BodyRead::TooLarge => {
            note = Some((
                log::INFO,
                "request body larger than max_body_size; answering 413".to_owned(),
            ));
            crate::metrics::rejected(crate::metrics::Rejection::BodyTooLarge);
            fail_locked(&mut st, bridge, StatusCode::PAYLOAD_TOO_LARGE);
            st.disconnected = true;
            disconnect_message(py)
        }
        BodyRead::Failed(e) => {
            note = Some((log::DEBUG, format!("request body read failed: {e}")));
            fail_locked(&mut st, bridge, StatusCode::BAD_REQUEST);
            st.disconnected = true;
            disconnect_message(py)
        }
    };
    drop(st);
    if let Some((level, text)) = note {
        log::log(level, &text);
    }
    match msg {
        Ok(m) => set_result(fut.bind(py), m),
        Err(e) => log_with(py, log::ERROR, "building http.request failed", Some(&e)),
    }
}

async fn read_chunk(body: &mut Incoming, limit: Option<u64>, received: u64) -> BodyRead {
    loop {
        match body.frame().await {
            None => return BodyRead::End,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if limit.is_some_and(|max| received + data.len() as u64 > max) {
                    return BodyRead::TooLarge;
                }
                return BodyRead::Data(data, !body.is_end_stream());
            }
            Some(Err(e)) => return BodyRead::Failed(e.to_string()),
        }
    }
}

fn unexpected(expected: &str, got: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "Expected ASGI message {expected}, but got '{got}'."
    ))
}

/// An ASGI header list (`[[name, value], ...]`, bytes) to a `HeaderMap`, with the
/// declared Content-Length.
pub(super) fn parse_headers(list: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let mut headers = HeaderMap::new();
    let mut content_length = None;
    for item in list.try_iter()? {
        let item = item?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "each header must be a [name, value] pair, got {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
            return Err(PyTypeError::new_err(format!(
                "header names and values must be bytes, got {}",
                item.repr()?
            )));
        };
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {:?}", name)))?;
        let hvalue = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid value for header {:?} (CR, LF or other control characters?)",
                String::from_utf8_lossy(name.as_bytes())
            ))
        })?;
        if hname == CONTENT_LENGTH {
            content_length = Some(
                parse_content_length(hvalue.as_bytes())
                    .ok_or_else(|| PyValueError::new_err("content-length must be digits"))?,
            );
        }
        headers.append(hname, hvalue);
    }
    Ok((headers, content_length))
}

/// `http.response.start` fields to a [`Head`].
pub(super) fn parse_start(msg: &Bound<'_, PyDict>) -> PyResult<(Head, bool)> {
    let py = msg.py();
    let status = msg
        .get_item(intern!(py, "status"))?
        .ok_or_else(|| PyValueError::new_err("http.response.start without 'status'"))?;
    let code: u16 = status.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "http.response.start 'status' must be an int, got {}",
            status.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    let status = StatusCode::from_u16(code)
        .map_err(|_| PyValueError::new_err(format!("invalid HTTP status code {code}")))?;
    let (headers, content_length) = match msg.get_item(intern!(py, "headers"))? {
        Some(list) => parse_headers(&list)?,
        None => (HeaderMap::new(), None),
    };
    let trailers = match msg.get_item(intern!(py, "trailers"))? {
        Some(t) => t.is_truthy()?,
        None => false,
    };
    Ok((
        Head {
            status,
            reason: None,
            headers,
            content_length,
        },
        trailers,
    ))
}

/// The `receive`/`send` pair of one request (methods of this object).
#[pyclass(module = "gristmill._core", frozen)]
pub struct HttpProtocol {
    shared: Arc<HttpShared>,
    bridge: Arc<Bridge>,
    parts: Parts,
    addrs: Arc<Addrs>,
    started: Instant,
}

impl HttpProtocol {
    pub fn new(
        shared: Arc<HttpShared>,
        bridge: Arc<Bridge>,
        parts: Parts,
        addrs: Arc<Addrs>,
        started: Instant,
    ) -> Self {
        HttpProtocol {
            shared,
            bridge,
            parts,
            addrs,
            started,
        }
    }

    fn what(&self) -> String {
        crate::http::describe(&self.parts)
    }

    fn body(&self, py: Python<'_>, st: &mut State, msg: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let body = match msg.get_item(intern!(py, "body"))? {
            None => Bytes::new(),
            Some(b) => match b.cast::<PyBytes>() {
                Ok(b) => crate::http::body::body_bytes(b),
                Err(_) => b
                    .extract::<Vec<u8>>()
                    .map(Bytes::from)
                    .map_err(|_| PyTypeError::new_err("http.response.body 'body' must be bytes"))?,
            },
        };
        let more = match msg.get_item(intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let none = || ready(py, py.None());
        if st.awaiting_trailers {
            return Err(unexpected("'http.response.trailers'", "http.response.body"));
        }
        if let Phase::Pending(..) = st.phase {
            st.bytes += body.len() as u64;
            if !more && !st.trailers {
                self.shared
                    .send_head(&self.bridge, st, ResponseBody::full(body))
                    .map_err(|_| HttpShared::gone(st))?;
                HttpShared::response_finished(&self.bridge, st);
                return none();
            }
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            let stream = if st.trailers {
                let (trailers_tx, trailers_rx) = oneshot::channel();
                st.trailers_tx = Some(trailers_tx);
                st.awaiting_trailers = !more;
                ResponseBody::stream_with_trailers(rx, trailers_rx)
            } else {
                ResponseBody::stream(rx)
            };
            self.shared
                .send_head(&self.bridge, st, stream)
                .map_err(|_| HttpShared::gone(st))?;
            if !body.is_empty() {
                let _ = tx.try_send(Ok(body));
            }
            st.phase = Phase::Streaming(tx);
            return none();
        }
        let Phase::Streaming(tx) = &st.phase else {
            if st.disconnected {
                return Err(ClientDisconnected::new_err("client disconnected"));
            }
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.body' sent, after response already completed.",
            ));
        };
        let tx = tx.clone();
        st.bytes += body.len() as u64;
        if !more && st.trailers {
            st.awaiting_trailers = true;
        } else if !more {
            HttpShared::response_finished(&self.bridge, st);
        }
        if body.is_empty() {
            return none();
        }
        match tx.try_reserve_owned() {
            Ok(room) => {
                self.bridge.later(move || drop(room.send(Ok(body))));
                none()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(HttpShared::gone(st)),
            Err(mpsc::error::TrySendError::Full(tx)) => {
                // Backpressure: complete the future once the connection took the chunk.
                let fut = self.bridge.create_future(py)?;
                let done = fut.clone_ref(py);
                let bridge = self.bridge.clone();
                let chunk = Ok(body);
                let limit = self.bridge.config.send_timeout;
                self.bridge.spawn_io(async move {
                    let outcome = match tokio::time::timeout(limit, tx.send(chunk)).await {
                        Ok(Ok(())) => Outcome::Sent,
                        Ok(Err(_)) => Outcome::SendFailed,
                        Err(_) => {
                            // The connection took nothing for `send_timeout` (an HTTP/2
                            // stream whose window the client keeps shut): the
                            // application hears the client is gone, and the body is
                            // aborted behind what is queued, whenever that is taken.
                            log::log(
                                log::INFO,
                                &format!(
                                    "the client took none of the response for {} s \
                                     (send_timeout); ending it",
                                    limit.as_secs_f64()
                                ),
                            );
                            if let Some(wait) = abort_stream(tx, "send_timeout".into()) {
                                tokio::spawn(wait);
                            }
                            Outcome::SendFailed
                        }
                    };
                    bridge.push(Event::Resolve { fut: done, outcome });
                });
                Ok(fut)
            }
        }
    }

    /// `http.response.trailers`, once the body is complete: gathered until the one
    /// without `more_trailers`, which ends the response with them.
    fn trailers(
        &self,
        py: Python<'_>,
        st: &mut State,
        msg: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(list) = msg.get_item(intern!(py, "headers"))? {
            let (headers, _) = parse_headers(&list)?;
            for (name, value) in headers.iter() {
                st.trailers_sofar.append(name.clone(), value.clone());
            }
        }
        let more = match msg.get_item(intern!(py, "more_trailers"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        if more {
            return ready(py, py.None());
        }
        st.awaiting_trailers = false;
        let trailers = std::mem::take(&mut st.trailers_sofar);
        // Read only once every chunk queued before is taken (see `crate::http::body`);
        // refused when the response was dropped (the client went away).
        let sent = st
            .trailers_tx
            .take()
            .is_some_and(|tx| tx.send(trailers).is_ok());
        if !sent {
            return Err(HttpShared::gone(st));
        }
        HttpShared::response_finished(&self.bridge, st);
        ready(py, py.None())
    }

    /// `http.response.pathsend`. The file is opened and measured on a blocking thread,
    /// so a slow disk or a FIFO stalls neither the event loop nor the sockets; the
    /// returned future completes once the response started (or raises what went
    /// wrong). The state is checked again then, since it may have moved on meanwhile.
    fn pathsend(&self, py: Python<'_>, msg: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let path: String = msg
            .get_item(intern!(py, "path"))?
            .ok_or_else(|| PyValueError::new_err("http.response.pathsend without 'path'"))?
            .extract()?;
        let fut = self.bridge.create_future(py)?;
        let done = fut.clone_ref(py);
        let (shared, bridge) = (self.shared.clone(), self.bridge.clone());
        self.bridge.spawn_io(async move {
            let opened = tokio::task::spawn_blocking({
                let path = path.clone();
                move || -> std::io::Result<_> {
                    let file = std::fs::File::open(&path)?;
                    let len = file.metadata()?.len();
                    Ok(crate::http::file::FileBody::range(file, 0, len))
                }
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            let outcome = match opened {
                Ok(body) => match shared.start_file(&bridge, body) {
                    Ok(()) => Outcome::Sent,
                    Err(e) => Outcome::Raise(e),
                },
                Err(e) => Outcome::Raise(e.into()),
            };
            bridge.push(Event::Resolve { fut: done, outcome });
        });
        Ok(fut)
    }
}

#[pymethods]
impl HttpProtocol {
    /// ASGI `receive()`.
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.shared.state.lock();
        if let Some((data, more)) = st.pending.take() {
            return ready(py, request_message(py, &data, more)?);
        }
        match std::mem::replace(&mut st.body, BodySource::Reading) {
            BodySource::Buffered(b) => {
                st.body = BodySource::Done;
                ready(py, request_message(py, &b, false)?)
            }
            BodySource::Stream(mut body) => {
                let fut = self.bridge.create_future(py)?;
                let done = fut.clone_ref(py);
                let (shared, bridge) = (self.shared.clone(), self.bridge.clone());
                let (limit, received) = (self.bridge.config.max_body_size, st.received);
                self.bridge.spawn_io(async move {
                    let read = read_chunk(&mut body, limit, received).await;
                    // The body goes back only while more of it is due: after the message
                    // with `more_body` false, `receive()` never reads it again, so it never
                    // hands out a second `http.request` (ASGI: it waits for the disconnect).
                    let body = match read {
                        BodyRead::Data(_, true) => Some(body),
                        _ => None,
                    };
                    bridge.push(Event::Body {
                        shared,
                        fut: done,
                        body,
                        read,
                    });
                });
                Ok(fut)
            }
            BodySource::Reading => Err(PyRuntimeError::new_err(
                "receive() called again before the previous receive() completed",
            )),
            other @ (BodySource::Done | BodySource::Failed) => {
                st.body = other;
                if st.disconnected || matches!(st.phase, Phase::Done) {
                    return ready(py, disconnect_message(py)?);
                }
                let fut = self.bridge.create_future(py)?;
                st.waiter = Some(fut.clone_ref(py));
                Ok(fut)
            }
        }
    }

    /// ASGI `send(message)`.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = message.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "ASGI messages must be dicts, got {}",
                message
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let typ = msg
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without 'type'"))?;
        let typ = typ.cast::<PyString>()?.to_str()?.to_owned();
        let mut st = self.shared.state.lock();
        let pending = matches!(st.phase, Phase::Pending(..));
        match typ.as_str() {
            "http.response.start" if pending && st.head.is_none() => {
                let (head, trailers) = parse_start(msg)?;
                st.head = Some(head);
                st.trailers = trailers;
                ready(py, py.None())
            }
            "http.response.start" => Err(unexpected("'http.response.body'", &typ)),
            "http.response.body" if pending && st.head.is_none() => {
                Err(unexpected("'http.response.start'", &typ))
            }
            "http.response.body" => self.body(py, &mut st, msg),
            "http.response.pathsend" if pending && st.head.is_some() => {
                drop(st); // the file is opened unlocked
                self.pathsend(py, msg)
            }
            "http.response.trailers" if st.awaiting_trailers => self.trailers(py, &mut st, msg),
            _ if pending && st.head.is_none() => Err(unexpected("'http.response.start'", &typ)),
            _ if st.disconnected => Err(ClientDisconnected::new_err("client disconnected")),
            _ => Err(unexpected("'http.response.body'", &typ)),
        }
    }

    /// Called by `gristmill._asgi` when the application ran past `request_timeout`
    /// (`timeout` seconds), just before its task is cancelled: the client gets a 504 if
    /// no response had started, else the response is aborted. Returns `true`: the task
    /// is to be cancelled (`WsProtocol.timed_out` may say no).
    fn timed_out(&self, py: Python<'_>, timeout: f64) -> bool {
        let then = {
            let mut st = self.shared.state.lock();
            st.timed_out = true;
            let then = match st.phase {
                Phase::Pending(..) => "sending 504 Gateway Timeout".to_owned(),
                Phase::Streaming(_) => {
                    format!("aborting its response (status {} sent)", st.status)
                }
                Phase::Done => "its response was complete".to_owned(),
            };
            crate::metrics::rejected(crate::metrics::Rejection::RequestTimeout);
            fail_locked(&mut st, &self.bridge, StatusCode::GATEWAY_TIMEOUT);
            st.wake_waiter(&self.bridge);
            then
        };
        log_with(
            py,
            log::ERROR,
            &format!(
                "request timeout: the ASGI application for {} ran longer than {timeout} s \
                 (request_timeout); cancelling its task, {then}",
                self.what()
            ),
            None,
        );
        true
    }

    /// Called by `gristmill._asgi.run_app` when the application returns or raises.
    ///
    /// Logging runs Python handlers that may block, so it happens with the request's
    /// state unlocked (the I/O threads lock it too): first the log line, then the
    /// response is ended (a 500, or an aborted body), then the access log.
    #[pyo3(signature = (exc=None))]
    fn finished(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
        let (disconnected, unfinished) = {
            let st = self.shared.state.lock();
            if st.timed_out {
                // Answered and logged at the deadline; what the cancelled task did
                // since (the CancelledError, most likely) is no news.
                drop(st);
                return self.end(py);
            }
            // What a returning application left undone, and what the client gets then.
            let unfinished = match st.phase {
                Phase::Pending(..) if st.head.is_some() => {
                    Some(("sending the response body", "; sending 500"))
                }
                Phase::Pending(..) => Some(("starting a response", "; sending 500")),
                Phase::Streaming(_) => Some(("completing the response", "")),
                Phase::Done => None,
            };
            (st.disconnected, unfinished)
        };
        match exc {
            Some(e) if disconnected || e.is_instance_of::<ClientDisconnected>() => {
                if log::debug_enabled() {
                    log::log(
                        log::DEBUG,
                        &format!("client went away during {}", self.what()),
                    );
                }
            }
            Some(e) => {
                let err = PyErr::from_value(e);
                log_with(
                    py,
                    log::ERROR,
                    &format!("Exception in ASGI application for {}", self.what()),
                    Some(&err),
                );
            }
            None => match unfinished {
                Some((what, then)) if !disconnected => {
                    log_with(
                        py,
                        log::ERROR,
                        &format!(
                            "ASGI callable returned without {what} for {}{then}",
                            self.what()
                        ),
                        None,
                    );
                }
                _ => {}
            },
        }
        self.end(py);
    }
}

impl HttpProtocol {
    /// The task is over: end the response (a 500 if nothing was sent), access-log it,
    /// and give up the task's share of the connection slot.
    fn end(&self, py: Python<'_>) {
        let (status, bytes, slot) = {
            let mut st = self.shared.state.lock();
            fail_locked(&mut st, &self.bridge, StatusCode::INTERNAL_SERVER_ERROR);
            (st.status, st.bytes, st.slot.take())
        };
        if let Some(access) = &self.bridge.access {
            access.emit(
                py,
                &Record::new(&self.parts, self.addrs.peer, status, bytes, self.started),
            );
        }
        drop(slot); // the task is done: the drain may end now
    }
}
