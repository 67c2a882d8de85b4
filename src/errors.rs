//! Error types of the core and the Python exceptions they become at the boundary.
//!
//! The exceptions live in `gristmill._core` but name `gristmill` as their module: the
//! package re-exports them, and that is where users import them from.

use pyo3::create_exception;
use pyo3::exceptions::PyOSError;

create_exception!(
    gristmill,
    RequestBodyError,
    PyOSError,
    "The request body could not be read: malformed framing or the client went away."
);
create_exception!(
    gristmill,
    RequestBodyTooLarge,
    RequestBodyError,
    "The request body grew past max_body_size."
);
create_exception!(
    gristmill,
    ClientDisconnected,
    RequestBodyError,
    "The client went away: the request body ended early, or an ASGI send() (HTTP or WebSocket) found the connection closed."
);
create_exception!(
    gristmill,
    RequestBodyTimeout,
    RequestBodyError,
    "No bytes of the request body arrived for body_read_timeout."
);
