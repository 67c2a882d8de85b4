//! Making the supervisor's objects immortal before it forks (`_warm.immortalize`).
//!
//! Every worker is a fork of the supervisor and shares its memory copy-on-write. CPython
//! writes to an object whenever it takes or drops a reference to it, so a worker that
//! merely reads an inherited function, class or setting copies the page it sits on, and
//! so does the supervisor for every page it touches after each fork. CPython 3.12
//! (PEP 683) leaves the reference count of an *immortal* object alone; PEP 683 names
//! pre-fork servers as the use. Python has no API to make an object immortal, so this
//! sets the count to CPython's immortal value itself. Which objects is decided in Python
//! (`_warm.py`); this only writes the counts, and only on the interpreters whose object
//! layout and immortal value it knows.

use pyo3::prelude::*;
use pyo3::types::PyList;

/// `_Py_IMMORTAL_REFCNT` of CPython 3.12 and 3.13 on 64-bit platforms (`UINT_MAX`): the
/// increment sees the low 32 bits saturated and returns, the decrement sees them negative
/// as `int32_t` and returns.
const IMMORTAL_REFCNT: isize = u32::MAX as isize;

/// Whether this interpreter treats [`IMMORTAL_REFCNT`] as immortal: CPython 3.12 or 3.13,
/// 64-bit (the free-threaded build cannot load this abi3 module).
fn supported(py: Python<'_>) -> bool {
    let v = py.version_info();
    cfg!(target_pointer_width = "64") && v.major == 3 && (12..=13).contains(&v.minor)
}

/// Make every object of `objects` immortal; return how many (0 where unsupported). The
/// objects are never freed afterwards: only objects meant to live as long as the process
/// belong here.
#[pyfunction]
pub fn immortalize(py: Python<'_>, objects: &Bound<'_, PyList>) -> usize {
    if !supported(py) {
        return 0;
    }
    for obj in objects.iter() {
        // SAFETY: `ob_refcnt` is the first field of every object on a GIL build of
        // CPython, a Py_ssize_t; we hold the GIL, so nothing reads or writes it
        // concurrently. Once immortal, the reference `obj` holds needs no balancing.
        unsafe { *obj.as_ptr().cast::<isize>() = IMMORTAL_REFCNT };
    }
    objects.len()
}

/// Whether `immortalize` does anything on this interpreter.
#[pyfunction]
pub fn can_immortalize(py: Python<'_>) -> bool {
    supported(py)
}
