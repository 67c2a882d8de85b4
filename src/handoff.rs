//! Handing a retiring worker's idle keep-alive connections to a sibling.
//!
//! A worker replaced while clients are connected (recycling, a rolling restart) used to
//! close every keep-alive connection after one more response, and every client then
//! reconnected to the replacement: under load, one TCP teardown, handshake and accept
//! per connection, ~35-40 % of what a replacement costs (bench/RESULTS.md, session 13).
//! Instead, the retiring worker passes each idle HTTP/1.1 connection's socket, with the
//! bytes hyper had read but not yet parsed, to whichever sibling is listening, which
//! serves it from there as if it had accepted it. The client sees nothing: its next
//! request, on the wire already or not, is answered by the new worker.
//!
//! The way between workers is a Unix `SOCK_SEQPACKET` socket pair that the supervisor
//! creates once and every worker inherits: a connection is one message on the sending
//! end (one byte of tag, then the unparsed bytes; the socket as `SCM_RIGHTS`), read by
//! exactly one of the workers waiting on the receiving end. Only a worker told to
//! retire with a successor (`SIGUSR2` from the supervisor, see [`retire`]) hands its
//! connections over; a worker stopping with the whole server (`SIGTERM`) closes them
//! as before, and so does a retiring one once the whole server stops too. A worker that stops accepting takes the connections already queued for
//! it (as it does with its listeners' queues), unless it is the one retiring.
//!
//! What moves: cleartext HTTP/1.1 connections (TCP or Unix socket) that served at least
//! one request and have none in flight, without the PROXY protocol (their addresses
//! came from the header). TLS sessions, HTTP/2, upgraded connections and a connection
//! in the middle of a request finish as before (`Connection: close`).

use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::log;
use crate::net::TrackedStream;

/// The tag in front of a connection's unparsed bytes (a message is never empty).
const TAG: u8 = b'C';

/// The most unparsed bytes a connection may carry over; one with more (a burst of
/// pipelined requests) is finished by the retiring worker instead.
pub const MAX_BUFFERED: usize = 16 * 1024;

static RETIRING: AtomicBool = AtomicBool::new(false);
/// Connections this worker passed on, and those it had to close instead.
static HANDED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// This worker retires with a successor serving beside it: its idle connections go to
/// a sibling instead of being closed (set by the stop watcher on `SIGUSR2`).
pub fn retire() {
    RETIRING.store(true, Ordering::SeqCst);
}

/// Whether [`retire`] was called (and not [`abandon`]ed since).
pub fn retiring() -> bool {
    RETIRING.load(Ordering::SeqCst)
}

/// Told when a retiring worker stops handing over (see [`abandon`]).
fn abandoned_tx() -> &'static watch::Sender<bool> {
    static TX: OnceLock<watch::Sender<bool>> = OnceLock::new();
    TX.get_or_init(|| watch::Sender::new(false))
}

/// The whole server stops while this worker retires (`SIGTERM` after `SIGUSR2`): its
/// siblings stop accepting and take what was passed to them so far, so nothing more is
/// passed on. A connection waiting for its response to be done before it moves is
/// finished the way any draining worker finishes it (`Connection: close`).
pub fn abandon() {
    RETIRING.store(false, Ordering::SeqCst);
    abandoned_tx().send_replace(true);
}

/// Ready once [`abandon`] was called (at once if it was already).
pub async fn abandoned() {
    let mut rx = abandoned_tx().subscribe();
    let _ = rx.wait_for(|gone| *gone).await;
}

/// The drain's log line: how many idle connections went to a sibling (if any did, or
/// failed to).
pub fn log_handed() {
    let handed = HANDED.load(Ordering::Relaxed);
    let failed = FAILED.load(Ordering::Relaxed);
    if handed > 0 {
        log::log(
            log::INFO,
            &format!(
                "Passed {handed} idle connection{} on to the workers that stay",
                log::plural(handed as u64)
            ),
        );
    }
    if failed > 0 {
        log::log(
            log::WARNING,
            &format!(
                "{failed} idle connection{} could not be passed on and were closed",
                log::plural(failed as u64)
            ),
        );
    }
}

/// What passing a connection on still has to do once hyper let go of it: a boxed
/// future (or nothing), so that the room it takes in a connection's task is one
/// pointer, the same for every connection.
#[derive(Default)]
pub struct PassOn(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for PassOn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            None => Poll::Ready(()),
            Some(f) => f.as_mut().poll(cx),
        }
    }
}

/// Pass the connection under `io` on through `to`, with `read_buf`: the bytes hyper
/// read after the last request and did not parse. Over TLS (never asked) nothing is
/// passed. If it cannot be passed (too many bytes pending, the way is broken), the
/// connection is closed, as it would have been without a successor; that is logged.
pub fn pass_on(io: TrackedStream, read_buf: Bytes, to: Arc<Handoff>) -> PassOn {
    let Some((sock, replay)) = io.into_socket() else {
        return PassOn::default();
    };
    let mut buffered = replay.to_vec();
    buffered.extend_from_slice(&read_buf);
    PassOn(Some(Box::pin(async move {
        let result = if buffered.len() > MAX_BUFFERED {
            Err(io::Error::other(format!(
                "{} bytes of pipelined requests pending",
                buffered.len()
            )))
        } else {
            to.send(&sock, &buffered).await
        };
        match result {
            // Our copy of the socket closes here; the sibling holds its own.
            Ok(()) => drop(HANDED.fetch_add(1, Ordering::Relaxed)),
            Err(e) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                log::log(
                    log::DEBUG,
                    &format!("an idle connection could not be passed on: {e}"),
                );
                // SAFETY: shutdown(2) on the socket we own; it sends the FIN a close
                // without a successor would have sent.
                unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) };
            }
        }
    })))
}

/// The worker's two ends of the supervisor's socket pair.
pub struct Handoff {
    send: AsyncFd<OwnedFd>,
    recv: AsyncFd<OwnedFd>,
    /// Where messages are received (one reader per worker: the adopting task).
    buf: parking_lot::Mutex<Vec<u8>>,
}

impl Handoff {
    /// Take over the inherited ends (`send`, `recv`); must be called inside the runtime.
    pub fn from_inherited(send: RawFd, recv: RawFd) -> io::Result<Handoff> {
        let own = |fd: RawFd| -> io::Result<AsyncFd<OwnedFd>> {
            // SAFETY: the supervisor made these descriptors for this use and passes them
            // to the core alone, which now owns them.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let sock = socket2::Socket::from(fd);
            sock.set_nonblocking(true)?;
            sock.set_cloexec(true)?;
            // SAFETY: the descriptor is owned by the AsyncFd and closed only when it is
            // dropped (deregistered first).
            unsafe { AsyncFd::register(OwnedFd::from(sock)) }.map_err(io::Error::from)
        };
        Ok(Handoff {
            send: own(send)?,
            recv: own(recv)?,
            buf: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Pass `sock` on, with the bytes read from it that nobody parsed yet.
    pub async fn send(&self, sock: &OwnedFd, buffered: &[u8]) -> io::Result<()> {
        let tag = [TAG];
        let iov = [IoSlice::new(&tag), IoSlice::new(buffered)];
        let fds = [sock.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            let mut ready = self.send.writable().await?;
            match ready.try_io(|fd| {
                sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, &cmsg, flags, None)
                    .map_err(io::Error::from)
            }) {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next connection a sibling passed on: its socket and its unparsed bytes.
    pub async fn recv(&self) -> io::Result<(OwnedFd, Bytes)> {
        loop {
            let mut ready = self.recv.readable().await?;
            match ready.try_io(|fd| receive(fd.as_raw_fd(), &mut self.buf.lock())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// A connection already queued, without waiting: `None` when there is none.
    pub fn recv_queued(&self) -> Option<io::Result<(OwnedFd, Bytes)>> {
        match receive(self.recv.as_raw_fd(), &mut self.buf.lock()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

/// One message from the receiving end (non-blocking), received in `data`.
fn receive(fd: RawFd, data: &mut Vec<u8>) -> io::Result<(OwnedFd, Bytes)> {
    // Large enough for any message, so none is ever cut short: the messages are read
    // by several workers at once, so a size looked up first could be another's.
    data.resize(MAX_BUFFERED + 1, 0);
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, truncated, sock) = {
        let mut iov = [IoSliceMut::new(data)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg =
            recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), flags).map_err(io::Error::from)?;
        let mut sock = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS installed this descriptor in our table for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if sock.is_none() {
                        sock = Some(owned);
                    } // any other is closed here
                }
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (msg.bytes, truncated, sock)
    };
    let Some(sock) = sock else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a hand-off message without a socket",
        ));
    };
    if truncated || len == 0 || data[0] != TAG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a malformed hand-off message (its connection is closed)",
        ));
    }
    Ok((sock, Bytes::copy_from_slice(&data[1..len])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> Handoff {
        let (a, b) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)
            .expect("socketpair");
        use std::os::fd::IntoRawFd;
        Handoff::from_inherited(a.into_raw_fd(), b.into_raw_fd()).expect("handoff")
    }

    #[tokio::test]
    async fn a_socket_and_its_bytes_arrive_together() {
        let handoff = pair();
        let (mine, peer) = UnixStream::pair().unwrap();
        handoff
            .send(&OwnedFd::from(mine), b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (got, bytes) = handoff.recv().await.unwrap();
        assert_eq!(&bytes[..], b"GET / HTTP/1.1\r\n");
        // The descriptor that arrived is the same socket: what it writes, peer reads.
        let got = UnixStream::from(got);
        use std::io::{Read, Write};
        (&got).write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        (&peer).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    }

    #[tokio::test]
    async fn nothing_buffered_and_nothing_queued() {
        let handoff = pair();
        assert!(handoff.recv_queued().is_none());
        let (mine, _peer) = UnixStream::pair().unwrap();
        handoff.send(&OwnedFd::from(mine), b"").await.unwrap();
        let (_, bytes) = handoff.recv_queued().unwrap().unwrap();
        assert!(bytes.is_empty());
        assert!(handoff.recv_queued().is_none());
    }
}
