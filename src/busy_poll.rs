//! `--busy-poll`: a one-thread worker that just served a request keeps turning its
//! runtime without sleeping for a moment before it waits, so a request arriving
//! meanwhile is served without the wake-up latency of an idle core. The two one-thread
//! execution modes wait this way: WSGI inline (`wsgi::inline`, between application
//! calls) and ASGI driven (`asgi::driven`, in the event loop's selector).

use std::future::Future;
use std::time::{Duration, Instant};

/// Wait for `fut` on this thread's current-thread runtime, spinning for the first
/// `spin` (zero: not at all): each turn runs the ready tasks, polls the sockets without
/// sleeping and polls `fut` again. After `spin`, or as soon as `fut` is ready, this is
/// a plain wait.
pub async fn wait<F: Future>(spin: Duration, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                // Deferred until the runtime polled its sockets (without blocking): one
                // turn. A plain self-wake would cost a write to the runtime's eventfd.
                () = tokio::task::yield_now() => {}
            }
            if start.elapsed() >= spin {
                break;
            }
        }
    }
    fut.await
}
