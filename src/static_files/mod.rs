//! Static files served by the Rust core (`--static URL_PREFIX=DIR`), before the
//! application is called: a request under a mount prefix never reaches it, unless the
//! file is missing and `--static-fallthrough` is on.
//!
//! - `path.rs`: matching a prefix and turning the rest into safe path segments;
//! - `lookup.rs`: finding and opening the file from the kernel's caches, or on a
//!   blocking thread when they do not have it (symbolic links, dotfiles, `index.html`,
//!   precompressed siblings);
//! - `cache.rs`: small files' answers kept in memory, emptied by any `inotify` event;
//! - `conditional.rs`: ETag, Last-Modified and the `If-*` preconditions (304, 412);
//! - `range.rs`: `Range` (206, 416, `multipart/byteranges`);
//! - here: routing by the longest prefix, methods (`GET`, `HEAD`; else 405 with
//!   `Allow`), building the response and its access-log line.
//!
//! The body of a large file is a [`FileBody`]: `sendfile` on cleartext HTTP/1.1,
//! chunked reads elsewhere (see `http::file`). A small one is read whole when it is
//! opened. The same bodies carry `wsgi.file_wrapper` and ASGI `http.response.pathsend`.

mod cache;
mod conditional;
mod lookup;
mod path;
mod range;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::http::Incoming;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use pyo3::prelude::*;

use crate::access_log::{AccessLog, Record};
use crate::http::file::{FileBody, Part};
use crate::http::ResponseBody;
use conditional::{Outcome, Validators};
use lookup::{Accepts, Found, Lookup, Mode, Options};
use range::Ranges;

/// The `static*` settings (`Settings.static_files`, present when `--static` is given).
#[derive(FromPyObject, Clone, Debug)]
pub struct StaticSettings {
    /// `URL_PREFIX=DIR`, normalised by `settings.py` (absolute directory, no trailing
    /// slash on the prefix).
    #[pyo3(attribute("static"))]
    pub mounts: Vec<String>,
    #[pyo3(attribute("static_max_age"))]
    pub max_age: Option<u64>,
    #[pyo3(attribute("static_index"))]
    pub index: bool,
    #[pyo3(attribute("static_fallthrough"))]
    pub fallthrough: bool,
    #[pyo3(attribute("static_follow_symlinks"))]
    pub follow_symlinks: bool,
    #[pyo3(attribute("static_cache"))]
    pub cache: bool,
}

struct Mount {
    prefix: String,
    /// Canonical.
    root: PathBuf,
}

/// The worker's static mounts, built once.
pub struct StaticFiles {
    /// Longest prefix first.
    mounts: Vec<Mount>,
    cache_control: Option<HeaderValue>,
    fallthrough: bool,
    opts: Arc<Options>,
    server_header: bool,
    cache: Option<cache::Cache>,
}

/// What a response needs of a file found: its validators and headers, computed once per
/// lookup (or kept in the [`cache::Cache`]), and its contents when it is small.
pub struct Representation {
    validators: Validators,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    content_type: HeaderValue,
    len: u64,
    encoding: Option<&'static str>,
    vary: bool,
    contents: Option<Bytes>,
}

impl Representation {
    fn of(found: &Found) -> Self {
        let validators = Validators::of(&found.meta);
        let mime = mime_guess::from_path(&found.name).first_or_octet_stream();
        Representation {
            etag: HeaderValue::from_str(&validators.etag).ok(),
            last_modified: HeaderValue::from_str(&validators.last_modified()).ok(),
            content_type: HeaderValue::from_str(mime.essence_str())
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            validators,
            len: found.meta.len(),
            encoding: found.encoding,
            vary: found.vary,
            contents: found.contents.clone(),
        }
    }

    /// The length of the contents held, if they are.
    fn contents_len(&self) -> Option<usize> {
        self.contents.as_ref().map(Bytes::len)
    }
}

const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD");

impl StaticFiles {
    pub fn new(s: &StaticSettings, server_header: bool) -> std::io::Result<Self> {
        let mut mounts = Vec::new();
        for m in &s.mounts {
            let (prefix, dir) = m
                .split_once('=')
                .ok_or_else(|| std::io::Error::other(format!("static mount {m:?}")))?;
            let root = std::fs::canonicalize(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("static directory {dir}: {e}"))
            })?;
            mounts.push(Mount {
                prefix: prefix.to_string(),
                root,
            });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Ok(StaticFiles {
            mounts,
            cache_control: s
                .max_age
                .map(|a| HeaderValue::from_str(&format!("public, max-age={a}")).unwrap()),
            fallthrough: s.fallthrough,
            opts: Arc::new(Options {
                index: s.index,
                follow_symlinks: s.follow_symlinks,
            }),
            server_header,
            cache: if s.cache {
                cache::Cache::new(s.mounts.len())
            } else {
                None
            },
        })
    }

    /// Whether `path` is under a mount (its answer may still be the application's, with
    /// fallthrough).
    pub fn claims(&self, path: &str) -> bool {
        self.mounts
            .iter()
            .any(|m| path::strip_prefix(path, &m.prefix).is_some())
    }

    /// Answer `req` when it is under a mount; otherwise (or on a missing file with
    /// fallthrough) hand it back for the application.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        peer: Option<std::net::SocketAddr>,
        access: Option<&AccessLog>,
        started: Instant,
    ) -> Result<Response<ResponseBody>, Request<Incoming>> {
        let path = req.uri().path();
        let Some((index, mount, skip)) = self.mounts.iter().enumerate().find_map(|(i, m)| {
            path::strip_prefix(path, &m.prefix).map(|rest| (i, m, path.len() - rest.len()))
        }) else {
            return Err(req);
        };
        let (parts, body) = req.into_parts();
        let rest = &parts.uri.path()[skip..];
        let accepts = Accepts::parse(&parts.headers);
        // A cached answer needs no checks of the path: it passed them when it was kept.
        let variant = usize::from(accepts.br) | usize::from(accepts.gzip) << 1;
        let mut ticket = None;
        if let Some(cache) = &self.cache {
            if parts.method == Method::GET || parts.method == Method::HEAD {
                match cache.get(index, rest, variant) {
                    Ok(rep) => {
                        let resp = self.respond(&parts, &rep, None);
                        self.log(access, &parts, peer, &resp, started);
                        return Ok(resp);
                    }
                    Err(t) => ticket = Some(t),
                }
            }
        }
        let resp = match path::segments(rest) {
            Err(path::Refused::BadRequest) => self.plain(StatusCode::BAD_REQUEST),
            Err(path::Refused::NotFound) => self.plain(StatusCode::NOT_FOUND),
            Ok((segments, trailing)) => {
                // Small files are read at once, unless nothing of them will be sent.
                let want_contents = parts.method == Method::GET;
                let (root, opts) = (&mount.root, &self.opts);
                let cached = lookup::lookup(
                    root,
                    &segments,
                    trailing,
                    accepts,
                    want_contents,
                    opts,
                    Mode::Cached,
                );
                let looked = match cached {
                    Ok(looked) => looked,
                    Err(lookup::WouldBlock) => {
                        let (root, opts) = (root.clone(), opts.clone());
                        tokio::task::spawn_blocking(move || {
                            let mode = Mode::Blocking;
                            lookup::lookup(
                                &root,
                                &segments,
                                trailing,
                                accepts,
                                want_contents,
                                &opts,
                                mode,
                            )
                        })
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(Lookup::Missing)
                    }
                };
                match looked {
                    Lookup::Missing if self.fallthrough => {
                        return Err(Request::from_parts(parts, body));
                    }
                    Lookup::Missing => self.plain(StatusCode::NOT_FOUND),
                    Lookup::AddSlash => self.add_slash(&parts.uri),
                    Lookup::Found(found) => {
                        let rep = Arc::new(Representation::of(&found));
                        if let (Some(cache), Some(ticket), true) =
                            (&self.cache, ticket, found.direct)
                        {
                            cache.offer(ticket, index, rest, variant, root, &found.name, &rep);
                        }
                        self.respond(&parts, &rep, Some(found.file))
                    }
                }
            }
        };
        self.log(access, &parts, peer, &resp, started);
        Ok(resp)
    }

    fn log(
        &self,
        access: Option<&AccessLog>,
        parts: &http::request::Parts,
        peer: Option<std::net::SocketAddr>,
        resp: &Response<ResponseBody>,
        started: Instant,
    ) {
        if let Some(access) = access {
            let bytes = if parts.method == Method::HEAD {
                0
            } else {
                http_body::Body::size_hint(resp.body()).exact().unwrap_or(0)
            };
            let record = Record::new(parts, peer, resp.status().as_u16(), bytes, started);
            access.emit_detached(&record);
        }
    }

    fn plain(&self, status: StatusCode) -> Response<ResponseBody> {
        let reason = status.canonical_reason().unwrap_or("");
        crate::http::plain_response(status, reason, false, self.server_header)
    }

    fn add_slash(&self, uri: &http::Uri) -> Response<ResponseBody> {
        let mut location = format!("{}/", uri.path());
        if let Some(q) = uri.query() {
            location.push('?');
            location.push_str(q);
        }
        let mut resp = self.plain(StatusCode::MOVED_PERMANENTLY);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// The answer to `req` with `rep`; `file` is what a body not held in `rep` is read
    /// from.
    fn respond(
        &self,
        req: &http::request::Parts,
        rep: &Representation,
        file: Option<std::fs::File>,
    ) -> Response<ResponseBody> {
        let v = &rep.validators;
        let len = rep.len;
        let mut resp = Response::new(ResponseBody::empty());
        let h = resp.headers_mut();
        if let Some(etag) = &rep.etag {
            h.insert(header::ETAG, etag.clone());
        }
        if let Some(lm) = &rep.last_modified {
            h.insert(header::LAST_MODIFIED, lm.clone());
        }
        if let Some(cc) = &self.cache_control {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
        if rep.vary {
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if self.server_header {
            h.insert(header::SERVER, crate::http::SERVER_NAME);
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut resp = self.plain(StatusCode::METHOD_NOT_ALLOWED);
            resp.headers_mut().insert(header::ALLOW, ALLOW);
            return resp;
        }
        match conditional::evaluate(&req.headers, v) {
            Outcome::Proceed => {}
            Outcome::NotModified => {
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                return resp;
            }
            Outcome::Failed => {
                let mut resp = self.plain(StatusCode::PRECONDITION_FAILED);
                if let Some(etag) = h.get(header::ETAG) {
                    resp.headers_mut().insert(header::ETAG, etag.clone());
                }
                return resp;
            }
        }
        let content_type = rep.content_type.clone();
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(enc) = rep.encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        let ranges = match req.headers.get(header::RANGE) {
            Some(r) if req.method == Method::GET && conditional::if_range(&req.headers, v) => {
                r.to_str().map_or(Ranges::Ignore, |r| range::parse(r, len))
            }
            _ => Ranges::Ignore,
        };
        let (status, parts, body_type) = match ranges {
            Ranges::Ignore => (
                StatusCode::OK,
                vec![Part::Range { offset: 0, len }],
                content_type,
            ),
            Ranges::Unsatisfiable => {
                let mut resp = self.plain(StatusCode::RANGE_NOT_SATISFIABLE);
                let cr = HeaderValue::from_str(&format!("bytes */{len}")).unwrap();
                resp.headers_mut().insert(header::CONTENT_RANGE, cr);
                return resp;
            }
            Ranges::Satisfiable(list) if list.len() == 1 => {
                let (a, b) = list[0];
                let cr = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).unwrap();
                h.insert(header::CONTENT_RANGE, cr);
                let part = Part::Range {
                    offset: a,
                    len: b - a + 1,
                };
                (StatusCode::PARTIAL_CONTENT, vec![part], content_type)
            }
            Ranges::Satisfiable(list) => {
                let boundary = boundary();
                let mut parts = Vec::with_capacity(list.len() * 2 + 1);
                for (a, b) in list {
                    let head = format!(
                        "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n",
                        content_type.to_str().unwrap_or("application/octet-stream")
                    );
                    parts.push(Part::Bytes(Bytes::from(head)));
                    parts.push(Part::Range {
                        offset: a,
                        len: b - a + 1,
                    });
                }
                parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
                let ct = format!("multipart/byteranges; boundary={boundary}");
                (
                    StatusCode::PARTIAL_CONTENT,
                    parts,
                    HeaderValue::from_str(&ct).unwrap(),
                )
            }
        };
        h.insert(header::CONTENT_TYPE, body_type);
        let total: u64 = parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Range { len, .. } => *len,
            })
            .sum();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
        *resp.status_mut() = status;
        if req.method == Method::HEAD || total == 0 {
            return resp;
        }
        *resp.body_mut() = match (&rep.contents, file) {
            (Some(all), _) => ResponseBody::chunks(
                parts
                    .into_iter()
                    .map(|p| match p {
                        Part::Bytes(b) => b,
                        Part::Range { offset, len } => {
                            all.slice(offset as usize..(offset + len) as usize)
                        }
                    })
                    .collect::<VecDeque<_>>(),
            ),
            (None, Some(file)) => ResponseBody::file(FileBody::new(file, parts)),
            (None, None) => {
                return self.plain(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        resp
    }
}

/// A `multipart/byteranges` boundary: unique per response, never in the parts' heads.
fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "gristmill-{:016x}{:08x}",
        t ^ (std::process::id() as u64) << 32,
        n
    )
}
