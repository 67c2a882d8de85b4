//! The inline mode: one thread is both the worker's I/O thread and its Python thread.
//!
//! The thread owns a current-thread tokio runtime and alternates between two things:
//! turning the runtime (accepting, parsing, writing responses) until a request is
//! ready, and running that request's [`Job`] with the GIL held. Between jobs the GIL is
//! released, so application threads of its own still run. While a job waits for the
//! network (a `wsgi.input` read, a full response channel) its [`Waiter`] turns the
//! runtime, so every other connection keeps moving meanwhile.
//!
//! Compared with a pool thread beside the runtime this saves a wake-up and a thread
//! switch each way per request — the dominant cost on a busy core (`bench/NOTES.md`).
//! The price: while the application computes, no other connection of this worker is
//! served (with one Python thread no other request could run anyway), and a signal is
//! noticed when the current job returns or waits.
//!
//! The server's main future runs as a task of the runtime, not as the future this
//! thread waits on: every turn of the runtime polls it, also the turns that end with a
//! job. Waited on beside the jobs, it was polled only when no job was ready, so under a
//! steady load a stop signal went unheard and old connections kept starting requests
//! until the graceful timeout.
//!
//! After a job, the thread keeps turning the runtime without sleeping for `--busy-poll`
//! before it waits for the next one (`crate::busy_poll`).
//!
//! [`Waiter`]: crate::pool::Waiter

use std::future::Future;

use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::Job;
use crate::pool::Task;

// Short-lived and moved once: boxing the job would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next<T> {
    Job(Job),
    Done(T),
}

/// Drive `serving` (the server's main future) on `rt`, running jobs from `jobs` on this
/// thread as they come, until `serving` ends; returns its output.
pub fn run_inline<F>(
    py: Python<'_>,
    rt: &Runtime,
    serving: F,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    busy_poll: std::time::Duration,
) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut serving = rt.spawn(serving);
    loop {
        let next = py.detach(|| {
            rt.block_on(crate::busy_poll::wait(busy_poll, async {
                tokio::select! {
                    // Jobs first: a drain only ends once the requests it waits for ran.
                    biased;
                    Some(job) = jobs.recv() => Next::Job(job),
                    out = &mut serving => Next::Done(out),
                }
            }))
        });
        match next {
            Next::Job(job) => job.run(py),
            Next::Done(Ok(out)) => return out,
            Next::Done(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
