//! HTTP/3 over QUIC (`--http3`): `quinn` for QUIC, `h3` + `h3-quinn` for HTTP/3, and the
//! rustls configuration of the TLS listeners (same certificate, client verification
//! and provider), with ALPN `h3`, TLS 1.3 only (QUIC has no other) and no 0-RTT: early
//! data could be replayed, and no application here says which requests are safe to
//! replay.
//!
//! Each worker binds its own UDP socket on the address of every TCP listener
//! ([`bind_udp`]), with `SO_REUSEPORT`: the kernel spreads datagrams over the workers
//! by a hash of the 4-tuple, so the packets of one connection reach the worker that
//! holds it as long as the client's address and the set of workers stay the same (see
//! docs/deployment.md for the limits of that).
//!
//! Requests go through the same [`Handler`] as HTTP/1.1 and HTTP/2: [`conn`] turns an
//! HTTP/3 request stream into an `http::Request` whose body is an
//! [`crate::http::Incoming::H3`] ([`body`]), and writes the handler's response back
//! with the stream's flow control as backpressure ([`response`]). The worker's limits
//! apply as over TCP: every QUIC connection takes a place under `max_connections` (at
//! the limit a new one waits while idle connections are closed to make room), each
//! request counts for `max_requests` and `limit_concurrency`, and the graceful drain
//! waits for the connections (GOAWAY first, see [`conn`]).

pub mod body;
pub mod cipher;
pub mod conn;
pub mod response;

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::lifecycle::RequestCount;
use crate::log;
use crate::net::{ConnSlot, Listener};
use crate::server::Handler;

/// What every HTTP/3 connection of a worker shares.
pub struct Shared<H> {
    pub handler: Arc<H>,
    pub config: Arc<Config>,
    pub requests: Arc<RequestCount>,
    /// The worker's places for requests in flight (`--limit-concurrency`).
    pub concurrency: Option<Arc<Semaphore>>,
    /// `--static` directories, answered before the application as over TCP.
    pub statics: Option<Arc<crate::static_files::StaticFiles>>,
}

/// The worker's HTTP/3 side: one endpoint per TCP listener.
pub struct Http3 {
    endpoints: Vec<quinn::Endpoint>,
}

/// The `Alt-Svc` value that points clients of a TLS listener on `port` to HTTP/3.
pub fn alt_svc(port: u16) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .expect("an Alt-Svc value is ASCII")
}

/// Bind a UDP socket on `addr` for this worker, beside the other workers' (see the
/// module docs). An IPv6 socket is dual-stack exactly when `tcp` is.
pub fn bind_udp(addr: SocketAddr, tcp: &impl AsFd) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let only_v6 = socket2::SockRef::from(tcp).only_v6().unwrap_or(false);
        sock.set_only_v6(only_v6)?;
    }
    sock.set_reuse_address(true)?;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// The QUIC server configuration: the TLS listeners' rustls setup with ALPN `h3` (and
/// suites that tell which one a connection negotiated, see [`cipher`]), and the
/// transport limits of the `http3_*` settings.
fn server_config(config: &Config) -> std::io::Result<quinn::ServerConfig> {
    let tls = config
        .tls
        .as_ref()
        .ok_or_else(|| std::io::Error::other("--http3 needs --ssl-certfile and --ssl-keyfile"))?;
    let provider = cipher::noting_provider(rustls::crypto::ring::default_provider());
    let base = crate::tls::server_config_with(tls, config.http, Arc::new(provider))
        .map_err(std::io::Error::other)?;
    let mut rustls_config = (*base).clone();
    rustls_config.alpn_protocols = vec![b"h3".to_vec()];
    rustls_config.max_early_data_size = 0; // no 0-RTT (see the module docs)
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_config)
        .map_err(|e| std::io::Error::other(format!("HTTP/3 TLS setup: {e}")))?;
    let crypto = cipher::ServerConfig(Arc::new(crypto));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(config.http3_max_concurrent_streams.into());
    // The client's control and QPACK streams; HTTP/3 needs three (RFC 9114 §6.2).
    transport.max_concurrent_uni_streams(8u32.into());
    let idle = quinn::IdleTimeout::try_from(config.http3_idle_timeout)
        .map_err(|e| std::io::Error::other(format!("http3_idle_timeout: {e}")))?;
    transport.max_idle_timeout(Some(idle));
    server.transport_config(Arc::new(transport));
    // New connections waiting for a place under `max_connections`, as the listen
    // backlog holds TCP's; past it quinn refuses them (CONNECTION_REFUSED).
    server.max_incoming(config.backlog.max(1));
    Ok(server)
}

/// Start serving HTTP/3 beside each TCP listener in `listeners` (see the module docs);
/// the accept loops end when `shutdown` turns true. `pressure` is the worker's signal
/// that a new connection waits for a place under `max_connections` (TCP's too).
pub fn start<H: Handler>(
    shared: Arc<Shared<H>>,
    listeners: &[Listener],
    slots: Arc<Semaphore>,
    pressure: Arc<watch::Sender<u64>>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<(Http3, Vec<tokio::task::JoinHandle<()>>)> {
    let server = server_config(&shared.config)?;
    let mut endpoints = Vec::new();
    let mut tasks = Vec::new();
    for listener in listeners {
        let Listener::Tcp(tcp) = listener else {
            continue; // no QUIC on a Unix socket
        };
        let addr = tcp.local_addr()?;
        let udp = bind_udp(addr, tcp).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind UDP {addr} for HTTP/3: {e}"))
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server.clone()),
            udp,
            Arc::new(quinn::TokioRuntime),
        )?;
        tasks.push(tokio::spawn(accept_loop(
            endpoint.clone(),
            addr,
            shared.clone(),
            slots.clone(),
            pressure.clone(),
            shutdown.clone(),
        )));
        endpoints.push(endpoint);
    }
    if !endpoints.is_empty() {
        log::log(log::DEBUG, "serving HTTP/3 on UDP beside the TLS listeners");
    }
    Ok((Http3 { endpoints }, tasks))
}

impl Http3 {
    /// After the drain: give the connections' last packets (CONNECTION_CLOSE) a moment
    /// to leave before the worker exits.
    pub async fn finish(self) {
        for endpoint in self.endpoints {
            endpoint.close(0u32.into(), b"");
            let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
        }
    }
}

async fn accept_loop<H: Handler>(
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    shared: Arc<Shared<H>>,
    slots: Arc<Semaphore>,
    pressure: Arc<watch::Sender<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        // At `max_connections`, as over TCP: the new connection waits for a place (and
        // the ones after it wait in quinn's queue, bounded by `--backlog`) while idle
        // connections, QUIC and TCP alike, are asked to close to make room.
        let stop = async {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let Some(permit) = crate::server::place(&slots, &pressure, stop).await else {
            incoming.refuse();
            endpoint.set_server_config(None);
            return;
        };
        // Spawned as it is (see `server::spawn_connection`); `serve` gives the slot back.
        tokio::spawn(conn::serve(
            incoming,
            local,
            ConnSlot::new(permit),
            shared.clone(),
            pressure.subscribe(),
            shutdown.clone(),
        ));
    }
    // Draining: new connections are refused; the open ones finish (see `conn`).
    endpoint.set_server_config(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_svc_names_the_port() {
        assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
    }

    #[test]
    fn workers_share_the_udp_port() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let a = bind_udp(addr, &tcp).unwrap();
        let b = bind_udp(addr, &tcp).unwrap(); // a second worker's socket
        assert_eq!(a.local_addr().unwrap(), addr);
        assert_eq!(b.local_addr().unwrap(), addr);
        // A socket without SO_REUSEPORT is kept out.
        assert!(std::net::UdpSocket::bind(addr).is_err());
    }
}
