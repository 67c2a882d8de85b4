//! `wsgi.file_wrapper`: a file-like object the server can send without the bytes
//! passing through Python. When the wrapped object has a real `fileno()` of a regular
//! file and a `tell()`, the body is read straight from the descriptor on a blocking
//! thread (from the current position); otherwise it is iterated like any iterable.

use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The `wsgi.file_wrapper` type.
#[pyclass(module = "gristmill._core", frozen)]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

/// A file the server can read itself: a private descriptor, start offset and length.
pub struct NativeFile {
    pub fd: OwnedFd,
    pub offset: u64,
    pub len: u64,
}

impl FileWrapper {
    /// A descriptor to send from, when the wrapped object is a regular file.
    pub fn native(&self, py: Python<'_>) -> Option<NativeFile> {
        let f = self.filelike.bind(py);
        let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        let offset: u64 = f.call_method0("tell").ok()?.extract().ok()?;
        // SAFETY: fstat on a descriptor the object reported; failure is checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        // SAFETY: dup gives us our own descriptor (checked), independent of Python's.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        let size = st.st_size as u64;
        Some(NativeFile {
            fd: unsafe { OwnedFd::from_raw_fd(dup) },
            offset,
            len: size.saturating_sub(offset),
        })
    }
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => data.len().unwrap_or(0) == 0,
        };
        Ok((!empty).then_some(data))
    }

    /// Close the wrapped object, as PEP 3333 requires of the server.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
