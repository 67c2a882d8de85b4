//! Sending a file body from a descriptor on a blocking thread, in chunks through the
//! response channel (bounded, so a slow client holds back the reads).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::body::{BodyAborted, Chunk};

/// Bytes read per chunk.
const FILE_CHUNK: usize = 256 * 1024;

/// Feed `len` bytes of `fd` from `offset` into `tx`. Returns early, without error, when
/// the client went away; a file that shrank aborts the response.
pub fn send_file(
    fd: OwnedFd,
    mut offset: u64,
    len: u64,
    tx: &mpsc::Sender<Chunk>,
) -> io::Result<()> {
    let file = std::fs::File::from(fd);
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(FILE_CHUNK);
        let mut buf = BytesMut::zeroed(want);
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            let _ = tx.blocking_send(Err(BodyAborted("file shorter than expected".into())));
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while sent",
            ));
        }
        buf.truncate(n);
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Ok(());
        }
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}
