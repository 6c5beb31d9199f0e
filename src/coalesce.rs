//! Shared in-flight work that is safe against cancellation (invariant 7 of the design: a client
//! that leaves takes nothing with it).
//!
//! Two shapes recur wherever concurrent requests share work:
//! - [`Coalescer`]: N callers asking for the same key share one piece of work. The work runs in
//!   its own task, so it does not depend on the caller that started it staying around; its entry
//!   leaves the map the moment the work ends (success, failure, panic or abort), so a failure is
//!   never handed to a caller that arrives after its flight; and when the last caller leaves
//!   before the end, the work is aborted, so nobody pays for a fetch that nobody wants.
//! - [`ClaimSet`]: "at most one of these at a time" markers whose release is tied to a guard's
//!   `Drop`, so a future dropped at any await point cannot leave its key claimed for ever.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::AbortHandle;

/// The work of a flight ended without a value: it panicked, or the runtime is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared work ended without a result")]
pub struct Abandoned;

type SharedResult<V> = Shared<BoxFuture<'static, Result<V, Abandoned>>>;

struct Entry<V> {
    id: u64,
    waiters: usize,
    result: SharedResult<V>,
    abort: AbortHandle,
}

struct Inner<K, V> {
    next_id: u64,
    flights: HashMap<K, Entry<V>>,
    gauge: Option<Gauge>,
}

impl<K: Eq + Hash, V> Inner<K, V> {
    /// Removes the entry of flight `id` for `key` (not a newer flight for the same key).
    fn remove_flight(&mut self, key: &K, id: u64) -> Option<Entry<V>> {
        if self.flights.get(key).is_some_and(|e| e.id == id) {
            let e = self.flights.remove(key);
            if let Some(g) = &self.gauge {
                g.set(self.flights.len() as i64);
            }
            e
        } else {
            None
        }
    }
}

/// Concurrent work coalesced by key; see the module documentation.
pub struct Coalescer<K, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 0,
                flights: HashMap::new(),
                gauge: None,
            })),
        }
    }
}

/// Removes a flight's entry when its task ends in any way, including panic and abort: it is
/// dropped with the task's future.
struct LeaveOnEnd<K: Eq + Hash, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
    key: Option<K>,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for LeaveOnEnd<K, V> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut inner)) = (self.key.take(), self.inner.lock()) {
            inner.remove_flight(&key, self.id);
        }
    }
}

/// One caller's stake in a flight: when the last one is dropped before the flight ends, the
/// flight is aborted and forgotten.
struct Waiter<K: Eq + Hash, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
    key: Option<K>,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for Waiter<K, V> {
    fn drop(&mut self) {
        let (Some(key), Ok(mut inner)) = (self.key.take(), self.inner.lock()) else {
            return;
        };
        let last = match inner.flights.get_mut(&key) {
            Some(e) if e.id == self.id => {
                e.waiters = e.waiters.saturating_sub(1);
                e.waiters == 0
            }
            _ => false,
        };
        if last {
            if let Some(e) = inner.remove_flight(&key, self.id) {
                e.abort.abort();
            }
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty coalescer whose number of flights is mirrored in `gauge`.
    pub fn with_gauge(gauge: Option<Gauge>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 0,
                flights: HashMap::new(),
                gauge,
            })),
        }
    }

    /// Flights running now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.flights.len()).unwrap_or(0)
    }

    /// Whether no flight is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The result of the flight for `key`, joining a running one or starting `work` in a task of
    /// its own. The second value tells whether an existing flight was joined.
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> (Result<V, Abandoned>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (result, joined, waiter) = {
            let Ok(mut inner) = self.inner.lock() else {
                return (Err(Abandoned), false);
            };
            if let Some(e) = inner.flights.get_mut(&key) {
                e.waiters += 1;
                let waiter = Waiter {
                    inner: self.inner.clone(),
                    key: Some(key),
                    id: e.id,
                };
                (e.result.clone(), true, waiter)
            } else {
                inner.next_id += 1;
                let id = inner.next_id;
                let leave = LeaveOnEnd {
                    inner: self.inner.clone(),
                    key: Some(key.clone()),
                    id,
                };
                let fut = work();
                let task = tokio::spawn(async move {
                    let _leave = leave;
                    fut.await
                });
                let abort = task.abort_handle();
                let result = async move { task.await.map_err(|_| Abandoned) }
                    .boxed()
                    .shared();
                inner.flights.insert(
                    key.clone(),
                    Entry {
                        id,
                        waiters: 1,
                        result: result.clone(),
                        abort,
                    },
                );
                if let Some(g) = &inner.gauge {
                    g.set(inner.flights.len() as i64);
                }
                let waiter = Waiter {
                    inner: self.inner.clone(),
                    key: Some(key),
                    id,
                };
                (result, false, waiter)
            }
        };
        let value = result.await;
        drop(waiter);
        (value, joined)
    }
}

/// Keys that are being worked on, each by at most one holder of a [`Claim`].
pub struct ClaimSet<K> {
    inner: Arc<Mutex<HashSet<K>>>,
    gauge: Gauge,
}

impl<K> Default for ClaimSet<K> {
    fn default() -> Self {
        Self::with_gauge(Gauge::default())
    }
}

/// Holds a key of a [`ClaimSet`] until dropped.
pub struct Claim<K: Eq + Hash> {
    inner: Arc<Mutex<HashSet<K>>>,
    gauge: Gauge,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for Claim<K> {
    fn drop(&mut self) {
        if let (Some(k), Ok(mut set)) = (self.key.take(), self.inner.lock()) {
            set.remove(&k);
            self.gauge.set(set.len() as i64);
        }
    }
}

impl<K> ClaimSet<K> {
    /// An empty set whose size is mirrored in `gauge`.
    pub fn with_gauge(gauge: Gauge) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashSet::new())),
            gauge,
        }
    }
}

impl<K: Eq + Hash + Clone> ClaimSet<K> {
    /// Claims `key`; `None` when someone holds it already.
    pub fn claim(&self, key: K) -> Option<Claim<K>> {
        let mut set = self.inner.lock().ok()?;
        let claimed = set.insert(key.clone());
        self.gauge.set(set.len() as i64);
        claimed.then(|| Claim {
            inner: self.inner.clone(),
            gauge: self.gauge.clone(),
            key: Some(key),
        })
    }

    /// Whether `key` is claimed now (a poisoned lock counts as claimed: do not start work).
    pub fn contains(&self, key: &K) -> bool {
        self.inner.lock().map(|s| s.contains(key)).unwrap_or(true)
    }

    /// Keys claimed now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether nothing is claimed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let c: Coalescer<u32, u32> = Coalescer::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |runs: Arc<AtomicUsize>| {
            let c = c.clone();
            async move {
                c.run(1, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            }
        };
        let (a, b) = tokio::join!(call(runs.clone()), call(runs.clone()));
        assert_eq!(a.0, Ok(7));
        assert_eq!(b.0, Ok(7));
        assert!(a.1 != b.1, "one started, one joined");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_failure_is_not_remembered_after_its_flight() {
        let c: Coalescer<u32, Result<u32, String>> = Coalescer::default();
        let (r, _) = c.run(1, || async { Err("boom".to_string()) }).await;
        assert_eq!(r, Ok(Err("boom".into())));
        let (r, joined) = c.run(1, || async { Ok(1) }).await;
        assert_eq!(r, Ok(Ok(1)));
        assert!(!joined);
    }

    #[tokio::test]
    async fn the_leader_leaving_does_not_poison_the_key() {
        let c: Coalescer<u32, Result<u32, String>> = Coalescer::default();
        let leader = {
            let c = c.clone();
            tokio::spawn(async move {
                c.run(1, || async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err("late failure".to_string())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(c.len(), 1);
        leader.abort();
        let _ = leader.await;
        // Nobody waits any more: the flight is gone at once, and the next caller starts afresh.
        assert!(c.is_empty());
        let (r, joined) = c.run(1, || async { Ok(5) }).await;
        assert_eq!(r, Ok(Ok(5)));
        assert!(!joined);
    }

    #[tokio::test]
    async fn a_flight_nobody_waits_for_stops() {
        let c: Coalescer<u32, u32> = Coalescer::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let fut = c.run(1, move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            f.fetch_add(1, Ordering::SeqCst);
            1
        });
        let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0, "the work was aborted");
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_joiner_keeps_the_flight_alive_when_the_leader_leaves() {
        let c: Coalescer<u32, u32> = Coalescer::default();
        let leader = {
            let c = c.clone();
            tokio::spawn(async move {
                c.run(1, || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    9
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let joiner = {
            let c = c.clone();
            tokio::spawn(async move { c.run(1, || async { 0 }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let (r, joined) = joiner.await.unwrap();
        assert_eq!(r, Ok(9));
        assert!(joined);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_panicking_flight_leaves() {
        let c: Coalescer<u32, u32> = Coalescer::default();
        let (r, _) = c
            .run(1, || async {
                if true {
                    panic!("bug");
                }
                1
            })
            .await;
        assert_eq!(r, Err(Abandoned));
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn claims_are_released_when_dropped() {
        let set: ClaimSet<u32> = ClaimSet::default();
        let fut = async {
            let _claim = set.claim(1).unwrap();
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
        assert!(set.is_empty());
        let a = set.claim(2);
        assert!(a.is_some());
        assert!(set.claim(2).is_none());
        drop(a);
        assert!(set.claim(2).is_some());
    }
}
