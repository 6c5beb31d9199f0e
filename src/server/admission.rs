//! Admission of requests on the public listener (design invariant 8: every resource a request
//! can hold is bounded per client and in total, and the bound answers instead of queueing):
//! a global cap on requests in progress, a per-client cap on requests in progress, and an
//! optional per-client token bucket. Clients are keyed by IPv4 address or IPv6 /64 (one
//! subscriber usually holds a whole /64). A refused request gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A client's key: its IPv4 address, or the /64 of its IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        // IPv4 keys are their mapped IPv6 form, whose low 64 bits are never zero; IPv6 keys are
        // the /64 prefix with zero low bits: the two never meet.
        match ip {
            IpAddr::V4(v4) => ClientKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(u128::from(v4.to_ipv6_mapped())),
                None => ClientKey(u128::from(v6) & !((1u128 << 64) - 1)),
            },
        }
    }
}

/// Per-client bounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLimits {
    /// Requests in progress per client; 0: unbounded.
    pub max_concurrent: usize,
    /// Sustained requests per second per client; 0: no rate limit.
    pub rate: f64,
    /// Requests a client may send at once above its rate.
    pub burst: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The gateway serves its maximum number of requests.
    #[error("too many requests in progress, retry later")]
    Busy,
    /// This client has its maximum number of requests in progress.
    #[error("too many requests in progress from your address, retry later")]
    ClientBusy,
    /// This client sends faster than its rate.
    #[error("request rate limit exceeded, retry later")]
    ClientRate(Duration),
}

impl Refusal {
    /// The label of this refusal in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Busy => "concurrency",
            Refusal::ClientBusy => "client_concurrency",
            Refusal::ClientRate(_) => "client_rate",
        }
    }

    /// How long the client should wait.
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::ClientRate(d) => *d,
            _ => Duration::from_secs(1),
        }
    }
}

/// Counts per client, sharded so that concurrent requests rarely meet on one lock.
#[derive(Default)]
pub struct Counts {
    shards: [Mutex<HashMap<ClientKey, u32>>; 16],
}

/// One unit of a client's count, returned when dropped.
pub struct CountGuard {
    counts: Arc<Counts>,
    key: ClientKey,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.shard(self.key).lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

impl Counts {
    fn shard(&self, key: ClientKey) -> &Mutex<HashMap<ClientKey, u32>> {
        let h = (key.0 ^ (key.0 >> 64)) as u64;
        &self.shards[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize]
    }

    /// One more for `ip` unless it holds `max` already.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<CountGuard> {
        let key = ClientKey::of(ip);
        let mut m = self.shard(key).lock().ok()?;
        let n = m.entry(key).or_insert(0);
        if *n as usize >= max {
            if *n == 0 {
                m.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(CountGuard {
            counts: self.clone(),
            key,
        })
    }

    /// Clients holding at least one unit.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// One place among the requests in progress, returned when dropped.
struct GlobalSlot(Arc<AtomicUsize>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's admission; dropping it (when the response is done) frees its places.
pub struct Ticket {
    _global: GlobalSlot,
    _client: Option<CountGuard>,
}

/// The per-client bounds in force and the rate limiter that enforces them.
struct ClientState {
    limits: ClientLimits,
    rate: Option<Arc<DefaultKeyedRateLimiter<ClientKey>>>,
}

impl ClientState {
    fn new(limits: ClientLimits) -> Self {
        let rate = (limits.rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / limits.rate.min(1e9));
            let burst = NonZeroU32::new(limits.burst.max(1)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(burst);
            Arc::new(RateLimiter::keyed(quota))
        });
        Self { limits, rate }
    }
}

/// The admission control of one listener. Its bounds can change while it runs (SIGHUP):
/// requests in progress keep their places, new ones are admitted under the new bounds.
pub struct Admission {
    /// Requests in progress.
    in_progress: Arc<AtomicUsize>,
    /// Most requests in progress; 0: unbounded.
    max_concurrent: AtomicUsize,
    counts: Arc<Counts>,
    client: ArcSwap<ClientState>,
    /// Admissions so far, to prune idle rate-limit state now and then.
    admitted: AtomicU64,
}

impl Admission {
    /// At most `max_concurrent` requests in progress (0: unbounded), and `client` per client.
    pub fn new(max_concurrent: usize, client: ClientLimits) -> Arc<Self> {
        Arc::new(Self {
            in_progress: Arc::new(AtomicUsize::new(0)),
            max_concurrent: AtomicUsize::new(max_concurrent),
            counts: Arc::new(Counts::default()),
            client: ArcSwap::from_pointee(ClientState::new(client)),
            admitted: AtomicU64::new(0),
        })
    }

    /// New bounds for requests admitted from now on. Per-client rate buckets start full again
    /// only when the rate or the burst changed.
    pub fn set_limits(&self, max_concurrent: usize, client: ClientLimits) {
        self.max_concurrent.store(max_concurrent, Ordering::Release);
        let current = self.client.load();
        let next = if current.limits.rate == client.rate && current.limits.burst == client.burst {
            ClientState {
                limits: client,
                rate: current.rate.clone(),
            }
        } else {
            ClientState::new(client)
        };
        self.client.store(Arc::new(next));
    }

    /// The bounds in force: requests in progress (0: unbounded) and per client.
    pub fn limits(&self) -> (usize, ClientLimits) {
        (
            self.max_concurrent.load(Ordering::Acquire),
            self.client.load().limits,
        )
    }

    /// Admits a request from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let key = ClientKey::of(ip);
        let client = self.client.load();
        if let Some(rate) = &client.rate {
            if let Err(not_until) = rate.check_key(&key) {
                return Err(Refusal::ClientRate(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ));
            }
            if self.admitted.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
                rate.retain_recent();
                rate.shrink_to_fit();
            }
        }
        let max = self.max_concurrent.load(Ordering::Acquire);
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let global = GlobalSlot(self.in_progress.clone());
        if max != 0 && before >= max {
            return Err(Refusal::Busy);
        }
        let client = match client.limits.max_concurrent {
            0 => None,
            max => Some(
                self.counts
                    .try_acquire(ip, max)
                    .ok_or(Refusal::ClientBusy)?,
            ),
        };
        Ok(Ticket {
            _global: global,
            _client: client,
        })
    }

    /// Requests in progress now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:1.2.3.4")),
            ClientKey::of(ip("1.2.3.4"))
        );
        assert_ne!(ClientKey::of(ip("0.0.0.1")), ClientKey::of(ip("::1")));
    }

    #[test]
    fn the_global_cap_answers_instead_of_queueing() {
        let a = Admission::new(2, ClientLimits::default());
        let t1 = a.admit(ip("1.1.1.1")).unwrap();
        let _t2 = a.admit(ip("2.2.2.2")).unwrap();
        assert_eq!(a.admit(ip("3.3.3.3")).err(), Some(Refusal::Busy));
        drop(t1);
        assert!(a.admit(ip("3.3.3.3")).is_ok());
    }

    #[test]
    fn one_client_cannot_take_every_place() {
        let a = Admission::new(
            100,
            ClientLimits {
                max_concurrent: 2,
                ..Default::default()
            },
        );
        let _a1 = a.admit(ip("2001:db8::1")).unwrap();
        let a2 = a.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(a.admit(ip("2001:db8::3")).err(), Some(Refusal::ClientBusy));
        assert!(a.admit(ip("2001:db9::1")).is_ok(), "another /64");
        drop(a2);
        let _a3 = a.admit(ip("2001:db8::3")).unwrap();
        assert_eq!(a.in_progress(), 2, "refused requests hold nothing");
    }

    #[test]
    fn rates_are_per_client_with_a_burst() {
        let a = Admission::new(
            0,
            ClientLimits {
                max_concurrent: 0,
                rate: 1.0,
                burst: 3,
            },
        );
        for _ in 0..3 {
            drop(a.admit(ip("5.5.5.5")).unwrap());
        }
        match a.admit(ip("5.5.5.5")) {
            Err(Refusal::ClientRate(wait)) => assert!(wait <= Duration::from_secs(1)),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(a.admit(ip("6.6.6.6")).is_ok());
    }

    #[test]
    fn limits_change_while_running() {
        let a = Admission::new(1, ClientLimits::default());
        let t1 = a.admit(ip("1.1.1.1")).unwrap();
        assert_eq!(a.admit(ip("2.2.2.2")).err(), Some(Refusal::Busy));
        a.set_limits(2, ClientLimits::default());
        let t2 = a.admit(ip("2.2.2.2")).unwrap();
        // Lowered below what is in progress: those keep their places, new ones wait.
        a.set_limits(1, ClientLimits::default());
        assert_eq!(a.admit(ip("3.3.3.3")).err(), Some(Refusal::Busy));
        drop((t1, t2));
        assert_eq!(a.in_progress(), 0);
        a.set_limits(
            0,
            ClientLimits {
                max_concurrent: 0,
                rate: 1.0,
                burst: 1,
            },
        );
        drop(a.admit(ip("5.5.5.5")).unwrap());
        assert!(matches!(
            a.admit(ip("5.5.5.5")),
            Err(Refusal::ClientRate(_))
        ));
        assert_eq!(a.limits().1.burst, 1);
    }

    #[test]
    fn counts_are_removed_when_released() {
        let c = Arc::new(Counts::default());
        let g = c.try_acquire(ip("9.9.9.9"), 1).unwrap();
        assert!(c.try_acquire(ip("9.9.9.9"), 1).is_none());
        assert_eq!(c.clients(), 1);
        drop(g);
        assert_eq!(c.clients(), 0);
    }
}
