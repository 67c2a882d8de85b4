//! The access log line: the format is parsed once at start-up into atoms, each request
//! renders its line in Rust, and only the finished string crosses into Python (one
//! `logger.info` call on `gristmill.access`).
//!
//! When `gristmill.access` has the shape of the default configuration — one plain
//! `StreamHandler` with a `%(message)s` formatter, no filters, not propagating — logging
//! would only append the line and a newline to that stream and flush it. Then the lines
//! are written here instead ([`FdSink`]): the same bytes to the same file descriptor, in
//! batches of whole lines (one `write` of at most `PIPE_BUF` bytes, so lines from several
//! workers never interleave), at the latest [`FLUSH_EVERY`] after they were logged. That
//! saves the Python logging call and a `write` per request. Any other configuration
//! (a file handler, JSON formatting, filters) gets every record through `logging`.
//!
//! Atoms follow gunicorn's names so existing formats keep working: `%(h)s` remote
//! address, `%(t)s` time, `%(r)s` request line, `%(m)s` method, `%(U)s` path, `%(q)s`
//! query, `%(H)s` protocol, `%(s)s` status, `%(b)s` body bytes (`-` for none), `%(B)s`
//! body bytes, `%(D)s` microseconds, `%(M)s` milliseconds, `%(T)s` seconds, `%(L)s`
//! decimal seconds, `%(p)s` pid and `%({name}i)s` a request header. `%%` is a `%`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use http::{HeaderMap, HeaderName, Method, Uri, Version};
use pyo3::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Literal(String),
    Remote,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesDash,
    Bytes,
    Micros,
    Millis,
    Secs,
    DecimalSecs,
    Pid,
    RequestHeader(HeaderName),
}

/// A parsed access log format.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    atoms: Vec<Atom>,
    pid: u32,
}

/// What one finished request contributes to its log line.
pub struct Record<'a> {
    pub peer: Option<SocketAddr>,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub status: u16,
    pub body_bytes: u64,
    pub duration: Duration,
}

impl<'a> Record<'a> {
    /// The record of a request head, answered with `status` and `body_bytes`, that
    /// started at `started`.
    pub fn new(
        parts: &'a http::request::Parts,
        peer: Option<SocketAddr>,
        status: u16,
        body_bytes: u64,
        started: std::time::Instant,
    ) -> Self {
        Record {
            peer: crate::http::proxy::client(parts, peer),
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            status,
            body_bytes,
            duration: started.elapsed(),
        }
    }
}

impl AccessFormat {
    /// Parse `fmt`; an unknown atom is an error naming it.
    pub fn parse(fmt: &str) -> Result<Self, String> {
        let mut atoms = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("%%") {
                lit.push('%');
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix("%(") else {
                lit.push('%');
                rest = &rest[1..];
                continue;
            };
            let end = r
                .find(")s")
                .ok_or_else(|| format!("unterminated atom in access log format: {rest:?}"))?;
            let name = &r[..end];
            rest = &r[end + 2..];
            let atom = match name {
                "h" => Atom::Remote,
                "t" => Atom::Time,
                "r" => Atom::RequestLine,
                "m" => Atom::Method,
                "U" => Atom::Path,
                "q" => Atom::Query,
                "H" => Atom::Protocol,
                "s" => Atom::Status,
                "b" => Atom::BytesDash,
                "B" => Atom::Bytes,
                "D" => Atom::Micros,
                "M" => Atom::Millis,
                "T" => Atom::Secs,
                "L" => Atom::DecimalSecs,
                "p" => Atom::Pid,
                _ => match name.strip_prefix('{').and_then(|n| n.strip_suffix("}i")) {
                    Some(h) => Atom::RequestHeader(
                        HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| format!("invalid header name in %({name})s"))?,
                    ),
                    None => return Err(format!("unknown access log atom %({name})s")),
                },
            };
            if !lit.is_empty() {
                atoms.push(Atom::Literal(std::mem::take(&mut lit)));
            }
            atoms.push(atom);
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            atoms.push(Atom::Literal(lit));
        }
        Ok(AccessFormat {
            atoms,
            pid: std::process::id(),
        })
    }

    /// Render one line.
    pub fn render(&self, r: &Record<'_>) -> String {
        let mut out = String::with_capacity(96);
        for atom in &self.atoms {
            let _ = match atom {
                Atom::Literal(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Atom::Remote => match r.peer {
                    Some(p) => write!(out, "{}", p.ip()),
                    None => write!(out, "-"),
                },
                Atom::Time => write!(out, "[{}]", clf_time(SystemTime::now())),
                Atom::RequestLine => write!(
                    out,
                    "{} {} {}",
                    r.method,
                    r.uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or_else(|| r.uri.path()),
                    protocol(r.version)
                ),
                Atom::Method => write!(out, "{}", r.method),
                Atom::Path => write!(out, "{}", r.uri.path()),
                Atom::Query => write!(out, "{}", r.uri.query().unwrap_or("")),
                Atom::Protocol => write!(out, "{}", protocol(r.version)),
                Atom::Status => write!(out, "{}", r.status),
                Atom::BytesDash if r.body_bytes == 0 => write!(out, "-"),
                Atom::BytesDash | Atom::Bytes => write!(out, "{}", r.body_bytes),
                Atom::Micros => write!(out, "{}", r.duration.as_micros()),
                Atom::Millis => write!(out, "{}", r.duration.as_millis()),
                Atom::Secs => write!(out, "{}", r.duration.as_secs()),
                Atom::DecimalSecs => write!(out, "{:.6}", r.duration.as_secs_f64()),
                Atom::Pid => write!(out, "{}", self.pid),
                Atom::RequestHeader(name) => {
                    let mut values = r.headers.get_all(name).iter().peekable();
                    if values.peek().is_none() {
                        out.push('-');
                    }
                    let mut first = true;
                    for v in values {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    Ok(())
                }
            };
        }
        out
    }
}

/// `HTTP/1.1` and friends, as the request line and `SERVER_PROTOCOL` spell them.
pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Common Log Format time in UTC: `29/Nov/2026:06:23:16 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm, public domain).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How long a line written through [`FdSink`] may wait in its batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bytes per batch: `PIPE_BUF`, the most one `write` to a pipe keeps together.
const BATCH: usize = 4096;

/// Access lines written straight to the log stream's descriptor; see the module docs.
pub struct FdSink {
    fd: RawFd,
    batch: Mutex<Vec<u8>>,
    failed: AtomicBool,
}

impl FdSink {
    /// `fd` stays open and owned by the Python stream it belongs to.
    pub fn new(fd: RawFd) -> Self {
        FdSink {
            fd,
            batch: Mutex::new(Vec::with_capacity(BATCH)),
            failed: AtomicBool::new(false),
        }
    }

    fn push(&self, line: &str) {
        let mut batch = self.batch.lock();
        if !batch.is_empty() && batch.len() + line.len() + 1 > BATCH {
            self.write_out(&mut batch);
        }
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
        if batch.len() >= BATCH {
            self.write_out(&mut batch);
        }
    }

    /// Write out what is batched.
    pub fn flush(&self) {
        let mut batch = self.batch.lock();
        if !batch.is_empty() {
            self.write_out(&mut batch);
        }
    }

    fn write_out(&self, batch: &mut Vec<u8>) {
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Said once: a closed or full log stream must not flood the error log.
                if !self.failed.swap(true, Ordering::Relaxed) {
                    crate::log::log(
                        crate::log::ERROR,
                        &format!("writing the access log failed: {e}; lines are dropped"),
                    );
                }
                break;
            }
            rest = &rest[n as usize..];
        }
        batch.clear();
    }
}

impl Drop for FdSink {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where access lines go.
pub enum Sink {
    /// `gristmill.access`'s `info` method.
    Logger(Py<PyAny>),
    /// Straight to the default handler's stream.
    Fd(FdSink),
}

/// The access logger, when access logging is on and `gristmill.access` is enabled.
pub struct AccessLog {
    format: AccessFormat,
    sink: Sink,
}

impl AccessLog {
    pub fn new(format: AccessFormat, sink: Sink) -> Self {
        AccessLog { format, sink }
    }

    pub fn emit(&self, py: Python<'_>, rec: &Record<'_>) {
        let line = self.format.render(rec);
        match &self.sink {
            Sink::Fd(fd) => fd.push(&line),
            Sink::Logger(info) => {
                if let Err(e) = info.call1(py, (line,)) {
                    crate::log::log_with(py, crate::log::ERROR, "access log call failed", Some(&e));
                }
            }
        }
    }

    /// [`emit`](Self::emit) from a thread that does not hold the GIL; takes it only
    /// when the line goes through `logging`.
    pub fn emit_detached(&self, rec: &Record<'_>) {
        match &self.sink {
            Sink::Fd(fd) => fd.push(&self.format.render(rec)),
            Sink::Logger(_) => Python::attach(|py| self.emit(py, rec)),
        }
    }

    /// Write out batched lines (a no-op when lines go through `logging`).
    pub fn flush(&self) {
        if let Sink::Fd(fd) = &self.sink {
            fd.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let f =
            AccessFormat::parse(r#"%(h)s "%(r)s" %(s)s %(b)s %(B)s %({x-test}i)s 100%%"#).unwrap();
        let uri: Uri = "/p?q=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-test", "a".parse().unwrap());
        headers.append("x-test", "b".parse().unwrap());
        let rec = Record {
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            status: 200,
            body_bytes: 0,
            duration: Duration::from_millis(3),
        };
        assert_eq!(
            f.render(&rec),
            r#"127.0.0.1 "GET /p?q=1 HTTP/1.1" 200 - 0 a,b 100%"#
        );
    }

    #[test]
    fn rejects_unknown_atoms() {
        assert!(AccessFormat::parse("%(zz)s").is_err());
        assert!(AccessFormat::parse("%(h").is_err());
    }

    #[test]
    fn clf_time_known_instant() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_933_396); // 2026-11-29 06:23:16 UTC
        assert_eq!(clf_time(t), "29/Nov/2026:06:23:16 +0000");
    }
}
