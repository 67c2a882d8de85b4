//! ASGI `websocket` connections over HTTP/1.1 (RFC 6455) and over HTTP/2 streams
//! (RFC 8441, extended CONNECT), with a library doing the framing, masking, fragment
//! reassembly, ping/pong and the close handshake (`super::ws_frames`: tokio-tungstenite,
//! or yawc for a socket that negotiated permessage-deflate in `super::ws_deflate`).
//!
//! Until the application accepts, the request is an ordinary HTTP request waiting for
//! its answer: `websocket.accept` sends the 101 (over HTTP/2: a 200 on the CONNECT
//! stream, which then carries the frames) with the chosen subprotocol and extra
//! headers, `websocket.close` a 403, and `websocket.http.response.*` any denial
//! response. After the upgrade, one task per socket reads messages into a short queue
//! (reading stops while the application is behind) and writes what the application
//! sends. `websocket.disconnect` is delivered exactly once, with the code the peer sent
//! (1005 when it sent none, 1006 when the connection dropped, 1009 for a message over
//! `--ws-max-size`, 1002 or 1007 for a broken frame or invalid UTF-8, which also go out
//! to the client in a close frame). `send()` on a closed connection (the peer left or closed, the
//! application closed it, or it was denied) raises `ClientDisconnected`, an `OSError`
//! (ASGI spec 2.4): that is how a loop that only sends (a broadcast) learns its client
//! left. Every write to the peer is bounded by `--ws-send-timeout`: a peer that stops
//! reading cannot hold the socket (and the application's `send()`) until the worker
//! stops. Keepalive pings (`--ws-ping-interval`, `--ws-ping-timeout`) find clients that
//! left without a word (`super::ws_keepalive`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use ::http::request::Parts;
use ::http::{HeaderMap, Response, StatusCode};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

use super::http::{future_done, parse_headers, parse_start, ready, set_result};
use super::ws_deflate::{self, Agreed};
use super::ws_frames::{close_message, Frames, Read};
use super::ws_keepalive::{Due, Keepalive};
use super::{Bridge, Event, Outcome};
use crate::access_log::Record;
use crate::errors::ClientDisconnected;
use crate::http::head::Head;
use crate::http::{error_response, ResponseBody};
use crate::log::{self, log_with};
use crate::net::{ActiveGuard, Addrs, ConnSlot, SlotShare};

/// Messages read ahead of the application before reading pauses.
const READ_AHEAD: usize = 16;
/// Messages the application may have in flight to the socket before `send()` waits.
const WRITE_DEPTH: usize = 16;
/// How long to wait for the peer to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Is this request a WebSocket opening handshake: an HTTP/1.1 upgrade (RFC 6455
/// §4.2.1) or an HTTP/2 extended CONNECT with `:protocol` `websocket` (RFC 8441 §4;
/// hyper offers it only when the connection advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL`)?
/// A `GET` with `Upgrade` over HTTP/2 is not one: `h2` resets such a stream as
/// malformed (RFC 9113 §8.2.2) before it gets here.
pub fn is_upgrade_request<B>(req: &::http::Request<B>) -> bool {
    if req.version() == ::http::Version::HTTP_3 {
        return false; // WebSocket over HTTP/3 (RFC 9220) is not served
    }
    if req.version() == ::http::Version::HTTP_2 {
        return req.method() == ::http::Method::CONNECT
            && req
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    let h = req.headers();
    let has_token = |name, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == ::http::Method::GET
        && req.version() == ::http::Version::HTTP_11
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
}

/// What the reader delivers to `receive()`.
enum Inbound {
    Text(String),
    Binary(Bytes),
    Disconnect(u16, String),
}

// One per connection, replaced once or twice in its life: boxing the big variant would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Waiting for the application to accept or deny.
    Handshake {
        reply: oneshot::Sender<Response<ResponseBody>>,
        guard: ActiveGuard,
        upgrade: OnUpgrade,
        /// `Sec-WebSocket-Key`; `None` over HTTP/2, which has none (RFC 8441 §5).
        key: Option<String>,
        /// A denial response being assembled from `websocket.http.response.*`.
        denial: Option<(Head, BytesMut)>,
    },
    Open(mpsc::Sender<Message>),
    Closed,
}

struct State {
    phase: Phase,
    connect_delivered: bool,
    inbound: VecDeque<Inbound>,
    waiter: Option<Py<PyAny>>,
    /// The disconnect, once delivered (repeated if the application asks again).
    disconnected: Option<Close>,
    close_sent: bool,
    /// The close the socket task sends when the application returned without one.
    final_close: Option<Close>,
    status: u16,
    /// The application's share of the connection slot, released when it returns.
    slot: Option<SlotShare>,
    /// The handshake was ended by `request_timeout` (`WsProtocol::timed_out`).
    timed_out: bool,
}

/// One WebSocket's state, shared by the loop thread and its socket task.
pub struct WsShared {
    state: Mutex<State>,
    room: Notify,
}

impl WsShared {
    pub fn new(
        reply: oneshot::Sender<Response<ResponseBody>>,
        guard: ActiveGuard,
        upgrade: OnUpgrade,
        key: Option<String>,
    ) -> Self {
        WsShared {
            state: Mutex::new(State {
                phase: Phase::Handshake {
                    reply,
                    guard,
                    upgrade,
                    key,
                    denial: None,
                },
                connect_delivered: false,
                inbound: VecDeque::new(),
                waiter: None,
                disconnected: None,
                close_sent: false,
                final_close: None,
                status: 0,
                slot: None,
                timed_out: false,
            }),
            room: Notify::new(),
        }
    }

    /// Queue an inbound message (socket task); wake a waiting `receive()`.
    fn deliver(&self, bridge: &Bridge, msg: Inbound, shared: &Arc<WsShared>) {
        deliver_locked(&mut self.state.lock(), bridge, msg, shared);
    }

    /// The connection went away before a response (the service was dropped).
    ///
    /// One critical section: checked and closed under the same lock, so an accept or a
    /// denial on the loop thread cannot slip in between and have its `Open` phase (and
    /// the socket task it started) overwritten, with a second disconnect queued.
    pub fn client_gone(&self, bridge: &Bridge, shared: &Arc<WsShared>) {
        let mut st = self.state.lock();
        if gone_before_response(&mut st) {
            deliver_locked(
                &mut st,
                bridge,
                Inbound::Disconnect(1006, String::new()),
                shared,
            );
        }
    }

    fn queued(&self) -> usize {
        self.state.lock().inbound.len()
    }
}

/// Queue `msg` for `receive()` and wake a waiting one (state locked).
fn deliver_locked(st: &mut State, bridge: &Bridge, msg: Inbound, shared: &Arc<WsShared>) {
    st.inbound.push_back(msg);
    if let Some(fut) = st.waiter.take() {
        bridge.push(Event::WsDeliver {
            shared: shared.clone(),
            fut,
        });
    }
}

/// Close a handshake the client abandoned (state locked): true if it was still pending,
/// so the application is owed a disconnect. An accepted or denied connection is left
/// alone: its socket task, or the denial, delivers the disconnect.
fn gone_before_response(st: &mut State) -> bool {
    if matches!(st.phase, Phase::Handshake { .. }) {
        st.phase = Phase::Closed;
        true
    } else {
        false
    }
}

/// A close code and reason.
type Close = (u16, String);

fn message_dict(py: Python<'_>, msg: Inbound) -> PyResult<(Py<PyAny>, Option<Close>)> {
    let d = PyDict::new(py);
    let mut disconnect = None;
    match msg {
        Inbound::Text(t) => {
            d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
            d.set_item(intern!(py, "text"), PyString::new(py, &t))?;
        }
        Inbound::Binary(b) => {
            d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
            d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?;
        }
        Inbound::Disconnect(code, reason) => {
            d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
            d.set_item(intern!(py, "code"), code)?;
            d.set_item(intern!(py, "reason"), reason.as_str())?;
            disconnect = Some((code, reason));
        }
    }
    Ok((d.into_any().unbind(), disconnect))
}

/// Take the next inbound message for `receive()` (loop thread, state locked).
fn pop(py: Python<'_>, shared: &WsShared, st: &mut State) -> PyResult<Option<Py<PyAny>>> {
    if let Some((code, reason)) = &st.disconnected {
        return message_dict(py, Inbound::Disconnect(*code, reason.clone())).map(|m| Some(m.0));
    }
    let Some(msg) = st.inbound.pop_front() else {
        return Ok(None);
    };
    shared.room.notify_one();
    let (dict, disconnect) = message_dict(py, msg)?;
    if disconnect.is_some() {
        st.disconnected = disconnect;
        st.phase = Phase::Closed;
    }
    Ok(Some(dict))
}

/// Answer a waiting `receive()` (see [`Event::WsDeliver`]).
pub fn deliver_to_waiter(py: Python<'_>, shared: &WsShared, fut: Py<PyAny>) {
    let mut st = shared.state.lock();
    if future_done(fut.bind(py)) {
        // The application cancelled that receive() (a timeout): the message stays
        // queued for its next receive().
        return;
    }
    match pop(py, shared, &mut st) {
        Ok(Some(msg)) => {
            drop(st);
            set_result(fut.bind(py), msg);
        }
        Ok(None) => st.waiter = Some(fut),
        Err(e) => {
            drop(st); // logging runs Python handlers: never with the state locked
            log_with(
                py,
                log::ERROR,
                "building a websocket message failed",
                Some(&e),
            );
        }
    }
}

fn unexpected(expected: &str, got: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "Expected ASGI message {expected}, but got '{got}'."
    ))
}

/// The `receive`/`send` pair of one WebSocket connection.
#[pyclass(module = "gristmill._core", frozen)]
pub struct WsProtocol {
    shared: Arc<WsShared>,
    bridge: Arc<Bridge>,
    parts: Parts,
    addrs: Arc<Addrs>,
    started: Instant,
    /// The HTTP connection's slot under `max_connections`, taken over on accept.
    slot: Arc<ConnSlot>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl WsProtocol {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<WsShared>,
        bridge: Arc<Bridge>,
        parts: Parts,
        addrs: Arc<Addrs>,
        started: Instant,
        slot: Arc<ConnSlot>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        WsProtocol {
            shared,
            bridge,
            parts,
            addrs,
            started,
            slot,
            shutdown,
        }
    }

    fn what(&self) -> String {
        format!("WebSocket {}", self.parts.uri.path())
    }

    /// Answer the handshake with a plain HTTP response (403, 500, or a denial).
    fn deny(&self, st: &mut State, resp: Response<ResponseBody>) {
        if let Phase::Handshake { reply, guard, .. } =
            std::mem::replace(&mut st.phase, Phase::Closed)
        {
            st.status = resp.status().as_u16();
            let _ = reply.send(crate::http::guarded(resp, guard));
        }
        st.disconnected.get_or_insert((1006, String::new()));
    }

    fn accept(&self, st: &mut State, msg: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = msg.py();
        // Everything that can fail is checked before the handshake state is taken: an
        // invalid accept raises and leaves the handshake pending (the application may
        // accept again, or deny; if it gives up, the client gets a 500).
        let subprotocol = match msg.get_item(intern!(py, "subprotocol"))? {
            Some(s) if !s.is_none() => {
                let p: String = s.extract()?;
                let value = HeaderValue::from_str(&p)
                    .map_err(|_| PyValueError::new_err(format!("invalid subprotocol {p:?}")))?;
                Some(value)
            }
            _ => None,
        };
        let extra = match msg.get_item(intern!(py, "headers"))? {
            Some(list) => parse_headers(&list)?.0,
            None => HeaderMap::new(),
        };
        let Phase::Handshake {
            reply,
            guard,
            upgrade,
            key,
            ..
        } = std::mem::replace(&mut st.phase, Phase::Closed)
        else {
            unreachable!("accept outside the handshake")
        };
        let mut resp = Response::new(ResponseBody::empty());
        let h = resp.headers_mut();
        for (name, value) in &extra {
            h.append(name, value.clone());
        }
        // permessage-deflate, unless the application answered the extensions itself.
        let config = &self.bridge.config;
        let deflate = (config.ws_per_message_deflate && !h.contains_key(SEC_WEBSOCKET_EXTENSIONS))
            .then(|| {
                ws_deflate::negotiate(
                    self.parts
                        .headers
                        .get_all(SEC_WEBSOCKET_EXTENSIONS)
                        .iter()
                        .map(HeaderValue::as_bytes),
                    config.ws_deflate_max_window_bits,
                )
            })
            .flatten();
        if let Some(agreed) = &deflate {
            h.insert(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(&agreed.response).expect("a valid header value"),
            );
        }
        if let Some(key) = key {
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(
                SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
                    .expect("base64 is a valid header value"),
            );
        } else {
            // HTTP/2 (RFC 8441 §5): a 2xx opens the stream for the frames; the
            // connection-specific headers of HTTP/1.1 are forbidden there.
            let h = resp.headers_mut();
            h.remove(UPGRADE);
            h.remove(CONNECTION);
        }
        if let Some(p) = subprotocol {
            resp.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, p);
        }
        st.status = resp.status().as_u16();
        let (tx, rx) = mpsc::channel(WRITE_DEPTH);
        st.phase = Phase::Open(tx);
        // The WebSocket keeps a share of the connection's slot: taken before the 101
        // goes out, since the connection drops its own share when hyper hands the socket
        // over. Both the socket task and the application hold it, so the graceful drain
        // waits for the application to handle its `websocket.disconnect` too.
        let slot = self.slot.share();
        if reply.send(resp).is_err() {
            st.phase = Phase::Closed;
            st.disconnected = Some((1006, String::new()));
            return Ok(());
        }
        st.slot = slot.clone();
        let task = SocketTask {
            shared: self.shared.clone(),
            bridge: self.bridge.clone(),
            outbound: rx,
            shutdown: self.shutdown.clone(),
            slot,
            _guard: guard,
            max_size: self.bridge.config.ws_max_size,
            send_timeout: self.bridge.config.ws_send_timeout,
            ping_interval: self.bridge.config.ws_ping_interval,
            ping_timeout: self.bridge.config.ws_ping_timeout,
            what: self.what(),
            deflate,
        };
        self.bridge.spawn_io(task.run(upgrade));
        Ok(())
    }

    /// `send()` on a closed connection: ClientDisconnected (ASGI spec 2.4), logged at
    /// debug level; takes the state's lock guard, to log unlocked.
    fn closed(&self, st: MutexGuard<'_, State>) -> PyErr {
        drop(st);
        if log::debug_enabled() {
            log::log(
                log::DEBUG,
                &format!("{}: send after the connection closed", self.what()),
            );
        }
        ClientDisconnected::new_err("websocket connection closed")
    }

    /// Queue `msg` for the socket; takes the state's lock guard, to log unlocked.
    fn outbound(
        &self,
        py: Python<'_>,
        mut st: MutexGuard<'_, State>,
        msg: Message,
    ) -> PyResult<Py<PyAny>> {
        let tx = match &st.phase {
            // After its own close frame the application has closed the connection too.
            Phase::Open(tx) if !st.close_sent => tx.clone(),
            _ => return Err(self.closed(st)),
        };
        if matches!(msg, Message::Close(_)) {
            st.close_sent = true;
        }
        match tx.try_reserve_owned() {
            Ok(room) => {
                drop(st);
                self.bridge.later(move || drop(room.send(msg)));
                ready(py, py.None())
            }
            // The socket task ended: the peer closed or the connection dropped.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.closed(st)),
            Err(mpsc::error::TrySendError::Full(tx)) => {
                drop(st);
                let fut = self.bridge.create_future(py)?;
                let done = fut.clone_ref(py);
                let bridge = self.bridge.clone();
                self.bridge.spawn_io(async move {
                    let outcome = match tx.send(msg).await {
                        Ok(()) => Outcome::Sent,
                        Err(_) => Outcome::SendFailed, // closed while waiting for room
                    };
                    bridge.push(Event::Resolve { fut: done, outcome });
                });
                Ok(fut)
            }
        }
    }
}

#[pymethods]
impl WsProtocol {
    /// ASGI `receive()`.
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.shared.state.lock();
        if !st.connect_delivered {
            st.connect_delivered = true;
            let d = PyDict::new(py);
            d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            return ready(py, d.into_any().unbind());
        }
        if st.waiter.as_ref().is_some_and(|w| future_done(w.bind(py))) {
            st.waiter = None; // cancelled by the application
        }
        if st.waiter.is_some() {
            return Err(PyRuntimeError::new_err(
                "receive() called again before the previous receive() completed",
            ));
        }
        match pop(py, &self.shared, &mut st)? {
            Some(msg) => ready(py, msg),
            None => {
                let fut = self.bridge.create_future(py)?;
                st.waiter = Some(fut.clone_ref(py));
                Ok(fut)
            }
        }
    }

    /// ASGI `send(message)`.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("ASGI messages must be dicts"))?;
        let typ = msg
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without 'type'"))?;
        let typ = typ.cast::<PyString>()?.to_str()?.to_owned();
        let mut st = self.shared.state.lock();
        let handshake = matches!(st.phase, Phase::Handshake { .. });
        let denying = matches!(
            st.phase,
            Phase::Handshake {
                denial: Some(_),
                ..
            }
        );
        match typ.as_str() {
            "websocket.accept" if handshake && !denying => {
                self.accept(&mut st, msg)?;
                ready(py, py.None())
            }
            "websocket.close" if handshake && !denying => {
                // Closing before accepting denies the handshake with 403 (ASGI spec).
                let resp = error_response(StatusCode::FORBIDDEN, self.bridge.config.server_header);
                self.deny(&mut st, resp);
                ready(py, py.None())
            }
            "websocket.http.response.start" if handshake && !denying => {
                let (head, _) = parse_start(msg)?;
                if let Phase::Handshake { denial, .. } = &mut st.phase {
                    *denial = Some((head, BytesMut::new()));
                }
                ready(py, py.None())
            }
            "websocket.http.response.body" if denying => {
                let body: Option<Vec<u8>> = match msg.get_item(intern!(py, "body"))? {
                    Some(b) => Some(b.extract()?),
                    None => None,
                };
                let more = match msg.get_item(intern!(py, "more_body"))? {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                if let Phase::Handshake {
                    denial: Some((_, buf)),
                    ..
                } = &mut st.phase
                {
                    buf.extend_from_slice(body.as_deref().unwrap_or_default());
                }
                if !more {
                    if let Phase::Handshake { denial, .. } = &mut st.phase {
                        let (head, buf) = denial.take().expect("denying");
                        let resp = head.into_response(
                            ResponseBody::full(buf.freeze()),
                            self.bridge.config.server_header,
                        );
                        self.deny(&mut st, resp);
                    }
                }
                ready(py, py.None())
            }
            _ if denying => Err(unexpected("'websocket.http.response.body'", &typ)),
            _ if handshake => Err(unexpected(
                "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'",
                &typ,
            )),
            "websocket.send" => {
                let bytes = msg.get_item(intern!(py, "bytes"))?.filter(|b| !b.is_none());
                let text = msg.get_item(intern!(py, "text"))?.filter(|t| !t.is_none());
                let out = match (bytes, text) {
                    (Some(b), None) => Message::Binary(Bytes::from(b.extract::<Vec<u8>>()?)),
                    (None, Some(t)) => Message::text(t.extract::<String>()?),
                    _ => {
                        return Err(PyValueError::new_err(
                            "websocket.send needs exactly one of 'bytes' and 'text'",
                        ))
                    }
                };
                self.outbound(py, st, out)
            }
            "websocket.close" => {
                let code: u16 = match msg.get_item(intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract()?,
                    _ => 1000,
                };
                let reason: String = match msg.get_item(intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract()?,
                    _ => String::new(),
                };
                self.outbound(py, st, close_message(code, &reason))
            }
            _ if matches!(st.phase, Phase::Closed) => Err(self.closed(st)),
            _ => Err(unexpected("'websocket.send' or 'websocket.close'", &typ)),
        }
    }

    /// Called by `gristmill._asgi` when the application ran past `request_timeout`
    /// (`timeout` seconds). The timeout covers the handshake only: still undecided, it
    /// is answered with a 504 and `true` says to cancel the task; an accepted (or
    /// denied) socket is left alone (`false`), bounded by its own rules from then on.
    fn timed_out(&self, py: Python<'_>, timeout: f64) -> bool {
        {
            let mut st = self.shared.state.lock();
            if !matches!(st.phase, Phase::Handshake { .. }) {
                return false;
            }
            st.timed_out = true;
            crate::metrics::rejected(crate::metrics::Rejection::RequestTimeout);
            let resp = error_response(
                StatusCode::GATEWAY_TIMEOUT,
                self.bridge.config.server_header,
            );
            self.deny(&mut st, resp);
        }
        log_with(
            py,
            log::ERROR,
            &format!(
                "request timeout: the ASGI application for {} neither accepted nor denied it \
                 within {timeout} s (request_timeout); cancelling its task, sending 504 \
                 Gateway Timeout",
                self.what()
            ),
            None,
        );
        true
    }

    /// Called by `gristmill._asgi.run_app` when the application returns or raises.
    #[pyo3(signature = (exc=None))]
    fn finished(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
        let failed = exc.is_some();
        let exc = exc.filter(|_| !self.shared.state.lock().timed_out);
        match exc {
            // A send() to a closed connection that the application let escape: the
            // client left, which is no application error.
            Some(e) if e.is_instance_of::<ClientDisconnected>() => log::log(
                log::DEBUG,
                &format!("client went away during {}", self.what()),
            ),
            Some(e) => log_with(
                py,
                log::ERROR,
                &format!("Exception in ASGI application for {}", self.what()),
                Some(&PyErr::from_value(e)),
            ),
            None => {}
        }
        let mut st = self.shared.state.lock();
        match &st.phase {
            Phase::Handshake { .. } => {
                // Returning without accepting denies the connection (403); failing, 500.
                let status = if failed {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::FORBIDDEN
                };
                let resp = error_response(status, self.bridge.config.server_header);
                self.deny(&mut st, resp);
            }
            Phase::Open(_) if !st.close_sent => {
                // Spec: the server closes a socket the application left open. The socket
                // task sends it once it has written what is still queued.
                st.final_close = Some(if failed {
                    (1011, "internal error".to_owned())
                } else {
                    (1000, String::new())
                });
                st.close_sent = true;
            }
            _ => {}
        }
        // The application is gone: nothing will read what is queued.
        if let Phase::Open(_) = st.phase {
            st.phase = Phase::Closed;
        }
        let (status, slot) = (st.status, st.slot.take());
        drop(st); // logging runs Python handlers: never with the state locked
        if let Some(access) = &self.bridge.access {
            access.emit(
                py,
                &Record::new(&self.parts, self.addrs.peer, status, 0, self.started),
            );
        }
        drop(slot); // the drain may end now
    }
}

/// The upgraded socket: reads into the queue, writes what the application sends.
struct SocketTask {
    shared: Arc<WsShared>,
    bridge: Arc<Bridge>,
    outbound: mpsc::Receiver<Message>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    slot: Option<SlotShare>,
    _guard: ActiveGuard,
    max_size: usize,
    /// `--ws-send-timeout`: how long one write to the peer may take.
    send_timeout: Duration,
    /// `--ws-ping-interval` (`None`: off) and `--ws-ping-timeout`.
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    /// `WebSocket <path>`, for log lines.
    what: String,
    /// The permessage-deflate settings agreed at the handshake, if any.
    deflate: Option<Agreed>,
}

/// One write to the peer (a frame, or flushing one out), bounded by `--ws-send-timeout`.
/// `Err` when the write failed, or when the peer stopped reading (its receive window and
/// our send buffer are full): the caller then drops the connection without a close
/// handshake, which could not get through either.
async fn write_within<F>(limit: Duration, what: &str, write: F) -> Result<(), ()>
where
    F: std::future::Future<Output = Result<(), ()>>,
{
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            log::log(
                log::INFO,
                &format!(
                    "{what}: the client stopped reading (a write took over {:.1}s, \
                     ws_send_timeout); closing the connection",
                    limit.as_secs_f64()
                ),
            );
            Err(())
        }
    }
}

impl SocketTask {
    async fn run(mut self, upgrade: OnUpgrade) {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => {
                log::log(log::DEBUG, &format!("websocket upgrade failed: {e}"));
                self.shared.deliver(
                    &self.bridge,
                    Inbound::Disconnect(1006, String::new()),
                    &self.shared,
                );
                return;
            }
        };
        let _open = crate::metrics::Open::websocket();
        let mut frames = Frames::new(TokioIo::new(io), self.max_size, self.deflate.as_ref()).await;
        let shared = self.shared.clone();
        let bridge = self.bridge.clone();
        let deliver = |msg| shared.deliver(&bridge, msg, &shared);
        let (limit, what) = (self.send_timeout, self.what.clone());
        let mut closing: Option<tokio::time::Instant> = None;
        let mut outbound_open = true;
        let mut shutdown_live = true;
        let mut keepalive = Keepalive::new(
            self.ping_interval,
            self.ping_timeout,
            tokio::time::Instant::now(),
        );
        let disconnect = loop {
            // Once closing, or once the application is gone, keep reading regardless
            // of the queue: the peer's close frame must get through.
            let room = closing.is_some() || !outbound_open || shared.queued() < READ_AHEAD;
            if !room {
                keepalive.reading_paused();
            }
            let far = || tokio::time::Instant::now() + Duration::from_secs(86400);
            let close_deadline = closing.unwrap_or_else(far);
            let ping_due = keepalive.due_at().filter(|_| closing.is_none());
            tokio::select! {
                out = self.outbound.recv(), if outbound_open => match out {
                    Some(msg) => {
                        let is_close = matches!(msg, Message::Close(_));
                        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                            crate::metrics::ws_message(true);
                        }
                        if write_within(limit, &what, frames.send(msg)).await.is_err() {
                            break (1006, String::new());
                        }
                        if is_close {
                            closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                        }
                    }
                    None => {
                        // The application is gone: close with what it left us, if it
                        // did not close itself.
                        outbound_open = false;
                        let last = shared.state.lock().final_close.take();
                        if let (Some((code, reason)), None) = (last, closing) {
                            let close = close_message(code, &reason);
                            if write_within(limit, &what, frames.send(close)).await.is_err() {
                                break (1006, String::new());
                            }
                            closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                        }
                    }
                },
                inbound = frames.next(), if room => match inbound {
                    Read::Text(t) => {
                        crate::metrics::ws_message(false);
                        deliver(Inbound::Text(t))
                    }
                    Read::Binary(b) => {
                        crate::metrics::ws_message(false);
                        deliver(Inbound::Binary(b))
                    }
                    Read::Close(frame) => {
                        // The frame layer queued the answer to the peer's close (none
                        // when it answered ours); flush it out.
                        let _ = write_within(limit, &what, frames.finish()).await;
                        break frame.unwrap_or((1005, String::new()));
                    }
                    Read::Pong(payload) => keepalive.pong(&payload),
                    Read::Ping => {} // the client's pings are answered by the frame layer
                    Read::TooBig(e) => {
                        log::log(log::DEBUG, &format!("websocket message too big: {e}"));
                        if write_within(limit, &what, frames.fail(1009, "message too big"))
                            .await
                            .is_ok()
                        {
                            let _ = write_within(limit, &what, frames.finish()).await;
                        }
                        break (1009, "message too big".to_owned());
                    }
                    Read::Broken(code, e) => {
                        log::log(log::DEBUG, &format!("websocket read failed: {e}"));
                        // A broken frame or invalid UTF-8 fails the connection (RFC 6455
                        // §7.1.7): say why in a close frame, best effort, then drop it.
                        let _ = write_within(limit, &what, frames.fail(code, "")).await;
                        break (code, String::new());
                    }
                    Read::Reset => break (1006, String::new()),
                },
                _ = shared.room.notified(), if !room => {}
                r = self.shutdown.changed(), if closing.is_none() && shutdown_live => {
                    if r.is_err() || *self.shutdown.borrow() {
                        shutdown_live = r.is_ok();
                        // The worker is stopping: 1001, "going away" (RFC 6455 §7.4.1).
                        let close = close_message(1001, "server shutting down");
                        if write_within(limit, &what, frames.send(close)).await.is_err() {
                            break (1006, String::new());
                        }
                        closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                    }
                }
                _ = tokio::time::sleep_until(close_deadline), if closing.is_some() => {
                    break (1006, String::new());
                }
                _ = tokio::time::sleep_until(ping_due.unwrap_or_else(far)), if ping_due.is_some() => {
                    match keepalive.on_due(tokio::time::Instant::now()) {
                        Due::Ping(payload) => {
                            let ping = Message::Ping(payload);
                            if write_within(limit, &what, frames.send(ping)).await.is_err() {
                                break (1006, String::new());
                            }
                        }
                        Due::Dead => {
                            log::log(
                                log::INFO,
                                &format!(
                                    "{what}: no pong within {:.1}s of a keepalive ping \
                                     (ws_ping_timeout); closing the connection",
                                    keepalive.timeout().as_secs_f64()
                                ),
                            );
                            break (1006, String::new());
                        }
                        Due::Nothing => {}
                    }
                }
            }
        };
        deliver(Inbound::Disconnect(disconnect.0, disconnect.1));
        drop(self.slot.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ConnActivity;

    fn handshake() -> (WsShared, oneshot::Receiver<Response<ResponseBody>>) {
        let (reply, rx) = oneshot::channel();
        let guard = ConnActivity::new().request_started();
        let upgrade = hyper::upgrade::on(::http::Request::new(()));
        (WsShared::new(reply, guard, upgrade, Some("key".into())), rx)
    }

    #[test]
    fn a_pending_handshake_is_closed_once() {
        let (shared, _rx) = handshake();
        let mut st = shared.state.lock();
        assert!(gone_before_response(&mut st));
        assert!(matches!(st.phase, Phase::Closed));
        // A second departure owes the application nothing more.
        assert!(!gone_before_response(&mut st));
    }

    #[test]
    fn an_accepted_socket_is_left_to_its_task() {
        let (shared, _rx) = handshake();
        let mut st = shared.state.lock();
        let (tx, _out) = mpsc::channel(1);
        st.phase = Phase::Open(tx); // the application accepted first
        assert!(!gone_before_response(&mut st));
        assert!(matches!(st.phase, Phase::Open(_)));
        assert!(st.inbound.is_empty());
    }
}
