//! The embedded hot store and disk cache: block bytes in segment files (`segments.rs`), their
//! index, the pins and small records in one redb database on local disk.
//!
//! Blocks are keyed by multihash, so CIDv0 / CIDv1 and any codec share one copy. Every read is
//! hashed against the requested CID before it is returned (disk corruption must never reach a
//! client), with one exception: to serve, a large block whose pages this process has in the page
//! cache is trusted and sent with `sendfile` (`Segments::read_in_memory`); the scrub
//! (`scrub.rs`) re-hashes every block at a bounded rate behind that. Writes are transactional; imports and promotions stage their new blocks so that an
//! interrupted one is rolled back at the next open. Blocks fetched from the hot node or the
//! cold tier are kept as cache entries within `store.max_size` (see `space.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use super::segments::{Class, Found, Loc, Segments, Verifying};
use super::{identity_block, BlockSource, TierError};
use crate::ipld::{codec, verify, Block, CBOR, IDENTITY, JSON, RAW};

/// The layout before segment files: block bytes as redb values (twice their size on disk for
/// large blocks). Moved into segments at the first open by this version.
const LEGACY_BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
/// Multihash → where the block's bytes lie ([`Loc`], 16 bytes).
pub(super) const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("block_index");
/// (segment, offset) → block length (4 bytes, big-endian) followed by the multihash: what a
/// segment holds, for rewriting or dropping it without a scan of the whole index.
pub(super) const BY_SEGMENT: TableDefinition<(u32, u64), &[u8]> =
    TableDefinition::new("block_segments");
const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins");
/// (batch id, multihash) of blocks a running import added; removed when the import commits.
const STAGING: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("staging");
/// Small persisted values of other components (JSON records, flags), read and written through
/// the typed helper in `records.rs`.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The on-disk layout this build writes and reads: 2 = block bytes in segment files indexed in
/// redb. Stores without a marker are of layout 1 (block bytes inside redb) and are moved to 2 at
/// open. A later layout raises it, so that this build refuses such a store instead of reading
/// it as empty.
const STORE_FORMAT: u64 = 2;

/// Meta key of the layout marker (8 bytes, little-endian).
const FORMAT_KEY: &str = "store.format";

/// Page cache of the store when the configuration does not say.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How a store is opened: memory, the disk budget and the segment size.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb's page cache (index, pins, records).
    pub cache_bytes: usize,
    /// Disk budget of the block bytes (segment files); 0: none. Pinned blocks alone may not
    /// pass it; cache entries are evicted to keep under it.
    pub max_size: u64,
    /// Size of one segment file (a larger block gets a file of its own).
    pub segment_size: u64,
    /// Eviction starts when the segment files pass this share of `max_size` …
    pub high_watermark: f64,
    /// … and stops once they are under this share.
    pub low_watermark: f64,
    /// Rewrite segments once dead bytes pass this share of the live bytes.
    pub max_dead_ratio: f64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_size: 0,
            segment_size: 64 * 1024 * 1024,
            high_watermark: 0.95,
            low_watermark: 0.85,
            max_dead_ratio: 0.03,
        }
    }
}

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database (a running `serve`).
    #[error("the store at {0} is in use by another cidgate process")]
    Locked(PathBuf),
    /// The database failed.
    #[error("store: {0}")]
    Db(String),
    /// A pin record is unreadable.
    #[error("store: corrupt record: {0}")]
    Record(String),
    /// A segment file could not be written or read.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// The write would take pinned content past `store.max_size`, or the disk is full.
    #[error("store full: {0}")]
    Full(String),
    /// The store was written by a newer cidgate, in a layout this one does not know.
    #[error(
        "the store at {} has layout {found}, newer than this cidgate reads (up to {supported}): \
         run the version that wrote it",
        dir.display()
    )]
    Format {
        /// The data directory.
        dir: PathBuf,
        /// The layout marker found.
        found: u64,
        /// The newest layout this build reads.
        supported: u64,
    },
}

/// Maps a write error, naming a full disk as such.
fn write_err(e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(28) {
        StoreError::Full("no space left on the device".into())
    } else {
        StoreError::Io(e)
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<StoreError> for TierError {
    fn from(e: StoreError) -> Self {
        TierError::Unavailable {
            tier: "store",
            reason: e.to_string(),
        }
    }
}

/// Who made a pin, which decides whether automation may remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinReason {
    /// An operator pinned it (CLI, admin API, import); never demoted automatically.
    Operator,
    /// The popularity tracker promoted it; may be demoted when it cools.
    Auto,
    /// The bundled sample content.
    Sample,
}

/// A pin as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// Root CID of the pinned DAG.
    pub cid: String,
    /// Who pinned it.
    pub reason: PinReason,
    /// Optional human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix seconds when pinned.
    pub created: u64,
}

/// The embedded block store.
#[derive(Clone)]
pub struct LocalStore {
    pub(super) db: Arc<Database>,
    dir: PathBuf,
    /// Records moved to quarantine by this process (see `records.rs`).
    pub(super) quarantine_count: Arc<AtomicU64>,
    /// Imports and promotions run one at a time so that a rollback never removes a block that a
    /// concurrent writer relied on.
    pub(super) writer: Arc<tokio::sync::Mutex<()>>,
    /// Told whenever a pin is added or removed (the pinset index follows the pins).
    pin_changes: Arc<tokio::sync::Notify>,
    /// The block bytes.
    pub(super) segments: Arc<Segments>,
    pub(super) options: Arc<StoreOptions>,
    /// Counts pin changes. Held while a pin is written and while eviction drops blocks, so
    /// that eviction never drops a block a pin made since its mark reaches.
    pub(super) pin_generation: Arc<Mutex<u64>>,
    /// Reads of cache entries since their segment was last evicted (by the multihash's
    /// first digest bytes): what eviction keeps.
    pub(super) reads: Arc<Mutex<HashMap<u64, u8>>>,
    /// Space management: counters and the wake-up of the maintenance task.
    pub(super) space: Arc<super::space::SpaceState>,
    /// Reads running on blocking threads at once. A read from the page cache takes
    /// microseconds; dozens of threads runnable at once on a few cores take turns of
    /// milliseconds, which showed as 100 ms outliers under load.
    readers: Arc<tokio::sync::Semaphore>,
}

/// Reads again, and hashes, the block holding `len` bytes at `off` of segment `seg`, for a
/// slice of it whose pages left the page cache while a response waited to send them: the
/// block's offset in the segment and its bytes. `Ok(None)` when no block there covers them
/// (gone, or moved by a rewrite) or it fails its hash, which marks it corrupt as any read does.
fn refetch(
    db: &Database,
    segments: &Segments,
    seg: u32,
    off: u64,
    len: usize,
) -> Result<Option<(u64, Bytes)>, StoreError> {
    let tx = db.begin_read()?;
    let key = {
        let by_segment = tx.open_table(BY_SEGMENT)?;
        let Some(entry) = by_segment.range((seg, 0)..=(seg, off))?.next_back() else {
            return Ok(None);
        };
        let (at, entry) = entry?;
        // The block's length (4 bytes) and its multihash: the index key.
        let Some(key) = entry.value().get(4..) else {
            return Ok(None);
        };
        (at.value().1, key.to_vec())
    };
    let (start, key) = key;
    let Some(loc) = LocalStore::locate(&tx.open_table(INDEX)?, &key)? else {
        return Ok(None);
    };
    // The bytes are those of this index entry, wherever they lie now; they must cover the
    // slice's place in the block found at `start`.
    let end = start.checked_add(u64::from(loc.len));
    if end.is_none_or(|end| off.saturating_add(len as u64) > end) {
        return Ok(None);
    }
    let Ok(mh) = cid::multihash::Multihash::<64>::from_bytes(&key) else {
        return Ok(None);
    };
    let Some((data, _, verifying)) = segments.read_verifying(&loc, false)? else {
        return Ok(None);
    };
    // The hash depends on the multihash alone; the codec is any.
    let cid = Cid::new_v1(RAW, mh);
    if let Err(error) = verify::check(&cid, &data) {
        tracing::error!(%cid, %error, "store holds a corrupt block (read again before it was sent)");
        segments.mark_corrupt(&loc);
        return Ok(None);
    }
    verifying.passed();
    Ok(Some((start, data)))
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The database file in the data directory.
const DB_FILE: &str = "cidgate.redb";

impl From<&crate::config::StoreConfig> for StoreOptions {
    fn from(c: &crate::config::StoreConfig) -> Self {
        StoreOptions {
            cache_bytes: c.cache.as_u64() as usize,
            max_size: c.max_size.as_u64(),
            segment_size: c.segment_size.as_u64(),
            high_watermark: c.high_watermark,
            low_watermark: c.low_watermark,
            ..Default::default()
        }
    }
}

impl LocalStore {
    /// Opens the store a `[store]` section describes.
    pub fn from_config(c: &crate::config::StoreConfig) -> Result<Self, StoreError> {
        Self::open_with(&c.dir, c.into())
    }

    /// Opens (creating if needed) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes` (redb's own default is 1 GiB, which
    /// would make resident memory grow with the content read), rolling back any interrupted
    /// import.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            StoreOptions {
                cache_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the store with `options`, moving blocks of the older layout into segment files
    /// and rolling back any interrupted import.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let mut db = match Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(dir.to_path_buf()))
            }
            Err(e) => return Err(StoreError::Db(e.to_string())),
        };
        check_format(&db, dir)?;
        let segments = Arc::new(Segments::open(
            &dir.join(SEGMENTS_DIR),
            options.segment_size,
        )?);
        if migrate_legacy_blocks(&db, &segments)? {
            // The old values' pages are free now; give them back to the file system.
            if let Err(e) = db.compact() {
                tracing::warn!(error = %e, "compacting the index after the move to segments failed");
            }
        }
        let store = Self {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            quarantine_count: Arc::new(AtomicU64::new(0)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            pin_changes: Arc::new(tokio::sync::Notify::new()),
            segments,
            options: Arc::new(options),
            pin_generation: Arc::new(Mutex::new(0)),
            reads: Arc::new(Mutex::new(HashMap::new())),
            space: Arc::new(super::space::SpaceState::default()),
            readers: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get() * 2)
                    .unwrap_or(4),
            )),
        };
        store.init_tables()?;
        if store.meta_get(FORMAT_KEY)?.as_deref() != Some(&STORE_FORMAT.to_le_bytes()[..]) {
            store.meta_put(FORMAT_KEY, &STORE_FORMAT.to_le_bytes())?;
        }
        store.count_live()?;
        store.segments.resume();
        let (db, segments) = (Arc::downgrade(&store.db), Arc::downgrade(&store.segments));
        store.segments.set_refetcher(Box::new(move |seg| {
            let (db, segments) = (db.clone(), segments.clone());
            Arc::new(move |off, len| {
                let (Some(db), Some(segments)) = (db.upgrade(), segments.upgrade()) else {
                    return Ok(None);
                };
                refetch(&db, &segments, seg, off, len).map_err(std::io::Error::other)
            })
        }));
        let pinned = store.totals().pinned_bytes;
        let max = store.options.max_size;
        if max > 0 && pinned as f64 > max as f64 * store.options.low_watermark {
            tracing::warn!(
                pinned = %bytesize::ByteSize::b(pinned),
                max_size = %bytesize::ByteSize::b(max),
                "pinned blocks take most of store.max_size: imports past it are refused and \
                 little room is left for the disk cache; raise store.max_size"
            );
        }
        let recovered = store.recover_pins()?;
        let rolled = store.rollback_all_staged()?;
        if rolled > 0 {
            tracing::warn!(
                blocks = rolled,
                "rolled back blocks of an interrupted import"
            );
        }
        // The last run's collection saw the pins as they are: the first collection of this
        // run (a mark of everything pinned) is not needed.
        let collected = store.meta_get(super::space::COLLECTED_KEY)?.as_deref() == Some(&[1][..]);
        if collected && recovered == 0 && rolled == 0 {
            if let (Ok(mut c), Ok(mut g)) = (
                store.space.collected.lock(),
                store.space.gc_generation.lock(),
            ) {
                *c = true;
                *g = Some(0);
            }
        } else if collected {
            // This start changed what is pinned-class: the mark is stale until a collection
            // of this run ends, whatever happens before that.
            store.meta_put(super::space::COLLECTED_KEY, &[0])?;
        }
        Ok(store)
    }

    /// Notified whenever a pin is added or removed (here, or in a remote hot layer by this
    /// gateway's promoter).
    pub fn pin_changes(&self) -> Arc<tokio::sync::Notify> {
        self.pin_changes.clone()
    }

    /// Announces a pin change to whoever follows [`LocalStore::pin_changes`].
    pub fn announce_pin_change(&self) {
        self.pin_changes.notify_one();
    }

    /// Runs `write` (a pin change) under the pin generation, which it moves on.
    fn pin_write<T>(&self, write: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut generation = self
            .pin_generation
            .lock()
            .map_err(|_| StoreError::Db("pin generation lock poisoned".into()))?;
        self.uncollected()?;
        let out = write();
        *generation += 1;
        out
    }

    /// Clears the "collected" mark, durably, before a change that may leave a pinned-class
    /// block that no pin reaches (a pin change, a repair written as pinned): the next start
    /// must then mark again. Only the first change after a collection writes.
    fn uncollected(&self) -> Result<(), StoreError> {
        // Held while the clearing is written: a change racing this one waits until it is on
        // disk before it commits its own.
        let mut collected = self
            .space
            .collected
            .lock()
            .map_err(|_| StoreError::Db("collected mark lock poisoned".into()))?;
        if *collected {
            self.meta_put(super::space::COLLECTED_KEY, &[0])?;
            *collected = false;
        }
        Ok(())
    }

    /// Counts the live bytes of every segment from the index, and removes index entries
    /// that name a segment file no longer there (so that nothing reads as stored that is not,
    /// and no new segment reuses their id).
    fn count_live(&self) -> Result<(), StoreError> {
        let mut dangling = Vec::new();
        {
            let tx = self.db.begin_read()?;
            let by_segment = tx.open_table(BY_SEGMENT)?;
            for item in by_segment.iter()? {
                let (k, v) = item?;
                let (seg, off) = k.value();
                let Some(len) = v.value().get(..4) else {
                    continue;
                };
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                self.segments.count_live(&Loc { seg, off, len });
            }
            let index = tx.open_table(INDEX)?;
            for item in index.iter()? {
                let (k, v) = item?;
                let Some(loc) = Loc::decode(v.value()) else {
                    continue;
                };
                if loc.is_empty() {
                    continue;
                }
                self.segments.reserve_ids_through(loc.seg);
                if !self.segments.exists(loc.seg) {
                    dangling.push(k.value().to_vec());
                }
            }
        }
        if !dangling.is_empty() {
            tracing::warn!(
                blocks = dangling.len(),
                "the index named blocks in segment files that are gone; forgetting them"
            );
            let tx = self.db.begin_write()?;
            for key in &dangling {
                self.unplace(&tx, key, None)?;
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// Number of pins (without reading them).
    pub fn pin_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(PINS)?.len()?)
    }

    /// Moves every block of the DAG under `root` that lies in a cache segment into a pinned
    /// one, staged under `batch` (blocking; under the writer lock, before `root` is pinned):
    /// a pin made from a partial CAR may reach blocks that were fetched and cached earlier,
    /// and eviction must never take those. Returns how many moved.
    pub fn adopt_cached(&self, batch: u64, root: &Cid) -> Result<u64, TierError> {
        let mut moving = Vec::new();
        let mut moved = 0;
        let mut stack = vec![*root];
        let mut seen = std::collections::HashSet::new();
        while let Some(cid) = stack.pop() {
            if cid.hash().code() == IDENTITY || !seen.insert(*cid.hash()) {
                continue;
            }
            let key = cid.hash().to_bytes();
            let loc = {
                let tx = self.db.begin_read().map_err(StoreError::from)?;
                let index = tx.open_table(INDEX).map_err(StoreError::from)?;
                Self::locate(&index, &key)?
            };
            let Some(loc) = loc else { continue };
            let in_cache = self.segments.class_of(loc.seg) == Some(Class::Cache);
            if !in_cache && cid.codec() == RAW {
                continue;
            }
            let Some(block) = self.get_sync(&cid)? else {
                continue;
            };
            if cid.codec() != RAW {
                if let Ok(links) = codec::links(block.cid(), block.data()) {
                    stack.extend(links);
                }
            }
            if in_cache {
                moving.push(block);
                if moving.len() >= 256 {
                    moved += self.put_staged(batch, &moving, false)?;
                    moving.clear();
                }
            }
        }
        if !moving.is_empty() {
            moved += self.put_staged(batch, &moving, false)?;
        }
        Ok(moved)
    }

    /// Where the block with multihash `key` lies, per the index in `table`.
    fn locate(
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<Option<Loc>, StoreError> {
        match table.get(key)? {
            Some(v) => Loc::decode(v.value())
                .map(Some)
                .ok_or_else(|| StoreError::Record("block index entry of the wrong size".into())),
            None => Ok(None),
        }
    }

    /// Appends `data` to a segment of `class` and names it in the index under `key`, inside
    /// `tx`. Returns the new place and the one it replaced.
    pub(super) fn place(
        &self,
        tx: &redb::WriteTransaction,
        class: Class,
        key: &[u8],
        data: &[u8],
    ) -> Result<(Loc, Option<Loc>), StoreError> {
        let loc = self.segments.append(class, data).map_err(write_err)?;
        let mut index = tx.open_table(INDEX)?;
        let mut by_segment = tx.open_table(BY_SEGMENT)?;
        let old = match index.insert(key, loc.encode().as_slice())? {
            Some(v) => Loc::decode(v.value()),
            None => None,
        };
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            by_segment.remove((old.seg, old.off))?;
        }
        // An empty block lies in no segment (see `Loc::EMPTY`).
        if !loc.is_empty() {
            let mut entry = Vec::with_capacity(4 + key.len());
            entry.extend_from_slice(&loc.len.to_be_bytes());
            entry.extend_from_slice(key);
            by_segment.insert((loc.seg, loc.off), entry.as_slice())?;
        }
        Ok((loc, old))
    }

    /// Removes the index entry of `key` inside `tx` when it still names `expected` (or any
    /// place, when `expected` is `None`). Returns the place it named.
    pub(super) fn unplace(
        &self,
        tx: &redb::WriteTransaction,
        key: &[u8],
        expected: Option<Loc>,
    ) -> Result<Option<Loc>, StoreError> {
        let mut index = tx.open_table(INDEX)?;
        let current = Self::locate(&index, key)?;
        let Some(loc) = current else { return Ok(None) };
        if expected.is_some_and(|e| e != loc) {
            return Ok(None);
        }
        index.remove(key)?;
        if !loc.is_empty() {
            tx.open_table(BY_SEGMENT)?.remove((loc.seg, loc.off))?;
        }
        Ok(Some(loc))
    }

    /// Reads the bytes the index names under `key` (reading the index again if the segment
    /// was rewritten meanwhile), marked as being verified until the guard drops.
    fn read_bytes(
        &self,
        key: &[u8],
        first: Loc,
    ) -> Result<Option<(Loc, Bytes, Class, Verifying<'_>)>, StoreError> {
        if let Some((b, class, v)) = self.read_at(key, first)? {
            return Ok(Some((first, b, class, v)));
        }
        let tx = self.db.begin_read()?;
        let index = tx.open_table(INDEX)?;
        match Self::locate(&index, key)? {
            Some(loc) => Ok(self.read_at(key, loc)?.map(|(b, c, v)| (loc, b, c, v))),
            None => Ok(None),
        }
    }

    /// Reads `loc`, to be hashed. A cache entry that cannot be read (a file cut short by a
    /// power loss, a bad sector) is dropped and reads as absent: it is only a copy, fetched
    /// again.
    fn read_at(
        &self,
        key: &[u8],
        loc: Loc,
    ) -> Result<Option<(Bytes, Class, Verifying<'_>)>, StoreError> {
        match self.segments.read_verifying(&loc, false) {
            Ok(found) => Ok(found),
            Err(e) if self.segments.class_of(loc.seg) == Some(Class::Cache) => {
                tracing::warn!(error = %e, segment = loc.seg, "dropping a cache entry that cannot be read");
                self.drop_entry(key, loc)?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Notes a read of a cache entry: eviction keeps what is read again.
    fn note_read(&self, class: Class, key: &[u8]) {
        if class != Class::Cache {
            return;
        }
        if let Ok(mut reads) = self.reads.lock() {
            // Bounded: a table of millions of entries starts again rather than grow.
            if reads.len() >= 1 << 22 {
                reads.clear();
            }
            let n = reads.entry(read_key(key)).or_insert(0);
            *n = n.saturating_add(1).min(3);
        }
    }

    /// Directory that holds the database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the store on disk: the segment files and the database (index, pins, records).
    pub fn file_size(&self) -> u64 {
        self.index_size() + self.segments.totals().file_bytes
    }

    /// Bytes of the database file (index, pins, records); 0 when it cannot be read.
    pub fn index_size(&self) -> u64 {
        std::fs::metadata(self.dir.join(DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The segment totals: file bytes, pinned and cache bytes, blocks.
    pub fn totals(&self) -> super::segments::Totals {
        self.segments.totals()
    }

    /// How the store was opened.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Whether the database answers a read: the readiness check of `/readyz`.
    pub fn readable(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(META)?;
        Ok(())
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(INDEX)?;
        tx.open_table(BY_SEGMENT)?;
        tx.open_table(PINS)?;
        tx.open_table(STAGING)?;
        tx.open_table(META)?;
        tx.open_table(super::records::QUARANTINE)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads and verifies a block (blocking; call from a blocking context).
    pub fn get_sync(&self, cid: &Cid) -> Result<Option<Block>, TierError> {
        if let Some(b) = identity_block(cid) {
            return Ok(Some(b));
        }
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let table = tx.open_table(INDEX).map_err(StoreError::from)?;
        self.read_block(&table, cid)
    }

    /// Reads a block to serve it (blocking), as the store's [`BlockSource::get`] does: from
    /// memory when it is there ([`Segments::read_in_memory`]: a large block in the page cache
    /// is a slice of its segment's mapping, trusted, sent with `sendfile`), else as
    /// [`LocalStore::get_sync`], hashed. Scrubs, collection and exports use `get_sync`.
    pub fn serve_sync(&self, cid: &Cid) -> Result<Option<Block>, TierError> {
        match self.serve_in_memory(cid) {
            Ok(InMemory::Hit(b)) => Ok(Some(b)),
            Ok(InMemory::Absent) => Ok(None),
            Ok(InMemory::Slow) | Err(_) => self.get_sync(cid),
        }
    }

    /// Serves large blocks from their page-cache pages as slices of the segment files'
    /// mappings: set where those slices leave with `sendfile` (plain-TCP HTTP/1.1, zero-copy
    /// on). Off, large blocks are read and hashed like small ones.
    pub fn set_zero_copy(&self, on: bool) {
        self.segments.set_map_large(on);
    }

    /// Whether the block is stored (blocking).
    pub fn has_sync(&self, cid: &Cid) -> Result<bool, StoreError> {
        if cid.hash().code() == IDENTITY {
            return Ok(true);
        }
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INDEX)?;
        Ok(table.get(cid.hash().to_bytes().as_slice())?.is_some())
    }

    /// Number of stored blocks and their total size in bytes.
    pub fn stats(&self) -> Result<(u64, u64), StoreError> {
        let t = self.segments.totals();
        Ok((t.blocks, t.pinned_bytes + t.cache_bytes))
    }

    /// Writes verified blocks in one transaction, recording the new ones under staging `batch`.
    /// Returns how many were new.
    pub fn put_staged(
        &self,
        batch: u64,
        blocks: &[Block],
        durable: bool,
    ) -> Result<u64, StoreError> {
        // Pinned blocks share the budget with the cache: cache entries make room for them
        // (before the transaction: eviction commits transactions of its own).
        let incoming: u64 = blocks.iter().map(|b| b.data().len() as u64).sum();
        if let Err(e) = self.make_room(incoming) {
            tracing::warn!(error = %e, "evicting to make room for pinned blocks failed");
        }
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        let mut placed = Vec::new();
        {
            let mut staging = tx.open_table(STAGING)?;
            let mut new_bytes = 0u64;
            for b in blocks {
                if b.cid().hash().code() == IDENTITY {
                    continue;
                }
                let key = b.cid().hash().to_bytes();
                let existing = Self::locate(&tx.open_table(INDEX)?, &key)?;
                // A block a pin will reach lives in a pinned segment, never in the cache that
                // eviction takes from: one found there moves (it is staged like a new one).
                if let Some(loc) = existing {
                    match self.segments.class_of(loc.seg) {
                        Some(Class::Pinned) => continue,
                        None if loc.is_empty() => continue,
                        Some(Class::Cache) => placed.push((loc, -1i8)),
                        // Named in a segment that is gone: written again.
                        None => {}
                    }
                }
                new_bytes += b.data().len() as u64;
                self.check_pinned_budget(new_bytes)?;
                let (loc, _) = self.place(&tx, Class::Pinned, &key, b.data())?;
                staging.insert((batch, key.as_slice()), ())?;
                placed.push((loc, 1i8));
            }
        }
        if durable {
            self.segments.sync_dirty()?;
        }
        tx.commit()?;
        self.segments.account(&placed);
        self.space.wake_if_over(self);
        Ok(placed.iter().filter(|(_, sign)| *sign > 0).count() as u64)
    }

    /// Refuses a write of pinned blocks that would take them past `store.max_size`.
    fn check_pinned_budget(&self, adding: u64) -> Result<(), StoreError> {
        let max = self.options.max_size;
        if max == 0 {
            return Ok(());
        }
        let pinned = self.segments.totals().pinned_bytes;
        if pinned + adding > max {
            return Err(StoreError::Full(format!(
                "pinned content would take {} of store.max_size {}",
                bytesize::ByteSize::b(pinned + adding),
                bytesize::ByteSize::b(max)
            )));
        }
        Ok(())
    }

    /// Keeps verified blocks fetched from the hot node or the cold tier as cache entries
    /// (blocks already stored are skipped). Not durable: a crash may lose the last of them,
    /// never what a pin needs. Returns how many were new; none when the budget has no room
    /// until eviction made some.
    pub fn put_cached(&self, blocks: &[Block]) -> Result<u64, StoreError> {
        let max = self.options.max_size;
        let incoming: u64 = blocks.iter().map(|b| b.data().len() as u64).sum();
        if let Err(e) = self.make_room(incoming) {
            tracing::warn!(error = %e, "evicting to make room for fetched blocks failed");
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        let mut placed = Vec::new();
        {
            let mut used = self.segments.totals().file_bytes;
            for b in blocks {
                if b.cid().hash().code() == IDENTITY {
                    continue;
                }
                let key = b.cid().hash().to_bytes();
                if tx.open_table(INDEX)?.get(key.as_slice())?.is_some() {
                    continue;
                }
                if max > 0 && used + b.data().len() as u64 > max {
                    self.space.note_cache_skip(b.data().len() as u64);
                    continue;
                }
                used += b.data().len() as u64;
                let (loc, _) = self.place(&tx, Class::Cache, &key, b.data())?;
                placed.push((loc, 1i8));
            }
        }
        // The commit is not durable, but the next durable commit of anything makes it so: the
        // bytes it names must be on disk by then.
        self.segments.sync_dirty()?;
        tx.commit()?;
        self.segments.account(&placed);
        self.space.wake_if_over(self);
        Ok(placed.len() as u64)
    }

    /// A fresh staging batch id.
    pub fn new_batch(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let id = {
            let mut meta = tx.open_table(META)?;
            let next = meta
                .get("next_batch")?
                .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(1);
            meta.insert("next_batch", next.wrapping_add(1).to_be_bytes().as_slice())?;
            next
        };
        tx.commit()?;
        Ok(id)
    }

    /// Makes a staged batch permanent and pins `roots`, in one durable transaction.
    pub fn commit_batch(&self, batch: u64, roots: &[(Cid, PinReason)]) -> Result<(), StoreError> {
        // The batch's bytes were appended without syncing; the commit makes them permanent.
        self.segments.sync_dirty()?;
        self.pin_write(|| {
            let tx = self.db.begin_write()?;
            {
                let mut staging = tx.open_table(STAGING)?;
                staging.retain_in((batch, &[][..])..(batch + 1, &[][..]), |_, _| false)?;
            }
            for (cid, reason) in roots {
                self.insert_pin(&tx, cid, *reason, None)?;
            }
            tx.commit()?;
            Ok(())
        })?;
        if !roots.is_empty() {
            self.announce_pin_change();
        }
        Ok(())
    }

    /// Removes every block a staged batch added. Returns how many.
    pub fn rollback_batch(&self, batch: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            let mut staging = tx.open_table(STAGING)?;
            let mut keys = Vec::new();
            for item in staging.range((batch, &[][..])..(batch + 1, &[][..]))? {
                let (k, _) = item?;
                keys.push(k.value().1.to_vec());
            }
            for k in &keys {
                if let Some(loc) = self.unplace(&tx, k, None)? {
                    removed.push((loc, -1i8));
                }
            }
            staging.retain_in((batch, &[][..])..(batch + 1, &[][..]), |_, _| false)?;
        }
        tx.commit()?;
        self.segments.account(&removed);
        Ok(removed.len() as u64)
    }

    fn rollback_all_staged(&self) -> Result<u64, StoreError> {
        let batches: Vec<u64> = {
            let tx = self.db.begin_read()?;
            let staging = tx.open_table(STAGING)?;
            let mut ids: Vec<u64> = Vec::new();
            for item in staging.iter()? {
                let (k, _) = item?;
                let id = k.value().0;
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
            }
            ids
        };
        let mut total = 0;
        for b in batches {
            total += self.rollback_batch(b)?;
        }
        Ok(total)
    }

    /// Serialises writers that stage batches (imports, promotions).
    pub async fn writer_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// Writes a verified block over whatever the store holds under its multihash (a repair of a
    /// missing or corrupt block), durably.
    pub fn rewrite_block(&self, block: &Block) -> Result<(), StoreError> {
        // Not while an import runs: its rollback would remove the repaired block by key.
        let _writer = self.writer.blocking_lock();
        // The repair lands among the pins, whatever class the block had.
        self.uncollected()?;
        let tx = self.db.begin_write()?;
        let key = block.cid().hash().to_bytes();
        let (loc, old) = self.place(&tx, Class::Pinned, &key, block.data())?;
        self.segments.sync_dirty()?;
        tx.commit()?;
        let mut changes = vec![(loc, 1i8)];
        if let Some(old) = old {
            changes.push((old, -1));
        }
        self.segments.account(&changes);
        self.space.repaired();
        Ok(())
    }

    /// Pins `cid` (replacing an existing record's reason only when an operator pins it).
    pub fn pin(
        &self,
        cid: &Cid,
        reason: PinReason,
        name: Option<String>,
    ) -> Result<(), StoreError> {
        self.pin_write(|| {
            let tx = self.db.begin_write()?;
            self.insert_pin(&tx, cid, reason, name)?;
            tx.commit()?;
            Ok(())
        })?;
        self.announce_pin_change();
        Ok(())
    }

    /// Removes a pin; true if there was one.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, StoreError> {
        let existed = self.pin_write(|| {
            let tx = self.db.begin_write()?;
            let existed = {
                let mut pins = tx.open_table(PINS)?;
                let existed = pins.remove(cid.to_bytes().as_slice())?.is_some();
                existed
            };
            tx.commit()?;
            Ok(existed)
        })?;
        if existed {
            self.announce_pin_change();
        }
        Ok(existed)
    }

    /// The pin record of `cid`, if pinned.
    pub fn pin_of(&self, cid: &Cid) -> Result<Option<PinRecord>, StoreError> {
        let key = cid.to_bytes();
        let decoded = {
            let tx = self.db.begin_read()?;
            let pins = tx.open_table(PINS)?;
            let Some(v) = pins.get(key.as_slice())? else {
                return Ok(None);
            };
            decode_pin(v.value())
        };
        match decoded {
            Ok(rec) => Ok(Some(rec)),
            // Open recovers every unreadable record, so this is a value written since by a
            // version that wrote something else.
            Err(_) => {
                self.recover_pins()?;
                self.pin_of_decoded(&key)
            }
        }
    }

    fn pin_of_decoded(&self, key: &[u8]) -> Result<Option<PinRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let pins = tx.open_table(PINS)?;
        match pins.get(key)? {
            Some(v) => decode_pin(v.value()).map(Some).map_err(StoreError::Record),
            None => Ok(None),
        }
    }

    /// Every pin.
    pub fn pins(&self) -> Result<Vec<PinRecord>, StoreError> {
        let read = || -> Result<Result<Vec<PinRecord>, String>, StoreError> {
            let tx = self.db.begin_read()?;
            let pins = tx.open_table(PINS)?;
            let mut out = Vec::new();
            for item in pins.iter()? {
                let (_, v) = item?;
                match decode_pin(v.value()) {
                    Ok(rec) => out.push(rec),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(out))
        };
        match read()? {
            Ok(out) => Ok(out),
            Err(_) => {
                self.recover_pins()?;
                read()?.map_err(StoreError::Record)
            }
        }
    }

    /// Replaces every pin record that cannot be decoded by an operator pin of the same CID (the
    /// key says which CID is pinned, so the pin itself is never lost; operator pins are the
    /// ones automation never removes), quarantining the unreadable bytes. Returns how many.
    fn recover_pins(&self) -> Result<u64, StoreError> {
        let bad: Vec<Vec<u8>> = {
            let tx = self.db.begin_read()?;
            let pins = tx.open_table(PINS)?;
            let mut bad = Vec::new();
            for item in pins.iter()? {
                let (k, v) = item?;
                if decode_pin(v.value()).is_err() {
                    bad.push(k.value().to_vec());
                }
            }
            bad
        };
        if bad.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write()?;
        let mut n = 0;
        for key in &bad {
            let Ok(cid) = Cid::try_from(key.as_slice()) else {
                // A key that is no CID pins nothing that could be served; keep its bytes.
                let value = {
                    let mut pins = tx.open_table(PINS)?;
                    let v = pins.remove(key.as_slice())?.map(|v| v.value().to_vec());
                    v
                };
                if let Some(v) = value {
                    let text = format!("0x{}", hex(key));
                    self.quarantine_in(&tx, "pins", &text, &v, "pin key is not a CID")?;
                    n += 1;
                }
                continue;
            };
            // insert_pin quarantines the unreadable record and writes the recovered one.
            self.insert_pin(&tx, &cid, PinReason::Operator, None)?;
            n += 1;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Writes the pin record of `cid` inside `tx`. An existing record that cannot be decoded is
    /// quarantined and counts as an operator pin, so it is never downgraded.
    fn insert_pin(
        &self,
        tx: &redb::WriteTransaction,
        cid: &Cid,
        reason: PinReason,
        name: Option<String>,
    ) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        let mut pins = tx.open_table(PINS)?;
        let stored = pins.get(key.as_slice())?.map(|v| v.value().to_vec());
        let mut recovered = false;
        let existing = match stored {
            None => None,
            Some(bytes) => match decode_pin(&bytes) {
                Ok(rec) => Some(rec),
                Err(error) => {
                    self.quarantine_in(tx, "pins", &cid.to_string(), &bytes, &error)?;
                    recovered = true;
                    Some(PinRecord {
                        cid: cid.to_string(),
                        reason: PinReason::Operator,
                        name: None,
                        created: unix_now(),
                    })
                }
            },
        };
        // An operator pin is never downgraded to an automatic one.
        if let Some(old) = &existing {
            if old.reason == PinReason::Operator && reason != PinReason::Operator {
                if recovered {
                    let value =
                        serde_json::to_vec(old).map_err(|e| StoreError::Record(e.to_string()))?;
                    pins.insert(key.as_slice(), value.as_slice())?;
                }
                return Ok(());
            }
        }
        let record = PinRecord {
            cid: cid.to_string(),
            reason,
            name: name.or_else(|| existing.and_then(|e| e.name)),
            created: unix_now(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| StoreError::Record(e.to_string()))?;
        pins.insert(key.as_slice(), value.as_slice())?;
        Ok(())
    }

    /// A flag in the metadata table (e.g. whether the sample was added).
    pub fn meta_flag(&self, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(key)?.is_some())
    }

    /// Sets a metadata flag.
    pub fn set_meta_flag(&self, key: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            meta.insert(key, &[1u8][..])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Raw bytes in the metadata table. Typed records go through [`Self::load`] and
    /// [`Self::save`] instead, which never write over a value they could not read.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Stores raw bytes in the metadata table, durably, whatever was there (see
    /// [`Self::save`] for records).
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            meta.insert(key, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Walks the DAG under `root` in this store; returns the first block that is missing or
    /// does not decode under its codec, if any (see [`Self::check_dag`]).
    pub fn first_missing(&self, root: &Cid) -> Result<Option<Cid>, TierError> {
        Ok(self.check_dag(root)?.map(|gap| gap.cid()))
    }

    /// Whether the DAG under `root` is complete: every block reachable from it is stored and
    /// decodes under its codec (dag-pb, dag-cbor, dag-json, json, cbor; raw always does), so
    /// that a CAR of it can be streamed to the end. Returns the first gap in depth-first order.
    /// Raw leaves are checked by presence only (they hold no links and any bytes are raw);
    /// blocks of codecs cidgate does not decode are served as they are and count as leaves,
    /// exactly as the CAR walk treats them.
    pub fn check_dag(&self, root: &Cid) -> Result<Option<DagGap>, TierError> {
        // One read transaction for the whole walk: a DAG of a million blocks would otherwise
        // open a million.
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let table = tx.open_table(INDEX).map_err(StoreError::from)?;
        let mut stack = vec![*root];
        let mut seen = std::collections::HashSet::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            if cid.codec() == RAW {
                let present = cid.hash().code() == IDENTITY
                    || table
                        .get(cid.hash().to_bytes().as_slice())
                        .map_err(StoreError::from)?
                        .is_some();
                if !present {
                    return Ok(Some(DagGap::Missing(cid)));
                }
                continue;
            }
            let block = match identity_block(&cid) {
                Some(b) => b,
                None => match self.read_block(&table, &cid)? {
                    Some(b) => b,
                    None => return Ok(Some(DagGap::Missing(cid))),
                },
            };
            let decoded = match cid.codec() {
                // links() does not look inside plain json / cbor; serving them as documents does.
                JSON | CBOR => codec::decode_ipld(cid.codec(), block.data()).map(|_| Vec::new()),
                _ => codec::links(block.cid(), block.data()),
            };
            match decoded {
                Ok(mut links) => {
                    links.reverse();
                    stack.extend(links);
                }
                Err(codec::CodecError::Unsupported(_)) => {}
                Err(e) => {
                    return Ok(Some(DagGap::Undecodable {
                        cid,
                        reason: e.to_string(),
                    }))
                }
            }
        }
        Ok(None)
    }
}

impl LocalStore {
    /// Reads `cid` (per the index in `table`) and verifies it against its CID.
    fn read_block(
        &self,
        table: &redb::ReadOnlyTable<&[u8], &[u8]>,
        cid: &Cid,
    ) -> Result<Option<Block>, TierError> {
        let key = cid.hash().to_bytes();
        let Some(first) = Self::locate(table, &key)? else {
            return Ok(None);
        };
        // Held until the hash has passed or the block is marked corrupt: until then, pages the
        // read brought into memory are not trusted by reads that skip the hash.
        let Some((loc, data, class, verifying)) = self.read_bytes(&key, first)? else {
            return Ok(None);
        };
        match Block::verified(*cid, data) {
            Ok(b) => {
                verifying.passed();
                self.note_read(class, &key);
                Ok(Some(b))
            }
            Err(error) => {
                tracing::error!(%cid, %error, "store holds a corrupt block");
                self.segments.mark_corrupt(&loc);
                // A cache entry is only a copy: drop it, so that the next read fetches again.
                if class == Class::Cache {
                    if let Err(e) = self.drop_entry(&key, loc) {
                        tracing::warn!(%cid, error = %e, "dropping a corrupt cache entry failed");
                    }
                }
                Err(TierError::Corrupt {
                    tier: "store",
                    error,
                })
            }
        }
    }

    /// Removes the index entry of `key` if it still names `loc`.
    pub(super) fn drop_entry(&self, key: &[u8], loc: Loc) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let removed = self.unplace(&tx, key, Some(loc))?;
        tx.commit()?;
        if let Some(l) = removed {
            self.segments.account(&[(l, -1)]);
        }
        Ok(())
    }
}

/// The key of a multihash in the table of reads: digest bytes are uniformly distributed.
pub(super) fn read_key(mh: &[u8]) -> u64 {
    let tail = &mh[mh.len().saturating_sub(8)..];
    let mut b = [0u8; 8];
    b[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(b)
}

/// Where segment files live in the data directory.
const SEGMENTS_DIR: &str = "blocks";

/// Refuses a store whose layout marker is newer than [`STORE_FORMAT`] (read before anything
/// is moved or written).
fn check_format(db: &Database, dir: &Path) -> Result<(), StoreError> {
    let tx = db.begin_read()?;
    let meta = match tx.open_table(META) {
        Ok(m) => m,
        // A new store: nothing to check.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(marker) = meta.get(FORMAT_KEY)? else {
        return Ok(());
    };
    let found = <[u8; 8]>::try_from(marker.value())
        .map(u64::from_le_bytes)
        .map_err(|_| StoreError::Record(format!("{FORMAT_KEY} is not an 8-byte number")))?;
    if found > STORE_FORMAT {
        return Err(StoreError::Format {
            dir: dir.to_path_buf(),
            found,
            supported: STORE_FORMAT,
        });
    }
    Ok(())
}

/// Moves the blocks of the older layout (bytes inside redb) into segment files, in chunks that
/// each commit durably: a crash in the middle leaves every block in one place or the other.
/// Returns whether there was anything to move.
fn migrate_legacy_blocks(db: &Database, segments: &Segments) -> Result<bool, StoreError> {
    {
        let tx = db.begin_read()?;
        match tx.open_table(LEGACY_BLOCKS) {
            Ok(t) => {
                if t.is_empty()? {
                    drop(t);
                    drop(tx);
                    let w = db.begin_write()?;
                    w.delete_table(LEGACY_BLOCKS)?;
                    w.commit()?;
                    return Ok(false);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    let mut moved = 0u64;
    loop {
        let tx = db.begin_write()?;
        let mut done = false;
        {
            let mut legacy = tx.open_table(LEGACY_BLOCKS)?;
            let mut index = tx.open_table(INDEX)?;
            let mut by_segment = tx.open_table(BY_SEGMENT)?;
            let mut chunk = 0usize;
            let mut keys = Vec::new();
            for item in legacy.iter()? {
                let (k, v) = item?;
                let key = k.value().to_vec();
                if index.get(key.as_slice())?.is_none() {
                    let loc = segments
                        .append(Class::Pinned, v.value())
                        .map_err(write_err)?;
                    index.insert(key.as_slice(), loc.encode().as_slice())?;
                    let mut entry = loc.len.to_be_bytes().to_vec();
                    entry.extend_from_slice(&key);
                    by_segment.insert((loc.seg, loc.off), entry.as_slice())?;
                    chunk += v.value().len();
                }
                keys.push(key);
                if chunk >= 64 * 1024 * 1024 {
                    break;
                }
            }
            if keys.is_empty() {
                done = true;
            }
            for k in &keys {
                legacy.remove(k.as_slice())?;
            }
            moved += keys.len() as u64;
        }
        if done {
            tx.delete_table(LEGACY_BLOCKS)?;
        }
        segments.sync_dirty()?;
        tx.commit()?;
        if done {
            break;
        }
    }
    tracing::info!(
        blocks = moved,
        "moved the store's blocks into segment files"
    );
    Ok(true)
}

/// Why a DAG in the store is not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DagGap {
    /// A block the DAG links to is not stored.
    Missing(Cid),
    /// A stored block does not decode under its codec, so its links cannot be followed.
    Undecodable {
        /// The block.
        cid: Cid,
        /// What the decoder said.
        reason: String,
    },
}

impl DagGap {
    /// The block where the DAG stops being complete.
    pub fn cid(&self) -> Cid {
        match self {
            DagGap::Missing(c) => *c,
            DagGap::Undecodable { cid, .. } => *cid,
        }
    }
}

impl std::fmt::Display for DagGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DagGap::Missing(c) => write!(f, "block {c} is missing"),
            DagGap::Undecodable { cid, reason } => {
                write!(f, "block {cid} does not decode: {reason}")
            }
        }
    }
}

fn decode_pin(bytes: &[u8]) -> Result<PinRecord, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blocking_err(e: tokio::task::JoinError) -> TierError {
    TierError::Unavailable {
        tier: "store",
        reason: format!("store task failed: {e}"),
    }
}

impl LocalStore {
    /// Runs a store read on a blocking thread, at most `readers` at once.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&LocalStore) -> T + Send + 'static,
    ) -> Result<T, TierError> {
        let _reading = self
            .readers
            .acquire()
            .await
            .map_err(|_| TierError::Unavailable {
                tier: "store",
                reason: "the store is closing".into(),
            })?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(blocking_err)
    }
}

/// What a read that must not wait for the disk found.
enum InMemory {
    /// The block, from the page cache.
    Hit(Block),
    /// The index does not name it.
    Absent,
    /// Its bytes need the disk (or a second look): read on a blocking thread.
    Slow,
}

impl LocalStore {
    /// Serves `cid` on the calling (async) thread when that costs no disk read of block bytes:
    /// a blocking thread's hand-off costs more than a 4 KiB read from the page cache. The index
    /// lookup may still read redb's file when its page is in neither redb's cache nor the page
    /// cache: a short blocking read on the worker, as nginx reads its cache files.
    fn serve_in_memory(&self, cid: &Cid) -> Result<InMemory, StoreError> {
        if let Some(b) = identity_block(cid) {
            return Ok(InMemory::Hit(b));
        }
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INDEX)?;
        let key = cid.hash().to_bytes();
        let Some(loc) = Self::locate(&table, &key)? else {
            return Ok(InMemory::Absent);
        };
        Ok(match self.segments.read_in_memory(&loc)? {
            Some((data, class, Found::Trusted)) => {
                self.note_read(class, &key);
                InMemory::Hit(Block::already_verified(*cid, data))
            }
            Some((data, class, Found::MustHash)) => match Block::verified(*cid, data) {
                Ok(b) => {
                    self.note_read(class, &key);
                    InMemory::Hit(b)
                }
                // The blocking path reads it again, reports it and marks it corrupt.
                Err(_) => InMemory::Slow,
            },
            None => InMemory::Slow,
        })
    }
}

#[async_trait]
impl BlockSource for LocalStore {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        match self.serve_in_memory(cid) {
            Ok(InMemory::Hit(b)) => return Ok(b),
            Ok(InMemory::Absent) => return Err(TierError::NotFound(*cid)),
            // Errors are met again, and reported, on the blocking path.
            Ok(InMemory::Slow) | Err(_) => {}
        }
        let c = *cid;
        self.read_blocking(move |s| s.get_sync(&c))
            .await??
            .ok_or(TierError::NotFound(*cid))
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        let c = *cid;
        Ok(self.read_blocking(move |s| s.has_sync(&c)).await??)
    }

    fn name(&self) -> &'static str {
        "store"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::cid_v1_sha256;

    fn block(data: &'static [u8]) -> Block {
        Block::verified(cid_v1_sha256(RAW, data), Bytes::from_static(data)).unwrap()
    }

    #[test]
    fn a_store_carries_its_layout_and_a_newer_one_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(
            store.meta_get(FORMAT_KEY).unwrap().as_deref(),
            Some(&STORE_FORMAT.to_le_bytes()[..])
        );
        // A later cidgate wrote layout 3.
        store.meta_put(FORMAT_KEY, &3u64.to_le_bytes()).unwrap();
        drop(store);
        match LocalStore::open(dir.path()) {
            Err(StoreError::Format {
                found: 3,
                supported: STORE_FORMAT,
                ..
            }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a newer layout was opened"),
        }
        // Refused before anything was written: the marker is still the newer one.
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(
            meta.get(FORMAT_KEY).unwrap().unwrap().value(),
            &3u64.to_le_bytes()[..]
        );
    }

    #[test]
    fn staged_blocks_commit_or_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = block(b"a");
        let b = block(b"b");
        let batch = store.new_batch().unwrap();
        assert_eq!(
            store
                .put_staged(batch, std::slice::from_ref(&a), false)
                .unwrap(),
            1
        );
        store
            .commit_batch(batch, &[(*a.cid(), PinReason::Operator)])
            .unwrap();
        let batch2 = store.new_batch().unwrap();
        assert_ne!(batch, batch2);
        // `a` exists already, so only `b` is staged and rolled back.
        assert_eq!(
            store
                .put_staged(batch2, &[a.clone(), b.clone()], false)
                .unwrap(),
            1
        );
        assert_eq!(store.rollback_batch(batch2).unwrap(), 1);
        assert!(store.has_sync(a.cid()).unwrap());
        assert!(!store.has_sync(b.cid()).unwrap());
        assert_eq!(
            store.pin_of(a.cid()).unwrap().unwrap().reason,
            PinReason::Operator
        );
    }

    #[test]
    fn interrupted_import_is_rolled_back_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = block(b"orphan");
        {
            let store = LocalStore::open(dir.path()).unwrap();
            let batch = store.new_batch().unwrap();
            store
                .put_staged(batch, std::slice::from_ref(&b), true)
                .unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(!store.has_sync(b.cid()).unwrap());
    }

    #[test]
    fn second_open_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = LocalStore::open(dir.path()).unwrap();
        assert!(matches!(
            LocalStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn corrupt_bytes_on_disk_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let cid = cid_v1_sha256(RAW, b"good");
        let tx = store.db.begin_write().unwrap();
        store
            .place(&tx, Class::Pinned, &cid.hash().to_bytes(), b"evil")
            .unwrap();
        tx.commit().unwrap();
        assert!(matches!(
            store.get_sync(&cid),
            Err(TierError::Corrupt { .. })
        ));
    }

    #[test]
    fn operator_pins_are_not_downgraded() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let cid = cid_v1_sha256(RAW, b"p");
        store
            .pin(&cid, PinReason::Operator, Some("mine".into()))
            .unwrap();
        store.pin(&cid, PinReason::Auto, None).unwrap();
        let rec = store.pin_of(&cid).unwrap().unwrap();
        assert_eq!(rec.reason, PinReason::Operator);
        assert_eq!(rec.name.as_deref(), Some("mine"));
        assert!(store.unpin(&cid).unwrap());
        assert!(store.pins().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_pin_record_is_quarantined_and_the_pin_kept_as_an_operator_pin() {
        let dir = tempfile::tempdir().unwrap();
        let cid = cid_v1_sha256(RAW, b"pinned");
        {
            let store = LocalStore::open(dir.path()).unwrap();
            store.pin(&cid, PinReason::Auto, None).unwrap();
            let tx = store.db.begin_write().unwrap();
            {
                let mut pins = tx.open_table(PINS).unwrap();
                pins.insert(cid.to_bytes().as_slice(), &b"{\"cid\": 7"[..])
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.quarantined(), 1, "moved aside at open");
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(
            (q[0].table.as_str(), q[0].key.clone()),
            ("pins", cid.to_string())
        );
        assert_eq!(q[0].bytes, b"{\"cid\": 7");
        let rec = store.pin_of(&cid).unwrap().unwrap();
        assert_eq!(
            rec.reason,
            PinReason::Operator,
            "never demoted by automation"
        );
        assert_eq!(store.pins().unwrap().len(), 1);
        // Writing the pin again leaves the quarantined copy alone.
        store
            .pin(&cid, PinReason::Operator, Some("n".into()))
            .unwrap();
        assert_eq!(store.quarantine_list().unwrap(), q);
    }

    #[test]
    fn a_pin_record_damaged_while_open_is_recovered_on_read_and_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = cid_v1_sha256(RAW, b"a");
        let b = cid_v1_sha256(RAW, b"b");
        for c in [&a, &b] {
            let tx = store.db.begin_write().unwrap();
            {
                let mut pins = tx.open_table(PINS).unwrap();
                pins.insert(c.to_bytes().as_slice(), &b"garbage"[..])
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(store.pins().unwrap().len(), 2);
        assert_eq!(store.quarantined(), 2);
        let tx = store.db.begin_write().unwrap();
        {
            let mut pins = tx.open_table(PINS).unwrap();
            pins.insert(a.to_bytes().as_slice(), &b"again"[..]).unwrap();
        }
        tx.commit().unwrap();
        // An automatic pin over an unreadable record does not downgrade it.
        store.pin(&a, PinReason::Auto, None).unwrap();
        assert_eq!(
            store.pin_of(&a).unwrap().unwrap().reason,
            PinReason::Operator
        );
        assert_eq!(store.quarantine_list().unwrap().len(), 3);
    }

    fn stage(store: &LocalStore, blocks: &[Block]) {
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, blocks, false).unwrap();
        store.commit_batch(batch, &[]).unwrap();
    }

    fn pb_node(links: &[Cid]) -> Block {
        use crate::ipld::dagpb::{PbLink, PbNode};
        let node = PbNode {
            links: links
                .iter()
                .map(|c| PbLink {
                    cid: *c,
                    name: Some(c.to_string()),
                    tsize: Some(1),
                })
                .collect(),
            data: Some(Bytes::from_static(&[8, 1])),
        };
        let data = node.encode();
        Block::verified(cid_v1_sha256(crate::ipld::DAG_PB, &data), data).unwrap()
    }

    fn pb_garbage() -> Block {
        // Wire type 6 does not exist: no protobuf decoder accepts this.
        let data = Bytes::from_static(b"not protobuf");
        Block::verified(cid_v1_sha256(crate::ipld::DAG_PB, &data), data).unwrap()
    }

    #[test]
    fn completeness_means_present_and_decodable_all_the_way_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let leaf = block(b"leaf");
        let bad = pb_garbage();
        let good_root = pb_node(&[*leaf.cid()]);
        let bad_inner_root = pb_node(&[*leaf.cid(), *bad.cid()]);
        let missing = cid_v1_sha256(RAW, b"never stored");
        let missing_root = pb_node(&[*leaf.cid(), missing]);
        let cbor = {
            let data = Bytes::from_static(b"\xa1\x61");
            Block::verified(cid_v1_sha256(crate::ipld::DAG_CBOR, &data), data).unwrap()
        };
        stage(
            &store,
            &[
                leaf.clone(),
                bad.clone(),
                good_root.clone(),
                bad_inner_root.clone(),
                missing_root.clone(),
                cbor.clone(),
            ],
        );
        assert_eq!(store.check_dag(good_root.cid()).unwrap(), None);
        assert!(matches!(
            store.check_dag(bad.cid()).unwrap(),
            Some(DagGap::Undecodable { cid, .. }) if cid == *bad.cid()
        ));
        assert_eq!(
            store.first_missing(bad_inner_root.cid()).unwrap(),
            Some(*bad.cid())
        );
        assert_eq!(
            store.check_dag(missing_root.cid()).unwrap(),
            Some(DagGap::Missing(missing))
        );
        assert!(matches!(
            store.check_dag(cbor.cid()).unwrap(),
            Some(DagGap::Undecodable { .. })
        ));
        assert_eq!(store.check_dag(leaf.cid()).unwrap(), None);
    }
}
