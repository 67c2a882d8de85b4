//! The HTTP/2 header blocks `h2` refuses by itself, counted as `headers_too_large`.
//!
//! Over HTTP/2, `--max-header-size` is `h2`'s SETTINGS_MAX_HEADER_LIST_SIZE, and `h2`
//! enforces it inside its frame loop: a request whose decoded header list is over it
//! gets a 431 on its stream (RFC 9113 §10.5.1), and one that goes on growing far past
//! it closes the connection with GOAWAY (COMPRESSION_ERROR once CONTINUATION frames
//! carry more than the limit again, ENHANCE_YOUR_CALM once the decoded list passes four
//! times the limit). None of this reaches hyper: the request never becomes a stream
//! hyper accepts, and the 431 leaves the connection open, so nothing comes back on the
//! connection future either (as HTTP/1.1's 431 does, see [`super::connection_error`]).
//! hyper's builder has no callback for it and `h2` no counter.
//!
//! What `h2` does give is a `tracing` event at each of these refusals. So a worker with
//! metrics on installs a `tracing` subscriber that is interested in `h2`'s debug events
//! of the two modules that refuse header blocks and in nothing else (every other
//! callsite, in `h2` or any other crate, is disabled once, at registration, so it costs
//! what it costs with no subscriber), and counts the events that name a header block
//! over the limit. The events are `h2`'s wording, not an API: the end-to-end tests
//! (`tests/test_http2.py`, `tests/test_metrics.py`) fail if an `h2` upgrade changes it.

use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Dispatch, Event, Level, LevelFilter, Metadata};

use super::Rejection;

/// `h2`'s modules that refuse a header block, and what their events say when they do.
const REFUSALS: &[(&str, &[&str])] = &[
    // The 431 on the request's stream (`Streams::recv_headers`).
    (
        "h2::proto::streams::recv",
        &["REQUEST_HEADER_FIELDS_TOO_LARGE"],
    ),
    // GOAWAY(ENHANCE_YOUR_CALM) for a list decoding to over four times the limit;
    // GOAWAY(COMPRESSION_ERROR) for CONTINUATION frames past the limit again.
    (
        "h2::codec::framed_read",
        &[
            "header list size over abuse limit",
            "header block size over ignorable limit",
        ],
    ),
];

/// Start counting `h2`'s refusals in this process (once; a later call does nothing).
pub fn watch() {
    // Only fails when a global subscriber is set already; gristmill sets none elsewhere.
    let _ = tracing_core::dispatcher::set_global_default(Dispatch::new(H2Refusals));
}

/// The subscriber: see the module docs.
struct H2Refusals;

fn patterns(meta: &Metadata<'_>) -> Option<&'static [&'static str]> {
    if !meta.is_event() || *meta.level() != Level::DEBUG {
        return None;
    }
    REFUSALS
        .iter()
        .find(|(target, _)| meta.target() == *target)
        .map(|(_, patterns)| *patterns)
}

impl Subscriber for H2Refusals {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if patterns(meta).is_some() {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        patterns(meta).is_some()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Trace-level callsites (most of `h2`'s) stay off without being looked at.
        Some(LevelFilter::DEBUG)
    }

    fn event(&self, event: &Event<'_>) {
        let Some(patterns) = patterns(event.metadata()) else {
            return;
        };
        // These events are all error paths (rare), so formatting the message is fine.
        let mut message = Message(String::new());
        event.record(&mut message);
        if patterns.iter().any(|p| message.0.contains(p)) {
            super::rejected(Rejection::HeadersTooLarge);
        }
    }

    // No span is ever enabled (`register_callsite` says never to all of them).
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// An event's `message` field, formatted.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}
