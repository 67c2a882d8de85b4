//! The benchmark ceiling: a minimal hyper 1.x + tokio server with no Python at all.
//!
//! It answers the same routes as `bench/apps/{wsgi,asgi}_app.py` with the same bodies, over
//! HTTP/1.1 and h2c (prior knowledge), so "fraction of the ceiling" in the bench tables says
//! how much of the remaining per-request cost is the Python server's own. `--threads 1`
//! (the default) runs a current-thread runtime, which compares fairly with the 1-worker,
//! 1-core suites; `--threads N` runs a multi-thread runtime with N workers.
//!
//! Usage: `ceiling [--host 127.0.0.1] [--port 8000] [--threads 1]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const HELLO: &[u8] = b"Hello, world!";
const JSON: &[u8] = b"{\"message\":\"Hello, world!\"}";
const BIG_LEN: usize = 1024 * 1024;
const CHUNK_LEN: usize = 16 * 1024;
const CHUNKS: usize = 64;

type Body = BoxBody<Bytes, hyper::Error>;

/// Bodies built once and shared by every response (cloning `Bytes` is a refcount bump).
#[derive(Clone)]
struct Payloads {
    big: Bytes,
    chunk: Bytes,
}

impl Payloads {
    fn new() -> Self {
        Self {
            big: Bytes::from(vec![b'x'; BIG_LEN]),
            chunk: Bytes::from(vec![b'x'; CHUNK_LEN]),
        }
    }
}

/// The `/stream` body: `CHUNKS` frames of one shared chunk, each its own HTTP/1.1 chunk
/// (no length known up front), like an app that yields 64 pieces.
struct Chunks {
    chunk: Bytes,
    left: usize,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Deliberately inexact, so hyper uses chunked encoding as it would for a generator.
        SizeHint::default()
    }
}

fn full(body: Bytes, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = code;
    resp
}

async fn handle(req: Request<Incoming>, payloads: Payloads) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => full(Bytes::from_static(HELLO), "text/plain"),
        (&Method::GET, "/json") => full(Bytes::from_static(JSON), "application/json"),
        (&Method::GET, "/big") => full(payloads.big, "application/octet-stream"),
        (&Method::GET, "/stream") => {
            let body = Chunks {
                chunk: payloads.chunk,
                left: CHUNKS,
            };
            let mut resp = Response::new(BodyExt::boxed(body));
            let ct = HeaderValue::from_static("application/octet-stream");
            resp.headers_mut().insert(CONTENT_TYPE, ct);
            resp
        }
        (&Method::POST, "/echo") => match req.into_body().collect().await {
            // Read the whole body first, as the Python apps do.
            Ok(collected) => full(collected.to_bytes(), "application/octet-stream"),
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        (_, "/" | "/json" | "/big" | "/stream" | "/echo") => status(StatusCode::METHOD_NOT_ALLOWED),
        _ => status(StatusCode::NOT_FOUND),
    };
    Ok(resp)
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let payloads = Payloads::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: report and keep accepting.
                eprintln!("ceiling: accept: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let payloads = payloads.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, payloads.clone()));
            // Errors here are client resets at the end of a load run: nothing to report.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Options {
    addr: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut host = String::from("127.0.0.1");
    let mut port: u16 = 8000;
    let mut threads: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "-h" | "--help" => {
                return Err("usage: ceiling [--host H] [--port P] [--threads N]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let addr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    Ok(Options {
        addr,
        threads: threads.max(1),
    })
}

fn main() {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("ceiling: {msg}");
            std::process::exit(2);
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let result = runtime.and_then(|rt| rt.block_on(serve(opts.addr)));
    if let Err(err) = result {
        eprintln!("ceiling: {err}");
        std::process::exit(1);
    }
}
