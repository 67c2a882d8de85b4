//! A WebSocket with permessage-deflate (RFC 7692), framed by yawc.
//!
//! Why yawc: tokio-tungstenite 0.30 has no permessage-deflate, and writing our own
//! compressed framing under it would mean parsing frames a library already parses.
//! yawc implements RFC 6455 and RFC 7692 over any tokio byte stream (so the same code
//! serves HTTP/1.1 upgrades and HTTP/2 extended CONNECT streams), passes the Autobahn
//! suite, and with its `zlib` feature (flate2 on zlib-rs, pure Rust) compresses and
//! decompresses with any window of 9 to 15 bits, which `server_max_window_bits` and
//! `client_max_window_bits` need. We negotiate ourselves (`super::ws_deflate`) and hand
//! yawc the agreed parameters with the stream.
//!
//! Limits: yawc checks every frame's length against `--ws-max-size` before reading it,
//! and inflates a compressed message only up to that size, so a deflate bomb is stopped
//! at the limit (close code 1009) without inflating past it. Messages under
//! [`COMPRESS_THRESHOLD`] bytes are sent uncompressed. The deflate and inflate state is
//! built on a socket's first compressed message (an idle socket costs none), and with
//! no context takeover it goes back to a per-worker pool between messages.
//!
//! yawc answers pings and the peer's close frame by itself, and on a protocol error
//! queues a close frame with the code; [`Deflated::flush_queued`] writes such frames out.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::OnceLock;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::Message;
use yawc::close::CloseCode;
use yawc::{CompressionLevel, DeflatePool, Frame, OpCode, Options, Role, WebSocket, WebSocketError};

use super::ws_deflate::Agreed;
use super::ws_frames::{Io, Read};

/// Messages shorter than this go out uncompressed: deflate would save little or nothing
/// on them and cost a compressor's time (and, for the first, its memory).
pub const COMPRESS_THRESHOLD: usize = 128;

/// Deflate states kept for reuse by sockets without context takeover (per process).
const POOL_CAPACITY: usize = 64;

fn pool() -> DeflatePool {
    static POOL: OnceLock<DeflatePool> = OnceLock::new();
    POOL.get_or_init(|| DeflatePool::new(POOL_CAPACITY)).clone()
}

/// A compressed socket.
pub struct Deflated {
    ws: WebSocket<Io>,
    /// We sent a close frame: the peer's answer to it needs no answer of ours.
    sent_close: bool,
}

impl Deflated {
    pub fn new(io: Io, max_size: usize, agreed: &Agreed) -> Self {
        // yawc's limits are exclusive; ours admits a message of exactly `max_size`.
        let limit = max_size.saturating_add(1);
        let options = Options::default()
            .with_compression_level(CompressionLevel::fast())
            .with_compression_threshold(COMPRESS_THRESHOLD)
            .with_deflate_pool(pool())
            .with_limits(limit, limit)
            .with_utf8();
        let params = agreed.frame_layer_params();
        let ws = WebSocket::from_stream_with_extensions(io, Role::Server, Some(&params), options)
            .expect("compression is enabled in the options");
        Deflated {
            ws,
            sent_close: false,
        }
    }

    pub async fn send(&mut self, msg: Message) -> Result<(), ()> {
        let frame = match msg {
            Message::Text(t) => Frame::text(Bytes::from(t)),
            Message::Binary(b) => Frame::binary(b),
            Message::Ping(p) => Frame::ping(p),
            Message::Pong(p) => Frame::pong(p),
            Message::Close(c) => {
                self.sent_close = true;
                match c {
                    Some(c) => Frame::close(CloseCode::from(u16::from(c.code)), c.reason.as_bytes()),
                    None => Frame::close(CloseCode::Normal, []),
                }
            }
            Message::Frame(_) => return Ok(()),
        };
        self.ws.send(frame).await.map_err(drop)
    }

    pub async fn next(&mut self) -> Read {
        match self.ws.next_frame().await {
            Ok(frame) => match frame.opcode() {
                OpCode::Text => match String::from_utf8(frame.into_payload().into()) {
                    Ok(t) => Read::Text(t),
                    // yawc checked it already; this cannot happen.
                    Err(e) => Read::Broken(1007, e.to_string()),
                },
                OpCode::Binary => Read::Binary(frame.into_payload()),
                OpCode::Pong => Read::Pong(frame.into_payload()),
                OpCode::Close => Read::Close(frame.close_code().map(|code| {
                    let reason = frame.close_reason().ok().flatten().unwrap_or_default();
                    (u16::from(code), reason.to_owned())
                })),
                _ => Read::Ping,
            },
            Err(WebSocketError::FrameTooLarge) => Read::TooBig("message too big".to_owned()),
            Err(WebSocketError::InvalidUTF8) => Read::Broken(1007, "invalid UTF-8".to_owned()),
            Err(WebSocketError::ConnectionClosed) => Read::Reset,
            // A corrupt deflate stream: yawc closes with 1011.
            Err(WebSocketError::IoError(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                ) =>
            {
                Read::Broken(1011, e.to_string())
            }
            Err(WebSocketError::IoError(_)) => Read::Reset,
            // Every other read error is a protocol violation, closed with 1002 (1003 for
            // an unknown opcode, as yawc answers it).
            Err(WebSocketError::InvalidOpCode(op)) => {
                Read::Broken(1003, format!("invalid opcode {op}"))
            }
            Err(e) => Read::Broken(1002, e.to_string()),
        }
    }

    /// Write out the control frames yawc queued (a pong, the answer to the peer's close,
    /// or the close frame of a protocol error), unless we closed first.
    pub async fn flush_queued(&mut self) -> Result<(), ()> {
        if self.sent_close {
            return Ok(());
        }
        // `poll_ready` writes what yawc queued; `poll_flush` pushes it out.
        let ws = &mut self.ws;
        poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
            .await
            .map_err(drop)?;
        poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
            .await
            .map_err(drop)
    }
}
