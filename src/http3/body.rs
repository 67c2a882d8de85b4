//! The body of an HTTP/3 request as an [`http_body::Body`]: the receiving half of the
//! request stream, read as the interface asks for it.
//!
//! Backpressure is QUIC's: nothing is read ahead of the application, so an unread body
//! keeps the stream's flow-control window closed and the client waits. A body that
//! differs from its `Content-Length` is malformed (RFC 9114 §4.1.2) and fails the read;
//! a stream the client reset fails it as incomplete, which the interfaces report as a
//! disconnect. Trailers, when the client sends them, end the body as a trailers frame.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use h3::error::{Code, StreamError};
use h3::server::RequestStream;
use http_body::{Body, Frame, SizeHint};

/// The receiving half of a request stream.
pub type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// Where the receiving half lives: shared with the request's task, which takes it
/// away once the response is complete ([`RecvRelease`]).
type Slot = Arc<Mutex<Option<RecvHalf>>>;

/// A request body read from its HTTP/3 stream (see the module docs).
pub struct H3Body {
    slot: Slot,
    /// A frame (or failure) found while peeking at the stream (see [`H3Body::new`]).
    pending: Option<Result<Frame<Bytes>, H3BodyError>>,
    state: State,
    declared: Option<u64>,
    received: u64,
}

/// Why reading an HTTP/3 request body failed.
#[derive(Debug)]
pub struct H3BodyError {
    incomplete: bool,
    message: String,
}

impl H3BodyError {
    /// The client reset the stream or the connection went away before the end.
    pub fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    fn invalid(message: impl Into<String>) -> Self {
        H3BodyError {
            incomplete: false,
            message: message.into(),
        }
    }
}

impl From<StreamError> for H3BodyError {
    fn from(e: StreamError) -> Self {
        let incomplete = matches!(
            e,
            StreamError::RemoteTerminate { .. }
                | StreamError::ConnectionError { .. }
                | StreamError::RemoteClosing { .. }
        );
        H3BodyError {
            incomplete,
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for H3BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/3 request body: {}", self.message)
    }
}

impl std::error::Error for H3BodyError {}

impl H3Body {
    /// The body of a request that declared `declared` bytes (`Content-Length`), if any.
    ///
    /// The stream is looked at once without waiting: a request without a body (a GET)
    /// usually arrives with its stream's end, and knowing that now lets the interfaces
    /// treat the body as empty instead of streaming it.
    ///
    /// The request ends for `h3` (and for the graceful stop, which waits for it) when
    /// both halves of its stream are dropped; the application may keep its body object
    /// long after its response, so the request's task drops the receiving half itself
    /// through the returned [`RecvRelease`] once the response is complete.
    pub fn new(mut stream: RecvHalf, declared: Option<u64>) -> (Self, RecvRelease) {
        let peeked = match stream.recv_data().now_or_never() {
            None => None,
            Some(Ok(Some(mut data))) => Some(Ok(Some(data.copy_to_bytes(data.remaining())))),
            Some(Ok(None)) => Some(Ok(None)),
            Some(Err(e)) => Some(Err(H3BodyError::from(e))),
        };
        let mut body = H3Body {
            slot: Arc::new(Mutex::new(None)),
            pending: None,
            state: State::Data,
            declared,
            received: 0,
        };
        match peeked {
            None => {}
            Some(Ok(Some(data))) => {
                body.received = data.len() as u64;
                body.pending = Some(match body.check_length(false) {
                    Ok(()) => Ok(Frame::data(data)),
                    Err(e) => {
                        body.state = State::Done;
                        Err(e)
                    }
                });
            }
            Some(Ok(None)) => {
                if let Err(e) = body.check_length(true) {
                    body.pending = Some(Err(e));
                    body.state = State::Done;
                } else {
                    body.state = State::Trailers;
                    match stream.recv_trailers().now_or_never() {
                        None => {}
                        Some(Ok(None)) => body.state = State::Done,
                        Some(Ok(Some(t))) => {
                            body.pending = Some(Ok(Frame::trailers(t)));
                            body.state = State::Done;
                        }
                        Some(Err(e)) => {
                            body.pending = Some(Err(e.into()));
                            body.state = State::Done;
                        }
                    }
                }
            }
            Some(Err(e)) => {
                body.pending = Some(Err(e));
                body.state = State::Done;
            }
        }
        if body.state != State::Done {
            *body.slot.lock() = Some(stream);
        }
        let release = RecvRelease(body.slot.clone());
        (body, release)
    }

    fn check_length(&self, at_end: bool) -> Result<(), H3BodyError> {
        match self.declared {
            Some(n) if self.received > n => Err(H3BodyError::invalid(format!(
                "more bytes than the Content-Length of {n}"
            ))),
            Some(n) if at_end && self.received < n => Err(H3BodyError {
                incomplete: true,
                message: format!(
                    "the stream ended after {} of the {n} bytes of Content-Length",
                    self.received
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = H3BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H3BodyError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.pending.take() {
            return Poll::Ready(Some(frame));
        }
        if this.state == State::Done {
            return Poll::Ready(None);
        }
        let mut slot = this.slot.lock();
        let Some(stream) = slot.as_mut() else {
            this.state = State::Done;
            return Poll::Ready(Some(Err(H3BodyError {
                incomplete: true,
                message: "read after the response was complete".into(),
            })));
        };
        let (state, result) = loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Data => match stream.poll_recv_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(mut data))) => {
                        let data = data.copy_to_bytes(data.remaining());
                        this.received += data.len() as u64;
                        if let Err(e) = this.check_length(false) {
                            break (State::Done, Some(Err(e)));
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Poll::Ready(Ok(None)) => {
                        if let Err(e) = this.check_length(true) {
                            break (State::Done, Some(Err(e)));
                        }
                        this.state = State::Trailers;
                    }
                    Poll::Ready(Err(e)) => break (State::Done, Some(Err(e.into()))),
                },
                State::Trailers => match stream.poll_recv_trailers(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(trailers))) => {
                        break (State::Done, Some(Ok(Frame::trailers(trailers))))
                    }
                    Poll::Ready(Ok(None)) => break (State::Done, None),
                    Poll::Ready(Err(e)) => break (State::Done, Some(Err(e.into()))),
                },
            }
        };
        // The body is over: its half of the stream is no longer needed.
        this.state = state;
        *slot = None;
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        match self.declared {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.received) + self.pending_len()),
            None => SizeHint::default(),
        }
    }
}

impl H3Body {
    /// Bytes peeked but not yet handed out.
    fn pending_len(&self) -> u64 {
        match &self.pending {
            Some(Ok(f)) => f.data_ref().map_or(0, |b| b.len() as u64),
            _ => 0,
        }
    }
}

/// Held by the request's task: ends the receiving half of the stream once the response
/// is complete, whoever still holds the body (see [`H3Body::new`]).
pub struct RecvRelease(Slot);

impl RecvRelease {
    /// Drop the receiving half; a body not read to its end is refused with
    /// STOP_SENDING(H3_NO_ERROR), as RFC 9114 §4.1 allows once the response is complete.
    pub fn release(self) {
        if let Some(mut stream) = self.0.lock().take() {
            stream.stop_sending(Code::H3_NO_ERROR);
        }
    }
}
