//! The executor of hyper's HTTP/2 stream tasks. hyper spawns one task per stream, which sends
//! the answer and wakes the connection task to write it: two task switches and an allocation
//! for every request. An answer the service gave at once (a kept answer, a refusal) needs
//! neither: its stream is polled once right where hyper hands it over, on the connection task,
//! and its frames go out with that task's next write. Anything not finished by that poll (a
//! body waiting for flow-control window) is spawned as before; a stream whose answer is still
//! being worked out is spawned without the poll, so that handlers keep running in parallel
//! with the connection's other streams.

use std::cell::Cell;
use std::future::Future;
use std::task::{Context, Waker};

thread_local! {
    /// Whether the service's last call on this thread answered at once. hyper's HTTP/2
    /// connection calls the service and hands the stream to the executor right after, on the
    /// same thread with nothing in between, so the mark always belongs to that stream.
    static ANSWERED_AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Marks whether the service call being returned answered an HTTP/2 request at once (its
/// future is ready; HTTP/1 calls mark false, having no stream to hand over). Only a hint: a
/// wrong mark costs a poll or a spawn, never correctness.
pub(super) fn mark_answered_at_once(at_once: bool) {
    ANSWERED_AT_ONCE.with(|m| m.set(at_once));
}

/// hyper's executor: polls the stream of an answer given at once in place, spawns the rest.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        if !ANSWERED_AT_ONCE.with(|m| m.replace(false)) {
            tokio::spawn(fut);
            return;
        }
        let mut fut = Box::pin(fut);
        // A future polled with one waker and then another keeps only the last: the spawned
        // task's first poll registers its own waker and sees whatever happened in between.
        // A panic costs this stream (dropped: its stream is reset), as it would in a task of
        // its own, not the connection's task.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fut.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        }));
        match polled {
            Ok(true) => {
                tokio::spawn(fut);
            }
            Ok(false) => {}
            Err(_) => tracing::error!("an HTTP/2 stream panicked; it was reset"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn flag() -> (Arc<AtomicBool>, impl Future<Output = ()> + Send + 'static) {
        let ran = Arc::new(AtomicBool::new(false));
        let set = ran.clone();
        (ran, async move { set.store(true, Ordering::SeqCst) })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_given_at_once_runs_in_place_and_the_mark_is_spent() {
        mark_answered_at_once(true);
        let (ran, fut) = flag();
        StreamExecutor.execute(fut);
        assert!(ran.load(Ordering::SeqCst), "not run in place");
        // The mark was for that stream only.
        let (ran, fut) = flag();
        StreamExecutor.execute(fut);
        assert!(
            !ran.load(Ordering::SeqCst),
            "the next stream ran in place too"
        );
        tokio::task::yield_now().await;
        assert!(ran.load(Ordering::SeqCst), "the spawned stream did not run");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_stream_costs_only_itself() {
        mark_answered_at_once(true);
        StreamExecutor.execute(async { panic!("a bug in one stream") });
        // Still here, and the next stream runs.
        let (ran, fut) = flag();
        mark_answered_at_once(true);
        StreamExecutor.execute(fut);
        assert!(ran.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_still_being_worked_out_is_spawned_unpolled() {
        mark_answered_at_once(false);
        let (ran, fut) = flag();
        StreamExecutor.execute(fut);
        assert!(!ran.load(Ordering::SeqCst));
        tokio::task::yield_now().await;
        assert!(ran.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_that_waits_after_its_first_poll_is_spawned_and_woken() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u8>();
        mark_answered_at_once(true);
        StreamExecutor.execute(async move {
            if let Ok(v) = rx.await {
                let _ = done_tx.send(v + 1);
            }
        });
        // Sent once the spawned task has polled and waits (the in-place poll had registered the
        // no-op waker): the task's own waker must be the one woken.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        tx.send(41).ok();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx).await;
        assert_eq!(got.ok().and_then(|r| r.ok()), Some(42));
    }
}
