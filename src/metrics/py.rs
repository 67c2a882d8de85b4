//! The metrics segments as Python sees them: the worker attaches its own
//! ([`metrics_attach`]); the supervisor and the metrics process open any segment as a
//! [`MetricsSegment`] to fold, count worker events, and read; [`metrics_layout`] names
//! the slots.

use std::path::PathBuf;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::shm::{self, Segment};

fn os_error(what: &str, path: &std::path::Path, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what} {}: {e}", path.display()))
}

/// Create this worker's segment at `path`; from now on the core counts into it.
#[pyfunction]
pub fn metrics_attach(path: PathBuf) -> PyResult<()> {
    super::attach(&path).map_err(|e| os_error("cannot create metrics segment", &path, e))
}

/// The slot layout: `{"version", "slots", "families": [(name, kind, help, labels,
/// [(values, slot)])], "duration": (bounds, first_slot, sum_slot)}`.
#[pyfunction]
pub fn metrics_layout(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", shm::VERSION)?;
    d.set_item("slots", super::SLOTS)?;
    d.set_item("families", super::layout())?;
    d.set_item("duration", super::duration_layout())?;
    d.set_item(
        "counters",
        (0..super::SLOTS)
            .filter(|&i| super::is_counter(i))
            .collect::<Vec<_>>(),
    )?;
    Ok(d)
}

/// One mapped segment (see `src/metrics/shm.rs`).
#[pyclass(module = "gristmill._core", frozen)]
pub struct MetricsSegment {
    seg: Segment,
}

#[pymethods]
impl MetricsSegment {
    /// Open the segment at `path`; with `create`, make a new retired segment there.
    #[new]
    #[pyo3(signature = (path, create=false))]
    fn new(path: PathBuf, create: bool) -> PyResult<Self> {
        let seg = if create {
            Segment::create(&path, super::SLOTS, 0, shm::RETIRED)
        } else {
            Segment::open(&path, super::SLOTS)
        }
        .map_err(|e| os_error("cannot open metrics segment", &path, e))?;
        Ok(MetricsSegment { seg })
    }

    #[getter]
    fn pid(&self) -> u64 {
        self.seg.pid()
    }

    /// 0 unknown, 1 WSGI, 2 ASGI.
    #[getter]
    fn interface(&self) -> u64 {
        self.seg.interface()
    }

    /// `"live"`, `"folded"` or `"retired"`.
    #[getter]
    fn state(&self) -> &'static str {
        match self.seg.state() {
            shm::LIVE => "live",
            shm::FOLDED => "folded",
            _ => "retired",
        }
    }

    /// The retired segment's fold sequence number (odd while folding).
    #[getter]
    fn seq(&self) -> u64 {
        self.seg.seq()
    }

    /// Every slot's value.
    fn values(&self) -> Vec<u64> {
        self.seg.values()
    }

    /// Add `n` to slot `slot` (the supervisor's worker events).
    fn add(&self, slot: usize, n: u64) -> PyResult<()> {
        if slot >= self.seg.slots() {
            return Err(pyo3::exceptions::PyIndexError::new_err(slot));
        }
        self.seg.add(slot, n);
        Ok(())
    }

    /// Fold the counters of `worker` (whose process has exited) into this one.
    fn fold(&self, worker: &MetricsSegment) {
        self.seg.fold(&worker.seg, super::is_counter);
    }
}
