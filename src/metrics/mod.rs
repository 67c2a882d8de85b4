//! Prometheus metrics (`--metrics-bind`): what a worker counts, and where.
//!
//! Each worker writes its counters, gauges and histogram buckets into its own
//! shared-memory segment ([`shm`]); a separate metrics process (`python -m
//! gristmill.metrics`) reads every segment on each scrape and renders one view across
//! the workers with `prometheus-client`. The supervisor folds the counters of a worker
//! that exited into a "retired" segment, so the totals never go down across recycling
//! and SIGHUP. Why shared memory rather than the supervisor aggregating over pipes:
//! see "Metrics" in `docs/deployment.md`.
//!
//! The hot path is one relaxed atomic add per event on memory no other writer touches
//! (no lock, no allocation, no syscall); with metrics off, [`get`] is `None` and each
//! event costs one load and one branch.
//!
//! The slot layout is fixed by the lists below ([`layout`] describes it to Python,
//! which names the series); changing it means bumping [`shm::VERSION`].

mod h2;
pub mod py;
pub mod shm;

use std::sync::OnceLock;
use std::time::Instant;

use http::{Method, StatusCode, Version};

use shm::Segment;

static SEGMENT: OnceLock<Segment> = OnceLock::new();

/// This worker's segment, when metrics are on.
#[inline]
pub fn get() -> Option<&'static Segment> {
    SEGMENT.get()
}

/// Create this process's segment at `path` (the worker calls it once, before serving).
pub fn attach(path: &std::path::Path) -> std::io::Result<()> {
    let seg = Segment::create(path, SLOTS, 0, shm::LIVE)?;
    let _ = SEGMENT.set(seg);
    // HTTP/2's header blocks over the limit are refused inside `h2`: see [`h2`].
    h2::watch();
    Ok(())
}

/// Record the worker's interface (1 WSGI, 2 ASGI) in its segment's header.
pub fn set_interface(asgi: bool) {
    if let Some(m) = get() {
        m.set_interface(if asgi { 2 } else { 1 });
    }
}

/// The request methods counted by name; every other method is `other`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
/// HTTP versions (HTTP/0.9 and 1.0 count as `1.0`; `3` is kept for HTTP/3).
pub const VERSIONS: [&str; 4] = ["1.0", "1.1", "2", "3"];
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the request-duration buckets, in microseconds (then `+Inf`).
pub const DURATION_BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Declares [`Rejection`], the requests the server answers itself, without the
/// application, because a limit refused them: variant, `reason` label, status code.
macro_rules! rejections {
    ($($variant:ident = $label:literal, $status:literal;)+) => {
        /// A request refused by a limit (`gristmill_rejections_total{reason, status}`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Rejection { $($variant),+ }

        impl Rejection {
            pub const LABELS: &'static [(&'static str, u16)] = &[$(($label, $status)),+];
        }
    };
}

rejections! {
    // 400 before the application: malformed head (hyper), bad framing (validate).
    BadRequest = "bad_request", 400;
    // The request head did not arrive within --header-read-timeout: closed (no answer).
    HeaderTimeout = "header_timeout", 408;
    // A request body stalled past --body-read-timeout.
    BodyTimeout = "body_timeout", 408;
    // A body over --max-body-size (declared, or grown past it).
    BodyTooLarge = "body_too_large", 413;
    // A head over --max-header-size or --max-headers.
    HeadersTooLarge = "headers_too_large", 431;
    // --limit-concurrency reached: 503 without calling the application.
    LimitConcurrency = "limit_concurrency", 503;
    // --request-timeout: the application call ran too long, 504.
    RequestTimeout = "request_timeout", 504;
    // New kinds go here (and nowhere else). A static file's 404 is an answer, not a
    // rejection: it counts in the requests by status class.
}

/// Why workers start and exit (`gristmill_worker_{starts,exits}_total{reason}`): the
/// supervisor counts these, by label, in the retired segment (`gristmill.metrics`).
pub const WORKER_START_REASONS: [&str; 6] = [
    "initial", "crashed", "hung", "recycle", "reload", "scale_up",
];
pub const WORKER_EXIT_REASONS: [&str; 11] = [
    "max_requests",
    "worker_lifetime",
    "worker_max_rss",
    "request_timeout",
    "hung",
    "reload",
    "reload_aborted",
    "scale_down",
    "shutdown",
    "crashed",
    "startup_failed",
];
pub const TLS_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];

// --- slot layout ---------------------------------------------------------------------

const N_REQUESTS: usize = METHODS.len() * VERSIONS.len() * STATUS_CLASSES.len();
const REQUESTS: usize = 0;
const DURATION: usize = REQUESTS + N_REQUESTS; // one per bucket, then +Inf
const DURATION_SUM_US: usize = DURATION + DURATION_BUCKETS_US.len() + 1;
const IN_FLIGHT: usize = DURATION_SUM_US + 1;
const CONNS_OPEN: usize = IN_FLIGHT + 1;
const CONNS_TOTAL: usize = CONNS_OPEN + 1;
const BYTES_IN: usize = CONNS_TOTAL + 1;
const BYTES_OUT: usize = BYTES_IN + 1;
const WS_OPEN: usize = BYTES_OUT + 1;
const WS_TOTAL: usize = WS_OPEN + 1;
const WS_MSGS_IN: usize = WS_TOTAL + 1;
const WS_MSGS_OUT: usize = WS_MSGS_IN + 1;
const TLS: usize = WS_MSGS_OUT + 1;
const REJECTIONS: usize = TLS + TLS_RESULTS.len();
const WORKER_STARTS: usize = REJECTIONS + Rejection::LABELS.len();
const WORKER_EXITS: usize = WORKER_STARTS + WORKER_START_REASONS.len();
/// Slots in a segment.
pub const SLOTS: usize = WORKER_EXITS + WORKER_EXIT_REASONS.len();

/// Whether slot `i` is a counter (folded on retirement) rather than a gauge.
pub fn is_counter(i: usize) -> bool {
    !matches!(i, IN_FLIGHT | CONNS_OPEN | WS_OPEN)
}

/// One metric family as Python renders it: `(name, kind, help, label names, series)`,
/// each series `(label values, slot)`. Histograms are described by [`duration_layout`].
pub type Family = (
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<(Vec<String>, usize)>,
);

fn scalar(name: &'static str, kind: &'static str, help: &'static str, slot: usize) -> Family {
    (name, kind, help, vec![], vec![(vec![], slot)])
}

fn labelled(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &[&str],
    first: usize,
) -> Family {
    let series = values
        .iter()
        .enumerate()
        .map(|(i, v)| (vec![(*v).to_owned()], first + i))
        .collect();
    (name, "counter", help, vec![label], series)
}

/// Every family but the duration histogram, in slot order.
pub fn layout() -> Vec<Family> {
    let mut requests = Vec::with_capacity(N_REQUESTS);
    for (m, method) in METHODS.iter().enumerate() {
        for (v, version) in VERSIONS.iter().enumerate() {
            for (s, class) in STATUS_CLASSES.iter().enumerate() {
                let labels = vec![(*method).into(), (*version).into(), (*class).into()];
                requests.push((labels, request_slot(m, v, s)));
            }
        }
    }
    let rejections = Rejection::LABELS
        .iter()
        .enumerate()
        .map(|(i, (reason, status))| (vec![(*reason).into(), status.to_string()], REJECTIONS + i))
        .collect();
    vec![
        (
            "gristmill_requests",
            "counter",
            "HTTP requests answered, by method, HTTP version and status class.",
            vec!["method", "http_version", "status_class"],
            requests,
        ),
        scalar(
            "gristmill_requests_in_flight",
            "gauge",
            "Requests whose response is not complete yet.",
            IN_FLIGHT,
        ),
        scalar(
            "gristmill_connections_open",
            "gauge",
            "Open client connections.",
            CONNS_OPEN,
        ),
        scalar(
            "gristmill_connections",
            "counter",
            "Client connections accepted.",
            CONNS_TOTAL,
        ),
        scalar(
            "gristmill_received_bytes",
            "counter",
            "Bytes read from clients (after TLS).",
            BYTES_IN,
        ),
        scalar(
            "gristmill_sent_bytes",
            "counter",
            "Bytes written to clients (before TLS).",
            BYTES_OUT,
        ),
        scalar(
            "gristmill_websocket_connections_open",
            "gauge",
            "Open WebSocket connections.",
            WS_OPEN,
        ),
        scalar(
            "gristmill_websocket_connections",
            "counter",
            "WebSocket connections opened (after the upgrade).",
            WS_TOTAL,
        ),
        (
            "gristmill_websocket_messages",
            "counter",
            "WebSocket data messages (text and binary), by direction.",
            vec!["direction"],
            vec![
                (vec!["received".into()], WS_MSGS_IN),
                (vec!["sent".into()], WS_MSGS_OUT),
            ],
        ),
        labelled(
            "gristmill_tls_handshakes",
            "TLS handshakes, by result (ok, failed, timeout).",
            "result",
            &TLS_RESULTS,
            TLS,
        ),
        (
            "gristmill_rejections",
            "counter",
            "Requests refused by a limit without calling the application, by reason.",
            vec!["reason", "status"],
            rejections,
        ),
        labelled(
            "gristmill_worker_starts",
            "Worker processes started, by reason.",
            "reason",
            &WORKER_START_REASONS,
            WORKER_STARTS,
        ),
        labelled(
            "gristmill_worker_exits",
            "Worker processes that exited, by reason.",
            "reason",
            &WORKER_EXIT_REASONS,
            WORKER_EXITS,
        ),
    ]
}

/// The duration histogram: (bucket bounds in seconds, first bucket slot, sum slot).
pub fn duration_layout() -> (Vec<f64>, usize, usize) {
    let bounds = DURATION_BUCKETS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .collect();
    (bounds, DURATION, DURATION_SUM_US)
}

const fn request_slot(method: usize, version: usize, class: usize) -> usize {
    REQUESTS + (method * VERSIONS.len() + version) * STATUS_CLASSES.len() + class
}

// --- the hot path --------------------------------------------------------------------

/// What a request is counted under, taken from its head before it is handed on.
#[derive(Clone, Copy, Debug)]
pub struct RequestKind {
    method: u8,
    version: u8,
}

impl RequestKind {
    pub fn of(method: &Method, version: Version) -> RequestKind {
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::PATCH => 5,
            Method::OPTIONS => 6,
            Method::CONNECT => 7,
            Method::TRACE => 8,
            _ => 9,
        };
        let version = match version {
            Version::HTTP_11 => 1,
            Version::HTTP_2 => 2,
            Version::HTTP_3 => 3,
            _ => 0,
        };
        RequestKind { method, version }
    }

    /// The response's head is ready: count the request by its status class.
    pub fn answered(self, status: StatusCode) {
        if let Some(m) = get() {
            let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
            m.add(
                request_slot(self.method as usize, self.version as usize, class),
                1,
            );
        }
    }
}

/// A request in flight: counted in `requests_in_flight` until dropped (when its
/// response is complete or abandoned), then its duration goes into the histogram.
pub struct InFlight {
    started: Instant,
}

impl InFlight {
    pub fn start() -> Option<InFlight> {
        let m = get()?;
        m.add(IN_FLIGHT, 1);
        Some(InFlight {
            started: Instant::now(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = get() {
            m.sub(IN_FLIGHT, 1);
            let us = self.started.elapsed().as_micros() as u64;
            let bucket = DURATION_BUCKETS_US
                .iter()
                .position(|&b| us <= b)
                .unwrap_or(DURATION_BUCKETS_US.len());
            m.add(DURATION + bucket, 1);
            m.add(DURATION_SUM_US, us);
        }
    }
}

/// An open connection (or WebSocket), counted until dropped.
pub struct Open(usize);

impl Open {
    pub fn connection() -> Option<Open> {
        Open::start(CONNS_OPEN, CONNS_TOTAL)
    }

    pub fn websocket() -> Option<Open> {
        Open::start(WS_OPEN, WS_TOTAL)
    }

    fn start(gauge: usize, total: usize) -> Option<Open> {
        let m = get()?;
        m.add(gauge, 1);
        m.add(total, 1);
        Some(Open(gauge))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(m) = get() {
            m.sub(self.0, 1);
        }
    }
}

#[inline]
pub fn bytes_received(n: usize) {
    if let Some(m) = get() {
        m.add(BYTES_IN, n as u64);
    }
}

#[inline]
pub fn bytes_sent(n: usize) {
    if let Some(m) = get() {
        m.add(BYTES_OUT, n as u64);
    }
}

pub fn ws_message(sent: bool) {
    if let Some(m) = get() {
        m.add(if sent { WS_MSGS_OUT } else { WS_MSGS_IN }, 1);
    }
}

/// A TLS handshake's result, an index into [`TLS_RESULTS`].
pub fn tls_handshake(result: usize) {
    if let Some(m) = get() {
        m.add(TLS + result, 1);
    }
}

pub fn rejected(kind: Rejection) {
    if let Some(m) = get() {
        m.add(REJECTIONS + kind as usize, 1);
    }
}

/// The rejection a status the server answered itself stands for, for the checks that
/// only know the status (`http::validate`).
pub fn rejected_status(status: StatusCode) {
    let kind = match status.as_u16() {
        400 => Rejection::BadRequest,
        408 => Rejection::BodyTimeout,
        413 => Rejection::BodyTooLarge,
        431 => Rejection::HeadersTooLarge,
        503 => Rejection::LimitConcurrency,
        504 => Rejection::RequestTimeout,
        _ => return,
    };
    rejected(kind);
}

/// A connection ended with `e`: count the refusals hyper made itself (a head too
/// large: 431; a malformed head: 400; no head within the timeout: closed).
pub fn connection_error(e: &hyper::Error) {
    if get().is_none() {
        return;
    }
    if e.is_parse_too_large() {
        rejected(Rejection::HeadersTooLarge);
    } else if e.is_parse() {
        rejected(Rejection::BadRequest);
    } else if e.is_timeout() {
        rejected(Rejection::HeaderTimeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_every_slot_once() {
        let mut seen = vec![false; SLOTS];
        for (_, _, _, labels, series) in layout() {
            for (values, slot) in series {
                assert_eq!(values.len(), labels.len());
                assert!(!seen[slot], "slot {slot} twice");
                seen[slot] = true;
            }
        }
        let (bounds, first, sum) = duration_layout();
        seen[first..=first + bounds.len()].fill(true);
        seen[sum] = true;
        assert!(seen.iter().all(|s| *s), "a slot is in no family");
    }
}
