//! The request body as the interfaces see it, whatever the HTTP version: hyper's body
//! for HTTP/1.1 and HTTP/2, or the request stream of an HTTP/3 request
//! ([`crate::http3::body::H3Body`]).
//!
//! One enum rather than a type parameter through both interfaces: everything past the
//! server reads a body only through [`http_body::Body`], and a match per frame costs
//! nothing next to the read itself. [`BodyError`] keeps the distinctions the
//! interfaces make on a failed read (the client went away, or sent a malformed body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::http3::body::{H3Body, H3BodyError};

/// A request body (see the module docs).
pub enum Incoming {
    Hyper(hyper::body::Incoming),
    H3(Box<H3Body>),
}

impl From<hyper::body::Incoming> for Incoming {
    fn from(body: hyper::body::Incoming) -> Self {
        Incoming::Hyper(body)
    }
}

/// Why reading a request body failed.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    H3(H3BodyError),
}

impl BodyError {
    /// The body ended before it was complete (the client closed or reset the stream).
    pub fn is_incomplete_message(&self) -> bool {
        match self {
            BodyError::Hyper(e) => e.is_incomplete_message(),
            BodyError::H3(e) => e.is_incomplete(),
        }
    }

    /// The connection closed under the body.
    pub fn is_closed(&self) -> bool {
        match self {
            BodyError::Hyper(e) => e.is_closed(),
            BodyError::H3(_) => false,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::H3(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => e.source(),
            BodyError::H3(e) => e.source(),
        }
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Incoming::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Hyper))),
            Incoming::H3(b) => Pin::new(&mut **b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::H3))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Incoming::Hyper(b) => b.is_end_stream(),
            Incoming::H3(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Incoming::Hyper(b) => b.size_hint(),
            Incoming::H3(b) => b.size_hint(),
        }
    }
}
