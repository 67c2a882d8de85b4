//! One way to serve, whatever the interface: accept loops over the inherited
//! listeners, one task per connection driving hyper, and the worker's lifecycle
//! (readiness, signals, graceful shutdown).
//!
//! The interface plugs in through [`Handler`], chosen once at start-up; connection
//! handling is generic over it, so there is no per-interface copy of this loop.
//!
//! Limits enforced here: `max_connections` (a semaphore; at the limit the accept loop
//! waits and asks idle keep-alive connections to close, so new clients are not starved
//! behind idle ones), `keepalive_timeout` (a watcher per connection closes it when no
//! request is in flight and no byte arrived for that long), and hyper's own
//! `header_read_timeout`, `max_header_size` and `max_headers`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::http::{plain_response, validate, ResponseBody};
use crate::log;
use crate::net::{
    is_resource_exhaustion, ActiveGuard, Addrs, ConnActivity, Listener, Stream, TrackedStream,
};

/// What a connection tells its requests.
pub struct ConnCtx {
    pub addrs: Arc<Addrs>,
    /// Connection slots: an upgraded connection (WebSocket) takes one of its own, so it
    /// counts against `max_connections` and the graceful drain waits for it.
    pub slots: Arc<Semaphore>,
    /// Flips to true when the worker starts draining.
    pub shutdown: watch::Receiver<bool>,
}

/// An application interface (WSGI now; ASGI later) as the server sees it.
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

    /// Access-log a request the server refused itself (400, 413).
    fn log_rejected(&self, parts: &Parts, conn: &ConnCtx, status: u16, started: Instant);
}

/// Why a worker stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Graceful,
    Immediate,
}

/// How long an idle connection stays open once the worker drains, at most.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

struct Ctl {
    shutdown: watch::Receiver<bool>,
    pressure: watch::Receiver<u64>,
}

/// Serve until a signal says stop; then drain within the graceful timeout.
pub async fn run<H: Handler>(
    config: Arc<Config>,
    handler: Arc<H>,
    listeners: Vec<Listener>,
    on_ready: impl FnOnce(),
) -> std::io::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (pressure_tx, pressure_rx) = watch::channel(0u64);
    let pressure_tx = Arc::new(pressure_tx);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let builder = Arc::new(http1_builder(&config));

    let mut accept_tasks = Vec::new();
    for listener in listeners {
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            handler.clone(),
            config.clone(),
            builder.clone(),
            slots.clone(),
            pressure_tx.clone(),
            Ctl {
                shutdown: shutdown_rx.clone(),
                pressure: pressure_rx.clone(),
            },
        )));
    }
    on_ready();

    let parent = unsafe { libc::getppid() };
    let mut orphan_check = tokio::time::interval(Duration::from_secs(1));
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Graceful,
            _ = quit.recv() => break Stop::Immediate,
            _ = orphan_check.tick() => {
                // The supervisor is gone (killed): do not linger as an orphan.
                if unsafe { libc::getppid() } != parent {
                    log::log(log::WARNING, "supervisor went away; stopping");
                    break Stop::Graceful;
                }
            }
        }
    };
    let _ = shutdown_tx.send(true);
    for t in accept_tasks {
        let _ = t.await; // listeners are closed once their loop returns
    }
    if stop == Stop::Graceful {
        let all = config.max_connections as u32;
        let drained = tokio::select! {
            r = tokio::time::timeout(config.graceful_timeout, slots.acquire_many(all)) => r.is_ok(),
            _ = quit.recv() => false,
        };
        if !drained {
            log::log(
                log::WARNING,
                "graceful timeout reached with requests in flight; stopping anyway",
            );
        }
    }
    Ok(stop)
}

fn http1_builder(config: &Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_size)
        .max_headers(config.max_headers)
        .keep_alive(true)
        .half_close(false);
    b
}

async fn accept_loop<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<http1::Builder>,
    slots: Arc<Semaphore>,
    pressure: Arc<watch::Sender<u64>>,
    mut ctl: Ctl,
) {
    let mut last_exhaustion_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ctl.shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addrs)) => {
                // At the limit, the new client waits for a slot while idle keep-alive
                // connections are asked to close, so it is not starved behind them.
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => loop {
                        // Ask again now and then: a busy connection may go idle later.
                        pressure.send_modify(|n| *n += 1);
                        tokio::select! {
                            p = slots.clone().acquire_owned() => match p {
                                Ok(p) => break p,
                                Err(_) => return,
                            },
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = ctl.shutdown.changed() => return,
                        }
                    },
                };
                let conn = serve_connection(
                    stream,
                    addrs,
                    handler.clone(),
                    config.clone(),
                    builder.clone(),
                    slots.clone(),
                    Ctl {
                        shutdown: ctl.shutdown.clone(),
                        pressure: ctl.pressure.clone(),
                    },
                );
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
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

async fn serve_connection<H: Handler>(
    stream: Stream,
    addrs: Addrs,
    handler: Arc<H>,
    config: Arc<Config>,
    builder: Arc<http1::Builder>,
    slots: Arc<Semaphore>,
    mut ctl: Ctl,
) {
    let activity = ConnActivity::new();
    let io = TokioIo::new(TrackedStream::new(
        stream,
        activity.clone(),
        config.max_header_size,
    ));
    let conn_ctx = Arc::new(ConnCtx {
        addrs: Arc::new(addrs),
        slots,
        shutdown: ctl.shutdown.clone(),
    });
    let service = {
        let activity = activity.clone();
        let config = config.clone();
        service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let conn_ctx = conn_ctx.clone();
            let guard = activity.request_started();
            let config = config.clone();
            let activity = activity.clone();
            async move {
                let started = Instant::now();
                let mut checked =
                    validate::check_request(req.version(), req.headers(), config.max_body_size);
                if checked.is_ok()
                    && req.headers().contains_key(http::header::TRANSFER_ENCODING)
                    && activity.had_length_conflict(req.method().as_str(), &req.uri().to_string())
                {
                    checked = Err(validate::Rejection {
                        status: http::StatusCode::BAD_REQUEST,
                        reason: "both Content-Length and Transfer-Encoding",
                    });
                }
                let resp = match checked {
                    Ok(_) => handler.handle(req, &conn_ctx, guard, started).await,
                    Err(rejection) => {
                        let (parts, _body) = req.into_parts();
                        handler.log_rejected(&parts, &conn_ctx, rejection.status.as_u16(), started);
                        let resp = plain_response(
                            rejection.status,
                            rejection.reason,
                            true,
                            config.server_header,
                        );
                        let (p, b) = resp.into_parts();
                        Response::from_parts(p, b.with_guard(guard))
                    }
                };
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let keepalive = config.keepalive_timeout;
    let idle_timer = tokio::time::sleep(keepalive);
    tokio::pin!(idle_timer);
    let mut closing = false;
    let mut draining = false;
    let mut pressure_live = true;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    log::log(log::DEBUG, &format!("connection error: {e}"));
                }
                return;
            }
            _ = ctl.shutdown.changed(), if !closing && !draining => {
                draining = true;
                if activity.idle_for().is_none() {
                    // In flight: hyper answers with `Connection: close`, then closes.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    // Idle: linger briefly, so a request already on its way is answered
                    // (with `Connection: close`) instead of meeting a closed socket.
                    let linger = keepalive.min(DRAIN_LINGER);
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + linger);
                }
            }
            _ = activity.request_arrived.notified(), if draining && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            r = ctl.pressure.changed(), if !closing && !draining && pressure_live => {
                if r.is_err() {
                    pressure_live = false;
                } else if activity.is_idle_keepalive() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = &mut idle_timer, if !closing => {
                let now = tokio::time::Instant::now();
                if draining {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
                match activity.idle_for() {
                    Some(idle) if idle >= keepalive => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Some(idle) => idle_timer.as_mut().reset(now + (keepalive - idle)),
                    None => idle_timer.as_mut().reset(now + keepalive),
                }
            }
        }
    }
}
