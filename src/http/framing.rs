//! Follows HTTP/1.1 request framing over the raw bytes of a connection, to report the
//! one thing hyper hides: a request head carrying both `Content-Length` and
//! `Transfer-Encoding`. hyper frames such a request by Transfer-Encoding and deletes the
//! Content-Length before the service sees it (RFC 9112 §6.1 allows that); gristmill
//! rejects it with 400 instead, as the classic request-smuggling vector.
//!
//! The scanner skips bodies in O(1) (by Content-Length, or chunk by chunk), so body
//! bytes are never mistaken for a head. Whenever it meets something it does not follow
//! (an upgrade, CONNECT, an oversized or malformed head, a bad chunk) it switches
//! itself off: hyper rejects those requests anyway, and a scanner that is off only
//! reports nothing. A report names the request by its index on the connection (0 for
//! the first request), and the server acts on it only for the request with that index:
//! pipelined requests with the same request line cannot take each other's report.

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Head,
    Body(u64),
    ChunkSize { digits: u32, value: u64, ext: bool },
    ChunkData(u64),
    ChunkDataEnd { cr: bool },
    Trailers { line: usize },
    Off,
}

/// See the module docs.
pub struct FramingScanner {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    /// Complete request heads seen so far: the index of the next request.
    requests: usize,
    /// The index of the request that carried both Content-Length and Transfer-Encoding
    /// (there is at most one: the scanner stops following the connection after it).
    pub conflict: Option<usize>,
}

impl FramingScanner {
    pub fn new(max_head: usize) -> Self {
        FramingScanner {
            state: State::Head,
            head: Vec::new(),
            max_head,
            requests: 0,
            conflict: None,
        }
    }

    /// Whether the scanner still follows the connection.
    pub fn is_on(&self) -> bool {
        self.state != State::Off
    }

    /// Feed the next bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    if self.head.is_empty() {
                        // RFC 9112 §2.2: empty lines before the request line are ignored.
                        let skip = data
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let start = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(data);
                    match find_head_end(&self.head[start..]) {
                        Some(end) => {
                            let end = start + end;
                            let rest_from = end - (self.head.len() - data.len());
                            data = &data[rest_from..];
                            let head = std::mem::take(&mut self.head);
                            let index = self.requests;
                            self.requests += 1;
                            self.state = self.parse_head(&head[..end], index);
                            self.head = head;
                            self.head.clear();
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                self.state = State::Off;
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkSize { digits, value, ext } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match b {
                        b'\n' if digits == 0 => State::Off,
                        b'\n' if value == 0 => State::Trailers { line: 0 },
                        b'\n' => State::ChunkData(value),
                        _ if ext => State::ChunkSize { digits, value, ext },
                        _ => match (b as char).to_digit(16) {
                            Some(d) if digits < 16 => State::ChunkSize {
                                digits: digits + 1,
                                value: value * 16 + u64::from(d),
                                ext: false,
                            },
                            Some(_) => State::Off,
                            None if digits > 0 => State::ChunkSize {
                                digits,
                                value,
                                ext: true,
                            },
                            None => State::Off,
                        },
                    };
                }
                State::ChunkData(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if take == n {
                        State::ChunkDataEnd { cr: false }
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkDataEnd { cr } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match b {
                        b'\r' if !cr => State::ChunkDataEnd { cr: true },
                        b'\n' => State::ChunkSize {
                            digits: 0,
                            value: 0,
                            ext: false,
                        },
                        _ => State::Off,
                    };
                }
                State::Trailers { line } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match b {
                        b'\n' if line == 0 => State::Head,
                        b'\n' => State::Trailers { line: 0 },
                        b'\r' => State::Trailers { line },
                        _ => State::Trailers { line: line + 1 },
                    };
                }
            }
        }
    }

    /// Read the framing headers of one complete head (of the request numbered `index`);
    /// returns the state after it.
    fn parse_head(&mut self, head: &[u8], index: usize) -> State {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let Some(request_line) = lines.next() else {
            return State::Off;
        };
        let mut parts = request_line.split(|&b| b == b' ');
        let (Some(method), Some(_target)) = (parts.next(), parts.next()) else {
            return State::Off;
        };
        if method == b"CONNECT" {
            return State::Off;
        }
        let (mut length, mut chunked) = (None, false);
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") {
                match crate::http::validate::parse_content_length(value) {
                    Some(n) if length.is_none() => length = Some(n),
                    _ => return State::Off, // hyper or the checks reject it
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                return State::Off;
            }
        }
        if chunked && length.is_some() {
            self.conflict = Some(index);
            // hyper closes the connection after this request: nothing more to follow.
            return State::Off;
        }
        match (chunked, length) {
            (true, _) => State::ChunkSize {
                digits: 0,
                value: 0,
                ext: false,
            },
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    }
}

/// The end of a head (after its blank line), tolerating bare LF line endings.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + p + 1;
        match buf.get(at..at + 2) {
            Some([b'\r', b'\n']) => return Some(at + 2),
            _ if buf.get(at) == Some(&b'\n') => return Some(at + 1),
            _ => {}
        }
        i = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> FramingScanner {
        let mut s = FramingScanner::new(8192);
        for p in parts {
            s.feed(p);
        }
        s
    }

    #[test]
    fn reports_cl_with_te_in_either_order() {
        for head in [
            &b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &b"POST /a HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"[..],
        ] {
            assert_eq!(scan(&[head]).conflict, Some(0));
        }
    }

    #[test]
    fn names_the_request_by_its_index_not_its_line() {
        // The same request line twice: only the second one has both headers.
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\n\r\n\
            POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[stream]).conflict, Some(1));
    }

    #[test]
    fn follows_bodies_and_pipelining_byte_by_byte() {
        let stream: &[u8] = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 60\r\n\r\n\
            GET /fake HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nT: 1\r\n\r\n\
            GET /next HTTP/1.1\r\nHost: h\r\n\r\n\
            POST /bad HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The fake head is inside the first body: neither reported nor counted, so the
        // conflict is the fourth request's (/x, /c, /next, /bad).
        let whole = scan(&[stream]);
        let bytewise = scan(&stream.iter().map(std::slice::from_ref).collect::<Vec<_>>());
        for s in [whole, bytewise] {
            assert_eq!(s.conflict, Some(3));
        }
    }

    #[test]
    fn switches_off_on_what_it_does_not_follow() {
        assert!(!scan(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]).is_on());
        assert!(!scan(&[b"CONNECT h:1 HTTP/1.1\r\n\r\n"]).is_on());
        assert!(!scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).is_on());
        assert!(!scan(&[&[b'a'; 9000][..]]).is_on());
        assert!(scan(&[b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"]).is_on());
    }
}
