//! The HAProxy PROXY protocol (`--proxy-protocol`): a load balancer that forwards raw
//! connections (HAProxy `send-proxy` / `send-proxy-v2`, AWS NLB, many others) writes one
//! header before the client's first byte, saying who the client is. With the setting on,
//! every connection must start with that header, version 1 (text) or 2 (binary), and
//! the address it gives becomes the connection's peer: the WSGI `REMOTE_ADDR` and
//! `REMOTE_PORT`, the ASGI `client`, the access log's address.
//!
//! The header is read before anything else, TLS included (the proxy writes it in
//! cleartext before the client's handshake), and only from trusted peers (the
//! `--forwarded-allow-ips` list; Unix-socket peers always are): anyone who can reach
//! the port directly could otherwise claim any address. A connection from an untrusted
//! peer, or whose header is missing or malformed, is closed with a warning (at most one
//! line a second, with how many were closed since, so a flood cannot flood the log); one
//! that sends nothing within `--header-read-timeout` is closed with a debug line.
//!
//! The header is read without reading past it (the bytes after it belong to TLS or
//! HTTP): a fixed 15 bytes first (the shortest header, `PROXY UNKNOWN\r\n`), then the
//! length a version 2 header announces, or the rest of a version 1 line byte by byte
//! (at most 92 more reads, and only for the rarer text format). `ppp` parses it.
//!
//! What the header says, and what is kept from the real connection:
//! - `PROXY` (v2) or `TCP4`/`TCP6` (v1) with IPv4 or IPv6 addresses: the source address
//!   is the client.
//! - v2 `LOCAL` (the proxy's own health checks), v1 `UNKNOWN`, v2 with an unspecified
//!   or Unix-socket address family: the real peer stays the peer, as the specification
//!   asks.
//! - v2 TLVs (TLS details, unique ids) are ignored. The destination address is not used:
//!   `SERVER_NAME`/`SERVER_PORT` stay the listener's.
//!
//! The proxy headers (`crate::http::proxy`) apply on top, with the address from the
//! PROXY header as the peer whose `X-Forwarded-*` are believed or not: behind a TCP
//! proxy the connection is, for every purpose, the client's, and a client's own
//! `X-Forwarded-For` must not be believed just because a trusted proxy relayed its bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::http::proxy::TrustedPeers;
use crate::log;
use crate::net::Addrs;

/// The version 2 signature (the first 12 bytes of a binary header).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The shortest header there is: `PROXY UNKNOWN\r\n` (a v2 header has at least 16).
const MIN_HEADER: usize = 15;
/// The longest version 1 line, CRLF included (the specification's 107).
const V1_MAX: usize = 107;

/// Why a connection was closed before its first request.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is not in `--forwarded-allow-ips`.
    Untrusted,
    /// No complete header within the header read timeout.
    TimedOut,
    /// The connection closed (or failed) before the header was complete.
    Closed,
    /// Not a PROXY protocol header, or one that does not parse.
    Malformed(String),
}

/// Read the PROXY protocol header from `io`, which has not been read from yet, and
/// return the connection's addresses as the application should see them; `None` when
/// the connection is to be closed (logged here).
pub async fn accept<S: AsyncRead + Unpin>(
    io: &mut S,
    addrs: Addrs,
    config: &crate::config::Config,
) -> Option<Addrs> {
    let (trusted, timeout) = (&config.forwarded_allow_ips, config.header_read_timeout);
    let from = match addrs.peer {
        Some(p) => p.to_string(),
        None => format!("unix:{}", addrs.server_host),
    };
    match handshake(io, addrs, trusted, timeout).await {
        Ok(addrs) => Some(addrs),
        Err(refusal) => {
            refused(&refusal, &from);
            None
        }
    }
}

/// [`accept`] without the log line.
pub async fn handshake<S: AsyncRead + Unpin>(
    io: &mut S,
    mut addrs: Addrs,
    trusted: &TrustedPeers,
    timeout: Duration,
) -> Result<Addrs, Refusal> {
    if !trusted.trusts(addrs.peer) {
        return Err(Refusal::Untrusted);
    }
    let header = tokio::time::timeout(timeout, read_header(io))
        .await
        .map_err(|_| Refusal::TimedOut)??;
    if let Some(client) = parse(&header)? {
        addrs.peer = Some(client);
    }
    Ok(addrs)
}

/// Read exactly one header's bytes (checking only its framing: the signature, the v2
/// length, the v1 line end).
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, Refusal> {
    let closed = |_| Refusal::Closed;
    let mut buf = vec![0u8; MIN_HEADER];
    io.read_exact(&mut buf).await.map_err(closed)?;
    if buf.starts_with(V2_SIGNATURE) {
        buf.resize(16, 0);
        io.read_exact(&mut buf[MIN_HEADER..])
            .await
            .map_err(closed)?;
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        buf.resize(16 + len, 0);
        io.read_exact(&mut buf[16..]).await.map_err(closed)?;
        return Ok(buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(Refusal::Malformed(format!(
            "no PROXY protocol header (the connection starts with {:?})",
            String::from_utf8_lossy(&buf)
        )));
    }
    while !buf.ends_with(b"\r\n") {
        if buf.len() == V1_MAX {
            return Err(Refusal::Malformed(format!(
                "PROXY protocol v1 line longer than {V1_MAX} bytes"
            )));
        }
        buf.push(io.read_u8().await.map_err(closed)?);
    }
    Ok(buf)
}

/// The client's address according to one complete header; `None` when the header says
/// to keep the real peer (v2 `LOCAL`, v1 `UNKNOWN`, no IP address family).
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, Refusal> {
    let malformed = |e: &dyn std::fmt::Display| {
        Refusal::Malformed(format!("invalid PROXY protocol header: {e}"))
    };
    if header.starts_with(V2_SIGNATURE) {
        use ppp::v2::{Addresses, Command, Header};
        let h = Header::try_from(header).map_err(|e| malformed(&e))?;
        if h.command == Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            Addresses::Unspecified | Addresses::Unix(_) => None,
        });
    }
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(header).map_err(|e| malformed(&e))?;
    Ok(match h.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    })
}

/// Log a refused connection: timeouts and early closes as debug lines (scanners, port
/// checks), the rest as a warning, at most one a second with a count of the others.
fn refused(refusal: &Refusal, from: &str) {
    let why = match refusal {
        Refusal::TimedOut => {
            log::log(
                log::DEBUG,
                &format!("PROXY protocol: no header from {from} in time; connection closed"),
            );
            return;
        }
        Refusal::Closed => {
            log::log(
                log::DEBUG,
                &format!("PROXY protocol: {from} closed before sending its header"),
            );
            return;
        }
        Refusal::Untrusted => "the peer is not trusted (not in --forwarded-allow-ips)".to_owned(),
        Refusal::Malformed(why) => why.clone(),
    };
    if let Some(others) = THROTTLE.admit() {
        let more = match others {
            0 => String::new(),
            n => format!(" ({n} more refused since the last such line)"),
        };
        log::log(
            log::WARNING,
            &format!("PROXY protocol: connection from {from} closed: {why}{more}"),
        );
    }
}

static THROTTLE: Throttle = Throttle::new();

/// At most one event a second passes; [`Throttle::admit`] says how many were held back
/// since the last one that passed.
struct Throttle {
    held: AtomicU64,
    /// Milliseconds since `EPOCH` (plus one second) of the last event that passed.
    last: AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Throttle {
            held: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1000;
        let last = self.last.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Type, Version};
    use tokio::io::AsyncWriteExt;

    fn v2(command: Command, addrs: impl Into<ppp::v2::Addresses>) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addrs)
            .write_tlv(Type::NoOp, b"ignored")
            .unwrap()
            .build()
            .unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v1() {
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"),
            Ok(Some(sock("192.0.2.7:56324")))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n"),
            Ok(Some(sock("[2001:db8::7]:4000")))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert_eq!(parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Ok(None));
        for bad in [
            &b"PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 443\r\n",
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
        ] {
            assert!(matches!(parse(bad), Err(Refusal::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn parses_v2() {
        let (client, server) = (sock("192.0.2.7:56324"), sock("10.0.0.1:443"));
        assert_eq!(
            parse(&v2(Command::Proxy, (client, server))),
            Ok(Some(client))
        );
        let (c6, s6) = (sock("[2001:db8::7]:4000"), sock("[2001:db8::1]:80"));
        assert_eq!(parse(&v2(Command::Proxy, (c6, s6))), Ok(Some(c6)));
        // LOCAL (the proxy's health check) and unspecified addresses keep the real peer.
        assert_eq!(parse(&v2(Command::Local, (client, server))), Ok(None));
        assert_eq!(
            parse(&v2(Command::Proxy, ppp::v2::Addresses::Unspecified)),
            Ok(None)
        );
        let unix = ppp::v2::Unix::new([1; 108], [2; 108]);
        assert_eq!(parse(&v2(Command::Proxy, unix)), Ok(None));
        // A version other than 2, and addresses shorter than their family needs.
        let mut bad = v2(Command::Proxy, (client, server));
        bad[12] = 0x31;
        assert!(matches!(parse(&bad), Err(Refusal::Malformed(_))));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(Refusal::Malformed(_))));
    }

    /// `read_header` on a connection whose client sent `sent` (then closed, if `close`):
    /// the header and the bytes left after it.
    async fn read(sent: &[u8], close: bool) -> (Result<Vec<u8>, Refusal>, Vec<u8>) {
        let (mut server, mut client) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(sent).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_millis(300), read_header(&mut server))
            .await
            .unwrap_or(Err(Refusal::TimedOut));
        drop(client);
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (got, rest)
    }

    #[tokio::test]
    async fn reads_no_further_than_the_header() {
        let get = b"GET / HTTP/1.1\r\n\r\n";
        for header in [
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(Command::Proxy, (sock("192.0.2.7:1"), sock("10.0.0.1:2"))),
        ] {
            let (got, rest) = read(&[&header[..], get].concat(), true).await;
            assert_eq!(got, Ok(header));
            assert_eq!(rest, get);
        }
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_header() {
        let (got, _) = read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert!(matches!(got, Err(Refusal::Malformed(_))));
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
        let (got, _) = read(&long, true).await;
        assert!(matches!(got, Err(Refusal::Malformed(_))));
        // Cut short: closed, or silent until the caller's timeout.
        assert_eq!(read(b"PROXY TCP4 1.2", true).await.0, Err(Refusal::Closed));
        assert_eq!(read(b"", true).await.0, Err(Refusal::Closed));
        let cut = v2(Command::Proxy, (sock("192.0.2.7:1"), sock("10.0.0.1:2")));
        assert_eq!(read(&cut[..20], true).await.0, Err(Refusal::Closed));
        assert_eq!(read(&cut[..20], false).await.0, Err(Refusal::TimedOut));
    }

    #[tokio::test]
    async fn trusts_and_replaces_the_peer() {
        let addrs = |peer: Option<&str>| Addrs {
            peer: peer.map(sock),
            server_host: "127.0.0.1".into(),
            server_port: 8000,
        };
        let loopback = TrustedPeers::parse("127.0.0.1").unwrap();
        let t = Duration::from_millis(300);
        let run = |sent: &'static [u8], peer: Option<&'static str>, trusted: TrustedPeers| async move {
            let (mut server, mut client) = tokio::net::UnixStream::pair().unwrap();
            client.write_all(sent).await.unwrap();
            handshake(&mut server, addrs(peer), &trusted, t)
                .await
                .map(|a| a.peer)
        };
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n";
        assert_eq!(
            run(v1, Some("127.0.0.1:5000"), loopback.clone()).await,
            Ok(Some(sock("192.0.2.7:56324")))
        );
        // A Unix-socket peer is trusted whatever the list says.
        assert_eq!(
            run(v1, None, TrustedPeers::parse("").unwrap()).await,
            Ok(Some(sock("192.0.2.7:56324")))
        );
        assert_eq!(
            run(v1, Some("192.0.2.9:5000"), loopback.clone()).await,
            Err(Refusal::Untrusted)
        );
        // UNKNOWN keeps the real peer (None on a Unix socket).
        assert_eq!(
            run(
                b"PROXY UNKNOWN\r\n",
                Some("127.0.0.1:5000"),
                loopback.clone()
            )
            .await,
            Ok(Some(sock("127.0.0.1:5000")))
        );
        assert_eq!(run(b"PROXY UNKNOWN\r\n", None, loopback).await, Ok(None));
    }

    #[test]
    fn throttles() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        t.last.store(0, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(2));
    }
}
