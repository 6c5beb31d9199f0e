//! Promotion and demotion: pinning popular content into the hot layer (pushing the verified DAG)
//! and unpinning automatic pins that stayed cold. Every pin cidgate made is recorded in the store
//! before and after it is made, so a restart neither loses one nor makes it twice; pins an
//! operator made are never demoted. A gateway with a fleet name pins its promotions into a
//! shared hot layer as claims of its own (see [`crate::tiers::pins`]), and demotes only those.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::tracker::{Clock, Tracker};
use crate::coalesce::ClaimSet;
use crate::content::dag::{car_stream, car_stream_under};
use crate::telemetry::Metrics;
use crate::tiers::local::{LocalStore, PinReason, StoreError};
use crate::tiers::pins::{claim_block, HotPins, PinError, PinLabel};
use crate::tiers::BlockSource;

const RECORDS_KEY: &str = "popularity.pins";
/// Events kept for the status page.
const EVENTS: usize = 100;

/// Where a pin cidgate made stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinState {
    /// Being pushed to the hot layer (a restart retries it).
    Pinning,
    /// Pinned.
    Pinned,
    /// The last attempt failed.
    Failed,
    /// Unpinned after staying cold (automatic pins) or by an operator.
    Unpinned,
}

/// One pin cidgate made or tried to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinEntry {
    /// Root CID.
    pub cid: String,
    /// Which hot layer.
    pub target: String,
    /// Made by the popularity tracker (may be demoted) rather than an operator.
    pub auto: bool,
    /// Where it stands.
    pub state: PinState,
    /// Human name.
    #[serde(default)]
    pub name: String,
    /// Unix seconds of the last state change.
    pub since: f64,
    /// Since when its demand has been below the demotion threshold.
    #[serde(default)]
    pub cold_since: Option<f64>,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    #[serde(default)]
    pub last_error: Option<String>,
    /// In a fleet: the CID of this gateway's claim pin that keeps the content in the shared hot
    /// layer (the pin this gateway demotes, never the content's own).
    #[serde(default)]
    pub claim: Option<String>,
}

/// Something that happened to a pin (for the status page and the log).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    /// Root CID.
    pub cid: String,
    /// promoted, demoted, pinned, unpinned, failed.
    pub kind: &'static str,
    /// Which hot layer.
    pub target: &'static str,
    /// More.
    pub detail: String,
}

/// Promotion and demotion thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Promote above this demand.
    pub promote: f64,
    /// An automatic pin is cold below this demand ...
    pub demote: f64,
    /// ... and is unpinned after being cold this many seconds.
    pub demote_after: f64,
}

/// The promoter.
pub struct Promoter {
    target: Arc<dyn HotPins>,
    source: Arc<dyn BlockSource>,
    store: LocalStore,
    limit: u64,
    clock: Arc<dyn Clock>,
    records: Mutex<BTreeMap<String, PinEntry>>,
    /// Held while records are saved (see `update`).
    saving: tokio::sync::Mutex<()>,
    busy: ClaimSet<String>,
    events: Mutex<VecDeque<Event>>,
    metrics: Arc<Metrics>,
    /// This gateway's name in a fleet sharing the hot layer; promotions become its claims.
    gateway: Option<String>,
}

/// Why a pin operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The hot layer or the DAG failed.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// The same CID is being pinned right now.
    #[error("{0} is being pinned already")]
    Busy(String),
    /// The records could not be saved.
    #[error("saving pin records: {0}")]
    Store(String),
}

impl Promoter {
    /// A promoter pinning into `target`, reading DAGs (up to `limit` bytes) through `source`;
    /// records are loaded from `store` (unreadable ones are quarantined and it starts without
    /// them; a store that cannot be read is an error, since saving over it would lose them).
    ///
    /// With `gateway` (a fleet), promotions into a remote hot layer are pinned as claims of that
    /// gateway (the embedded store belongs to this gateway alone and needs none).
    pub fn new(
        target: Arc<dyn HotPins>,
        source: Arc<dyn BlockSource>,
        store: LocalStore,
        limit: u64,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        gateway: Option<String>,
    ) -> Result<Arc<Self>, StoreError> {
        let gateway = gateway.filter(|g| !g.is_empty() && target.name() != "embedded");
        let records: BTreeMap<String, PinEntry> = store.load(RECORDS_KEY)?.unwrap_or_default();
        Ok(Arc::new(Self {
            target,
            source,
            store,
            limit,
            clock,
            records: Mutex::new(records),
            saving: tokio::sync::Mutex::new(()),
            busy: ClaimSet::with_gauge(metrics.work("pins")),
            events: Mutex::new(VecDeque::new()),
            metrics,
            gateway,
        }))
    }

    /// The hot layer pins go to.
    pub fn target(&self) -> &'static str {
        self.target.name()
    }

    /// Every record, by CID.
    pub fn records(&self) -> Vec<PinEntry> {
        self.records
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The record of `cid`.
    pub fn record(&self, cid: &Cid) -> Option<PinEntry> {
        self.records.lock().ok()?.get(&cid.to_string()).cloned()
    }

    /// Recent events, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|e| e.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    fn event(&self, cid: &Cid, kind: &'static str, detail: String) {
        tracing::info!(%cid, kind, target = self.target.name(), %detail, "pin event");
        if let Ok(mut e) = self.events.lock() {
            e.push_back(Event {
                at: self.clock.now(),
                cid: cid.to_string(),
                kind,
                target: self.target.name(),
                detail,
            });
            while e.len() > EVENTS {
                e.pop_front();
            }
        }
    }

    async fn update(&self, cid: &Cid, f: impl FnOnce(&mut PinEntry)) -> Result<(), PromoteError> {
        // Saves run one at a time, each of the snapshot taken when it started, so two updates
        // cannot reach the store in the opposite order (an older snapshot saved last would
        // bring back a state the pin has left). The durable write runs on a blocking thread:
        // an fsync on a runtime worker stalled every request on that worker.
        let _saving = self.saving.lock().await;
        let snapshot = {
            let mut records = self
                .records
                .lock()
                .map_err(|_| PromoteError::Store("records lock poisoned".into()))?;
            Self::apply(&mut records, cid, self.target.name(), self.clock.now(), f);
            records.clone()
        };
        let store = self.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.save(RECORDS_KEY, &snapshot))
            .await
            .map_err(|e| PromoteError::Store(format!("saving task failed: {e}")))?
            .map_err(|e| PromoteError::Store(e.to_string()));
        self.store.announce_pin_change();
        saved
    }

    /// Changes (creating if needed) the record of `cid` with `f`.
    fn apply(
        records: &mut BTreeMap<String, PinEntry>,
        cid: &Cid,
        target: &str,
        now: f64,
        f: impl FnOnce(&mut PinEntry),
    ) {
        let entry = records.entry(cid.to_string()).or_insert_with(|| PinEntry {
            cid: cid.to_string(),
            target: target.into(),
            auto: true,
            state: PinState::Pinning,
            name: String::new(),
            since: now,
            cold_since: None,
            attempts: 0,
            last_error: None,
            claim: None,
        });
        f(entry);
    }

    /// Roots pinned in the hot layer by this gateway (content, not claims), as they stand.
    pub fn pinned_roots(&self) -> Vec<Cid> {
        self.pinned_where(|_| true)
    }

    /// Roots an operator (the admin API, the Pinning Service API) pinned through this gateway.
    pub fn operator_roots(&self) -> Vec<Cid> {
        self.pinned_where(|e| !e.auto)
    }

    fn pinned_where(&self, keep: impl Fn(&PinEntry) -> bool) -> Vec<Cid> {
        self.records()
            .into_iter()
            .filter(|e| e.state == PinState::Pinned && keep(e))
            .filter_map(|e| Cid::try_from(e.cid.as_str()).ok())
            .collect()
    }

    /// Whether `cid` is pinned (or being pinned) by cidgate, or was demoted recently enough
    /// that promoting it again would flap.
    pub fn handled(&self, cid: &Cid) -> bool {
        let key = cid.to_string();
        if self.busy.contains(&key) {
            return true;
        }
        self.records.lock().is_ok_and(|r| {
            r.get(&key).is_some_and(|e| match e.state {
                PinState::Pinned | PinState::Pinning => true,
                // Failures back off: retry after 2^attempts minutes, at most a day.
                PinState::Failed => {
                    let wait = 60.0 * 2f64.powi(e.attempts.min(10) as i32);
                    self.clock.now() - e.since < wait.min(86_400.0)
                }
                PinState::Unpinned => false,
            })
        })
    }

    /// Pins `cid` into the hot layer: `auto` for a promotion, otherwise an operator pin.
    pub async fn pin(&self, cid: Cid, auto: bool, name: &str) -> Result<(), PromoteError> {
        let key = cid.to_string();
        // Released however this future ends: an admin client that leaves mid-pin must not
        // leave the CID busy for ever.
        let Some(claim) = self.busy.claim(key.clone()) else {
            return Err(PromoteError::Busy(key));
        };
        let result = self.pin_inner(cid, auto, name).await;
        drop(claim);
        let action = if auto { "promote" } else { "pin" };
        self.metrics
            .action(action, if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn pin_inner(&self, cid: Cid, auto: bool, name: &str) -> Result<(), PromoteError> {
        let existing = self.record(&cid);
        if auto {
            // Content an operator pinned (or pinned by hand on the node) is already hot.
            let ours = existing
                .as_ref()
                .is_some_and(|e| e.state != PinState::Unpinned);
            if !ours && self.target.is_pinned(&cid).await? {
                self.metrics.action("promote", "skipped");
                return Ok(());
            }
        }
        let now = self.clock.now();
        // A promotion in a fleet pins this gateway's claim; anything else pins the content.
        let claim = match (&self.gateway, auto) {
            (Some(gateway), true) => Some((gateway.clone(), claim_block(gateway, &cid)?)),
            _ => None,
        };
        let name = match (&claim, name.is_empty()) {
            (Some((gateway, _)), _) => format!("cidgate {gateway} promoted {cid}"),
            (None, true) => crate::tiers::pins::default_pin_name(&cid, auto),
            (None, false) => name.to_string(),
        };
        self.update(&cid, |e| {
            e.state = PinState::Pinning;
            // An operator pin stays an operator pin even if the tracker asks again.
            e.auto = auto && (e.auto || e.attempts == 0);
            if !auto {
                e.auto = false;
            }
            e.name = name.clone();
            e.since = now;
            e.cold_since = None;
            e.attempts += 1;
        })
        .await?;
        let (pinned, car, label) = match &claim {
            Some((gateway, (claim_cid, claim_bytes))) => (
                *claim_cid,
                car_stream_under(
                    self.source.clone(),
                    Some((*claim_cid, claim_bytes.clone())),
                    cid,
                    self.limit,
                ),
                PinLabel {
                    auto,
                    name: &name,
                    claim: Some((gateway.as_str(), cid)),
                },
            ),
            None => (
                cid,
                car_stream(self.source.clone(), cid, self.limit),
                PinLabel {
                    auto,
                    name: &name,
                    claim: None,
                },
            ),
        };
        match self.target.pin(&pinned, car, &label).await {
            Ok(()) => {
                let old_claim = self.record(&cid).and_then(|e| e.claim);
                self.update(&cid, |e| {
                    e.state = PinState::Pinned;
                    e.since = self.clock.now();
                    e.last_error = None;
                    e.claim = claim.as_ref().map(|(_, (c, _))| c.to_string());
                })
                .await?;
                // The operator pinned content this gateway had claimed: the content's own pin
                // keeps it now, and a claim nobody would ever demote must not linger.
                if claim.is_none() {
                    if let Some(old) = old_claim.and_then(|c| Cid::try_from(c.as_str()).ok()) {
                        if let Err(err) = self.target.unpin(&old).await {
                            tracing::warn!(%cid, claim = %old, error = %err, "removing this gateway's claim failed");
                        }
                    }
                }
                let kind = if auto { "promoted" } else { "pinned" };
                self.event(&cid, kind, String::new());
                Ok(())
            }
            Err(err) => {
                let msg = err.to_string();
                self.update(&cid, |e| {
                    e.state = PinState::Failed;
                    e.since = self.clock.now();
                    e.last_error = Some(msg.clone());
                })
                .await?;
                self.event(&cid, "failed", msg);
                Err(err.into())
            }
        }
    }

    /// The pin this gateway removes when it lets `entry` go: its claim in a fleet, else the
    /// content's.
    fn own_pin(entry: &PinEntry, cid: &Cid) -> Cid {
        entry
            .claim
            .as_deref()
            .and_then(|c| Cid::try_from(c).ok())
            .unwrap_or(*cid)
    }

    /// Removes a pin (operator request). True if something was unpinned.
    pub async fn unpin(&self, cid: Cid) -> Result<bool, PromoteError> {
        let mut removed = self.target.unpin(&cid).await?;
        let record = self.record(&cid);
        // This gateway's claim goes too; other gateways' claims are theirs to keep.
        if let Some(claim) = record.as_ref().map(|e| Self::own_pin(e, &cid)) {
            if claim != cid {
                removed |= self.target.unpin(&claim).await?;
            }
        }
        if record.is_some() {
            self.update(&cid, |e| {
                e.state = PinState::Unpinned;
                e.since = self.clock.now();
                e.claim = None;
            })
            .await?;
        }
        if removed {
            self.event(&cid, "unpinned", "by the operator".into());
        }
        self.metrics.action("unpin", "ok");
        Ok(removed)
    }

    /// Re-pushes pins a restart interrupted.
    pub fn interrupted(&self) -> Vec<(Cid, bool, String)> {
        self.records()
            .into_iter()
            .filter(|e| e.state == PinState::Pinning)
            .filter_map(|e| Some((Cid::try_from(e.cid.as_str()).ok()?, e.auto, e.name)))
            .collect()
    }

    /// Unpins automatic pins whose demand stayed below the threshold long enough.
    pub async fn demote_cold(&self, tracker: &Tracker, t: Thresholds) {
        let now = self.clock.now();
        let candidates: Vec<PinEntry> = self
            .records()
            .into_iter()
            .filter(|e| e.auto && e.state == PinState::Pinned)
            .collect();
        for e in candidates {
            let Ok(cid) = Cid::try_from(e.cid.as_str()) else {
                continue;
            };
            let demand = tracker.get(&cid).map(|d| d.requests).unwrap_or(0.0);
            if demand >= t.demote {
                if e.cold_since.is_some() {
                    let _ = self.update(&cid, |r| r.cold_since = None).await;
                }
                continue;
            }
            let since = e.cold_since.unwrap_or(now);
            if e.cold_since.is_none() {
                let _ = self.update(&cid, |r| r.cold_since = Some(now)).await;
            }
            if now - since < t.demote_after {
                continue;
            }
            // An operator may have pinned the same root since; that pin is theirs to keep.
            if self.target.name() == "embedded" {
                if let Ok(Some(p)) = self.store.pin_of(&cid) {
                    if p.reason != PinReason::Auto {
                        let _ = self.update(&cid, |r| r.auto = false).await;
                        continue;
                    }
                }
            }
            // In a fleet only this gateway's claim goes: the content stays while another
            // gateway's claim or an operator's pin keeps it.
            match self.target.unpin(&Self::own_pin(&e, &cid)).await {
                Ok(_) => {
                    let _ = self
                        .update(&cid, |r| {
                            r.state = PinState::Unpinned;
                            r.since = now;
                            r.claim = None;
                        })
                        .await;
                    self.metrics.action("demote", "ok");
                    self.event(
                        &cid,
                        "demoted",
                        format!(
                            "demand {demand:.2} below {} for {:.0} s",
                            t.demote,
                            now - since
                        ),
                    );
                }
                Err(err) => {
                    self.metrics.action("demote", "error");
                    tracing::warn!(%cid, error = %err, "demotion failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::popularity::tracker::{ManualClock, ServedBy};
    use crate::tiers::pins::EmbeddedPins;

    /// The sample DAG held by a "source" store; the hot layer is a second, empty store.
    fn setup() -> (Cid, LocalStore, Arc<dyn BlockSource>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let source = LocalStore::open(&dir.path().join("source")).unwrap();
        let (root, blocks) = crate::sample::build().unwrap();
        let batch = source.new_batch().unwrap();
        source.put_staged(batch, &blocks, false).unwrap();
        source.commit_batch(batch, &[]).unwrap();
        let hot = LocalStore::open(&dir.path().join("hot")).unwrap();
        (root.cid, hot, Arc::new(source), dir)
    }

    #[tokio::test]
    async fn cold_automatic_pins_are_demoted_after_demote_after_and_operator_pins_never() {
        let (root, hot, source, _dir) = setup();
        let clock = Arc::new(ManualClock::new(1_000_000.0));
        let metrics = Metrics::new();
        let promoter = Promoter::new(
            Arc::new(EmbeddedPins(hot.clone())),
            source,
            hot.clone(),
            1 << 30,
            clock.clone(),
            metrics,
            None,
        )
        .unwrap();
        let tracker = Tracker::new(16, 60.0, clock.clone());
        for _ in 0..20 {
            tracker.record(root, 1000, ServedBy::Cold);
        }
        promoter.pin(root, true, "").await.unwrap();
        assert_eq!(hot.pin_of(&root).unwrap().unwrap().reason, PinReason::Auto);
        assert_eq!(hot.first_missing(&root).unwrap(), None, "whole DAG pushed");
        assert!(promoter.handled(&root), "no double promotion");
        assert!(matches!(
            promoter.pin(root, true, "").await,
            Ok(()) | Err(PromoteError::Busy(_))
        ));

        let t = Thresholds {
            promote: 10.0,
            demote: 2.0,
            demote_after: 3600.0,
        };
        // Still warm: nothing happens.
        promoter.demote_cold(&tracker, t).await;
        assert!(hot.pin_of(&root).unwrap().is_some());
        // Demand decays below the threshold (4 half-lives: 20 -> 1.25); the clock starts.
        clock.advance(240.0);
        promoter.demote_cold(&tracker, t).await;
        assert!(
            hot.pin_of(&root).unwrap().is_some(),
            "cold, but not for long enough"
        );
        // Demand comes back before demote_after: the cold period resets (hysteresis).
        clock.advance(1800.0);
        for _ in 0..10 {
            tracker.record(root, 0, ServedBy::Hot);
        }
        promoter.demote_cold(&tracker, t).await;
        assert_eq!(promoter.record(&root).unwrap().cold_since, None);
        clock.advance(600.0);
        promoter.demote_cold(&tracker, t).await;
        clock.advance(3599.0);
        promoter.demote_cold(&tracker, t).await;
        assert!(
            hot.pin_of(&root).unwrap().is_some(),
            "3599 s cold is not enough"
        );
        clock.advance(2.0);
        promoter.demote_cold(&tracker, t).await;
        assert!(
            hot.pin_of(&root).unwrap().is_none(),
            "demoted after an hour cold"
        );
        let rec = promoter.record(&root).unwrap();
        assert_eq!(rec.state, PinState::Unpinned);
        assert_eq!(promoter.events()[0].kind, "demoted");

        // An operator pin of the same root is never demoted.
        promoter.pin(root, false, "keep").await.unwrap();
        assert_eq!(
            hot.pin_of(&root).unwrap().unwrap().reason,
            PinReason::Operator
        );
        clock.advance(100_000.0);
        promoter.demote_cold(&tracker, t).await;
        promoter.demote_cold(&tracker, t).await;
        assert!(hot.pin_of(&root).unwrap().is_some());

        // Records survive a restart.
        let again = Promoter::new(
            Arc::new(EmbeddedPins(hot.clone())),
            Arc::new(hot.clone()),
            hot.clone(),
            1 << 30,
            clock,
            Metrics::new(),
            None,
        )
        .unwrap();
        let rec = again.record(&root).unwrap();
        assert_eq!((rec.state, rec.auto), (PinState::Pinned, false));
    }

    #[tokio::test]
    async fn unreadable_promotion_records_are_quarantined_and_never_saved_over() {
        let (root, hot, source, _dir) = setup();
        hot.meta_put(RECORDS_KEY, b"{\"bafy\": {\"cid\": ").unwrap();
        let promoter = Promoter::new(
            Arc::new(EmbeddedPins(hot.clone())),
            source,
            hot.clone(),
            1 << 30,
            Arc::new(ManualClock::new(1_000_000.0)),
            Metrics::new(),
            None,
        )
        .unwrap();
        assert!(promoter.records().is_empty(), "starts without them");
        let q = hot.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].bytes, b"{\"bafy\": {\"cid\": ");
        promoter.pin(root, true, "").await.unwrap();
        assert_eq!(hot.quarantine_list().unwrap(), q, "saves leave it alone");
        let saved: BTreeMap<String, PinEntry> = hot.load(RECORDS_KEY).unwrap().unwrap();
        assert_eq!(saved[&root.to_string()].state, PinState::Pinned);
    }

    /// One pin of [`SharedLayer`]: automatic or not, its name, the blocks its CAR carried.
    type LayerPin = (bool, String, Vec<Cid>);

    /// A shared hot layer in memory: pins by CID, with the blocks each pin's CAR carried.
    #[derive(Default)]
    struct SharedLayer {
        pins: Mutex<BTreeMap<Cid, LayerPin>>,
    }

    #[async_trait::async_trait]
    impl HotPins for SharedLayer {
        fn name(&self) -> &'static str {
            "kubo"
        }

        async fn is_pinned(&self, root: &Cid) -> Result<bool, PinError> {
            Ok(self.pins.lock().unwrap().contains_key(root))
        }

        async fn pin(
            &self,
            root: &Cid,
            car: crate::tiers::pins::CarBytes,
            label: &PinLabel<'_>,
        ) -> Result<(), PinError> {
            use futures::StreamExt;
            let mut bytes = Vec::new();
            let mut car = car;
            while let Some(chunk) = car.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| PinError::Dag(e.to_string()))?);
            }
            let mut reader = iroh_car::CarReader::new(std::io::Cursor::new(bytes))
                .await
                .unwrap();
            assert_eq!(
                reader.header().roots(),
                &[*root],
                "the CAR's root is the pin"
            );
            let mut cids = Vec::new();
            while let Some((cid, data)) = reader.next_block().await.unwrap() {
                crate::ipld::verify::check(&cid, &data).unwrap();
                cids.push(cid);
            }
            self.pins
                .lock()
                .unwrap()
                .insert(*root, (label.auto, label.name.to_string(), cids));
            Ok(())
        }

        async fn unpin(&self, root: &Cid) -> Result<bool, PinError> {
            Ok(self.pins.lock().unwrap().remove(root).is_some())
        }
    }

    impl SharedLayer {
        fn keeps(&self, cid: &Cid) -> bool {
            self.pins
                .lock()
                .unwrap()
                .values()
                .any(|(_, _, cids)| cids.contains(cid))
        }
    }

    #[tokio::test]
    async fn fleet_promotions_are_claims_and_an_operator_pin_replaces_this_gateways_claim() {
        let (root, store, source, _dir) = setup();
        let layer = Arc::new(SharedLayer::default());
        let clock = Arc::new(ManualClock::new(1_000_000.0));
        let promoter = |name: &str| {
            let dir = tempfile::tempdir().unwrap();
            let own = LocalStore::open(dir.path()).unwrap();
            let p = Promoter::new(
                layer.clone(),
                source.clone(),
                own,
                1 << 30,
                clock.clone(),
                Metrics::new(),
                Some(name.to_string()),
            )
            .unwrap();
            (p, dir)
        };
        let ((a, _da), (b, _db)) = (promoter("a"), promoter("b"));
        a.pin(root, true, "").await.unwrap();
        b.pin(root, true, "").await.unwrap();
        let (ca, cb) = (
            claim_block("a", &root).unwrap().0,
            claim_block("b", &root).unwrap().0,
        );
        {
            let pins = layer.pins.lock().unwrap();
            assert_eq!(pins.len(), 2, "two claims, not the content itself");
            let (auto, name, cids) = &pins[&ca];
            assert!(*auto);
            assert_eq!(name, &format!("cidgate a promoted {root}"));
            assert_eq!(cids[0], ca, "the claim block comes first");
            assert!(cids.contains(&root));
        }
        assert_eq!(a.record(&root).unwrap().claim, Some(ca.to_string()));

        // The operator pins the content through gateway a: a's claim is redundant and goes;
        // b's stays. Unpinning it again leaves b's claim keeping the content.
        a.pin(root, false, "keep").await.unwrap();
        assert!(layer.pins.lock().unwrap().contains_key(&root));
        assert!(!layer.pins.lock().unwrap().contains_key(&ca));
        assert!(layer.pins.lock().unwrap().contains_key(&cb));
        assert_eq!(a.record(&root).unwrap().claim, None);
        assert!(a.unpin(root).await.unwrap());
        assert!(layer.keeps(&root), "b's claim keeps it");
        assert!(b.unpin(root).await.unwrap(), "b's unpin removes b's claim");
        assert!(!layer.keeps(&root));
        assert!(store.pin_of(&root).unwrap().is_none(), "nothing local");
    }
}
