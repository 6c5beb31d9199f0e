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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a connection asked to close may take before it is dropped, when no request is in
/// progress on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection is doing: requests in progress, and when the last one ended.
#[derive(Clone)]
pub struct Activity(Arc<Inner>);

/// The connections of a listener that have not sent a request yet, oldest first. When the
/// listener is full, the oldest of them is evicted for a newcomer: a flood of silent or
/// slow-loris connections then cannot keep real clients out for a whole header timeout.
#[derive(Default)]
pub struct Unproven {
    next: AtomicU64,
    waiting: std::sync::Mutex<std::collections::BTreeMap<u64, CancellationToken>>,
}

/// One connection's entry in [`Unproven`]: its id and the token that evicts it.
#[derive(Clone)]
pub struct Entry {
    id: u64,
    evict: CancellationToken,
    set: std::sync::Weak<Unproven>,
}

impl Unproven {
    /// Registers a new connection.
    pub fn enter(self: &Arc<Self>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, evict.clone());
        }
        Entry {
            id,
            evict,
            set: Arc::downgrade(self),
        }
    }

    /// The connection sent a request (or ended): it can no longer be evicted.
    pub fn leave(&self, entry: &Entry) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&entry.id);
        }
    }

    /// Evicts the oldest connection that has sent nothing; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        let victim = self.waiting.lock().ok().and_then(|mut w| w.pop_first());
        match victim {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

struct Inner {
    busy: AtomicUsize,
    /// Its place among the connections that have sent nothing yet.
    unproven: Entry,
    /// When the connection was accepted: `idle_since` counts from it.
    base: Instant,
    /// Nanoseconds after `base` when the connection last became idle (accept, or the end of its
    /// last response).
    idle_since: AtomicU64,
    /// Whether any request came yet.
    served: AtomicBool,
    /// Shutdown has begun: the answer in progress is the last (read by the direct path, which
    /// must not lock the listener's shutdown token for every answer).
    closing: AtomicBool,
}

/// A request in progress on a connection; dropped when its response body is done or dropped.
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        // The watch reads these when its timer fires: a request costs two atomic updates, never
        // a wake-up or a timer. The time is set before the count drops, so that a watch that
        // sees the connection idle never reads the end of an earlier request.
        (self.0).mark_idle_now();
        (self.0).0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// A fresh connection, idle since now.
    pub fn new(unproven: Entry) -> Self {
        Activity(Arc::new(Inner {
            busy: AtomicUsize::new(0),
            unproven,
            base: Instant::now(),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }))
    }

    /// A request begins.
    pub fn begin(&self) -> Busy {
        if !self.0.served.load(Ordering::Relaxed) {
            self.0.served.store(true, Ordering::Relaxed);
            if let Some(set) = self.0.unproven.set.upgrade() {
                set.leave(&self.0.unproven);
            }
        }
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Bytes of a response reached the socket: a whole-buffer answer counts as done when the
    /// handler returns it, but the connection is idle only once its last byte has left.
    pub fn wrote(&self) {
        // While a request is in progress, its end marks the time (`Busy`'s drop): only bytes
        // that leave after it need the clock.
        if !self.busy() {
            self.mark_idle_now();
        }
    }

    fn mark_idle_now(&self) {
        let since = Instant::now().saturating_duration_since(self.0.base);
        self.0
            .idle_since
            .fetch_max(since.as_nanos() as u64, Ordering::AcqRel);
    }

    /// Shutdown has begun (seen by [`watched`]).
    pub fn closing(&self) -> bool {
        self.0.closing.load(Ordering::Relaxed)
    }

    fn busy(&self) -> bool {
        self.0.busy.load(Ordering::Acquire) > 0
    }

    /// Resolves once the connection has been idle past its deadline.
    pub(super) fn idle_past(
        &self,
        first: Duration,
        idle: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move { this.idle_past_inner(first, idle).await }
    }

    async fn idle_past_inner(&self, first: Duration, idle: Duration) {
        loop {
            if self.busy() {
                // Checked again a whole idle period later: a connection that keeps busy costs
                // one timer per period, not one per request.
                tokio::time::sleep(idle).await;
                continue;
            }
            let since =
                self.0.base + Duration::from_nanos(self.0.idle_since.load(Ordering::Acquire));
            let served = self.0.served.load(Ordering::Relaxed);
            let until = since + if served { idle } else { first };
            let now = Instant::now();
            if now >= until {
                return;
            }
            // Before the first request the wait is cut into idle periods: once one arrives,
            // the idle deadline (shorter than the first one, perhaps) is what counts.
            let wake = if served { until } else { until.min(now + idle) };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// The deadlines of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From accept to the first request head.
    pub first: Duration,
    /// Between requests.
    pub idle: Duration,
    /// After a shutdown request.
    pub grace: Duration,
}

/// Drives `conn` to its end under the deadlines of the module documentation; it is dropped at
/// once when evicted before its first request.
// Not an `async fn`: the explicit `Send + 'static` future lets the compiler prove the
// connection task `Send` (an `async fn` here hits a higher-ranked lifetime error).
#[allow(clippy::manual_async_fn)]
pub fn serve_watched<C>(
    conn: C,
    activity: Activity,
    shutdown: CancellationToken,
    deadlines: Deadlines,
) -> impl std::future::Future<Output = Result<(), C::Error>> + Send + 'static
where
    C: GracefulConnection + Send + 'static,
{
    let Deadlines { first, idle, grace } = deadlines;
    let evicted = activity.0.unproven.evict.clone();
    async move {
        tokio::pin!(conn);
        // Polled only when they were woken: the select below runs on every read and write of
        // the connection, and each poll of a token's future locks its mutex, the listener's
        // shared by every connection.
        let mut evicted = WokenOnly::new(evicted.cancelled_owned());
        let mut shut_down = WokenOnly::new(shutdown.clone().cancelled_owned());
        // Set once the connection was asked to close: by then it must be done.
        let mut close_by: Option<Instant> = None;
        loop {
            match close_by {
                None => {
                    tokio::select! {
                        r = conn.as_mut() => return r,
                        // Sent nothing, and its place went to a newcomer.
                        _ = &mut evicted => return Ok(()),
                        _ = &mut shut_down => {
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

/// Drives `work` (a connection's requests served without hyper) under the deadlines of the
/// module documentation; `None` when the connection is to close instead: evicted before its
/// first request, idle past its deadline, shut down while idle, or still busy `grace` after
/// shutdown. `work` ends by itself after the answer in progress once shutdown has begun.
pub async fn watched<F: Future>(
    work: F,
    activity: &Activity,
    shutdown: &CancellationToken,
    deadlines: Deadlines,
) -> Option<F::Output> {
    let Deadlines { first, idle, grace } = deadlines;
    tokio::pin!(work);
    // Polled only when woken, as in `serve_watched`.
    let mut evicted = WokenOnly::new(activity.0.unproven.evict.clone().cancelled_owned());
    let mut shut_down = WokenOnly::new(shutdown.clone().cancelled_owned());
    let mut close_by: Option<Instant> = None;
    loop {
        match close_by {
            None => {
                tokio::select! {
                    r = work.as_mut() => return Some(r),
                    _ = &mut evicted => return None,
                    _ = &mut shut_down => {
                        if !activity.busy() {
                            return None;
                        }
                        activity.0.closing.store(true, Ordering::Relaxed);
                        close_by = Some(Instant::now() + grace);
                    }
                    _ = activity.idle_past(first, idle) => return None,
                }
            }
            Some(deadline) => {
                tokio::select! {
                    r = work.as_mut() => return Some(r),
                    _ = tokio::time::sleep_until(deadline) => return None,
                }
            }
        }
    }
}

/// A future polled only after its own waker fired (and once at first).
struct WokenOnly<F> {
    fut: Pin<Box<F>>,
    woken: Arc<WakeFlag>,
    /// The waker handed to `fut`: it raises the flag, then wakes the task.
    waker: Waker,
}

/// Whether a [`WokenOnly`]'s future was woken since its last poll, and the task to wake.
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WokenOnly<F> {
    fn new(fut: F) -> Self {
        let woken = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            fut: Box::pin(fut),
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake between the two is not lost.
        this.woken.task.register(cx.waker());
        if !this.woken.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_woken_only_future_sees_its_wake_and_skips_the_others() {
        let token = CancellationToken::new();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = {
            let polls = polls.clone();
            let mut cancelled = Box::pin(token.clone().cancelled_owned());
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                cancelled.as_mut().poll(cx)
            })
        };
        let mut fut = WokenOnly::new(counted);
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        // Woken for something else (the connection): the token is not looked at.
        for _ in 0..10 {
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        token.cancel();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    fn served_connection() -> (Arc<Unproven>, Activity) {
        let set = Arc::new(Unproven::default());
        let activity = Activity::new(set.enter());
        drop(activity.begin());
        (set, activity)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let (_set, activity) = served_connection();
        let start = Instant::now();
        activity
            .idle_past(Duration::from_secs(5), Duration::from_millis(300))
            .await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_request_brings_the_idle_deadline_in() {
        let set = Arc::new(Unproven::default());
        let activity = Activity::new(set.enter());
        let start = Instant::now();
        let served = {
            let activity = activity.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(activity.begin());
            })
        };
        // Watched from before the request: the first deadline (5 s) must not hold it open.
        activity
            .idle_past(Duration::from_secs(5), Duration::from_millis(300))
            .await;
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        served.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_is_not_idle() {
        let (_set, activity) = served_connection();
        let start = Instant::now();
        let writer = {
            let activity = activity.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    activity.wrote();
                }
            })
        };
        activity
            .idle_past(Duration::from_secs(5), Duration::from_millis(300))
            .await;
        // The last write was at 1 s.
        assert_eq!(start.elapsed(), Duration::from_millis(1300));
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_idle() {
        let (_set, activity) = served_connection();
        let busy = activity.begin();
        let watch = activity.idle_past(Duration::from_secs(5), Duration::from_millis(300));
        tokio::pin!(watch);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), watch.as_mut())
                .await
                .is_err(),
            "idle while busy"
        );
        let start = Instant::now();
        drop(busy);
        watch.await;
        assert!(start.elapsed() <= Duration::from_millis(300));
    }
}
