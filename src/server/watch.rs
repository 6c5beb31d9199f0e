//! The connection watch: deadlines that hyper's per-protocol settings do not give.
//!
//! - From accept until the first request head arrives (protocol detection of HTTP/1.1 vs h2c
//!   included, which waits without a deadline otherwise), at most `first` may pass.
//! - Between requests (HTTP/1.1 keep-alive, an HTTP/2 connection without open streams) at most
//!   `idle` may pass.
//! - At shutdown every connection is asked to finish gracefully and dropped after `grace`.
//!
//! A connection past a deadline is shut down gracefully (an HTTP/2 GOAWAY; HTTP/1.1 closes)
//! and dropped one second later if it still has not finished without a request in progress.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a connection asked to close may take before it is dropped, when no request is in
/// progress on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection is doing: requests in progress, and when the last one ended.
#[derive(Clone)]
pub struct Activity(Arc<Inner>);

struct Inner {
    busy: AtomicUsize,
    /// When the connection became idle (accept, or the end of its last response), and whether
    /// any request came yet.
    idle_since: Mutex<(Instant, bool)>,
    changed: Notify,
}

/// A request in progress on a connection; dropped when its response body is done or dropped.
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        if inner.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut s) = inner.idle_since.lock() {
                s.0 = Instant::now();
            }
        }
        inner.changed.notify_waiters();
    }
}

impl Activity {
    /// A fresh connection, idle since now.
    pub fn new() -> Self {
        Activity(Arc::new(Inner {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new((Instant::now(), false)),
            changed: Notify::new(),
        }))
    }

    /// A request begins.
    pub fn begin(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut s) = self.0.idle_since.lock() {
            s.1 = true;
        }
        self.0.changed.notify_waiters();
        Busy(self.clone())
    }

    fn busy(&self) -> bool {
        self.0.busy.load(Ordering::Acquire) > 0
    }

    /// Resolves once the connection has been idle past its deadline.
    fn idle_past(
        &self,
        first: Duration,
        idle: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move { this.idle_past_inner(first, idle).await }
    }

    async fn idle_past_inner(&self, first: Duration, idle: Duration) {
        loop {
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.busy() {
                notified.await;
                continue;
            }
            let (since, served) = self
                .0
                .idle_since
                .lock()
                .map(|s| *s)
                .unwrap_or((Instant::now(), true));
            let until = since + if served { idle } else { first };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = notified => {}
            }
        }
    }
}

/// Drives `conn` to its end under the deadlines of the module documentation.
// Not an `async fn`: the explicit `Send + 'static` future lets the compiler prove the
// connection task `Send` (an `async fn` here hits a higher-ranked lifetime error).
#[allow(clippy::manual_async_fn)]
pub fn serve_watched<C>(
    conn: C,
    activity: Activity,
    shutdown: CancellationToken,
    first: Duration,
    idle: Duration,
    grace: Duration,
) -> impl std::future::Future<Output = Result<(), C::Error>> + Send + 'static
where
    C: GracefulConnection + Send + 'static,
{
    async move {
        tokio::pin!(conn);
        // Set once the connection was asked to close: by then it must be done.
        let mut close_by: Option<Instant> = None;
        loop {
            match close_by {
                None => {
                    tokio::select! {
                        r = conn.as_mut() => return r,
                        _ = shutdown.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            close_by = Some(Instant::now() + grace);
                        }
                        _ = activity.idle_past(first, idle) => {
                            conn.as_mut().graceful_shutdown();
                            close_by = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                }
                Some(deadline) => {
                    tokio::select! {
                        r = conn.as_mut() => return r,
                        _ = tokio::time::sleep_until(deadline) => {
                            // A request that raced the close may finish (it has limits of its
                            // own); a connection with nothing in progress is dropped.
                            if !activity.busy() || shutdown.is_cancelled() {
                                return Ok(());
                            }
                            close_by = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                }
            }
        }
    }
}
