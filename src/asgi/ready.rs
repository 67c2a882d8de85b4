//! An awaitable that is already complete: `await` returns its value without
//! suspending the task. `receive()` and `send()` return one whenever the answer is at
//! hand (a buffered body, room in the response channel), which is the common case, so
//! they cost no event-loop round trip and no Future allocation.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(module = "gristmill._core", frozen)]
pub struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    pub fn new(value: Py<PyAny>) -> Self {
        Ready { value }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }

    /// Generators' `send`: awaiting drives the iterator with `send(None)`.
    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__(py)
    }
}
