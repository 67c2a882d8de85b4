//! The frame layer under one accepted WebSocket, chosen once at the handshake: tokio-
//! tungstenite for an uncompressed socket, yawc (`super::ws_yawc`) for one that
//! negotiated permessage-deflate (tungstenite 0.30 has no RFC 7692). The socket task in
//! `super::ws` speaks to either through [`Frames`]: it sends tungstenite [`Message`]s
//! and reads [`Read`] events, and never sees which library did the framing.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{error::ProtocolError, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::ws_deflate::Agreed;
use super::ws_yawc::Deflated;

/// The upgraded connection's byte stream.
pub type Io = TokioIo<Upgraded>;

/// What one read from the peer produced.
pub enum Read {
    Text(String),
    Binary(Bytes),
    Pong(Bytes),
    /// A ping (answered by the frame layer).
    Ping,
    /// The peer's close frame: its code and reason, `None` when it carried none.
    Close(Option<(u16, String)>),
    /// A message over `--ws-max-size` (1009).
    TooBig(String),
    /// A protocol violation, with the close code it earns (1002, 1007, ...).
    Broken(u16, String),
    /// The connection dropped (1006).
    Reset,
}

/// One socket's frame layer.
pub enum Frames {
    Plain(Box<WebSocketStream<Io>>),
    Deflate(Box<Deflated>),
}

impl Frames {
    /// Wrap the upgraded stream: compressed with the agreed settings, else plain.
    pub async fn new(io: Io, max_size: usize, deflate: Option<&Agreed>) -> Self {
        match deflate {
            Some(agreed) => Frames::Deflate(Box::new(Deflated::new(io, max_size, agreed))),
            None => {
                let config = WebSocketConfig::default().max_message_size(Some(max_size));
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                Frames::Plain(Box::new(ws))
            }
        }
    }

    /// Send one message (text, binary, ping or close) and flush it.
    pub async fn send(&mut self, msg: Message) -> Result<(), ()> {
        match self {
            Frames::Plain(ws) => ws.send(msg).await.map_err(drop),
            Frames::Deflate(ws) => ws.send(msg).await,
        }
    }

    /// The next event from the peer.
    pub async fn next(&mut self) -> Read {
        match self {
            Frames::Plain(ws) => plain_read(ws.next().await),
            Frames::Deflate(ws) => ws.next().await,
        }
    }

    /// After the peer's close frame: write the close frame that answers it (both
    /// libraries queue it by themselves) and flush.
    pub async fn finish(&mut self) -> Result<(), ()> {
        match self {
            Frames::Plain(ws) => SinkExt::close(ws.as_mut()).await.map_err(drop),
            Frames::Deflate(ws) => ws.flush_queued().await,
        }
    }

    /// Fail the connection (RFC 6455 §7.1.7) after a [`Read::TooBig`] or
    /// [`Read::Broken`]: tell the peer why in a close frame (yawc may have queued it
    /// already, when it found the fault; tungstenite leaves it to us).
    pub async fn fail(&mut self, code: u16, reason: &str) -> Result<(), ()> {
        match self {
            Frames::Plain(ws) => ws.send(close_message(code, reason)).await.map_err(drop),
            Frames::Deflate(ws) => ws.fail(code, reason).await,
        }
    }
}

/// A close message with `code` and `reason`.
pub fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

fn plain_read(item: Option<Result<Message, WsError>>) -> Read {
    match item {
        Some(Ok(Message::Text(t))) => Read::Text(t.as_str().to_owned()),
        Some(Ok(Message::Binary(b))) => Read::Binary(b),
        Some(Ok(Message::Pong(p))) => Read::Pong(p),
        Some(Ok(Message::Close(frame))) => {
            Read::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
        }
        Some(Ok(_)) => Read::Ping, // pings (and raw frames) are answered by tungstenite
        Some(Err(WsError::Capacity(e))) => Read::TooBig(e.to_string()),
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => Read::Reset,
        Some(Err(WsError::Protocol(e))) => Read::Broken(1002, e.to_string()),
        Some(Err(WsError::Utf8(e))) => Read::Broken(1007, e),
        Some(Err(e)) => {
            crate::log::log(crate::log::DEBUG, &format!("websocket read failed: {e}"));
            Read::Reset
        }
        None => Read::Reset,
    }
}
