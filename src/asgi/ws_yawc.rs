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
//! and inflates each compressed frame only up to that size; we drop a fragmented
//! message as soon as its reassembled size passes it. A deflate bomb is so stopped with
//! close code 1009 having inflated at most the limit (one frame) or twice it (the
//! fragments so far, and the one that went over). Messages under
//! [`COMPRESS_THRESHOLD`] bytes are sent uncompressed. The deflate and inflate state is
//! built on a socket's first compressed message (an idle socket costs none), and with
//! no context takeover it goes back to a per-worker pool between messages.
//!
//! We use yawc's frame layer (`Streaming`), and reassemble fragmented messages and check
//! UTF-8 here. yawc answers pings and the peer's close frame by itself, and on a
//! protocol error it finds queues a close frame with the code; [`Deflated::flush_queued`]
//! writes such frames out. A fault found here gets its close frame from us.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::Message;
use yawc::close::CloseCode;
use yawc::streaming::Streaming;
use yawc::{
    CompressionLevel, DeflatePool, Frame, OpCode, Options, Role, WebSocket, WebSocketError,
};

use super::ws_deflate::Agreed;
use super::ws_frames::{close_message, Io, Read};

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
    /// yawc's frame layer (frames, control frames, compression), without its message
    /// layer: we reassemble fragments ourselves, so that every fault it does not report
    /// to the peer is one we know of and report.
    ws: Streaming<Io>,
    max_size: usize,
    /// A fragmented message being reassembled: its opcode and its (inflated) bytes.
    partial: Option<(OpCode, BytesMut)>,
    /// The last read fault was found here, not by yawc: no close frame is queued for it.
    own_fault: bool,
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
            .with_limits(limit, limit);
        let params = agreed.frame_layer_params();
        let ws = WebSocket::from_stream_with_extensions(io, Role::Server, Some(&params), options)
            .expect("compression is enabled in the options")
            .into_streaming();
        Deflated {
            ws,
            max_size,
            partial: None,
            own_fault: false,
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
                    Some(c) => {
                        Frame::close(CloseCode::from(u16::from(c.code)), c.reason.as_bytes())
                    }
                    None => Frame::close(CloseCode::Normal, []),
                }
            }
            Message::Frame(_) => return Ok(()),
        };
        self.ws.send(frame).await.map_err(drop)
    }

    /// A fault found here (yawc queued no close frame for it).
    fn fault(&mut self, read: Read) -> Read {
        self.own_fault = true;
        read
    }

    /// A whole message.
    fn message(&mut self, opcode: OpCode, payload: Bytes) -> Read {
        if opcode == OpCode::Binary {
            return Read::Binary(payload);
        }
        match String::from_utf8(payload.into()) {
            Ok(t) => Read::Text(t),
            Err(_) => self.fault(Read::Broken(1007, "invalid UTF-8".to_owned())),
        }
    }

    pub async fn next(&mut self) -> Read {
        loop {
            let frame = match self.ws.next_frame().await {
                Ok(frame) => frame,
                Err(e) => return yawc_fault(e),
            };
            let (opcode, fin, payload) = frame.into_parts();
            match opcode {
                OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                    let why = "a new message inside a fragmented one";
                    return self.fault(Read::Broken(1002, why.to_owned()));
                }
                OpCode::Text | OpCode::Binary if fin => return self.message(opcode, payload),
                OpCode::Text | OpCode::Binary => {
                    self.partial = Some((opcode, BytesMut::from(payload)));
                }
                OpCode::Continuation => {
                    let Some((_, buf)) = self.partial.as_mut() else {
                        let why = "a continuation frame outside a message";
                        return self.fault(Read::Broken(1002, why.to_owned()));
                    };
                    if buf.len() + payload.len() > self.max_size {
                        self.partial = None;
                        return self.fault(Read::TooBig("message too big".to_owned()));
                    }
                    buf.extend_from_slice(&payload);
                    if fin {
                        let (opcode, buf) = self.partial.take().expect("checked above");
                        return self.message(opcode, buf.freeze());
                    }
                }
                OpCode::Pong => return Read::Pong(payload),
                OpCode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Read::Close(code.map(|code| {
                        // yawc checked the reason is UTF-8 before it answered the close.
                        let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                        (code, reason)
                    }));
                }
                OpCode::Ping => return Read::Ping,
            }
        }
    }

    /// Tell the peer why the connection fails: yawc queued the close frame for a fault
    /// it found; for one found here, send it.
    pub async fn fail(&mut self, code: u16, reason: &str) -> Result<(), ()> {
        if std::mem::take(&mut self.own_fault) {
            self.send(close_message(code, reason)).await
        } else {
            self.flush_queued().await
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

/// What a read error yawc found means; it queued the close frame that says so.
fn yawc_fault(e: WebSocketError) -> Read {
    match e {
        WebSocketError::FrameTooLarge => Read::TooBig("message too big".to_owned()),
        WebSocketError::ConnectionClosed => Read::Reset,
        // A corrupt deflate stream: yawc closes with 1011.
        WebSocketError::IoError(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ) =>
        {
            Read::Broken(1011, e.to_string())
        }
        WebSocketError::IoError(_) => Read::Reset,
        WebSocketError::InvalidUTF8 => Read::Broken(1007, "invalid UTF-8".to_owned()),
        WebSocketError::InvalidOpCode(op) => Read::Broken(1003, format!("invalid opcode {op}")),
        // Every other read error is a protocol violation, closed with 1002.
        e => Read::Broken(1002, e.to_string()),
    }
}
