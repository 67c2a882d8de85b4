//! Proxy headers from trusted peers: what the client's address, scheme, host and mount
//! path were before a reverse proxy (nginx, HAProxy, a load balancer) forwarded the
//! request.
//!
//! Decided once per request on the I/O thread, before the WSGI environ, the ASGI scope or
//! the access log line is built: [`apply`] reads the headers only when the connection's
//! peer is trusted (`--forwarded-allow-ips`; Unix-socket peers always are) and stores
//! the outcome as a [`Forwarded`] in the request's extensions, where the environ, the
//! scope and the access log find it. A request without any such header costs one pass
//! over its header names and allocates nothing; an untrusted peer's headers change
//! nothing (they still reach the application as headers).
//!
//! - `X-Forwarded-For`: the client is the right-most hop that is not a trusted proxy,
//!   so a client cannot spoof itself in by sending the header itself; when every hop is
//!   trusted, the left-most. `X-Forwarded-Proto`, `-Host`, `-Port` and `-Prefix` take
//!   their right-most value (the one the nearest proxy wrote).
//! - RFC 7239 `Forwarded`: the element chosen the same way (the right-most whose `for=`
//!   is not a trusted address) gives `for=`, `proto=` and `host=`, which describe the
//!   request that proxy received from the client (RFC 7239 §5). When it parses, it wins:
//!   `X-Forwarded-For`, `-Proto` and `-Host` are then not read. `X-Forwarded-Port` and
//!   `-Prefix` have no `Forwarded` counterpart and apply either way.
//!
//! A malformed value (garbage, an address that does not parse, more than [`MAX_HOPS`]
//! hops) is ignored with a debug log line: never a 500.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, Request};
use ipnet::IpNet;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::log;
use crate::net::Addrs;

/// The most hops (`X-Forwarded-For` entries, `Forwarded` elements) read; a longer chain
/// is ignored as malformed rather than walked.
pub const MAX_HOPS: usize = 32;
/// The longest forwarded host accepted (a DNS name is at most 253 characters, plus a port).
const MAX_HOST_LEN: usize = 260;
/// The longest `X-Forwarded-Prefix` accepted.
const MAX_PREFIX_LEN: usize = 1024;

/// The peers whose proxy headers are believed (`--forwarded-allow-ips`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedPeers {
    any: bool,
    nets: Vec<IpNet>,
}

impl TrustedPeers {
    /// Parse the setting: comma-separated IPs and CIDR networks, or `*` for any; empty
    /// items are skipped (an empty list trusts only Unix-socket peers).
    pub fn parse(list: &str) -> Result<TrustedPeers, String> {
        let mut peers = TrustedPeers::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                peers.any = true;
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                peers.nets.push(IpNet::from(ip.to_canonical()));
            } else {
                let net = item
                    .parse::<IpNet>()
                    .map_err(|_| format!("{item:?} is not an IP address or network"))?;
                peers.nets.push(net.trunc());
            }
        }
        Ok(peers)
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (a dual-stack
    /// socket's view of an IPv4 client) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.any || {
            let ip = ip.to_canonical();
            self.nets.iter().any(|n| n.contains(&ip))
        }
    }

    /// Whether a connection's peer is trusted; `None` (a Unix socket) always is: only
    /// local processes the socket's permissions admit can connect.
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_none_or(|p| self.contains(p.ip()))
    }
}

/// `Settings.forwarded_allow_ips` as [`TrustedPeers`] (`config.rs`'s converter).
/// `settings.py` validated the list; a failure here means an object that did not go
/// through it.
pub fn trusted_peers(obj: &Bound<'_, PyAny>) -> PyResult<TrustedPeers> {
    let list: String = obj.extract()?;
    TrustedPeers::parse(&list)
        .map_err(|e| PyValueError::new_err(format!("forwarded_allow_ips: {e}")))
}

/// What a trusted proxy said about a request; each part is `None` when it said nothing
/// (or nothing valid) about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The client's address; the port is 0 when the proxy did not give one.
    pub client: Option<SocketAddr>,
    /// Whether the client spoke `https` (or `wss`).
    pub https: Option<bool>,
    /// The `Host` the client asked for: name, and `:port` unless the scheme's default.
    pub host: Option<String>,
    /// `SERVER_NAME` / `SERVER_PORT` (ASGI `server`), from the forwarded host and port.
    pub server: Option<(String, u16)>,
    /// The path prefix the proxy mounts the application at (`SCRIPT_NAME`,
    /// `root_path`); empty for the root.
    pub prefix: Option<String>,
}

impl Forwarded {
    /// What [`apply`] stored for this request, if anything.
    pub fn of(parts: &http::request::Parts) -> Option<&Forwarded> {
        parts.extensions.get::<Forwarded>()
    }

    fn is_empty(&self) -> bool {
        *self == Forwarded::default()
    }
}

/// Whether the request's scheme is `https`/`wss`: the proxy's word, else the connection's.
pub fn is_https(parts: &http::request::Parts, tls: bool) -> bool {
    Forwarded::of(parts).and_then(|f| f.https).unwrap_or(tls)
}

/// The client's address for this request: the proxy's word, else the connection's peer.
pub fn client(parts: &http::request::Parts, peer: Option<SocketAddr>) -> Option<SocketAddr> {
    Forwarded::of(parts).and_then(|f| f.client).or(peer)
}

/// Read the proxy headers of `req` if they are to be believed, and store what they say
/// (a [`Forwarded`]) in its extensions.
pub fn apply<B>(config: &crate::config::Config, addrs: &Addrs, tls: bool, req: &mut Request<B>) {
    if !config.proxy_headers
        || !mentions_forwarding(req.headers())
        || !config.forwarded_allow_ips.trusts(addrs.peer)
    {
        return;
    }
    let request_host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let fwd = resolve(
        req.headers(),
        &config.forwarded_allow_ips,
        tls,
        request_host,
        &addrs.server_host,
    );
    if !fwd.is_empty() {
        req.extensions_mut().insert(fwd);
    }
}

/// Whether any header this module reads is present: one pass over the names, no hashing.
fn mentions_forwarding(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("x-forwarded-") || k == "forwarded"
    })
}

fn note(what: &str) {
    if log::debug_enabled() {
        log::log(log::DEBUG, &format!("proxy headers: {what}; ignored"));
    }
}

/// What the headers say, for a request whose peer is trusted. `tls` is whether the
/// connection is TLS, `request_host` its `Host` (or `:authority`), `server_host` the
/// listener's address (for a forwarded port without any host).
pub fn resolve(
    headers: &HeaderMap,
    trusted: &TrustedPeers,
    tls: bool,
    request_host: Option<&str>,
    server_host: &str,
) -> Forwarded {
    let mut fwd = Forwarded::default();
    let mut host_value: Option<Cow<'_, str>> = None;
    let mut from_forwarded = false;
    if headers.contains_key(http::header::FORWARDED) {
        match forwarded_element(headers, trusted) {
            Ok(el) => {
                from_forwarded = true;
                if let Some(node) = el.for_ {
                    fwd.client = parse_node(&node);
                    if fwd.client.is_none() {
                        note(&format!("Forwarded for={node:?} is not an IP address"));
                    }
                }
                if let Some(proto) = el.proto {
                    fwd.https = parse_proto(&proto);
                    if fwd.https.is_none() {
                        note(&format!("Forwarded proto={proto:?} is not a known scheme"));
                    }
                }
                host_value = el.host;
            }
            Err(why) => note(&format!("malformed Forwarded header: {why}")),
        }
    }
    if !from_forwarded {
        match forwarded_for(headers, trusted) {
            Ok(client) => fwd.client = client,
            Err(why) => note(&format!("malformed X-Forwarded-For: {why}")),
        }
        if let Some(proto) = last_value(headers, "x-forwarded-proto") {
            fwd.https = parse_proto(proto);
            if fwd.https.is_none() {
                note(&format!(
                    "X-Forwarded-Proto {proto:?} is not a known scheme"
                ));
            }
        }
        host_value = last_value(headers, "x-forwarded-host").map(Cow::Borrowed);
    }
    let port = last_value(headers, "x-forwarded-port").and_then(|p| {
        let port = parse_port(p);
        if port.is_none() {
            note(&format!("X-Forwarded-Port {p:?} is not a port"));
        }
        port
    });
    if let Some(p) = last_value(headers, "x-forwarded-prefix") {
        fwd.prefix = parse_prefix(p);
        if fwd.prefix.is_none() {
            note(&format!("X-Forwarded-Prefix {p:?} is not a path"));
        }
    }
    let host = host_value.as_deref().and_then(|h| {
        let split = split_host(h);
        if split.is_none() {
            note(&format!("forwarded host {h:?} is not a host"));
        }
        split
    });
    if host.is_some() || port.is_some() {
        let default_port = if fwd.https.unwrap_or(tls) { 443 } else { 80 };
        let (name, host_port) = host
            .or_else(|| request_host.and_then(split_host))
            .unwrap_or((server_host, None));
        let port = port.or(host_port).unwrap_or(default_port);
        fwd.host = Some(if port == default_port {
            name.to_owned()
        } else {
            format!("{name}:{port}")
        });
        fwd.server = Some((name.to_owned(), port));
    }
    fwd
}

/// The right-most value of the last `name` header line, trimmed; `None` when absent,
/// empty or not visible ASCII.
fn last_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get_all(name).iter().next_back()?;
    let s = value.to_str().ok()?.rsplit(',').next()?.trim();
    (!s.is_empty()).then_some(s)
}

/// The client according to `X-Forwarded-For` (every line, in order): the right-most hop
/// that is not trusted, else the left-most.
fn forwarded_for(
    headers: &HeaderMap,
    trusted: &TrustedPeers,
) -> Result<Option<SocketAddr>, String> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let s = value.to_str().map_err(|_| "not visible ASCII".to_owned())?;
        for hop in s.split(',').map(str::trim) {
            if hops.len() == MAX_HOPS {
                return Err(format!("more than {MAX_HOPS} hops"));
            }
            hops.push(parse_node(hop).ok_or_else(|| format!("{hop:?} is not an IP address"))?);
        }
    }
    Ok(hops
        .iter()
        .rev()
        .find(|h| !trusted.contains(h.ip()))
        .or(hops.first())
        .copied())
}

/// One `Forwarded` element's parameters that matter here.
#[derive(Debug, Default, PartialEq)]
struct Element<'a> {
    for_: Option<Cow<'a, str>>,
    proto: Option<Cow<'a, str>>,
    host: Option<Cow<'a, str>>,
}

/// The `Forwarded` element that describes the client's request: the right-most whose
/// `for=` is not a trusted address, else the left-most.
fn forwarded_element<'h>(
    headers: &'h HeaderMap,
    trusted: &TrustedPeers,
) -> Result<Element<'h>, String> {
    let mut elements = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let s = value.to_str().map_err(|_| "not visible ASCII".to_owned())?;
        parse_forwarded(s, &mut elements)?;
    }
    let trusted_hop = |e: &Element<'_>| {
        e.for_
            .as_deref()
            .and_then(parse_node)
            .is_some_and(|a| trusted.contains(a.ip()))
    };
    let i = elements.iter().rposition(|e| !trusted_hop(e)).unwrap_or(0);
    if elements.is_empty() {
        return Err("no elements".to_owned());
    }
    Ok(elements.swap_remove(i))
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse one `Forwarded` field line (RFC 7239 §4) into `out`: comma-separated
/// elements of `;`-separated `name=value` pairs, values a token or a quoted string.
/// Parameters other than `for`, `proto` and `host` are skipped; one repeated within an
/// element is an error (§4).
fn parse_forwarded<'a>(line: &'a str, out: &mut Vec<Element<'a>>) -> Result<(), String> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut el = Element::default();
    let mut started = false;
    let skip_ows = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ows(&mut i);
        if i == b.len() || b[i] == b',' {
            if started {
                if out.len() == MAX_HOPS {
                    return Err(format!("more than {MAX_HOPS} elements"));
                }
                out.push(std::mem::take(&mut el));
                started = false;
            }
            if i == b.len() {
                return Ok(());
            }
            i += 1;
            continue;
        }
        if b[i] == b';' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        let name = &line[start..i];
        if name.is_empty() || i == b.len() || b[i] != b'=' {
            return Err(format!("expected name=value at {:?}", &line[start..]));
        }
        i += 1;
        let value: Cow<'a, str> = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut owned: Option<String> = None;
            let vstart = i;
            loop {
                match b.get(i) {
                    None => return Err("unterminated quoted string".to_owned()),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let o = owned.get_or_insert_with(|| line[vstart..i].to_owned());
                        let c = *b.get(i + 1).ok_or("unterminated quoted string")?;
                        o.push(c as char);
                        i += 2;
                    }
                    Some(&c) => {
                        if let Some(o) = owned.as_mut() {
                            o.push(c as char);
                        }
                        i += 1;
                    }
                }
            }
            let v = match owned {
                Some(o) => Cow::Owned(o),
                None => Cow::Borrowed(&line[vstart..i]),
            };
            i += 1;
            v
        } else {
            let vstart = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            Cow::Borrowed(&line[vstart..i])
        };
        if value.is_empty() {
            return Err(format!("empty value for {name}"));
        }
        let slot = if name.eq_ignore_ascii_case("for") {
            Some(&mut el.for_)
        } else if name.eq_ignore_ascii_case("proto") {
            Some(&mut el.proto)
        } else if name.eq_ignore_ascii_case("host") {
            Some(&mut el.host)
        } else {
            None
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err(format!("{name} repeated in one element"));
            }
            *slot = Some(value);
        }
        started = true;
        skip_ows(&mut i);
        if i < b.len() && b[i] != b';' && b[i] != b',' {
            return Err(format!("unexpected {:?}", &line[i..]));
        }
    }
}

/// A hop's address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:5678`; the port is 0 when not given.
fn parse_node(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    let addr = if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, 0)
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        sa
    } else {
        let inner = s.strip_prefix('[')?.strip_suffix(']')?;
        SocketAddr::new(IpAddr::V6(inner.parse::<Ipv6Addr>().ok()?), 0)
    };
    Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// `http`/`ws` → false, `https`/`wss` → true; anything else is not a scheme we know.
fn parse_proto(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") {
        Some(true)
    } else if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") {
        Some(false)
    } else {
        None
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// A `Host` value as (name, port): a DNS name or IPv4 address, or an IPv6 literal in
/// brackets, then an optional `:port`.
fn split_host(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() || s.len() > MAX_HOST_LEN {
        return None;
    }
    let (name, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        s[1..end].parse::<Ipv6Addr>().ok()?;
        let rest = &s[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&s[..=end], port)
    } else {
        let (name, port) = match s.split_once(':') {
            Some((n, p)) => (n, Some(parse_port(p)?)),
            None => (s, None),
        };
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if name.is_empty() || !name.bytes().all(ok) {
            return None;
        }
        (name, port)
    };
    Some((name, port))
}

/// A mount path: `/` followed by path characters (RFC 3986 `pchar`s without
/// percent-encoding); a trailing `/` is dropped, so `/` is the root (empty).
fn parse_prefix(s: &str) -> Option<String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b);
    if !s.starts_with('/') || s.len() > MAX_PREFIX_LEN || !s.bytes().all(ok) {
        return None;
    }
    Some(s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn peers(list: &str) -> TrustedPeers {
        TrustedPeers::parse(list).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn resolve_with(pairs: &[(&'static str, &str)], trusted: &str) -> Forwarded {
        resolve(
            &headers(pairs),
            &peers(trusted),
            false,
            Some("backend:8000"),
            "127.0.0.1",
        )
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn trusted_peers_parse_and_match() {
        let p = peers("127.0.0.1, ::1,10.0.0.0/8 ,,2001:db8::/32");
        assert!(p.contains("127.0.0.1".parse().unwrap()));
        assert!(p.contains("10.200.1.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(p.contains("2001:db8::5".parse().unwrap()));
        // A dual-stack socket's IPv4 client.
        assert!(p.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(p.trusts(None));
        assert!(!p.trusts(addr("192.0.2.1:5")));
        assert!(peers("*").contains("192.0.2.1".parse().unwrap()));
        assert!(peers("").trusts(None));
        assert!(!peers("").contains("127.0.0.1".parse().unwrap()));
        assert!(TrustedPeers::parse("10.0.0.0/33").is_err());
        assert!(TrustedPeers::parse("localhost").is_err());
        // Host bits in a network are dropped.
        assert!(peers("10.1.2.3/8").contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn nothing_to_say_without_headers() {
        assert!(resolve_with(&[], "127.0.0.1").is_empty());
        assert!(!mentions_forwarding(&headers(&[("x-real-ip", "1.2.3.4")])));
        assert!(mentions_forwarding(&headers(&[(
            "x-forwarded-proto",
            "https"
        )])));
        assert!(mentions_forwarding(&headers(&[(
            "forwarded",
            "for=1.2.3.4"
        )])));
    }

    #[test]
    fn x_forwarded_for_picks_the_rightmost_untrusted_hop() {
        let f = |v: &str, t: &str| resolve_with(&[("x-forwarded-for", v)], t).client;
        assert_eq!(f("203.0.113.7", "127.0.0.1"), addr("203.0.113.7:0"));
        // The client's own (spoofed) entry comes first; the proxy appended the real one.
        assert_eq!(
            f("1.1.1.1, 203.0.113.7, 10.0.0.2", "10.0.0.0/8"),
            addr("203.0.113.7:0")
        );
        // Every hop trusted: the left-most.
        assert_eq!(f("10.0.0.9, 10.0.0.2", "10.0.0.0/8"), addr("10.0.0.9:0"));
        assert_eq!(f("1.1.1.1, 2.2.2.2", "*"), addr("1.1.1.1:0"));
        // Ports and IPv6 forms.
        assert_eq!(f("203.0.113.7:4711", ""), addr("203.0.113.7:4711"));
        assert_eq!(f("[2001:db8::1]:80", ""), addr("[2001:db8::1]:80"));
        assert_eq!(f("2001:db8::1", ""), addr("[2001:db8::1]:0"));
        assert_eq!(f("[2001:db8::1]", ""), addr("[2001:db8::1]:0"));
        // Several lines are one list, in order.
        let two = headers(&[
            ("x-forwarded-for", "5.5.5.5"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(
            resolve(&two, &peers(""), false, None, "h").client,
            addr("6.6.6.6:0")
        );
    }

    #[test]
    fn malformed_x_forwarded_for_is_ignored() {
        for bad in ["garbage", "1.2.3.4, , 5.6.7.8", "1.2.3.256", "unknown", ""] {
            assert_eq!(
                resolve_with(&[("x-forwarded-for", bad)], "").client,
                None,
                "{bad}"
            );
        }
        let many = vec!["1.2.3.4"; MAX_HOPS + 1].join(",");
        assert_eq!(resolve_with(&[("x-forwarded-for", &many)], "").client, None);
        let most = vec!["1.2.3.4"; MAX_HOPS].join(",");
        assert_eq!(
            resolve_with(&[("x-forwarded-for", &most)], "").client,
            addr("1.2.3.4:0")
        );
    }

    #[test]
    fn scheme_host_port_prefix() {
        let f = resolve_with(
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-prefix", "/app/"),
            ],
            "",
        );
        assert_eq!(f.https, Some(true));
        assert_eq!(f.host.as_deref(), Some("example.com"));
        assert_eq!(f.server, Some(("example.com".to_owned(), 443)));
        assert_eq!(f.prefix.as_deref(), Some("/app"));
        // A port that is not the scheme's default stays in the host.
        let f = resolve_with(
            &[
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "8443"),
            ],
            "",
        );
        assert_eq!(f.host.as_deref(), Some("example.com:8443"));
        assert_eq!(f.server, Some(("example.com".to_owned(), 8443)));
        // A port alone: the request's own host name with it.
        let f = resolve_with(&[("x-forwarded-port", "80")], "");
        assert_eq!(f.host.as_deref(), Some("backend"));
        assert_eq!(f.server, Some(("backend".to_owned(), 80)));
        let f = resolve_with(&[("x-forwarded-host", "[2001:db8::1]:9000")], "");
        assert_eq!(f.server, Some(("[2001:db8::1]".to_owned(), 9000)));
        // Right-most value of a list; case-insensitive schemes; ws/wss.
        assert_eq!(
            resolve_with(&[("x-forwarded-proto", "http, HTTPS")], "").https,
            Some(true)
        );
        assert_eq!(
            resolve_with(&[("x-forwarded-proto", "wss")], "").https,
            Some(true)
        );
        assert_eq!(
            resolve_with(&[("x-forwarded-proto", "ws")], "").https,
            Some(false)
        );
        assert_eq!(
            resolve_with(&[("x-forwarded-prefix", "/")], "")
                .prefix
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn malformed_scheme_host_port_prefix_are_ignored() {
        for (name, bad) in [
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "exa mple.com"),
            ("x-forwarded-host", "example.com:http"),
            ("x-forwarded-host", "[::1"),
            ("x-forwarded-host", "a/b"),
            ("x-forwarded-port", "65536"),
            ("x-forwarded-port", "0"),
            ("x-forwarded-port", "-1"),
            ("x-forwarded-prefix", "app"),
            ("x-forwarded-prefix", "/a b"),
            ("x-forwarded-prefix", "/a%2e%2e"),
        ] {
            assert!(resolve_with(&[(name, bad)], "").is_empty(), "{name}: {bad}");
        }
        let long = "a".repeat(MAX_HOST_LEN + 1);
        assert!(resolve_with(&[("x-forwarded-host", &long)], "").is_empty());
    }

    #[test]
    fn forwarded_parses() {
        let mut out = Vec::new();
        parse_forwarded(
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711" ;host="ex\"a""#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].for_.as_deref(), Some("192.0.2.60"));
        assert_eq!(out[0].proto.as_deref(), Some("http"));
        assert_eq!(out[1].for_.as_deref(), Some("[2001:db8:cafe::17]:4711"));
        assert_eq!(out[1].host.as_deref(), Some("ex\"a"));
        for bad in [
            "for",
            "for=",
            "for=\"1.2.3.4",
            "for=1.2.3.4;for=5.6.7.8",
            "for=1.2.3.4 x",
            "=x",
            "for=a\"b\"",
        ] {
            assert!(parse_forwarded(bad, &mut Vec::new()).is_err(), "{bad}");
        }
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        let mut out = Vec::new();
        parse_forwarded(", for=1.2.3.4,,", &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn forwarded_picks_the_clients_element_and_wins() {
        let f = resolve_with(
            &[
                (
                    "forwarded",
                    "for=198.51.100.1;proto=http, for=203.0.113.7;proto=https;host=example.com",
                ),
                ("forwarded", "for=10.0.0.2;proto=http"),
                ("x-forwarded-for", "192.0.2.99"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "other.example"),
            ],
            "10.0.0.0/8",
        );
        // The right-most element whose for= is untrusted describes the client's request.
        assert_eq!(f.client, addr("203.0.113.7:0"));
        assert_eq!(f.https, Some(true));
        assert_eq!(f.host.as_deref(), Some("example.com"));
        // for= with a port, quoted IPv6.
        let f = resolve_with(&[("forwarded", r#"for="[2001:db8::17]:4711""#)], "");
        assert_eq!(f.client, addr("[2001:db8::17]:4711"));
        // Obfuscated or unknown for=: no client, the rest still counts.
        let f = resolve_with(&[("forwarded", "for=unknown;proto=https")], "");
        assert_eq!((f.client, f.https), (None, Some(true)));
        // A malformed Forwarded is ignored and X-Forwarded-* apply.
        let f = resolve_with(
            &[
                ("forwarded", "for=\"oops"),
                ("x-forwarded-for", "192.0.2.99"),
            ],
            "",
        );
        assert_eq!(f.client, addr("192.0.2.99:0"));
        // Too many elements.
        let many = vec!["for=1.2.3.4"; MAX_HOPS + 1].join(",");
        assert!(resolve_with(&[("forwarded", &many)], "").is_empty());
    }

    #[test]
    fn not_visible_ascii_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        h.insert("forwarded", HeaderValue::from_bytes(b"for=\xff").unwrap());
        assert!(resolve(&h, &peers(""), false, None, "h").is_empty());
    }
}
