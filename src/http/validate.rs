//! Request framing checks beyond what hyper enforces, per RFC 9112.
//!
//! hyper already rejects a malformed request line or header, a Transfer-Encoding whose
//! last coding is not `chunked`, and conflicting Content-Length values. What it lets
//! through and we reject (400, then close — so a smuggled request inside the body is
//! never parsed):
//! - no Host in HTTP/1.1, more than one Host, or a Host that is not `uri-host[:port]`
//!   (RFC 9112 §3.2: "A server MUST respond with a 400 … to any HTTP/1.1 request message
//!   that lacks a Host header field and to any request message that contains more than
//!   one Host header field line or a Host header field with an invalid field value");
//! - Content-Length together with Transfer-Encoding (§6.1: such a message "might
//!   indicate an attempt to perform request smuggling"; we reject rather than guess);
//! - a Content-Length that is not a single run of digits (lists, signs, duplicates).
//!
//! A declared body larger than `max_body_size` gets 413 before the app runs.
//!
//! Every rejection is answered by [`Rejection::response`]: with `Connection: close`,
//! except the load shedding of `--limit-concurrency` ([`Rejection::OVERLOADED`]), whose
//! request was well formed and whose client may retry on the same connection.

use http::header::{HeaderValue, CONTENT_LENGTH, HOST, RETRY_AFTER, TRANSFER_ENCODING};
use http::{HeaderMap, Response, StatusCode, Version};

use super::{plain_response, ResponseBody};

/// Why a request is refused before it reaches the application.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Rejection {
    /// A request beyond `--limit-concurrency`: 503 with `Retry-After: 1`, keep-alive.
    pub const OVERLOADED: Rejection = Rejection {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: "too many requests in flight",
    };

    /// The answer to the rejected request (see the module docs).
    pub fn response(&self, server_header: bool) -> Response<ResponseBody> {
        let overloaded = *self == Rejection::OVERLOADED;
        let mut resp = plain_response(self.status, self.reason, !overloaded, server_header);
        if overloaded {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn reject(status: StatusCode, reason: &'static str) -> Rejection {
    Rejection { status, reason }
}

/// Check an HTTP/1.x request head. `Ok(content_length)` when it may be served.
pub fn check_request(
    version: Version,
    headers: &HeaderMap,
    max_body_size: Option<u64>,
) -> Result<Option<u64>, Rejection> {
    let bad = StatusCode::BAD_REQUEST;
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        let mut hosts = headers.get_all(HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if version == Version::HTTP_11 => {
                return Err(reject(bad, "missing Host header"))
            }
            (Some(_), Some(_)) => return Err(reject(bad, "more than one Host header")),
            (Some(h), None) if !valid_host(h.as_bytes()) => {
                return Err(reject(bad, "invalid Host header"))
            }
            _ => {}
        }
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(reject(bad, "more than one Content-Length")),
        (Some(v), None) => Some(
            parse_content_length(v.as_bytes())
                .ok_or_else(|| reject(bad, "invalid Content-Length"))?,
        ),
    };
    if length.is_some() && headers.contains_key(TRANSFER_ENCODING) {
        return Err(reject(bad, "both Content-Length and Transfer-Encoding"));
    }
    if let (Some(len), Some(max)) = (length, max_body_size) {
        if len > max {
            return Err(reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body larger than max_body_size",
            ));
        }
    }
    Ok(length)
}

/// `1*DIGIT`, no sign, no list, no overflow.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2); empty is allowed.
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        // IP-literal: "[" IPv6address / IPvFuture "]"
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &rest[..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &b""[..]),
        }
    };
    let reg_name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    reg_name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_rules() {
        let v11 = Version::HTTP_11;
        assert!(check_request(v11, &headers(&[("host", "a.example:80")]), None).is_ok());
        assert_eq!(
            check_request(v11, &headers(&[]), None).unwrap_err().reason,
            "missing Host header"
        );
        assert!(check_request(Version::HTTP_10, &headers(&[]), None).is_ok());
        let two = headers(&[("host", "a"), ("host", "a")]);
        assert!(check_request(v11, &two, None).is_err());
        for bad in ["a b", "foo/bar", "a@b", "[::1", "[zz]", "h:80x", "h:123456"] {
            assert!(!valid_host(bad.as_bytes()), "{bad} accepted");
        }
        for good in [
            "",
            "localhost",
            "127.0.0.1:8000",
            "[::1]:80",
            "[::1]",
            "xn--d-1ga.de",
        ] {
            assert!(valid_host(good.as_bytes()), "{good} rejected");
        }
    }

    #[test]
    fn content_length_rules() {
        let v11 = Version::HTTP_11;
        let ok = headers(&[("host", "h"), ("content-length", "5")]);
        assert_eq!(check_request(v11, &ok, None), Ok(Some(5)));
        for bad in ["5, 5", "+5", "-1", "", "0x10", "99999999999999999999"] {
            assert_eq!(parse_content_length(bad.as_bytes()), None, "{bad}");
        }
        let dup = headers(&[
            ("host", "h"),
            ("content-length", "5"),
            ("content-length", "5"),
        ]);
        assert!(check_request(v11, &dup, None).is_err());
        let both = headers(&[
            ("host", "h"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            check_request(v11, &both, None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let big = headers(&[("host", "h"), ("content-length", "2000")]);
        assert_eq!(
            check_request(v11, &big, Some(1000)).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(check_request(v11, &big, Some(2000)).is_ok());
    }
}
