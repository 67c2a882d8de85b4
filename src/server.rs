//! One way to serve, whatever the interface: accept loops over the inherited
//! listeners, one task per connection driving hyper, and the worker's lifecycle
//! (readiness, signals, graceful shutdown).
//!
//! The interface plugs in through [`Handler`], chosen once at start-up; connection
//! handling is generic over it, so there is no per-interface copy of this loop.
//!
//! Each connection: an optional TLS handshake (rustls; ALPN picks `h2` or
//! `http/1.1`), then the HTTP version (see [`choose_protocol`]), then hyper's HTTP/1.1
//! connection (with upgrades, for WebSocket) or its HTTP/2 connection, both
//! driven by the same watcher loop. We choose the version ourselves rather than with
//! hyper-util's `auto::Builder`: its sniffing falls back to HTTP/1.1 on the first byte
//! that differs from the HTTP/2 preface, so a broken preface would get an HTTP/1.1
//! `400` (also after ALPN chose `h2`), and with upgrades enabled it cannot be limited
//! to one version. Here a connection that starts like the preface (`PRI`), or that must
//! speak HTTP/2, and then breaks it gets SETTINGS + GOAWAY(PROTOCOL_ERROR) (RFC 9113
//! §3.4); `h2` itself closes without a GOAWAY in that case. After the preface, the
//! frames are `h2`'s alone: we do not parse them again. Where `h2` 0.4 answers a
//! protocol error with another code than RFC 9113 names, the tests say so (strict
//! xfails) rather than the server re-parsing frames to fix the code.
//!
//! Limits enforced here: `max_connections` (a semaphore; at the limit the accept loop
//! waits and asks idle keep-alive connections to close, so new clients are not starved
//! behind idle ones), `keepalive_timeout` (a watcher per connection closes it when no
//! request is in flight and no byte arrived for that long), hyper's own
//! `header_read_timeout`, `max_header_size` and `max_headers`, and for HTTP/2 the
//! reset-stream limits against rapid reset (see [`MAX_PENDING_ACCEPT_RESET_STREAMS`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use std::os::fd::RawFd;

use http::request::Parts;
use http::{Request, Response};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, HttpMode};
use crate::handoff::Handoff;
use crate::http::{validate, Incoming, ResponseBody};
use crate::lifecycle::{self, RequestCount, SupervisorPipe};
use crate::log;
use crate::net::{
    is_resource_exhaustion, ActiveGuard, Addrs, ConnActivity, ConnSlot, Listener, Plain, Stream,
    TrackedStream,
};
pub use crate::stop::Stop;
use crate::tls::TlsInfo;

/// What a connection tells its requests.
pub struct ConnCtx {
    pub addrs: Arc<Addrs>,
    /// This connection's slot under `max_connections`; an upgraded socket (WebSocket)
    /// and an ASGI application task take a share of it, so they keep counting after the
    /// connection ended and the graceful drain waits for them.
    pub slot: Arc<ConnSlot>,
    /// Flips to true when the worker starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Set on TLS connections.
    pub tls: Option<Arc<TlsInfo>>,
}

/// An application interface (WSGI or ASGI) as the server sees it.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request that passed the framing checks. `guard` must live in the
    /// returned body so the connection counts as busy until the body is sent.
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnCtx,
        guard: ActiveGuard,
        started: Instant,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;

    /// The access log, when it is on.
    fn access_log(&self) -> Option<&crate::access_log::AccessLog>;

    /// Access-log a request the server refused itself (400, 413).
    fn log_rejected(&self, parts: &Parts, conn: &ConnCtx, status: u16, started: Instant) {
        if let Some(access) = self.access_log() {
            let record = crate::access_log::Record::new(parts, conn.addrs.peer, status, 0, started);
            access.emit_detached(&record);
        }
    }
}

/// Resolves when the stop turns immediate (SIGQUIT during the drain).
async fn forced(stop: &mut watch::Receiver<Option<Stop>>) {
    if stop
        .wait_for(|s| *s == Some(Stop::Immediate))
        .await
        .is_err()
    {
        std::future::pending::<()>().await
    }
}

/// How long a draining worker waits for a request whose bytes are on their way: on a
/// fresh connection (queued before the drain), or already in an idle one's socket.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// A keep-alive connection whose last response ended less than this long before the
/// drain is between two requests of a busy client, not idle: its next request is most
/// likely already on the wire, and closing under it would fail it (HTTP/1.1 gives the
/// client no way to tell that it was never started). The drain waits out the rest of
/// this window for it before closing the connection.
const DRAIN_RECENT: Duration = Duration::from_millis(250);

struct Ctl {
    shutdown: watch::Receiver<bool>,
    pressure: watch::Receiver<u64>,
    requests: Arc<RequestCount>,
}

impl Ctl {
    /// Another handle on the same signals and counter (for a loop or a connection).
    fn clone_for_connection(&self) -> Ctl {
        let mut pressure = self.pressure.clone();
        // A new connection answers only the pressure that comes after it. (The accept
        // loops never look at theirs, so a clone would see every earlier rise as new:
        // a connection passed on by a sibling, idle on arrival, would be closed at once.)
        pressure.mark_unchanged();
        Ctl {
            shutdown: self.shutdown.clone(),
            pressure,
            requests: self.requests.clone(),
        }
    }
}

/// Serve until `stop` says so; then drain within the graceful timeout.
pub async fn run<H: Handler>(
    config: Arc<Config>,
    handler: Arc<H>,
    listeners: Vec<Listener>,
    mut stop: watch::Receiver<Option<Stop>>,
    supervisor: SupervisorPipe,
    handoff: Option<Arc<Handoff>>,
) -> std::io::Result<Stop> {
    let supervisor = Arc::new(supervisor);
    lifecycle::publish(&supervisor);
    let requests = Arc::new(RequestCount::new(config.max_requests, supervisor.clone()));
    // The stop reaches the accept loops first, then the connections: see below.
    let (stop_accepting_tx, stop_accepting_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (pressure_tx, pressure_rx) = watch::channel(0u64);
    let pressure_tx = Arc::new(pressure_tx);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let builder = Arc::new(Builders::new(&config, handoff.clone())?);

    let mut accept_tasks = Vec::new();
    let mut http3_tasks = Vec::new();
    let http3 = if config.http3 {
        let shared = Arc::new(crate::http3::Shared {
            handler: handler.clone(),
            config: config.clone(),
            requests: requests.clone(),
            concurrency: builder.concurrency.clone(),
            statics: builder.statics.clone(),
        });
        let (http3, tasks) = crate::http3::start(
            shared,
            &listeners,
            slots.clone(),
            pressure_tx.clone(),
            &shutdown_rx,
        )?;
        http3_tasks.extend(tasks);
        Some(http3)
    } else {
        None
    };
    let ctl = Ctl {
        shutdown: shutdown_rx.clone(),
        pressure: pressure_rx.clone(),
        requests: requests.clone(),
    };
    for listener in listeners {
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            handler.clone(),
            config.clone(),
            builder.clone(),
            slots.clone(),
            pressure_tx.clone(),
            stop_accepting_rx.clone(),
            ctl.clone_for_connection(),
        )));
    }
    if let Some(handoff) = &handoff {
        accept_tasks.push(tokio::spawn(adopt_loop(
            handoff.clone(),
            handler.clone(),
            config.clone(),
            builder.clone(),
            slots.clone(),
            pressure_tx.clone(),
            stop_accepting_rx.clone(),
            ctl.clone_for_connection(),
        )));
    }
    if handler.access_log().is_some() {
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::access_log::FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Some(access) = handler.access_log() {
                    access.flush();
                }
            }
        });
    }
    supervisor.send(lifecycle::READY);

    // A closed channel (the watcher thread is gone) can only mean stop at once.
    let decided = stop.wait_for(Option::is_some).await.map(|s| *s);
    let stopping = decided.ok().flatten().unwrap_or(Stop::Immediate);
    // The accept loops stop first and take what the kernel already queued for them
    // (`accept_loop`), before any open connection is told to close: a client whose
    // connection the drain closes reconnects at once, and with a listener shared with
    // the replacement worker that new connection is the replacement's to take. Taking
    // it here would answer it once with `Connection: close` and send the client round
    // again, a storm of reconnections on every rolling restart under load.
    let _ = stop_accepting_tx.send(true);
    for t in accept_tasks {
        let _ = t.await; // listeners are closed once their loop returns
    }
    let _ = shutdown_tx.send(true);
    let shutdown_tx = Arc::new(shutdown_tx);
    if builder.handoff.is_some() {
        // The whole server stops while this worker passes its connections on: told
        // again, the connections waiting for their moment finish as in any drain.
        let again = shutdown_tx.clone();
        tokio::spawn(async move {
            crate::handoff::abandoned().await;
            again.send_modify(|_| {});
        });
    }
    if stopping == Stop::Graceful {
        let open = config.max_connections - slots.available_permits();
        log::log(
            log::INFO,
            &format!(
                "Draining: accepting no more connections, finishing {open} open connection{}",
                log::plural(open as u64)
            ),
        );
    }
    for t in http3_tasks {
        let _ = t.await;
    }
    if stopping == Stop::Graceful {
        let all = config.max_connections as u32;
        let drained = tokio::select! {
            r = tokio::time::timeout(config.graceful_timeout, slots.acquire_many(all)) => r.is_ok(),
            _ = forced(&mut stop) => false,
        };
        if !drained {
            log::log(
                log::WARNING,
                "graceful timeout reached with requests in flight; stopping anyway",
            );
        }
    }
    crate::handoff::log_handed();
    if let Some(http3) = http3 {
        http3.finish().await;
    }
    if let Some(access) = handler.access_log() {
        access.flush();
    }
    Ok(stopping)
}

/// How connections are set up, built once per worker.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The worker's places for requests in flight (`--limit-concurrency`).
    concurrency: Option<Arc<Semaphore>>,
    /// `--static` mounts, answered before the application.
    statics: Option<Arc<crate::static_files::StaticFiles>>,
    /// The way to the sibling workers, for the idle connections of a retiring worker
    /// (`crate::handoff`).
    handoff: Option<Arc<Handoff>>,
}

impl Builders {
    fn new(config: &Config, handoff: Option<Arc<Handoff>>) -> std::io::Result<Builders> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_header_size(config.max_header_size)
            .max_headers(config.max_headers)
            .keep_alive(true)
            .half_close(false)
            // Vectored writes queue body chunks as they are (never copied into the head
            // buffer): `http::sendfile` depends on it.
            .writev(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            .initial_stream_window_size(config.http2_initial_stream_window_size)
            .initial_connection_window_size(config.http2_initial_connection_window_size)
            .adaptive_window(config.http2_adaptive_window)
            .max_frame_size(config.http2_max_frame_size)
            .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
            .keep_alive_interval(config.http2_keep_alive_interval)
            .keep_alive_timeout(config.http2_keep_alive_timeout)
            // Rapid reset (CVE-2023-44487): streams the client opens and resets before
            // the application has taken them. hyper sets no limit of its own here and
            // `h2` then defaults to 20; we say it explicitly so an upgrade that changes
            // the default does not silently change us. Past it, GOAWAY(ENHANCE_YOUR_CALM).
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            // The other half (RUSTSEC-2024-0003): streams *we* reset because the client
            // broke a rule on them (malformed headers, flow control). hyper's default is
            // 1024 per connection; past it, GOAWAY(ENHANCE_YOUR_CALM).
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        if config.ws && config.mode.is_asgi() {
            // WebSocket over HTTP/2 (RFC 8441): advertise extended CONNECT.
            h2.enable_connect_protocol();
        }
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(t, config.http).map_err(std::io::Error::other)?,
            )),
        };
        let concurrency = config
            .limit_concurrency
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS as u64) as usize)));
        let statics = match &config.static_files {
            None => None,
            Some(s) => Some(Arc::new(crate::static_files::StaticFiles::new(
                s,
                config.server_header,
            )?)),
        };
        Ok(Builders {
            h1,
            h2,
            tls,
            concurrency,
            statics,
            handoff,
        })
    }
}

/// HTTP/2 streams a client may open and reset before the server has accepted them
/// (the rapid-reset attack, CVE-2023-44487), at once; more closes the connection with
/// GOAWAY(ENHANCE_YOUR_CALM). `h2`'s own default, stated here.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// HTTP/2 streams the server may reset for a client's protocol errors over one
/// connection; more closes it with GOAWAY(ENHANCE_YOUR_CALM). hyper's default, stated.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the server writes to a client whose HTTP/2 preface is invalid: an empty
/// SETTINGS frame (the server preface) and GOAWAY(last stream 0, PROTOCOL_ERROR).
const BAD_PREFACE_REPLY: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, length 0, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, length 8, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 0x1, // PROTOCOL_ERROR
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
    /// Must be HTTP/2 but the preface is wrong.
    BadPreface,
    /// Closed (or timed out) before saying anything.
    Gone,
}

/// What a connection speaks: by `--http`, by ALPN over TLS, or by the first bytes.
///
/// `--http 1` never looks. `--http 2` and ALPN `h2` need the exact preface. Otherwise
/// (`auto`, cleartext or TLS without ALPN) bytes are read while they match the preface:
/// all 24 means HTTP/2; a difference within the first three bytes means HTTP/1.1 (no
/// method starts with `PRI`); a later one is a broken HTTP/2 preface. The bytes read
/// are replayed to hyper.
async fn choose_protocol(
    io: &mut TrackedStream,
    mode: HttpMode,
    alpn: Option<&[u8]>,
    timeout: Duration,
) -> Proto {
    let strict = match (mode, alpn) {
        (HttpMode::Http1, _) | (HttpMode::Auto, Some(b"http/1.1")) => return Proto::Http1,
        (HttpMode::Http2, _) | (HttpMode::Auto, Some(b"h2")) => true,
        (HttpMode::Auto, _) => false,
    };
    let mut buf = [0u8; 24];
    let mut filled = 0;
    let read = async {
        while filled < buf.len() {
            let n = io.read(&mut buf[filled..]).await.unwrap_or(0);
            if n == 0 {
                return if filled == 0 {
                    Proto::Gone
                } else {
                    Proto::BadPreface
                };
            }
            let start = filled;
            filled += n;
            if let Some(i) = (start..filled).find(|&i| buf[i] != PREFACE[i]) {
                return if strict || i >= 3 {
                    Proto::BadPreface
                } else {
                    Proto::Http1
                };
            }
        }
        Proto::Http2
    };
    let proto = tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Proto::Gone);
    io.replay(Bytes::copy_from_slice(&buf[..filled]));
    if proto == Proto::BadPreface && !strict && filled < 3 {
        // A few bytes, then the client closed: not HTTP/2; let hyper see it as HTTP/1.
        return Proto::Http1;
    }
    proto
}

#[allow(clippy::too_many_arguments)] // the worker's shared pieces, each passed once
async fn accept_loop<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<Builders>,
    slots: Arc<Semaphore>,
    pressure: Arc<watch::Sender<u64>>,
    mut stop_accepting: watch::Receiver<bool>,
    ctl: Ctl,
) {
    let mut last_exhaustion_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            // Every Python thread is stuck (`request_timeout`): new clients wait in the
            // listen queue for the replacement rather than behind the stuck calls.
            _ = lifecycle::accepting_paused(true), if config.request_timeout.is_some() => {
                tokio::select! {
                    _ = lifecycle::accepting_paused(false) => continue,
                    _ = stop_accepting.changed() => return,
                }
            }
            _ = stop_accepting.changed() => {
                // Connections the kernel already queued for this socket would be reset
                // when the last copy of the listener closes, perhaps after their client
                // sent its request: take them now, and answer each one's first request
                // (with `Connection: close`, see `watch`).
                while let Some(Ok((stream, addrs))) = listener.accept_queued() {
                    match slots.clone().try_acquire_owned() {
                        Ok(permit) => spawn_connection(
                            stream, addrs, None, permit, &handler, &config, &builder, &ctl,
                        ),
                        Err(_) => log::log(
                            log::WARNING,
                            "a connection queued before the drain found no free slot; closed",
                        ),
                    }
                }
                return;
            }
        };
        match accepted {
            Ok((stream, addrs)) => {
                let stop = async {
                    let _ = stop_accepting.changed().await;
                };
                let Some(permit) = place(&slots, &pressure, stop).await else {
                    return;
                };
                spawn_connection(
                    stream, addrs, None, permit, &handler, &config, &builder, &ctl,
                );
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of descriptors: shed idle connections and back off instead of
                // spinning on a listener that stays readable.
                pressure.send_modify(|n| *n += 1);
                if last_exhaustion_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    last_exhaustion_log = Some(Instant::now());
                    log::log(
                        log::ERROR,
                        &format!("accept failed: {e}; backing off (raise the fd limit or lower max_connections)"),
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => log::log(log::DEBUG, &format!("accept failed: {e}")),
        }
    }
}

/// Serve the connections that retiring siblings pass on (`crate::handoff`), each from
/// the bytes it carried, until this worker stops accepting; then take those already
/// queued, unless this worker is the one retiring (they are for its successor).
#[allow(clippy::too_many_arguments)] // as accept_loop
async fn adopt_loop<H: Handler>(
    handoff: Arc<Handoff>,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<Builders>,
    slots: Arc<Semaphore>,
    pressure: Arc<watch::Sender<u64>>,
    mut stop_accepting: watch::Receiver<bool>,
    ctl: Ctl,
) {
    let adopt = |received: std::io::Result<(std::os::fd::OwnedFd, Bytes)>, permit| match received
        .and_then(|(sock, bytes)| Ok((crate::net::adopted(sock)?, bytes)))
    {
        Ok(((stream, addrs), bytes)) => spawn_connection(
            stream,
            addrs,
            Some(bytes),
            permit,
            &handler,
            &config,
            &builder,
            &ctl,
        ),
        Err(e) => log::log(
            log::WARNING,
            &format!("a connection passed on by another worker was lost: {e}"),
        ),
    };
    loop {
        let received = tokio::select! {
            r = handoff.recv() => r,
            _ = stop_accepting.changed() => {
                if !crate::handoff::retiring() {
                    while let Some(received) = handoff.recv_queued() {
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => adopt(received, permit),
                            Err(_) => log::log(
                                log::WARNING,
                                "a connection passed on before the drain found no free slot; closed",
                            ),
                        }
                    }
                }
                return;
            }
        };
        let stop = async {
            let _ = stop_accepting.clone().changed().await;
        };
        match place(&slots, &pressure, stop).await {
            Some(permit) => adopt(received, permit),
            None => match slots.clone().try_acquire_owned() {
                // Stopping while waiting for a place: this one is served all the same.
                Ok(permit) => adopt(received, permit),
                Err(_) => log::log(
                    log::WARNING,
                    "a connection passed on by another worker found no free slot; closed",
                ),
            },
        }
    }
}

/// A place under `max_connections` for a new connection (TCP or QUIC). At the limit it
/// waits, and meanwhile asks idle keep-alive connections to close (`pressure`), so the
/// new client is not starved behind them; it asks again now and then, as a busy
/// connection may go idle later. `None` if `stop` comes first.
pub(crate) async fn place(
    slots: &Arc<Semaphore>,
    pressure: &watch::Sender<u64>,
    stop: impl Future<Output = ()>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Some(permit);
    }
    tokio::pin!(stop);
    loop {
        pressure.send_modify(|n| *n += 1);
        tokio::select! {
            biased;
            _ = &mut stop => return None,
            p = slots.clone().acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Serve an accepted connection on a task of its own, in the slot `permit` holds.
#[allow(clippy::too_many_arguments)] // the worker's shared pieces, each passed once
fn spawn_connection<H: Handler>(
    stream: Plain,
    addrs: Addrs,
    adopted: Option<Bytes>,
    permit: tokio::sync::OwnedSemaphorePermit,
    handler: &Arc<H>,
    config: &Arc<Config>,
    builder: &Arc<Builders>,
    ctl: &Ctl,
) {
    // The future goes to the task as it is: wrapped in another async block, it would be
    // stored twice in the task (once captured, once being awaited).
    tokio::spawn(serve_connection(
        stream,
        addrs,
        adopted,
        handler.clone(),
        config.clone(),
        builder.clone(),
        ConnSlot::new(permit),
        ctl.clone_for_connection(),
    ));
}

/// Open the connection (PROXY header, TLS, the HTTP version), then serve it.
///
/// The two phases are built apart, `open` as an async fn and the serving future by a
/// plain fn: written as one async fn, every value moved from the first phase into
/// hyper's connection (the stream, the service) kept its own room in the task beside
/// the connection it went into, as rustc does not let a moved-from local share space
/// with a later await. Apart, a task holds the larger phase only. With the boxed rare
/// paths (HTTP/2, TLS handshake, PROXY header, static files) and [`spawn_connection`]
/// spawning this future as it is, an HTTP/1.1 connection's task went from ~11 KiB to
/// ~2.5 KiB, and a worker's memory per idle keep-alive connection from ~22 to ~15 KiB.
#[allow(clippy::too_many_arguments)] // spawned as it is (see above)
async fn serve_connection<H: Handler>(
    plain: Plain,
    addrs: Addrs,
    adopted: Option<Bytes>,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<Builders>,
    slot: Arc<ConnSlot>,
    ctl: Ctl,
) {
    // Dropped last: the connection's share of its slot goes back once the connection is
    // gone (its requests may still hold theirs).
    let _release = slot.release_on_drop();
    let _open = crate::metrics::Open::connection();
    let opened = match adopted {
        None => open(plain, addrs, &config, &builder).await,
        Some(bytes) => Some(open_adopted(plain, addrs, bytes, &config)),
    };
    if let Some(opened) = opened {
        serve_opened(opened, handler, config, builder, slot, ctl).await;
    }
}

/// A connection ready for hyper: its stream, and what was learnt opening it.
struct Opened {
    io: TrackedStream,
    activity: Arc<ConnActivity>,
    proto: Proto,
    addrs: Addrs,
    tls: Option<Arc<TlsInfo>>,
    fd: RawFd,
    local_port: u16,
}

/// A connection a sibling passed on (`crate::handoff`): cleartext HTTP/1.1 between two
/// requests, with the bytes of the next one that were read already, if any.
fn open_adopted(plain: Plain, addrs: Addrs, bytes: Bytes, config: &Config) -> Opened {
    let fd = plain.raw_fd();
    let local_port = addrs.server_port;
    let (mut io, activity) = tracked(Stream::Plain(plain), config);
    if !bytes.is_empty() {
        io.replay(bytes);
    }
    speaks_http1(&activity, true);
    activity.mark_adopted();
    Opened {
        io,
        activity,
        proto: Proto::Http1,
        addrs,
        tls: None,
        fd,
        local_port,
    }
}

/// The connection's stream as hyper gets it, and what it records of the connection.
fn tracked(stream: Stream, config: &Config) -> (TrackedStream, Arc<ConnActivity>) {
    let activity = ConnActivity::new();
    let io = TrackedStream::new(stream, activity.clone(), config.max_header_size)
        .with_send_timeout(config.send_timeout);
    (io, activity)
}

/// An HTTP/1.1 connection: its flushes are counted (see `net::Flushes`) and, cleartext,
/// file bodies go out by `sendfile`.
fn speaks_http1(activity: &ConnActivity, cleartext: bool) {
    activity.count_flushes();
    if cleartext {
        activity.enable_sendfile();
    }
}

/// The PROXY header (if configured), the TLS handshake (if any) and the HTTP version;
/// `None` when the connection ends there (refused, failed, or gone).
async fn open(
    mut plain: Plain,
    addrs: Addrs,
    config: &Config,
    builder: &Builders,
) -> Option<Opened> {
    let fd = plain.raw_fd();
    let local_port = addrs.server_port;
    let addrs = match config.proxy_protocol {
        false => addrs,
        // Boxed, like the TLS handshake below: what only some connections await should
        // not make every connection's task larger (see `serve_connection`).
        true => {
            Box::pin(crate::http::proxy_protocol::accept(
                &mut plain, addrs, config,
            ))
            .await?
        }
    };
    let (stream, tls, alpn) = match &builder.tls {
        None => (Stream::Plain(plain), None, None),
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(config.header_read_timeout, acceptor.accept(plain));
            match Box::pin(handshake).await {
                Ok(Ok(s)) => {
                    crate::metrics::tls_handshake(0);
                    let conn = s.get_ref().1;
                    let info = TlsInfo::from_connection(conn);
                    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                    (Stream::Tls(Box::new(s)), Some(Arc::new(info)), alpn)
                }
                // Scanners, health checks and clients that distrust the certificate:
                // routine on the internet, so not worth more than a debug line.
                Ok(Err(e)) => {
                    crate::metrics::tls_handshake(1);
                    log::log(
                        log::DEBUG,
                        &format!("TLS handshake failed with {}: {e}", peer(&addrs)),
                    );
                    return None;
                }
                Err(_) => {
                    crate::metrics::tls_handshake(2);
                    log::log(
                        log::DEBUG,
                        &format!("TLS handshake timed out with {}", peer(&addrs)),
                    );
                    return None;
                }
            }
        }
    };
    let (mut io, activity) = tracked(stream, config);
    let proto = choose_protocol(
        &mut io,
        config.http,
        alpn.as_deref(),
        config.header_read_timeout,
    )
    .await;
    match proto {
        Proto::Gone => return None,
        Proto::BadPreface => {
            log::log(
                log::DEBUG,
                &format!("invalid HTTP/2 connection preface from {}", peer(&addrs)),
            );
            let _ = io.write_raw(&BAD_PREFACE_REPLY).await;
            return None;
        }
        Proto::Http2 => io.speak_h2(),
        Proto::Http1 => speaks_http1(&activity, tls.is_none()),
    }
    Some(Opened {
        io,
        activity,
        proto,
        addrs,
        tls,
        fd,
        local_port,
    })
}

/// The future that serves an opened connection to its end (see [`watch`]).
fn serve_opened<H: Handler>(
    opened: Opened,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<Builders>,
    slot: Arc<ConnSlot>,
    ctl: Ctl,
) -> impl Future<Output = ()> {
    let Opened {
        io,
        activity,
        proto,
        addrs,
        tls,
        fd,
        local_port,
    } = opened;
    let io = TokioIo::new(io);
    // Point TLS clients to HTTP/3 on the same port (`crate::http3`).
    let alt_svc = (config.http3 && config.http3_alt_svc && tls.is_some() && local_port != 0)
        .then(|| crate::http3::alt_svc(local_port));
    let conn_ctx = Arc::new(ConnCtx {
        addrs: Arc::new(addrs),
        slot,
        shutdown: ctl.shutdown.clone(),
        tls,
    });
    let service = {
        let activity = activity.clone();
        let config = config.clone();
        let concurrency = builder.concurrency.clone();
        let statics = builder.statics.clone();
        let requests = ctl.requests.clone();
        service_fn(move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Incoming::from);
            requests.count();
            let handler = handler.clone();
            let conn_ctx = conn_ctx.clone();
            let tls = conn_ctx.tls.is_some();
            crate::http::proxy::apply(&config, &conn_ctx.addrs, tls, &mut req);
            let mut guard = activity.request_started();
            // A static file is no application call: it takes no place under
            // `--limit-concurrency` (a miss passed on to the application does, below).
            let claimed = statics.as_ref().is_some_and(|s| s.claims(req.uri().path()));
            let busy = match &concurrency {
                None => false,
                Some(_) if claimed => false,
                Some(places) => match places.clone().try_acquire_owned() {
                    Ok(permit) => {
                        guard.hold(permit);
                        false
                    }
                    Err(_) => true,
                },
            };
            let config = config.clone();
            let activity = activity.clone();
            let kind = crate::metrics::RequestKind::of(req.method(), req.version());
            let statics = statics.clone();
            let concurrency = concurrency.clone();
            let alt_svc = alt_svc.clone();
            async move {
                let started = Instant::now();
                let mut checked =
                    validate::check_request(req.version(), req.headers(), config.max_body_size);
                if busy && checked.is_ok() {
                    shed_log(config.limit_concurrency.unwrap_or(0));
                    checked = Err(validate::Rejection::OVERLOADED);
                }
                if checked.is_ok()
                    && req.headers().contains_key(http::header::TRANSFER_ENCODING)
                    && activity.had_length_conflict(guard.request_index())
                {
                    checked = Err(validate::Rejection {
                        status: http::StatusCode::BAD_REQUEST,
                        reason: "both Content-Length and Transfer-Encoding",
                    });
                }
                let mut resp = match checked {
                    Ok(_) => {
                        // Static files first: the application never sees their requests.
                        let req = match &statics {
                            None => Err(req),
                            Some(s) => {
                                let access = handler.access_log();
                                // Boxed: hyper keeps room for this future per
                                // connection, sized for its largest path.
                                Box::pin(s.serve(req, conn_ctx.addrs.peer, access, started)).await
                            }
                        };
                        let shed = match (&req, &concurrency) {
                            (Err(_), Some(places)) if claimed => {
                                match places.clone().try_acquire_owned() {
                                    Ok(permit) => {
                                        guard.hold(permit);
                                        false
                                    }
                                    Err(_) => true,
                                }
                            }
                            _ => false,
                        };
                        match req {
                            Ok(resp) => crate::http::guarded(resp, guard),
                            Err(req) if shed => {
                                shed_log(config.limit_concurrency.unwrap_or(0));
                                let (parts, _body) = req.into_parts();
                                let rejection = validate::Rejection::OVERLOADED;
                                crate::metrics::rejected_status(rejection.status);
                                let status = rejection.status.as_u16();
                                handler.log_rejected(&parts, &conn_ctx, status, started);
                                let resp = rejection.response(config.server_header);
                                crate::http::guarded(resp, guard)
                            }
                            Err(req) => handler.handle(req, &conn_ctx, guard, started).await,
                        }
                    }
                    Err(rejection) => {
                        crate::metrics::rejected_status(rejection.status);
                        let (parts, _body) = req.into_parts();
                        handler.log_rejected(&parts, &conn_ctx, rejection.status.as_u16(), started);
                        let resp = rejection.response(config.server_header);
                        crate::http::guarded(resp, guard)
                    }
                };
                kind.answered(resp.status());
                if let Some(v) = alt_svc {
                    resp.headers_mut().insert(http::header::ALT_SVC, v);
                }
                Ok::<_, Infallible>(resp)
            }
        })
    };
    // Cleartext HTTP/1.1 only, and not behind the PROXY protocol: the sibling learns the
    // addresses from the socket.
    let handoff = match (proto, &builder.tls, config.proxy_protocol) {
        (Proto::Http1, None, false) => builder.handoff.clone(),
        _ => None,
    };
    let watched = Watched {
        activity,
        keepalive: config.keepalive_timeout,
        ctl,
        fd,
        handoff,
    };
    // The two connection types differ, so each gets its own (one-line) call. The HTTP/2
    // one is boxed: inline, every HTTP/1.1 connection's task would be as large as an
    // HTTP/2 one, memory a worker faults in afresh for each client it takes over.
    if proto == Proto::Http2 {
        let conn = builder.h2.serve_connection(io, service);
        let never = |_, _| -> crate::handoff::PassOn { unreachable!("HTTP/2 is not passed on") };
        Either::Left(Box::pin(watch(
            conn,
            |c| c.graceful_shutdown(),
            watched,
            never,
        )))
    } else {
        let conn = builder.h1.serve_connection(io, service).with_upgrades();
        // The connection ended between two requests with its socket kept open: what hyper
        // read of the next request goes along with it.
        let pass_on = |conn: http1::UpgradeableConnection<TokioIo<TrackedStream>, _>, to| {
            let Some(parts) = conn.into_parts() else {
                return crate::handoff::PassOn::default();
            };
            crate::handoff::pass_on(parts.io.into_inner(), parts.read_buf, to)
        };
        Either::Right(watch(conn, |c| c.graceful_shutdown(), watched, pass_on))
    }
}

/// Log that `--limit-concurrency` turned requests away: at most once a second per
/// worker, with how many since the last line, so an overload does not flood the log.
pub(crate) fn shed_log(limit: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SHED: AtomicU64 = AtomicU64::new(0);
    static LAST: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let shed = SHED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1000;
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 1000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SHED.fetch_sub(shed, Ordering::Relaxed);
        log::log(
            log::WARNING,
            &format!(
                "limit-concurrency {limit} reached: answered {shed} request{} with 503",
                log::plural(shed)
            ),
        );
    }
}

fn peer(addrs: &Addrs) -> String {
    match addrs.peer {
        Some(p) => p.to_string(),
        None => format!("unix:{}", addrs.server_host),
    }
}

/// Whether the client's bytes are waiting in the socket `fd` (or it closed its side): a
/// look that neither reads nor waits.
fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; `fd` belongs to the connection the caller is driving.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// What [`watch`] needs besides the connection: its activity, its keep-alive timeout,
/// the worker's stop and pressure signals, and its socket (to look for unread bytes).
struct Watched {
    activity: Arc<ConnActivity>,
    keepalive: Duration,
    ctl: Ctl,
    fd: RawFd,
    /// Set when the connection may go to a sibling if this worker retires.
    handoff: Option<Arc<Handoff>>,
}

/// How long a connection that the drain finds should wait for a request before it is
/// closed; `None` to close it (gracefully) at once.
fn drain_wait(activity: &ConnActivity, fd: RawFd) -> Option<Duration> {
    let idle = activity.idle_for()?;
    if activity.arrivals() == 0 || readable_now(fd) {
        return Some(DRAIN_LINGER);
    }
    DRAIN_RECENT.checked_sub(idle).filter(|d| !d.is_zero())
}

/// Drive a hyper connection to its end, closing it gracefully when it idles past the
/// keep-alive timeout, when the worker drains, or when the worker needs its slot.
///
/// The drain (also for a connection accepted after it began: the final sweep of the
/// listen queue) never starts a request on a connection that was idle, and never
/// closes one under a request its client already sent:
/// - a request in flight is finished and answered with `Connection: close` (HTTP/2:
///   `GOAWAY`), then the connection closes;
/// - an idle keep-alive connection with nothing in its socket is closed at once, unless
///   its last response ended under [`DRAIN_RECENT`] ago: then its client's next request
///   is awaited for the rest of that window and answered with `Connection: close`;
/// - one whose client's bytes are already in the socket, or a fresh connection that has
///   not sent its first request yet, gets that request answered with
///   `Connection: close`, waiting for it at most [`DRAIN_LINGER`]. Closing a socket
///   with unread bytes would reset it, losing a request sent before the signal.
///
/// A worker retiring with a successor (`crate::handoff`) instead passes a cleartext
/// HTTP/1.1 connection that served a request on to a sibling once it is between two
/// requests (at once if idle, else when its response is done), with what hyper read of
/// the next one; `pass_on` takes the ended connection for that.
async fn watch<C, P>(
    mut conn: C,
    shutdown: impl Fn(std::pin::Pin<&mut C>),
    watched: Watched,
    pass_on: P,
) where
    C: Future<Output = Result<(), hyper::Error>> + Unpin,
    P: FnOnce(C, Arc<Handoff>) -> crate::handoff::PassOn,
{
    let Watched {
        activity,
        keepalive,
        mut ctl,
        fd,
        handoff,
    } = watched;
    let idle_timer = tokio::time::sleep(keepalive);
    tokio::pin!(idle_timer);
    let mut closing = false;
    // Draining in a retiring worker: the connection goes to a sibling once idle.
    let mut passing = false;
    let mut handing = false;
    let mut draining = false;
    let mut arrivals_at_drain = 0;
    let mut pressure_live = true;
    // Accepted while the worker drains already (the sweep of the listen queue).
    let mut drain_now = *ctl.shutdown.borrow();
    let to = loop {
        if passing && !closing && activity.is_idle_keepalive() {
            // Between two requests: hyper ends an idle connection at once, or (its last
            // response still flushing) right after it, with no response left to carry
            // `Connection: close`. Its socket stays open for the sibling, and the bytes
            // of the next request that hyper read go along. Unless the whole server
            // stopped meanwhile (`handoff::abandon`): then it just closes.
            handing = crate::handoff::retiring();
            if handing {
                activity.keep_open();
            } else {
                passing = false;
            }
            shutdown(std::pin::Pin::new(&mut conn));
            closing = true;
        }
        if drain_now && !draining && !closing {
            draining = true;
            arrivals_at_drain = activity.arrivals();
            if handoff.is_some() && crate::handoff::retiring() && activity.served_any() {
                // Passed on between two requests: now if idle, else once the response
                // in flight is done.
                passing = true;
                continue;
            }
            match drain_wait(&activity, fd) {
                // In flight: hyper answers with `Connection: close`, then closes. Idle
                // with nothing sent: closed now.
                None => {
                    shutdown(std::pin::Pin::new(&mut conn));
                    closing = true;
                }
                Some(wait) => idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + wait.min(keepalive)),
            }
        }
        tokio::select! {
            // A fixed order spares the random start of an unbiased select. The stop comes
            // before the connection: a wake-up that carries both a finished response and
            // the stop (in inline WSGI mode the stop arrives while the application runs
            // on this thread) must turn keep-alive off before hyper writes that
            // response's head, or the client would send one more request. While the
            // connection is pending every branch is polled anyway, so this costs nothing.
            biased;
            // Told again while passing: the whole server stops (`handoff::abandon`), and
            // nobody will take the connection now. It finishes as in any drain: the
            // response in flight says `Connection: close`.
            r = ctl.shutdown.changed(), if !closing && (!draining || passing) => {
                if !draining {
                    drain_now = true;
                } else if r.is_err() || !crate::handoff::retiring() {
                    passing = false;
                    shutdown(std::pin::Pin::new(&mut conn));
                    closing = true;
                }
            }
            res = std::pin::Pin::new(&mut conn) => {
                match (res, &handoff) {
                    (Err(e), _) => {
                        crate::metrics::connection_error(&e);
                        log::log(log::DEBUG, &format!("connection error: {}", log::error_chain(&e)));
                    }
                    (Ok(()), Some(to)) if handing => break to.clone(),
                    (Ok(()), _) => {}
                }
                return;
            }
            _ = activity.request_done.notified(), if passing && !closing => {}
            _ = activity.request_arrived.notified(), if draining && !closing && !passing => {
                // A wake-up stored before the drain began is stale: only a request that
                // arrived since ends the wait.
                if activity.arrivals() > arrivals_at_drain {
                    shutdown(std::pin::Pin::new(&mut conn));
                    closing = true;
                }
            }
            r = ctl.pressure.changed(), if !closing && !draining && pressure_live => {
                if r.is_err() {
                    pressure_live = false;
                } else if activity.is_idle_keepalive() {
                    shutdown(std::pin::Pin::new(&mut conn));
                    closing = true;
                }
            }
            _ = &mut idle_timer, if !closing && !passing => {
                let now = tokio::time::Instant::now();
                if draining {
                    shutdown(std::pin::Pin::new(&mut conn));
                    closing = true;
                    continue;
                }
                match activity.idle_for() {
                    Some(idle) if idle >= keepalive => {
                        shutdown(std::pin::Pin::new(&mut conn));
                        closing = true;
                    }
                    Some(idle) => idle_timer.as_mut().reset(now + (keepalive - idle)),
                    None => idle_timer.as_mut().reset(now + keepalive),
                }
            }
        }
    };
    // Boxed, like the rare paths of `serve_connection`: only a retiring worker's idle
    // connections take it.
    pass_on(conn, to).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Run `choose_protocol` on a connection whose client sent `sent` (then closed, if
    /// `close`); return the choice and every byte the server side can read afterwards.
    async fn choose(
        sent: &[u8],
        close: bool,
        mode: HttpMode,
        alpn: Option<&[u8]>,
    ) -> (Proto, Vec<u8>) {
        let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(sent).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let mut io = TrackedStream::new(
            Stream::Plain(Plain::Unix(server)),
            ConnActivity::new(),
            8192,
        );
        let proto = choose_protocol(&mut io, mode, alpn, Duration::from_millis(300)).await;
        drop(client);
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
        (proto, rest)
    }

    #[tokio::test]
    async fn sniffs_and_replays() {
        let get = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let pri_h2 = [&PREFACE[..], b"\0\0\0\x04\0\0\0\0\0"].concat();
        let bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
        let auto = HttpMode::Auto;
        assert_eq!(
            choose(get, true, auto, None).await,
            (Proto::Http1, get.to_vec())
        );
        assert_eq!(
            choose(&pri_h2, true, auto, None).await,
            (Proto::Http2, pri_h2.clone())
        );
        assert_eq!(choose(bad, true, auto, None).await.0, Proto::BadPreface);
        // PROPFIND and PUT share a prefix with the preface but are HTTP/1.1.
        for m in [
            &b"PROPFIND / HTTP/1.1\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                choose(m, true, auto, None).await,
                (Proto::Http1, m.to_vec())
            );
        }
        // Must be HTTP/2: anything else is a bad preface.
        assert_eq!(
            choose(get, true, HttpMode::Http2, None).await.0,
            Proto::BadPreface
        );
        assert_eq!(
            choose(get, true, auto, Some(b"h2")).await.0,
            Proto::BadPreface
        );
        // HTTP/1.1 by mode or ALPN: nothing is read, even a preface goes to hyper.
        assert_eq!(
            choose(&pri_h2, true, HttpMode::Http1, None).await,
            (Proto::Http1, pri_h2.clone())
        );
        assert_eq!(
            choose(&pri_h2, true, auto, Some(b"http/1.1")).await.0,
            Proto::Http1
        );
        // Closed before a byte, or silent until the timeout.
        assert_eq!(choose(b"", true, auto, None).await.0, Proto::Gone);
        assert_eq!(choose(b"PRI * ", false, auto, None).await.0, Proto::Gone);
    }
}
