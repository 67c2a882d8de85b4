//! Logging from Rust through Python's `logging` (logger `gristmill.error`), so that
//! `--log-config` governs every line gristmill writes. Each call takes the GIL; callers
//! on the I/O threads use it only for rare events (and rate-limit those that can storm).

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyDict;

static ERROR_LOGGER: OnceLock<Py<PyAny>> = OnceLock::new();
static DEBUG_ENABLED: OnceLock<bool> = OnceLock::new();

pub const DEBUG: i32 = 10;
pub const INFO: i32 = 20;
pub const WARNING: i32 = 30;
pub const ERROR: i32 = 40;

/// Look up `gristmill.error` once per worker.
pub fn init(py: Python<'_>) -> PyResult<()> {
    let logger = py
        .import("logging")?
        .call_method1("getLogger", ("gristmill.error",))?;
    let debug: bool = logger.call_method1("isEnabledFor", (DEBUG,))?.extract()?;
    let _ = DEBUG_ENABLED.set(debug);
    let _ = ERROR_LOGGER.set(logger.unbind());
    Ok(())
}

/// Whether debug lines would be written (checked once at start-up).
pub fn debug_enabled() -> bool {
    *DEBUG_ENABLED.get().unwrap_or(&false)
}

/// Log `msg` at `level`, with `exc` as the traceback when given. Never fails: a broken
/// logging setup must not take a request down with it.
pub fn log_with(py: Python<'_>, level: i32, msg: &str, exc: Option<&PyErr>) {
    let Some(logger) = ERROR_LOGGER.get() else {
        eprintln!("gristmill: {msg}");
        return;
    };
    let kwargs = PyDict::new(py);
    if let Some(e) = exc {
        // The full (type, value, traceback) triple: the value alone may lack its
        // traceback on Pythons where PyO3 keeps it separately.
        let info = (e.get_type(py), e.value(py), e.traceback(py));
        let _ = kwargs.set_item("exc_info", info);
    }
    if let Err(e) = logger.call_method(py, "log", (level, msg), Some(&kwargs)) {
        eprintln!("gristmill: logging failed ({e}); message was: {msg}");
    }
}

/// Log from any thread, taking the GIL.
pub fn log(level: i32, msg: &str) {
    if level == DEBUG && !debug_enabled() {
        return;
    }
    Python::attach(|py| log_with(py, level, msg, None));
}

/// The plural ending of a count in a log line: `""` for one, `"s"` otherwise.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// An error with its causes: hyper's own message is generic ("error reading a body"),
/// the cause says what was wrong ("invalid chunk size line").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
