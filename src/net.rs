//! Listening sockets and accepted streams.
//!
//! The supervisor binds every socket once and hands the fds to its workers; here a
//! worker turns them into tokio listeners (TCP or Unix, told apart by the socket's
//! address family) and wraps accepted connections in one [`Stream`] type so the rest of
//! the server has a single serve path whatever the transport.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::http::framing::FramingScanner;

/// The send timeout: how long writes may stay blocked on a client that takes none of
/// the response. The timer exists only while a write is blocked (the socket's send
/// buffer is full), so the common path pays nothing for it.
#[derive(Default)]
struct Stall {
    timeout: Option<Duration>,
    since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stall {
    fn guard<T>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(timeout) = self.timeout else {
            return res;
        };
        if res.is_ready() {
            self.since = None;
            return res;
        }
        let timer = self
            .since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::future::Future::poll(timer.as_mut(), cx).is_ready() {
            self.since = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took none of the response for {} s (send_timeout)",
                    timeout.as_secs_f64()
                ),
            )));
        }
        Poll::Pending
    }
}

/// A listening socket inherited from the supervisor.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, String),
}

/// Where a connection comes from and arrived at, as the application sees it.
#[derive(Clone, Debug)]
pub struct Addrs {
    /// The client's address; `None` on a Unix socket.
    pub peer: Option<SocketAddr>,
    /// The server's host (an IP, or the socket path for a Unix socket).
    pub server_host: String,
    /// The server's port (0 on a Unix socket).
    pub server_port: u16,
}

impl Listener {
    /// Take over `fd`, which must be a listening TCP or Unix stream socket that nothing
    /// else in this process will close: it is closed when the listener is dropped (the
    /// worker stops accepting), so a stopping worker does not keep the socket listening.
    /// Must be called inside the tokio runtime.
    pub fn from_inherited_fd(fd: RawFd) -> io::Result<Listener> {
        // SAFETY: fstat on a caller-provided descriptor; failure is reported, not assumed.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the caller hands this descriptor over (see above).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = socket2::Socket::from(owned);
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        let local = sock.local_addr()?;
        if local.is_unix() {
            let path = unix_path(&local);
            let std: std::os::unix::net::UnixListener = sock.into();
            Ok(Listener::Unix(UnixListener::from_std(std)?, path))
        } else if local.as_socket().is_some() {
            let std: std::net::TcpListener = sock.into();
            Ok(Listener::Tcp(TcpListener::from_std(std)?))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is neither a TCP nor a Unix socket"),
            ))
        }
    }

    /// Accept one connection.
    pub async fn accept(&self) -> io::Result<(Plain, Addrs)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                tcp_accepted(s, peer)
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok(unix_accepted(s, path))
            }
        }
    }

    /// Accept one connection the kernel has already queued, without waiting: `None`
    /// once the queue is empty. It asks the kernel directly rather than going by the
    /// reactor's readiness, which is stale when the runtime was held up (an inline
    /// application call) while clients connected: the drain's sweep must see them.
    pub fn accept_queued(&self) -> Option<io::Result<(Plain, Addrs)>> {
        use std::mem::ManuallyDrop;
        use std::os::fd::AsRawFd;
        let result = match self {
            Listener::Tcp(l) => {
                // SAFETY: the descriptor stays open (owned by `l`) for this one
                // accept(2); ManuallyDrop never closes it.
                let std =
                    ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(l.as_raw_fd()) });
                std.accept().and_then(|(s, peer)| {
                    s.set_nonblocking(true)?;
                    tcp_accepted(TcpStream::from_std(s)?, peer)
                })
            }
            Listener::Unix(l, path) => {
                // SAFETY: as above.
                let std = ManuallyDrop::new(unsafe {
                    std::os::unix::net::UnixListener::from_raw_fd(l.as_raw_fd())
                });
                std.accept().and_then(|(s, _)| {
                    s.set_nonblocking(true)?;
                    Ok(unix_accepted(UnixStream::from_std(s)?, path))
                })
            }
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

/// A connection another worker passed on (`crate::handoff`), as if accepted here: TCP or
/// Unix, told apart by its address family. Must be called inside the tokio runtime.
pub fn adopted(sock: OwnedFd) -> io::Result<(Plain, Addrs)> {
    let sock = socket2::Socket::from(sock);
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    if local.is_unix() {
        let std: std::os::unix::net::UnixStream = sock.into();
        Ok(unix_accepted(
            UnixStream::from_std(std)?,
            &unix_path(&local),
        ))
    } else {
        let (Some(local), Some(peer)) = (local.as_socket(), sock.peer_addr()?.as_socket()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a TCP nor a Unix socket",
            ));
        };
        // Its options (TCP_NODELAY) came along with it.
        let std: std::net::TcpStream = sock.into();
        Ok((
            Plain::Tcp(TcpStream::from_std(std)?),
            Addrs {
                peer: Some(peer),
                server_host: local.ip().to_string(),
                server_port: local.port(),
            },
        ))
    }
}

/// A Unix socket's path, as the application sees it (empty for an unnamed socket).
fn unix_path(addr: &socket2::SockAddr) -> String {
    addr.as_pathname()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn tcp_accepted(s: TcpStream, peer: SocketAddr) -> io::Result<(Plain, Addrs)> {
    let _ = s.set_nodelay(true);
    let local = s.local_addr()?;
    Ok((
        Plain::Tcp(s),
        Addrs {
            peer: Some(peer),
            server_host: local.ip().to_string(),
            server_port: local.port(),
        },
    ))
}

fn unix_accepted(s: UnixStream, path: &str) -> (Plain, Addrs) {
    (
        Plain::Unix(s),
        Addrs {
            peer: None,
            server_host: path.to_owned(),
            server_port: 0,
        },
    )
}

/// True for accept errors that mean "out of descriptors or memory": the accept loop
/// backs off instead of spinning, and sheds idle connections to make room.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What a connection is doing, shared between its I/O, its requests and its watcher.
pub struct ConnActivity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or response finished.
    last: AtomicU64,
    /// Requests whose response has not finished yet.
    active: AtomicUsize,
    /// Requests whose response has finished.
    served: AtomicUsize,
    /// Woken when a request starts.
    pub request_arrived: tokio::sync::Notify,
    /// Woken when a request's response is done (may hold a stale wake-up).
    pub request_done: tokio::sync::Notify,
    /// Requests started so far (`request_arrived` may hold a stale wake-up).
    arrivals: AtomicUsize,
    /// The index of the request the framing scanner saw with both Content-Length and
    /// Transfer-Encoding (it stops following the connection after one).
    conflict: OnceLock<usize>,
    /// File segments to `sendfile` on this connection, when it can (cleartext HTTP/1).
    sendfile: OnceLock<Arc<crate::http::sendfile::FileQueue>>,
    /// HTTP/1 (cleartext or TLS): the flushes of hyper's write buffer, which a response
    /// body waits for before it aborts (see [`Flushes`]).
    flushes: OnceLock<Flushes>,
    /// The connection goes to a sibling worker (`crate::handoff`): hyper's end of it
    /// must leave the socket open.
    keep_open: std::sync::atomic::AtomicBool,
    /// A sibling passed it on: it served requests there, between two of which it is.
    adopted: std::sync::atomic::AtomicBool,
}

/// The completed flushes of an HTTP/1 connection's writes.
///
/// hyper's HTTP/1 connection buffers what it polled from a response body (up to about
/// 400 KiB) until the socket takes it, and when the body then yields an error it ends
/// the connection at once: what is still in that buffer is lost. A body ending in an
/// error (the application failed mid-response) must first let the chunks before it
/// reach the socket, and on a client that reads slowly that takes as long as it takes.
/// hyper asks the stream to flush ([`TrackedStream`]'s `poll_flush`) only once its
/// buffer is empty, so a flush completed after the body held its error back means that
/// everything before it was written; the body waits for one
/// (`crate::http::body::ResponseBody`).
#[derive(Default)]
pub struct Flushes {
    count: AtomicU64,
    waiter: futures_util::task::AtomicWaker,
}

impl Flushes {
    /// How many flushes completed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Wake the task of `cx` at the next completed flush.
    pub fn register(&self, cx: &Context<'_>) {
        self.waiter.register(cx.waker());
    }

    fn flushed(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.waiter.wake();
    }
}

impl ConnActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            request_arrived: tokio::sync::Notify::new(),
            request_done: tokio::sync::Notify::new(),
            arrivals: AtomicUsize::new(0),
            conflict: OnceLock::new(),
            sendfile: OnceLock::new(),
            flushes: OnceLock::new(),
            keep_open: std::sync::atomic::AtomicBool::new(false),
            adopted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A sibling passed this connection on (`crate::handoff`).
    pub fn mark_adopted(&self) {
        self.adopted.store(true, Ordering::Relaxed);
    }

    /// Whether the connection served a request, here or (passed on) in a sibling: one
    /// a retiring worker may pass on.
    pub fn served_any(&self) -> bool {
        self.arrivals() > 0 || self.adopted()
    }

    fn adopted(&self) -> bool {
        self.adopted.load(Ordering::Relaxed)
    }

    /// Leave the socket open when hyper ends the connection: it is passed on.
    pub fn keep_open(&self) {
        self.keep_open.store(true, Ordering::Release);
    }

    /// Count the flushes of this connection's writes ([`Flushes`]): for HTTP/1 only,
    /// where a flush means hyper's write buffer is empty. (An HTTP/2 connection flushes
    /// whatever its streams' windows let through; a stream's reset drops the frames it
    /// still has queued anyway.)
    pub fn count_flushes(&self) {
        let _ = self.flushes.set(Flushes::default());
    }

    /// Send file bodies on this connection with `sendfile` (see `http::sendfile`): only
    /// for a cleartext HTTP/1 connection, whose writes go straight to the socket.
    pub fn enable_sendfile(&self) {
        let _ = self.sendfile.set(Arc::default());
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been idle, or `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(
            now.saturating_sub(self.last.load(Ordering::Relaxed)),
        ))
    }

    /// Idle after serving at least one request (here, or in the sibling that passed it
    /// on): a keep-alive connection that may be closed to make room for a new client.
    /// (A fresh connection that has not sent its first request yet is left to the
    /// header read timeout.)
    pub fn is_idle_keepalive(&self) -> bool {
        let served = self.served.load(Ordering::Acquire) > 0 || self.adopted();
        served && self.idle_for().is_some()
    }

    /// Whether the request with this index on the connection (see
    /// [`ActiveGuard::request_index`]) carried both Content-Length and Transfer-Encoding
    /// (see `http::framing`). Only requests with a Transfer-Encoding need to ask.
    pub fn had_length_conflict(&self, request_index: usize) -> bool {
        self.conflict.get() == Some(&request_index)
    }

    /// How many requests this connection has started.
    pub fn arrivals(&self) -> usize {
        self.arrivals.load(Ordering::Acquire)
    }

    /// Mark a request as started; the guard marks it finished when dropped (when the
    /// response body is done or abandoned).
    pub fn request_started(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        crate::heartbeat::request_started();
        let index = self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.request_arrived.notify_one();
        ActiveGuard {
            activity: self.clone(),
            index,
            held: None,
            _metered: crate::metrics::InFlight::start(),
        }
    }
}

/// A connection's place under `max_connections` (a semaphore permit), shared by the
/// connection and what its requests leave running: the permit returns to the pool when
/// the last share is dropped. The accept loop drops the connection's share when the
/// connection ends; an ASGI request's application task holds a share until it returns,
/// and an upgraded socket (a WebSocket) until it closes. So they all count against the
/// limit, and the graceful drain (which waits for every permit) waits for them.
pub struct ConnSlot(parking_lot::Mutex<Option<SlotShare>>);

/// One holder's share of a [`ConnSlot`].
pub type SlotShare = Arc<tokio::sync::OwnedSemaphorePermit>;

impl ConnSlot {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Arc<Self> {
        Arc::new(ConnSlot(parking_lot::Mutex::new(Some(Arc::new(permit)))))
    }

    /// Another share of the slot; `None` once the connection released its own.
    pub fn share(&self) -> Option<SlotShare> {
        self.0.lock().clone()
    }

    /// Take the connection's own share (to drop it when the connection ends).
    pub fn take(&self) -> Option<SlotShare> {
        self.0.lock().take()
    }

    /// A guard that gives the connection's own share back when it is dropped: held by
    /// the connection's future, it does so however that future ends (done, returned
    /// early, or dropped with the runtime).
    pub fn release_on_drop(self: &Arc<Self>) -> SlotRelease {
        SlotRelease(self.clone())
    }
}

/// See [`ConnSlot::release_on_drop`].
pub struct SlotRelease(Arc<ConnSlot>);

impl Drop for SlotRelease {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// Held by a response body for as long as the response is being sent.
pub struct ActiveGuard {
    activity: Arc<ConnActivity>,
    index: usize,
    /// The request's place under `--limit-concurrency`, given back with the guard.
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Counted in the metrics' requests in flight and duration (`--metrics-bind`).
    _metered: Option<crate::metrics::InFlight>,
}

impl ActiveGuard {
    /// Keep `permit` until the request is over.
    pub fn hold(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.held = Some(permit);
    }

    /// The request's index on its connection: 0 for the first. On HTTP/1.1 requests
    /// start one after the other, in the order their heads arrived.
    pub fn request_index(&self) -> usize {
        self.index
    }

    /// The connection's `sendfile` queue, when it has one.
    pub fn sendfile(&self) -> Option<Arc<crate::http::sendfile::FileQueue>> {
        self.activity.sendfile.get().cloned()
    }

    /// The connection's flushes, when they are counted (HTTP/1).
    pub fn flushes(&self) -> Option<&Flushes> {
        self.activity.flushes.get()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.activity;
        a.touch();
        a.served.fetch_add(1, Ordering::AcqRel);
        a.active.fetch_sub(1, Ordering::AcqRel);
        a.request_done.notify_one();
        crate::heartbeat::request_finished();
    }
}

/// An accepted connection before TLS: TCP or Unix.
pub enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Plain {
    /// The socket's descriptor, for a look at its state (it stays owned here).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Plain::Tcp(s) => s.as_raw_fd(),
            Plain::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// An accepted connection: plain, or TLS over a plain one (after the handshake).
pub enum Stream {
    Plain(Plain),
    Tls(Box<tokio_rustls::server::TlsStream<Plain>>),
}

/// Forward the tokio I/O traits of an enum to its variants.
macro_rules! forward_io {
    ($ty:ident { $($variant:ident),+ }) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write(cx, data),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

forward_io!(Plain { Tcp, Unix });
forward_io!(Stream { Plain, Tls });

/// A [`Stream`] that notes every successful read in its [`ConnActivity`], follows the
/// HTTP/1 request framing with a [`FramingScanner`] (dropped once it switches off, or
/// when the connection turns out to speak HTTP/2, whose framing `h2` checks itself), and
/// fails writes that stay blocked past the send timeout ([`Stall`]).
///
/// Bytes read to tell HTTP/1 from HTTP/2 (see `server::choose_protocol`) are handed
/// back with [`TrackedStream::replay`] and read again first; the scanner saw them
/// already.
pub struct TrackedStream {
    inner: Stream,
    activity: Arc<ConnActivity>,
    scanner: Option<Box<FramingScanner>>,
    replay: Bytes,
    stall: Stall,
}

impl TrackedStream {
    pub fn new(inner: Stream, activity: Arc<ConnActivity>, max_head: usize) -> Self {
        TrackedStream {
            inner,
            activity,
            scanner: Some(Box::new(FramingScanner::new(max_head))),
            replay: Bytes::new(),
            stall: Stall::default(),
        }
    }

    /// Fail writes that make no progress for `timeout` (`send_timeout`).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.stall.timeout = Some(timeout);
        self
    }

    /// The socket of a cleartext connection, taken from the runtime, and the bytes
    /// handed back for replay that were not read again yet; `None` over TLS.
    pub fn into_socket(self) -> Option<(OwnedFd, Bytes)> {
        let fd = match self.inner {
            Stream::Plain(Plain::Tcp(s)) => OwnedFd::from(s.into_std().ok()?),
            Stream::Plain(Plain::Unix(s)) => OwnedFd::from(s.into_std().ok()?),
            Stream::Tls(_) => return None,
        };
        Some((fd, self.replay))
    }

    /// Read these bytes again before anything else from the socket.
    pub fn replay(&mut self, bytes: Bytes) {
        debug_assert!(self.replay.is_empty());
        self.replay = bytes;
    }

    /// The connection speaks HTTP/2: stop following HTTP/1 framing. `h2` parses and
    /// checks the frames itself; we do not parse them a second time.
    pub fn speak_h2(&mut self) {
        self.scanner = None;
    }

    /// Write straight to the socket (for the few bytes sent before hyper takes over).
    pub async fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.inner.write_all(data).await?;
        self.inner.flush().await
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            if this.replay.is_empty() && buf.remaining() > 0 {
                // Add what the socket holds now, so the reader gets the request head
                // whole rather than its first few bytes: hyper, given a partial head,
                // grows its read buffer from 8 to 16 KiB (copying it) before it reads
                // again, and keeps the 16 KiB for the connection's life. If the socket
                // has nothing yet (or fails), the replayed bytes are this read; an
                // error shows again on the next read (as itself or as the end).
                let _ = this.read_inner(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        this.read_inner(cx, buf)
    }
}

impl TrackedStream {
    /// Read from the socket, noting the bytes (activity, metrics, framing scanner).
    fn read_inner(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            crate::metrics::bytes_received(buf.filled().len() - before);
            self.activity.touch();
            if let Some(scanner) = self.scanner.as_mut() {
                scanner.feed(&buf.filled()[before..]);
                if let Some(index) = scanner.conflict.take() {
                    let _ = self.activity.conflict.set(index);
                }
                if !scanner.is_on() {
                    self.scanner = None;
                }
            }
        }
        res
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if crate::http::sendfile::is_marker(data) {
            // hyper writes vectored here; a placeholder is never written as bytes.
            return self.poll_write_vectored(cx, &[io::IoSlice::new(data)]);
        }
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res {
            crate::metrics::bytes_sent(n);
        }
        this.stall.guard(cx, res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Placeholders of file segments (`http::sendfile`), on connections that send
        // them: the slices before the first one are written as usual, one in front goes
        // out by `sendfile`.
        let marker = match (this.activity.sendfile.get(), &this.inner) {
            (Some(_), Stream::Plain(_)) => bufs
                .iter()
                .position(|b| crate::http::sendfile::is_marker(b)),
            _ => None,
        };
        let res = match (marker, this.activity.sendfile.get(), &this.inner) {
            (Some(0), Some(queue), Stream::Plain(sock)) => {
                crate::http::sendfile::poll_sendfile(sock, queue, &bufs[0], cx)
            }
            (Some(first), ..) => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..first]),
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = res {
            crate::metrics::bytes_sent(n);
        }
        this.stall.guard(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        if let (Poll::Ready(Ok(())), Some(flushes)) = (&res, this.activity.flushes.get()) {
            flushes.flushed();
        }
        this.stall.guard(cx, res)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.keep_open.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
