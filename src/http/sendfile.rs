//! `sendfile(2)` under hyper, for file bodies on cleartext HTTP/1.1.
//!
//! hyper owns the socket and writes what the body yields, so a file cannot be handed to
//! it as a descriptor. Instead a file body on such a connection yields *placeholder*
//! chunks: slices of one zero-filled region ([`marker`]) that is never read, each with
//! the length of the file segment it stands for, so hyper's framing (Content-Length,
//! chunk sizes) comes out right. The segment itself (file, offset, length) goes into the
//! connection's [`FileQueue`] in the same order. hyper's HTTP/1 writer, with vectored
//! writes on (its "queue" strategy: body chunks are queued as they are, never copied
//! into its head buffer), hands every chunk to the connection's stream as an `iovec`;
//! the stream (`net::TrackedStream`) asks [`is_marker`] of each and writes:
//! - the plain slices before the first placeholder with `writev`, as usual;
//! - a placeholder in front with [`poll_sendfile`]: `sendfile` from the queued segment,
//!   at most that many bytes, returning how many went out.
//!
//! Partial writes need nothing special: hyper advances its buffers by the count we
//! return and calls again with the rest of the placeholder (a shorter slice of the same
//! region), and the queued segment advanced by the same count. `EAGAIN` (the socket's
//! send buffer is full) registers for writability and returns `Pending`, which is
//! hyper's backpressure as with any write, and the send timeout applies as to writes.
//!
//! Each segment's placeholder starts at its own place in the region ([`SLOTS`] places,
//! in turn), so a placeholder names its segment by address: the one whose start plus
//! bytes sent so far is the placeholder's address. Segments in front of it were
//! abandoned (a body cut short by hyper) and are dropped; a placeholder that names no
//! queued segment (which would be a bug) fails the write and so the connection: the
//! client never gets the zeros, nor another file's bytes.
//!
//! Only connections that are cleartext, HTTP/1 and a real socket get a queue
//! (`ConnActivity::enable_sendfile`); on TLS and HTTP/2 file bodies read chunks instead
//! (`http::file`). The region is a zeroed allocation that is never touched, so it costs
//! address space, not memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;

use crate::net::Plain;

/// The longest placeholder: a file segment longer than this is queued in pieces (which
/// also bounds one `sendfile` call, so one large file cannot hog the thread).
pub const MARK_MAX: usize = 1 << 20;

/// Where placeholders may start: this many places, [`SLOT`] bytes apart.
const SLOTS: usize = 4096;
const SLOT: usize = 256;

fn region() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    // calloc'd zero pages that are never written or read: no resident memory.
    REGION.get_or_init(|| Box::leak(vec![0u8; SLOTS * SLOT + MARK_MAX].into_boxed_slice()))
}

/// A placeholder chunk of `len` bytes (at most [`MARK_MAX`]) at `start` in the region.
fn marker(start: usize, len: usize) -> Bytes {
    Bytes::from_static(&region()[start..start + len])
}

/// Whether `buf` is (what is left of) a placeholder.
pub fn is_marker(buf: &[u8]) -> bool {
    let r = region();
    let (start, p) = (r.as_ptr() as usize, buf.as_ptr() as usize);
    !buf.is_empty() && p >= start && p < start + r.len()
}

/// One file segment a placeholder stands for.
struct Segment {
    file: Arc<File>,
    offset: u64,
    /// Bytes left to send.
    len: usize,
    /// Where the rest of its placeholder starts in the region.
    at: usize,
}

#[derive(Default)]
struct Queue {
    segments: VecDeque<Segment>,
    /// Placeholders handed out so far (picks the next one's slot).
    handed: usize,
}

/// The file segments of one connection, in the order their placeholders were yielded.
#[derive(Default)]
pub struct FileQueue(parking_lot::Mutex<Queue>);

impl FileQueue {
    /// Queue a segment and return its placeholder (`len` at most [`MARK_MAX`]).
    pub fn push(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len > 0 && len <= MARK_MAX);
        let mut q = self.0.lock();
        let at = (q.handed % SLOTS) * SLOT;
        q.handed = q.handed.wrapping_add(1);
        q.segments.push_back(Segment {
            file: file.clone(),
            offset,
            len,
            at,
        });
        marker(at, len)
    }
}

/// Send the segment that the placeholder `mark` (in front of hyper's buffers) stands for
/// to `sock`, at most `mark.len()` bytes.
pub fn poll_sendfile(
    sock: &Plain,
    queue: &FileQueue,
    mark: &[u8],
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let at = mark.as_ptr() as usize - region().as_ptr() as usize;
    let mut q = queue.0.lock();
    while q.segments.front().is_some_and(|s| s.at != at) {
        q.segments.pop_front(); // abandoned: its body was cut short
    }
    let Some(seg) = q.segments.front_mut() else {
        return Poll::Ready(Err(io::Error::other(
            "sendfile placeholder without a queued file segment",
        )));
    };
    let want = mark.len().min(seg.len);
    loop {
        ready!(poll_write_ready(sock, cx))?;
        let (out, file) = (sock.raw_fd(), seg.file.as_raw_fd());
        let sent = try_io(sock, || {
            let mut off = seg.offset as libc::off_t;
            // SAFETY: two open descriptors owned by live objects; `off` is ours.
            let n = unsafe { libc::sendfile(out, file, &mut off, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while sent",
                )))
            }
            Ok(n) => {
                seg.offset += n as u64;
                seg.len -= n;
                seg.at += n;
                if seg.len == 0 {
                    q.segments.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

fn poll_write_ready(sock: &Plain, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match sock {
        Plain::Tcp(s) => s.poll_write_ready(cx),
        Plain::Unix(s) => s.poll_write_ready(cx),
    }
}

/// Run `f` as a write on `sock`; a `WouldBlock` from it clears tokio's readiness, so the
/// next `poll_write_ready` waits for the socket.
fn try_io(sock: &Plain, f: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
    match sock {
        Plain::Tcp(s) => s.try_io(Interest::WRITABLE, f),
        Plain::Unix(s) => s.try_io(Interest::WRITABLE, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_recognised_by_address() {
        let m = marker(SLOT, 100);
        assert!(is_marker(&m));
        assert!(is_marker(&m[50..]));
        assert!(!is_marker(&m[..0]));
        assert!(!is_marker(&[0u8; 100]));
        assert!(!is_marker(&Bytes::from(vec![0u8; 10])));
    }
}
