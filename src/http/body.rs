//! The response body handed to hyper: whole, a list of chunks, or a stream fed by the
//! thread running the application through a bounded channel (the bound is the
//! backpressure: a slow client blocks the producer instead of growing a buffer).
//!
//! The body holds the request's [`ActiveGuard`], so the connection counts as busy until
//! the response is fully sent or abandoned; dropping a stream body closes the channel,
//! which is how the producer learns that the client went away.
//!
//! A stream body may end with trailers ([`ResponseBody::stream_with_trailers`]): they
//! come through a one-shot channel that is read only after the last chunk, so they
//! follow the data whatever thread queued what; hyper sends them over HTTP/2 (and
//! HTTP/1.1 when the request said `TE: trailers`), `crate::http3` over HTTP/3.
//!
//! [`body_bytes`] turns a Python `bytes` object into a chunk for either.
//!
//! Reading a request body ([`next_data`], [`read_whole`]) is here too: both interfaces
//! bound every wait for its next bytes by `body_read_timeout`.
//!
//! An error from the producer of a streamed response (the application failed
//! mid-body) is held back until what it sent before reached the socket, so that it
//! still reaches the client before the abort: on HTTP/1.1 until hyper flushed its
//! write buffer (`crate::net::Flushes`), on HTTP/2 for one poll.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use crate::http::Incoming;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use crate::net::ActiveGuard;

/// Why a streamed body ended early; hyper then aborts the connection, which is the
/// only honest signal once the head is on the wire.
#[derive(Debug)]
pub struct BodyAborted(pub String);

impl std::fmt::Display for BodyAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "response body aborted: {}", self.0)
    }
}

impl std::error::Error for BodyAborted {}

/// One item of a streamed body.
pub type Chunk = Result<Bytes, BodyAborted>;

/// An abort the body has taken from its channel but not reported yet.
struct HeldAbort {
    error: BodyAborted,
    /// HTTP/1: the connection's flush count when the abort was taken; reported after the
    /// next flush. `None` (HTTP/2, HTTP/3): reported at the next poll.
    flushes: Option<u64>,
}

enum Kind {
    Chunks(VecDeque<Bytes>, u64),
    /// Chunks, then the trailers if the sender of the one-shot gives any.
    Stream(
        mpsc::Receiver<Chunk>,
        Option<oneshot::Receiver<http::HeaderMap>>,
    ),
    /// Read from a file (`http::file`): by `sendfile` or in chunks.
    File(Box<super::file::FileBody>),
}

/// A response body; see the module docs.
pub struct ResponseBody {
    kind: Kind,
    /// An abort held back until what came before it is written (see `poll_frame`).
    aborted: Option<HeldAbort>,
    _guard: Option<ActiveGuard>,
    /// Dropped with the body: lets an interface learn the response is over.
    _notifier: Option<Box<dyn Send>>,
}

impl ResponseBody {
    pub fn empty() -> Self {
        Self::chunks(VecDeque::new())
    }

    pub fn full(b: Bytes) -> Self {
        Self::chunks(VecDeque::from([b]))
    }

    /// A body of `kind`, with no guard, notifier or abort yet.
    fn of(kind: Kind) -> Self {
        ResponseBody {
            kind,
            aborted: None,
            _guard: None,
            _notifier: None,
        }
    }

    pub fn chunks(chunks: VecDeque<Bytes>) -> Self {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        Self::of(Kind::Chunks(chunks, len))
    }

    pub fn stream(rx: mpsc::Receiver<Chunk>) -> Self {
        Self::of(Kind::Stream(rx, None))
    }

    /// A stream body that ends with the trailers sent on `trailers` once the channel
    /// closes (none if that sender is dropped unused).
    pub fn stream_with_trailers(
        rx: mpsc::Receiver<Chunk>,
        trailers: oneshot::Receiver<http::HeaderMap>,
    ) -> Self {
        Self::of(Kind::Stream(rx, Some(trailers)))
    }

    /// A body read from a file; how it is sent is settled by [`Self::with_guard`].
    pub fn file(body: super::file::FileBody) -> Self {
        Self::of(Kind::File(Box::new(body)))
    }

    /// Drop `notifier` when the body is finished or abandoned.
    pub fn with_notifier(mut self, notifier: Box<dyn Send>) -> Self {
        self._notifier = Some(notifier);
        self
    }

    /// Keep the connection marked busy until this body is done. A file body learns
    /// here whether its connection can `sendfile`.
    pub fn with_guard(mut self, guard: ActiveGuard) -> Self {
        if let (Kind::File(f), Some(queue)) = (&mut self.kind, guard.sendfile()) {
            f.use_sendfile(queue);
        }
        self._guard = Some(guard);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        let this = self.get_mut();
        if let Some(held) = this.aborted.take() {
            let flushes = this._guard.as_ref().and_then(|g| g.flushes());
            return match (held.flushes, flushes) {
                (Some(at), Some(f)) => {
                    f.register(cx);
                    if f.count() > at {
                        Poll::Ready(Some(Err(held.error)))
                    } else {
                        this.aborted = Some(held);
                        Poll::Pending
                    }
                }
                _ => Poll::Ready(Some(Err(held.error))),
            };
        }
        match &mut this.kind {
            Kind::Chunks(chunks, len) => Poll::Ready(chunks.pop_front().map(|c| {
                *len -= c.len() as u64;
                Ok(Frame::data(c))
            })),
            Kind::File(f) => match f.poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Stream(rx, trailers) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => {
                    // An error drops what hyper has not written yet: HTTP/1.1 ends the
                    // connection without flushing its write buffer (the head and the
                    // chunks polled before: up to ~400 KiB when the client reads
                    // slowly), and the HTTP/2 reset clears the frames the stream still
                    // has queued. So the error is held back: on HTTP/1.1 until hyper
                    // has flushed its buffer into the socket (`net::Flushes`), however
                    // long the client takes to make room; on HTTP/2 for one poll.
                    let flushes = this._guard.as_ref().and_then(|g| g.flushes());
                    this.aborted = Some(HeldAbort {
                        error: e,
                        flushes: flushes.map(|f| {
                            f.register(cx);
                            f.count()
                        }),
                    });
                    if flushes.is_none() {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
                Poll::Ready(None) => match trailers {
                    None => Poll::Ready(None),
                    Some(wait) => match Pin::new(wait).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(got) => {
                            *trailers = None;
                            Poll::Ready(got.ok().map(|t| Ok(Frame::trailers(t))))
                        }
                    },
                },
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Chunks(c, _) => c.is_empty(),
            Kind::File(f) => f.len() == 0,
            Kind::Stream(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Chunks(_, len) => SizeHint::with_exact(*len),
            Kind::File(f) => SizeHint::with_exact(f.len()),
            Kind::Stream(..) => SizeHint::default(),
        }
    }
}

/// Why reading a request body stopped early.
#[derive(Debug)]
pub enum BodyReadError {
    /// No bytes arrived for this long.
    TimedOut(Duration),
    /// hyper's error: a malformed body, or the client went away.
    Failed(crate::http::BodyError),
}

/// The next non-empty piece of `body`, `None` at its end; trailers are skipped.
pub async fn next_data(
    body: &mut Incoming,
    timeout: Duration,
) -> Result<Option<Bytes>, BodyReadError> {
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(BodyReadError::TimedOut(timeout)),
            Ok(None) => return Ok(None),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Ok(Some(data)),
                _ => continue, // empty, or trailers: not part of the body
            },
            Ok(Some(Err(e))) => return Err(BodyReadError::Failed(e)),
        }
    }
}

/// All of `body` (meant for small ones with a known length).
pub async fn read_whole(body: &mut Incoming, timeout: Duration) -> Result<Bytes, BodyReadError> {
    let mut buf = BytesMut::new();
    while let Some(data) = next_data(body, timeout).await? {
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// End a streamed body with an error after the chunks already queued. At once when the
/// channel has room; otherwise the returned future waits for room and must be spawned:
/// an abort that is dropped lets the body end as if complete once the sender goes.
pub fn abort_stream(
    tx: mpsc::Sender<Chunk>,
    reason: String,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    match tx.try_send(Err(BodyAborted(reason))) {
        Err(mpsc::error::TrySendError::Full(abort)) => Some(async move {
            let _ = tx.send(abort).await;
        }),
        _ => None,
    }
}

/// Below this size a Python body chunk is copied rather than kept alive as an object.
const COPY_BELOW: usize = 4096;

/// A response chunk from a Python `bytes` object: large ones are sent from the object
/// itself, without a copy (the object stays alive until the chunk is written).
pub fn body_bytes(b: &pyo3::Bound<'_, pyo3::types::PyBytes>) -> Bytes {
    use pyo3::types::PyBytesMethods;
    let data = b.as_bytes();
    if data.len() < COPY_BELOW {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(pyo3::pybacked::PyBackedBytes::from(b.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ConnActivity, Plain, Stream, TrackedStream};
    use tokio::io::AsyncWriteExt;

    fn poll_once(body: &mut ResponseBody) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        let waker = futures_util::task::noop_waker();
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    /// On HTTP/1 an abort is reported only after hyper flushed what it buffered before
    /// it into the stream (a flush that completes after the abort was taken), however
    /// many polls come first: an error returned earlier would make hyper drop its write
    /// buffer, the chunks a slow client had not taken yet.
    #[tokio::test]
    async fn abort_waits_for_a_flush_on_http1() {
        let (server, _client) = tokio::net::UnixStream::pair().unwrap();
        let activity = ConnActivity::new();
        activity.count_flushes();
        let mut io = TrackedStream::new(Stream::Plain(Plain::Unix(server)), activity.clone(), 8192);
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"chunk"))).unwrap();
        tx.try_send(Err(BodyAborted("boom".into()))).unwrap();
        let mut body = ResponseBody::stream(rx).with_guard(activity.request_started());
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        // hyper flushed the chunk before the abort was taken: that flush does not count.
        io.flush().await.unwrap();
        for _ in 0..3 {
            assert!(poll_once(&mut body).is_pending());
        }
        io.flush().await.unwrap();
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Err(_)))));
    }

    /// Elsewhere (HTTP/2, HTTP/3: flushes are not counted) the abort comes one poll
    /// late.
    #[tokio::test]
    async fn abort_comes_one_poll_late_elsewhere() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Err(BodyAborted("boom".into()))).unwrap();
        let mut body = ResponseBody::stream(rx).with_guard(ConnActivity::new().request_started());
        assert!(poll_once(&mut body).is_pending());
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Err(_)))));
    }
}
