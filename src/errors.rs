//! Error types of the core and the Python exceptions they become at the boundary.

use pyo3::create_exception;
use pyo3::exceptions::PyOSError;

create_exception!(
    _core,
    RequestBodyError,
    PyOSError,
    "The request body could not be read: malformed framing or the client went away."
);
create_exception!(
    _core,
    RequestBodyTooLarge,
    RequestBodyError,
    "The request body grew past max_body_size."
);
create_exception!(
    _core,
    ClientDisconnected,
    RequestBodyError,
    "The client closed the connection before the request body was complete."
);
create_exception!(
    _core,
    RequestBodyTimeout,
    RequestBodyError,
    "No bytes of the request body arrived for body_read_timeout."
);
