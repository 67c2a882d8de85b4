//! The Python threads of a worker (`--threads`).
//!
//! Each thread attaches to the interpreter once and stays attached, releasing the GIL
//! only while it waits for the next job or for I/O. Keeping one thread state per thread
//! (rather than attaching per request) keeps `threading.local` and thread identity
//! stable for applications, and avoids creating a thread state per request.

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;

/// Lock `m` from a thread holding the GIL without ever blocking while holding it: the
/// thread that holds the lock may itself be waiting for the GIL.
pub fn lock_releasing_gil<'a, T: Send>(
    py: Python<'_>,
    m: &'a parking_lot::Mutex<T>,
) -> parking_lot::MutexGuard<'a, T> {
    match m.try_lock() {
        Some(g) => g,
        None => py.detach(|| m.lock()),
    }
}

/// Something to run with the GIL held on a pool thread.
pub trait Task: Send + 'static {
    fn run(self, py: Python<'_>);
}

/// A fixed set of Python threads fed from one queue.
pub struct Pool<T: Task> {
    tx: Sender<T>,
}

impl<T: Task> Pool<T> {
    /// Start `threads` threads. They exit when the pool is dropped and the queue drains.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<T>();
        for i in 0..threads {
            let rx: Receiver<T> = rx.clone();
            std::thread::Builder::new()
                .name(format!("gristmill-py-{i}"))
                .spawn(move || {
                    Python::attach(|py| {
                        while let Ok(task) = py.detach(|| rx.recv()) {
                            task.run(py);
                        }
                    })
                })?;
        }
        Ok(Pool { tx })
    }

    /// Queue a task. Returns it back if every thread is gone.
    pub fn submit(&self, task: T) -> Result<(), T> {
        self.tx.send(task).map_err(|e| e.into_inner())
    }
}
