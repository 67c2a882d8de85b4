//! File response bodies: what static files, `wsgi.file_wrapper` and ASGI
//! `http.response.pathsend` send, through one path.
//!
//! A [`FileBody`] is a list of [`Part`]s: byte ranges of one open file, and literal
//! bytes between them (the part headers of a `multipart/byteranges` answer). It is sent
//! one of two ways, chosen when the body meets its connection (`ResponseBody::with_guard`):
//! - on cleartext HTTP/1.1, each range becomes `sendfile` placeholders (see
//!   `http::sendfile`): the bytes go from the page cache to the socket, never through
//!   user space;
//! - elsewhere (TLS, HTTP/2), the range is read in [`READ_CHUNK`] pieces, one at a time
//!   and only when hyper asks for the next frame: a slow client holds back the reads,
//!   and no thread waits on it. A piece in the page cache is read on the spot
//!   (`preadv2` with `RWF_NOWAIT`, which never waits for a disk); one that is not is
//!   read on a blocking thread (`spawn_blocking`).

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::body::BodyAborted;
use super::sendfile::{FileQueue, MARK_MAX};

/// Bytes read per chunk where `sendfile` cannot be used.
pub const READ_CHUNK: usize = 64 * 1024;

/// One piece of a file body.
pub enum Part {
    /// Literal bytes.
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    Range { offset: u64, len: u64 },
}

/// A response body read from one file; see the module docs.
pub struct FileBody {
    file: Arc<File>,
    parts: VecDeque<Part>,
    /// Bytes still to yield.
    left: u64,
    sendfile: Option<Arc<FileQueue>>,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: File, parts: Vec<Part>) -> Self {
        let left = parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Range { len, .. } => *len,
            })
            .sum();
        FileBody {
            file: Arc::new(file),
            parts: parts.into(),
            left,
            sendfile: None,
            reading: None,
        }
    }

    /// `len` bytes of `file` from `offset`.
    pub fn range(file: File, offset: u64, len: u64) -> Self {
        Self::new(file, vec![Part::Range { offset, len }])
    }

    /// Send at most `max` bytes: what a declared `Content-Length` allows (hyper would
    /// cut the body there anyway; cut here, a `sendfile` placeholder is never cut).
    pub fn truncate(&mut self, max: u64) {
        let mut keep = max;
        for part in self.parts.iter_mut() {
            match part {
                Part::Bytes(b) => {
                    let n = (b.len() as u64).min(keep);
                    b.truncate(n as usize);
                    keep -= n;
                }
                Part::Range { len, .. } => {
                    *len = (*len).min(keep);
                    keep -= *len;
                }
            }
        }
        self.left = self.left.min(max);
    }

    /// Bytes still to send.
    pub fn len(&self) -> u64 {
        self.left
    }

    /// Send the ranges with `sendfile` through this connection queue.
    pub fn use_sendfile(&mut self, queue: Arc<FileQueue>) {
        self.sendfile = Some(queue);
    }

    /// The next chunk; an error once the file turns out shorter than it was.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyAborted>>> {
        if let Some(reading) = self.reading.as_mut() {
            let read = ready!(Pin::new(reading).poll(cx));
            self.reading = None;
            return Poll::Ready(Some(match read {
                Ok(Ok(b)) => {
                    self.advance(b.len() as u64);
                    Ok(b)
                }
                Ok(Err(e)) => Err(BodyAborted(format!("reading the file failed: {e}"))),
                Err(e) => Err(BodyAborted(format!("reading the file failed: {e}"))),
            }));
        }
        loop {
            match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Bytes(b)) => {
                    let b = std::mem::take(b);
                    self.parts.pop_front();
                    if b.is_empty() {
                        continue;
                    }
                    self.left -= b.len() as u64;
                    return Poll::Ready(Some(Ok(b)));
                }
                Some(Part::Range { len: 0, .. }) => {
                    self.parts.pop_front();
                }
                Some(&mut Part::Range { offset, len }) => {
                    if let Some(queue) = &self.sendfile {
                        let n = len.min(MARK_MAX as u64) as usize;
                        let marker = queue.push(&self.file, offset, n);
                        self.advance(n as u64);
                        return Poll::Ready(Some(Ok(marker)));
                    }
                    let n = len.min(READ_CHUNK as u64) as usize;
                    if let Some(b) = read_cached(&self.file, offset, n) {
                        self.advance(b.len() as u64);
                        return Poll::Ready(Some(Ok(b)));
                    }
                    let file = self.file.clone();
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        read_exact_at(&file, offset, n)
                    }));
                    return self.poll_next(cx);
                }
            }
        }
    }

    /// `n` bytes of the front range went out.
    fn advance(&mut self, n: u64) {
        self.left -= n;
        if let Some(Part::Range { offset, len }) = self.parts.front_mut() {
            *offset += n;
            *len -= n;
            if *len == 0 {
                self.parts.pop_front();
            }
        }
    }
}

/// Up to `n` bytes of `file` at `offset` if the page cache has them now, without
/// waiting for a disk; `None` when it has none of them (or cannot say: no `RWF_NOWAIT`
/// on this file system), and at the end of the file (the blocking read reports it).
fn read_cached(file: &File, offset: u64, n: usize) -> Option<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = BytesMut::zeroed(n);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n,
    };
    // SAFETY: one iovec over our own buffer; the descriptor is open.
    let got = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if got <= 0 {
        return None;
    }
    buf.truncate(got as usize);
    Some(buf.freeze())
}

/// Exactly `n` bytes of `file` at `offset`; a file that ends before is an error.
pub fn read_exact_at(file: &File, mut offset: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(n);
    let mut filled = 0;
    while filled < n {
        match file.read_at(&mut buf[filled..], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while sent",
                ))
            }
            Ok(k) => {
                filled += k;
                offset += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_parts_in_order() {
        let file = tempfile_like();
        let mut body = FileBody::new(
            file,
            vec![
                Part::Bytes(Bytes::from_static(b"head")),
                Part::Range { offset: 0, len: 10 },
                Part::Bytes(Bytes::from_static(b"tail")),
            ],
        );
        assert_eq!(body.len(), 18);
        body.truncate(7);
        assert_eq!(body.len(), 7);
        let lens: Vec<u64> = body
            .parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Range { len, .. } => *len,
            })
            .collect();
        assert_eq!(lens, vec![4, 3, 0]);
    }

    fn tempfile_like() -> File {
        File::open("/dev/null").unwrap()
    }
}
