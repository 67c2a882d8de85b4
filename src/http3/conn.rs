//! One HTTP/3 connection: the QUIC handshake, the HTTP/3 control streams (`h3`), and a
//! task per request stream that runs the request through the worker's [`Handler`].
//!
//! A request gets the same checks as over TCP before the application sees it: the
//! header section is bounded by `max_header_size` (`h3` answers a larger one with 431,
//! which the metrics count as a rejection)
//! and `max_headers`, `Content-Length` by `max_body_size` (413), and
//! `--limit-concurrency` sheds with 503. The response goes out through [`response`].
//!
//! Graceful stop: when the worker drains, the connection sends `GOAWAY` with the last
//! request stream it accepted, so the client retries later requests elsewhere (they
//! were never started); the requests in flight finish; then the connection waits a few
//! round trips for the client to acknowledge the last bytes (or to close itself) and
//! closes with `H3_NO_ERROR`. Idle connections end by the QUIC idle timeout
//! (`--http3-idle-timeout`), or the same way as the drain when a new connection waits
//! for a place under `max_connections` (as idle keep-alive connections over TCP).
//!
//! [`response`]: super::response

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode, Version};
use tokio::sync::watch;

use super::body::H3Body;
use super::Shared;
use crate::http::{guarded, validate, Incoming};
use crate::log;
use crate::net::{Addrs, ConnActivity, ConnSlot};
use crate::server::{ConnCtx, Handler};
use crate::tls::TlsInfo;

type H3Conn = h3::server::Connection<h3_quinn::Connection, bytes::Bytes>;
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, bytes::Bytes>;

/// What the application learns of the TLS side of a QUIC connection: always TLS 1.3;
/// the negotiated cipher suite (found out by [`super::cipher`]); the client's
/// certificate when it sent one that verified.
fn tls_info(conn: &quinn::Connection) -> TlsInfo {
    let client_cert = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().map(|c| crate::tls::client_cert(c.as_ref())));
    let suite = super::cipher::suite_of(conn);
    TlsInfo {
        protocol: "TLSv1.3",
        cipher: suite.and_then(|s| s.as_str()).unwrap_or("").to_string(),
        version_code: 0x0304,
        cipher_code: suite.map_or(0, u16::from),
        client_cert,
    }
}

/// Counts a connection's UDP bytes (QUIC and HTTP/3 framing included) in the metrics
/// when it ends.
struct Traffic(quinn::Connection);

impl Drop for Traffic {
    fn drop(&mut self) {
        let stats = self.0.stats();
        crate::metrics::bytes_received(stats.udp_rx.bytes as usize);
        crate::metrics::bytes_sent(stats.udp_tx.bytes as usize);
    }
}

/// Serve one QUIC connection to its end (see the module docs). `slot` is its place
/// under `max_connections`; a change of `pressure` while the connection is idle (it
/// served a request and has none in flight) closes it as the drain does, to make room.
pub async fn serve<H: Handler>(
    incoming: quinn::Incoming,
    local: SocketAddr,
    slot: Arc<ConnSlot>,
    shared: Arc<Shared<H>>,
    mut pressure: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Dropped last: the connection's share of its slot goes back once the connection is
    // gone (its requests may still hold theirs).
    let _release = slot.release_on_drop();
    let config = shared.config.clone();
    let peer = incoming.remote_address();
    let _open = crate::metrics::Open::connection();
    let conn = match tokio::time::timeout(config.header_read_timeout, incoming).await {
        Ok(Ok(conn)) => {
            crate::metrics::tls_handshake(0);
            conn
        }
        Ok(Err(e)) => {
            crate::metrics::tls_handshake(1);
            log::log(
                log::DEBUG,
                &format!("QUIC handshake failed with {peer}: {e}"),
            );
            return;
        }
        Err(_) => {
            crate::metrics::tls_handshake(2);
            log::log(log::DEBUG, &format!("QUIC handshake timed out with {peer}"));
            return;
        }
    };
    let _traffic = Traffic(conn.clone());
    let mut builder = h3::server::builder();
    builder.max_field_section_size(config.max_header_size as u64);
    let built = builder.build(h3_quinn::Connection::new(conn.clone()));
    let mut h3: H3Conn = match tokio::time::timeout(config.header_read_timeout, built).await {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => {
            log::log(log::DEBUG, &format!("HTTP/3 setup failed with {peer}: {e}"));
            return;
        }
        Err(_) => {
            log::log(log::DEBUG, &format!("HTTP/3 setup timed out with {peer}"));
            return;
        }
    };
    let ctx = Arc::new(ConnCtx {
        addrs: Arc::new(Addrs {
            peer: Some(peer),
            // The address the client reached (a wildcard bind has many).
            server_host: conn.local_ip().unwrap_or(local.ip()).to_string(),
            server_port: local.port(),
        }),
        slot,
        shutdown: shutdown.clone(),
        tls: Some(Arc::new(tls_info(&conn))),
    });
    let activity = ConnActivity::new();
    // The request tasks of this connection: the drain waits for them (`h3` itself ends
    // `accept` only after a GOAWAY from the client, not after its own).
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = false;
    // Asked to make room under `max_connections` while idle: closed as in the drain.
    let mut shed = false;
    let mut pressure_live = true;
    loop {
        if !draining && (shed || *shutdown.borrow()) {
            draining = true;
            // GOAWAY: no request stream after the last accepted one will be served.
            if h3.shutdown(0).await.is_err() {
                break;
            }
        }
        if draining && requests.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s), if !draining => continue,
            r = pressure.changed(), if !draining && pressure_live => {
                match r {
                    Err(_) => pressure_live = false,
                    Ok(()) => shed = activity.is_idle_keepalive(),
                }
                continue;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, ctx.clone(), shared.clone(), activity.clone()));
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        log::log(
                            log::DEBUG,
                            &format!("HTTP/3 connection with {peer} ended: {e}"),
                        );
                    }
                    // What is still running fails on its own; it is not cut short here.
                    requests.detach_all();
                    return;
                }
            },
        }
    }
    requests.detach_all();
    // The last responses are written but perhaps not yet acknowledged: closing now
    // would discard them. Give the client a few round trips (it may close first).
    let linger = (conn.rtt() * 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let _ = tokio::time::timeout(linger, conn.closed()).await;
    drop(h3); // closes the connection with H3_NO_ERROR
}

/// One request stream: its head, the checks, the handler, the response.
async fn request<H: Handler>(
    resolver: Resolver,
    ctx: Arc<ConnCtx>,
    shared: Arc<Shared<H>>,
    activity: Arc<ConnActivity>,
) {
    let config = &shared.config;
    let resolved = tokio::time::timeout(config.header_read_timeout, resolver.resolve_request());
    let (req, stream) = match resolved.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if matches!(e, h3::error::StreamError::HeaderTooBig { .. }) {
                // `h3` answered 431 itself, before anything of the request was decoded:
                // counted as HTTP/1.1's 431 from hyper is, with no access log line.
                crate::metrics::rejected(crate::metrics::Rejection::HeadersTooLarge);
            }
            log::log(log::DEBUG, &format!("HTTP/3 request failed: {e}"));
            return;
        }
        Err(_) => return, // the stream's headers never came: dropping resets it
    };
    shared.requests.count();
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let head_request = parts.method == http::Method::HEAD;
    let kind = crate::metrics::RequestKind::of(&parts.method, Version::HTTP_3);
    let started = Instant::now();
    let mut checked =
        validate::check_request(Version::HTTP_3, &parts.headers, config.max_body_size);
    if checked.is_ok() && parts.headers.len() > config.max_headers {
        checked = Err(validate::Rejection {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "too many header fields",
        });
    }
    let declared = checked.as_ref().ok().copied().flatten();
    let (body, recv_release) = H3Body::new(recv, declared);
    let body = Incoming::H3(Box::new(body));
    let mut req = Request::from_parts(parts, body);
    crate::http::proxy::apply(config, &ctx.addrs, true, &mut req);
    let mut guard = activity.request_started();
    // Static files first, outside `--limit-concurrency`, as over TCP: a miss passed on
    // to the application comes back as the request.
    if let (Ok(_), Some(statics)) = (&checked, &shared.statics) {
        if statics.claims(req.uri().path()) {
            let access = shared.handler.access_log();
            match statics.serve(req, ctx.addrs.peer, access, started).await {
                Ok(resp) => {
                    let resp = guarded(resp, guard);
                    kind.answered(resp.status());
                    super::response::send(&mut send, resp, head_request, config.send_timeout).await;
                    recv_release.release();
                    return;
                }
                Err(back) => req = back,
            }
        }
    }
    if checked.is_ok() {
        if let Some(places) = &shared.concurrency {
            match places.clone().try_acquire_owned() {
                Ok(permit) => guard.hold(permit),
                Err(_) => {
                    crate::server::shed_log(config.limit_concurrency.unwrap_or(0));
                    checked = Err(validate::Rejection::OVERLOADED);
                }
            }
        }
    }
    let resp = match checked {
        Ok(_) => shared.handler.handle(req, &ctx, guard, started).await,
        Err(rejection) => {
            crate::metrics::rejected_status(rejection.status);
            let (parts, _body) = req.into_parts();
            shared
                .handler
                .log_rejected(&parts, &ctx, rejection.status.as_u16(), started);
            guarded(rejection.response(config.server_header), guard)
        }
    };
    kind.answered(resp.status());
    super::response::send(&mut send, resp, head_request, config.send_timeout).await;
    recv_release.release();
}
