//! `--worker-timeout`: the worker's heartbeat to the supervisor, the proof that it
//! still turns.
//!
//! A worker can be alive and still serve nobody: a C extension holds the GIL forever, an
//! async handler spins in `while True:` and the event loop never runs another callback,
//! or (one thread: WSGI inline, ASGI driven) the one thread that turns the I/O runtime
//! never comes back from the application. No request timeout can help then, since what
//! would enforce it does not run. So each worker proves, every [`period`], that the
//! three things it serves with still turn:
//! - the tokio **runtime**: a task of it stamps the time on every tick of an interval;
//! - the **GIL**: a thread of its own (`gristmill-heartbeat-gil`) stays attached to the
//!   interpreter, sleeps with the GIL released, and stamps the time each time it gets
//!   the GIL back. The wait for the GIL is bounded by not being waited on: the checker
//!   thread only reads the stamp, so it never blocks on the GIL itself;
//! - the asyncio **event loop** (ASGI): with the GIL in hand, that thread schedules a
//!   callback with `call_soon_threadsafe`, which stamps the time when the loop runs it.
//!
//! The checker thread (`gristmill-heartbeat`) writes `H<in-flight>\n` to the
//! supervisor pipe (`crate::lifecycle`) when every stamp is fresh, else
//! `S<in-flight> <what>:<seconds>,…\n` naming what has stopped and for how long.
//! `<in-flight>` is the number of requests whose response is not complete
//! ([`request_started`], [`request_finished`]), so the supervisor can say how many a
//! kill loses. The supervisor (`python/gristmill/watchdog.py`) kills a ready worker
//! that sent no `H` for `worker_timeout` seconds. The messages fit in one `write` of
//! less than `PIPE_BUF` bytes, so they never interleave with the one-byte messages of
//! other threads.
//!
//! The heartbeat starts when the worker starts serving: the application's import and
//! lifespan startup come before and are not timed. It stops when the returned
//! [`Heartbeat`] is dropped, at the end of serving.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyCFunction;
use tokio::runtime::Handle;

use crate::lifecycle;
use crate::log;

/// Requests of this worker whose response is not complete yet.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A request started (`net::ConnActivity::request_started`).
#[inline]
pub fn request_started() {
    IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
}

/// A request's response is complete or abandoned (`net::ActiveGuard`'s drop).
#[inline]
pub fn request_finished() {
    IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
}

/// How often each probe stamps and the checker reports: a tenth of the timeout, between
/// 10 ms and 1 s. A stall is reported within two periods, so a worker is killed at most
/// about `timeout` + two periods after it stopped, and never for a stall shorter than
/// `timeout`.
pub fn period(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Milliseconds since the first use, plus one (0 means "never stamped").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The last time one thing was seen turning.
#[derive(Default)]
struct Stamp(AtomicU64);

impl Stamp {
    fn stamp(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last stamp (since `since` if never stamped).
    fn age(&self, now: u64, since: u64) -> u64 {
        let last = self.0.load(Ordering::Relaxed).max(since);
        now.saturating_sub(last)
    }
}

/// What the probes stamp.
#[derive(Default)]
struct Stamps {
    runtime: Stamp,
    gil: Stamp,
    /// Only with an event loop.
    event_loop: Stamp,
    stop: AtomicBool,
}

/// The running heartbeat; dropping it stops the probes (each at its next tick).
pub struct Heartbeat {
    stamps: Arc<Stamps>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stamps.stop.store(true, Ordering::Relaxed);
    }
}

/// Start the heartbeat of a worker serving on `runtime` (and on `event_loop`, ASGI);
/// `None` when there is nothing to report to (`ready_fd` < 0: no supervisor) or
/// `timeout` is off.
pub fn start(
    timeout: Option<Duration>,
    ready_fd: i32,
    runtime: &Handle,
    event_loop: Option<Py<PyAny>>,
) -> std::io::Result<Option<Heartbeat>> {
    let Some(timeout) = timeout.filter(|_| ready_fd >= 0) else {
        return Ok(None);
    };
    let period = period(timeout);
    let stamps = Arc::new(Stamps::default());
    let has_loop = event_loop.is_some();

    let s = stamps.clone();
    runtime.spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !s.stop.load(Ordering::Relaxed) {
            every.tick().await;
            s.runtime.stamp();
        }
    });

    let s = stamps.clone();
    std::thread::Builder::new()
        .name("gristmill-heartbeat-gil".into())
        .spawn(move || probe_gil(s, period, event_loop))?;

    let s = stamps.clone();
    std::thread::Builder::new()
        .name("gristmill-heartbeat".into())
        .spawn(move || check(&s, period, has_loop))?;
    log::log(
        log::DEBUG,
        &format!(
            "heartbeat every {} ms (worker-timeout {} s)",
            period.as_millis(),
            timeout.as_secs_f64()
        ),
    );
    Ok(Some(Heartbeat { stamps }))
}

/// The GIL probe (and the event loop's): see the module docs.
fn probe_gil(s: Arc<Stamps>, period: Duration, event_loop: Option<Py<PyAny>>) {
    Python::attach(|py| {
        let tick = {
            let s = s.clone();
            PyCFunction::new_closure(py, Some(c"gristmill_heartbeat"), None, move |_, _| {
                s.event_loop.stamp();
            })
        };
        let tick = match tick {
            Ok(t) => t.unbind(),
            Err(e) => {
                log::log(log::ERROR, &format!("heartbeat: {e}"));
                return;
            }
        };
        loop {
            // Waiting for the GIL again at the end of this is the probe.
            py.detach(|| std::thread::sleep(period));
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            s.gil.stamp();
            if let Some(event_loop) = &event_loop {
                // Fails only once the loop is closed, when serving has ended.
                let _ = event_loop.call_method1(py, "call_soon_threadsafe", (tick.clone_ref(py),));
            }
        }
    })
}

/// The checker: one report per period, see the module docs.
fn check(s: &Stamps, period: Duration, has_loop: bool) {
    let started = now_ms();
    let stale = 2 * period.as_millis() as u64;
    let mut line = String::with_capacity(64);
    while !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        let now = now_ms();
        // Measured from the start, so a probe that never ran counts as stopped.
        let mut ages = vec![
            ("runtime", s.runtime.age(now, started)),
            ("gil", s.gil.age(now, started)),
        ];
        if has_loop {
            ages.push(("loop", s.event_loop.age(now, started)));
        }
        let in_flight = IN_FLIGHT.load(Ordering::Relaxed);
        line.clear();
        let stopped: Vec<String> = ages
            .iter()
            .filter(|(_, age)| *age > stale)
            .map(|(what, age)| format!("{what}:{:.1}", *age as f64 / 1000.0))
            .collect();
        if stopped.is_empty() {
            line.push_str(&format!("H{in_flight}\n"));
        } else {
            line.push_str(&format!("S{in_flight} {}\n", stopped.join(",")));
        }
        lifecycle::send_bytes(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_is_a_tenth_of_the_timeout_within_bounds() {
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(period(Duration::from_millis(50)), Duration::from_millis(10));
    }

    #[test]
    fn a_stamp_ages_from_its_start_until_stamped() {
        let s = Stamp::default();
        assert_eq!(s.age(500, 100), 400);
        s.stamp();
        assert!(s.age(now_ms(), 0) < 1000);
    }
}
