//! The Python threads of a worker (`--threads`).
//!
//! Each thread attaches to the interpreter once and stays attached, releasing the GIL
//! only while it waits for the next job or for I/O. Keeping one thread state per thread
//! (rather than attaching per request) keeps `threading.local` and thread identity
//! stable for applications, and avoids creating a thread state per request.
//!
//! A Python thread waits for I/O (the next piece of a request body, room in a streamed
//! response) through a [`Waiter`]. Beside a multi-thread runtime it simply blocks; on
//! the one thread of a current-thread runtime (the inline mode of `wsgi`, where the
//! application runs on the I/O thread itself) waiting *drives* the runtime, so every
//! other connection of the worker keeps moving while the application waits.

use std::future::Future;
use std::sync::Weak;

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};

/// How a thread that runs Python code waits for a future; see the module docs.
#[derive(Clone)]
pub enum Waiter {
    /// A thread beside a multi-thread runtime: block it while the runtime's threads work.
    Beside(Handle),
    /// The thread that owns this current-thread runtime: waiting runs its tasks. Weak,
    /// so that only the server owns the runtime and can shut it down.
    Driving(Weak<Runtime>),
}

impl Waiter {
    /// Run `f`, which hands something to a task of the runtime (a response, a chunk)
    /// and so wakes it. Inline, `f` runs inside the runtime, where a wake-up is a push
    /// onto the thread's own run queue; from outside it would be a write to the
    /// runtime's eventfd — one more system call per request.
    pub fn hand_over<T: Send>(&self, py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
        if let Waiter::Driving(rt) = self {
            if let Some(rt) = rt.upgrade() {
                return py.detach(|| rt.block_on(async move { f() }));
            }
        }
        f()
    }

    /// Start `task` on the runtime without waiting for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Waiter::Beside(handle) => drop(handle.spawn(task)),
            Waiter::Driving(rt) => {
                if let Some(rt) = rt.upgrade() {
                    drop(rt.spawn(task));
                }
            }
        }
    }

    /// Whether waiting is what moves the I/O (nothing is sent while Python runs).
    pub fn drives(&self) -> bool {
        matches!(self, Waiter::Driving(_))
    }

    /// Wait for `fut` with the GIL released; `None` once the runtime is gone.
    ///
    /// Never call this from inside the runtime (a task or a `block_on`): in the inline
    /// mode, Python code runs only between the runtime's `block_on` calls.
    pub fn wait<F>(&self, py: Python<'_>, fut: F) -> Option<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        match self {
            Waiter::Beside(handle) => Some(py.detach(|| handle.block_on(fut))),
            Waiter::Driving(rt) => {
                let rt = rt.upgrade()?;
                Some(py.detach(|| rt.block_on(fut)))
            }
        }
    }
}

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
