//! `wsgi.input`: the request body, read from the connection as the application asks
//! for it — never buffered whole — with the GIL released while waiting for bytes.
//!
//! A malformed chunked body or a client that goes away makes reads raise
//! (`RequestBodyError` / `ClientDisconnected`), so a truncated body is never presented
//! as complete; a body growing past `max_body_size` raises `RequestBodyTooLarge`, and a
//! client that sends nothing for `body_read_timeout` makes the read raise
//! `RequestBodyTimeout`, so a stalled upload cannot hold a Python thread forever.
//! `Expect: 100-continue` is answered by hyper when the first read polls the body.
//! A small body is read before the application runs (`crate::http::request_body`), and
//! one that stalls there is answered 408 without calling it; the reads of such a body
//! never wait.

use parking_lot::{Mutex, MutexGuard};

use crate::http::Incoming;
use bytes::{Buf, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::time::Duration;

use crate::errors::{
    ClientDisconnected, RequestBodyError, RequestBodyTimeout, RequestBodyTooLarge,
};
use crate::http::body::{next_data, BodyReadError};
use crate::http::request_body;
use crate::pool::Waiter;

struct State {
    body: Option<Incoming>,
    buf: BytesMut,
    received: u64,
    /// Once a read failed, every later read fails the same way.
    failed: Option<Failure>,
}

#[derive(Clone)]
pub enum Failure {
    TooLarge(u64),
    TimedOut(Duration),
    Disconnected(String),
    Invalid(String),
}

impl Failure {
    fn to_err(&self) -> PyErr {
        match self {
            Failure::TooLarge(max) => RequestBodyTooLarge::new_err(format!(
                "request body larger than max_body_size ({max} bytes)"
            )),
            Failure::TimedOut(t) => RequestBodyTimeout::new_err(format!(
                "no request body bytes arrived for {} s (body_read_timeout)",
                t.as_secs_f64()
            )),
            Failure::Disconnected(m) => ClientDisconnected::new_err(m.clone()),
            Failure::Invalid(m) => RequestBodyError::new_err(m.clone()),
        }
    }
}

/// Where a request's body comes from.
pub enum Source {
    /// No body (or an empty one).
    Empty,
    /// Read from the connection as the application asks for it.
    Stream(Incoming),
    /// A small body read whole before the application was called, or how reading it
    /// failed (reads then raise the same way); see `crate::http::request_body`.
    Whole(Result<BytesMut, Failure>),
}

impl From<request_body::Start> for Source {
    fn from(start: request_body::Start) -> Self {
        match start {
            request_body::Start::Empty => Source::Empty,
            request_body::Start::Stream(body) => Source::Stream(body),
            request_body::Start::Whole(b) => Source::Whole(Ok(BytesMut::from(b))),
            request_body::Start::Failed(e) => Source::Whole(Err(BodyReadError::Failed(e).into())),
        }
    }
}

impl From<BodyReadError> for Failure {
    fn from(e: BodyReadError) -> Self {
        match e {
            BodyReadError::TimedOut(t) => Failure::TimedOut(t),
            BodyReadError::Failed(e) if e.is_incomplete_message() || e.is_closed() => {
                Failure::Disconnected(format!(
                    "client disconnected before the request body was complete ({})",
                    crate::log::error_chain(&e)
                ))
            }
            BodyReadError::Failed(e) => Failure::Invalid(format!(
                "invalid request body: {}",
                crate::log::error_chain(&e)
            )),
        }
    }
}

/// The `wsgi.input` stream of one request.
#[pyclass(module = "gristmill._core", name = "Input", frozen)]
pub struct Input {
    state: Mutex<State>,
    waiter: Waiter,
    limit: Option<u64>,
    timeout: Duration,
}

impl Input {
    pub fn new(source: Source, waiter: Waiter, limit: Option<u64>, timeout: Duration) -> Self {
        let (body, buf, failed) = match source {
            Source::Empty => (None, BytesMut::new(), None),
            Source::Stream(body) => (Some(body), BytesMut::new(), None),
            Source::Whole(Ok(buf)) => (None, buf, None),
            Source::Whole(Err(f)) => (None, BytesMut::new(), Some(f)),
        };
        Input {
            state: Mutex::new(State {
                body,
                received: buf.len() as u64,
                buf,
                failed,
            }),
            waiter,
            limit,
            timeout,
        }
    }

    /// Lock without ever blocking while holding the GIL (another thread holding the
    /// lock may be waiting for the GIL to return).
    fn lock<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, State> {
        crate::pool::lock_releasing_gil(py, &self.state)
    }

    /// Read one more piece of the body into the buffer. `Ok(false)` at the end.
    fn fill(&self, py: Python<'_>, st: &mut State) -> PyResult<bool> {
        if let Some(f) = &st.failed {
            return Err(f.to_err());
        }
        let Some(body) = st.body.as_mut() else {
            return Ok(false);
        };
        // The future is built here but runs inside the runtime (its timer needs it).
        match self.waiter.wait(py, next_data(body, self.timeout)) {
            None => {
                let f = Failure::Disconnected("the worker is stopping".into());
                Err(Self::fail(st, f))
            }
            Some(Err(e)) => Err(Self::fail(st, e.into())),
            Some(Ok(None)) => {
                st.body = None;
                Ok(false)
            }
            Some(Ok(Some(data))) => {
                st.received += data.len() as u64;
                if let Some(max) = self.limit {
                    if st.received > max {
                        return Err(Self::fail(st, Failure::TooLarge(max)));
                    }
                }
                st.buf.extend_from_slice(&data);
                Ok(true)
            }
        }
    }

    /// Stop reading for good: this and every later read raise `f`.
    fn fail(st: &mut State, f: Failure) -> PyErr {
        st.body = None;
        let err = f.to_err();
        st.failed = Some(f);
        err
    }

    fn take<'py>(py: Python<'py>, st: &mut State, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(st.buf.len());
        let out = PyBytes::new(py, &st.buf[..n]);
        st.buf.advance(n);
        out
    }

    fn read_line<'py>(
        &self,
        py: Python<'py>,
        size: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut st = self.lock(py);
        let mut scanned = 0;
        loop {
            if let Some(i) = st.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(Self::take(py, &mut st, size.map_or(end, |s| s.min(end))));
            }
            scanned = st.buf.len();
            if let Some(s) = size {
                if st.buf.len() >= s {
                    return Ok(Self::take(py, &mut st, s));
                }
            }
            if !self.fill(py, &mut st)? {
                let n = st.buf.len();
                return Ok(Self::take(py, &mut st, n));
            }
        }
    }
}

/// Python's convention: `None` or a negative size means "all".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// Read up to `size` bytes, or everything to the end when `size` is omitted or -1.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut st = self.lock(py);
        match size_arg(size) {
            None => {
                while self.fill(py, &mut st)? {}
                let n = st.buf.len();
                Ok(Self::take(py, &mut st, n))
            }
            Some(n) => {
                while st.buf.len() < n && self.fill(py, &mut st)? {}
                Ok(Self::take(py, &mut st, n))
            }
        }
    }

    /// Read one line (up to and including `\n`), at most `size` bytes when given.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_line(py, size_arg(size))
    }

    /// Read lines until the end, or until about `hint` bytes were read.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.push(line);
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
