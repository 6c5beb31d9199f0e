//! Typed records in the embedded store (pin requests, promotion records, demand, IPNS records,
//! the provider book, pins), read and written through one helper that never overwrites what it
//! could not read.
//!
//! A stored value that no longer decodes (a bug in an older version, a hand edit, a disk fault
//! that redb's checksums did not catch) is moved aside into the `quarantine` table, keyed by
//! where it was and when it was moved, logged and counted; the caller starts without it. Nothing
//! in cidgate deletes quarantined values: they are the operator's to inspect or restore. Saves
//! check the value they replace too, so a caller that never loaded a key cannot destroy an
//! unreadable value either.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::local::{LocalStore, StoreError, META};

/// (table, key as text, Unix nanoseconds when moved) → the bytes that could not be decoded.
pub(super) const QUARANTINE: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("quarantine");

/// A value that was moved aside because it could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// The table it was in (`meta`, `pins`).
    pub table: String,
    /// Its key there (a meta key, or the CID of a pin).
    pub key: String,
    /// Unix nanoseconds when it was moved.
    pub at: u64,
    /// The bytes, exactly as they were stored.
    pub bytes: Vec<u8>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn json_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

impl LocalStore {
    /// Copies `bytes` (stored under `table` / `key`) into the quarantine table inside `tx`, and
    /// logs and counts it. The caller removes or replaces the original in the same transaction,
    /// so a crash leaves either the original or the quarantined copy, never neither.
    pub(super) fn quarantine_in(
        &self,
        tx: &WriteTransaction,
        table: &str,
        key: &str,
        bytes: &[u8],
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut q = tx.open_table(QUARANTINE)?;
        let mut at = now_nanos();
        // Two moves of one key within a nanosecond must both be kept.
        while q.get((table, key, at))?.is_some() {
            at = at.wrapping_add(1);
        }
        q.insert((table, key, at), bytes)?;
        self.quarantine_count.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            table,
            key,
            at,
            bytes = bytes.len(),
            %reason,
            "stored record unreadable: moved to the quarantine table, starting without it"
        );
        Ok(())
    }

    /// Records this process moved to quarantine since it opened the store (a counter to export
    /// as a metric; the quarantined values themselves are listed by [`Self::quarantine_list`]).
    pub fn quarantined(&self) -> u64 {
        self.quarantine_count.load(Ordering::Relaxed)
    }

    /// Every quarantined value, oldest first within each key.
    pub fn quarantine_list(&self) -> Result<Vec<Quarantined>, StoreError> {
        let tx = self.db.begin_read()?;
        let q = tx.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for item in q.iter()? {
            let (k, v) = item?;
            let (table, key, at) = k.value();
            out.push(Quarantined {
                table: table.to_string(),
                key: key.to_string(),
                at,
                bytes: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// The JSON record under meta `key`, or `None` when there is none or it could not be
    /// decoded as `T` (then it was quarantined).
    pub fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.load_with(key, json_decode::<T>)
    }

    /// Like [`Self::load`] with the caller's decoder (for records that are not JSON).
    pub fn load_with<T>(
        &self,
        key: &str,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        // The common case reads without taking the write lock.
        let first = {
            let tx = self.db.begin_read()?;
            let meta = tx.open_table(META)?;
            let Some(v) = meta.get(key)? else {
                return Ok(None);
            };
            decode(v.value())
        };
        if let Ok(value) = first {
            return Ok(Some(value));
        }
        // Moving it aside needs a write transaction; the value is read again inside it because
        // a writer may have replaced it in between.
        let tx = self.db.begin_write()?;
        let result = {
            let mut meta = tx.open_table(META)?;
            let current = meta.get(key)?.map(|v| v.value().to_vec());
            match current {
                None => None,
                Some(bytes) => match decode(&bytes) {
                    Ok(value) => Some(value),
                    Err(reason) => {
                        self.quarantine_in(&tx, "meta", key, &bytes, &reason)?;
                        meta.remove(key)?;
                        None
                    }
                },
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Stores `value` as JSON under meta `key`, durably. A value there that does not decode as
    /// the owned form of `T` (what [`Self::load`] reads back: `Vec<R>` for a `[R]`) is
    /// quarantined first, in the same transaction.
    pub fn save<T>(&self, key: &str, value: &T) -> Result<(), StoreError>
    where
        T: Serialize + ToOwned + ?Sized,
        T::Owned: DeserializeOwned,
    {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Record(e.to_string()))?;
        self.save_with(key, &bytes, |b| json_decode::<T::Owned>(b).map(|_| ()))
    }

    /// Stores encoded `bytes` under meta `key`, durably, quarantining a value there that
    /// `check` cannot read.
    pub fn save_with(
        &self,
        key: &str,
        bytes: &[u8],
        check: impl Fn(&[u8]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let old = meta.get(key)?.map(|v| v.value().to_vec());
            if let Some(old) = old {
                if let Err(reason) = check(&old) {
                    self.quarantine_in(&tx, "meta", key, &old, &reason)?;
                }
            }
            meta.insert(key, bytes)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The typed records of the embedded store and nothing else of it: what a module that keeps
/// its state there (the name resolver, the demand tracker) needs, so that it cannot read or
/// write blocks or pins by accident.
#[derive(Clone)]
pub struct Records(LocalStore);

impl Records {
    /// The records of `store`.
    pub fn of(store: &LocalStore) -> Self {
        Records(store.clone())
    }

    /// See [`LocalStore::load`].
    pub fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.0.load(key)
    }

    /// See [`LocalStore::load_with`].
    pub fn load_with<T>(
        &self,
        key: &str,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        self.0.load_with(key, decode)
    }

    /// See [`LocalStore::save`].
    pub fn save<T>(&self, key: &str, value: &T) -> Result<(), StoreError>
    where
        T: Serialize + ToOwned + ?Sized,
        T::Owned: DeserializeOwned,
    {
        self.0.save(key, value)
    }

    /// See [`LocalStore::save_with`].
    pub fn save_with(
        &self,
        key: &str,
        bytes: &[u8],
        check: impl Fn(&[u8]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        self.0.save_with(key, bytes, check)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn an_unreadable_record_is_moved_aside_and_a_save_does_not_touch_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.meta_put("k", b"{not json").unwrap();
        let loaded: Option<BTreeMap<String, u32>> = store.load("k").unwrap();
        assert_eq!(loaded, None);
        assert_eq!(store.quarantined(), 1);
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].table.as_str(), q[0].key.as_str()), ("meta", "k"));
        assert_eq!(q[0].bytes, b"{not json");

        let fresh: BTreeMap<String, u32> = [("a".to_string(), 1)].into();
        store.save("k", &fresh).unwrap();
        assert_eq!(
            store.load::<BTreeMap<String, u32>>("k").unwrap(),
            Some(fresh)
        );
        assert_eq!(
            store.quarantine_list().unwrap(),
            q,
            "the save left it alone"
        );
        assert_eq!(store.quarantined(), 1);
    }

    #[test]
    fn a_save_without_a_load_quarantines_what_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.meta_put("k", b"[1,2,").unwrap();
        store.save("k", &vec![3u32]).unwrap();
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].bytes, b"[1,2,");
        // A readable value is simply replaced.
        store.save("k", &vec![4u32]).unwrap();
        assert_eq!(store.quarantine_list().unwrap().len(), 1);
        assert_eq!(store.load::<Vec<u32>>("k").unwrap(), Some(vec![4]));
    }

    #[test]
    fn quarantined_values_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LocalStore::open(dir.path()).unwrap();
            store.meta_put("k", b"\xff\xfe").unwrap();
            assert_eq!(store.load::<u32>("k").unwrap(), None);
            store.meta_put("k", b"\xff\xfd").unwrap();
            assert_eq!(store.load::<u32>("k").unwrap(), None);
        }
        let store = LocalStore::open(dir.path()).unwrap();
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 2, "both bad values kept");
        assert_eq!(store.quarantined(), 0, "the counter is per process");
        assert_eq!(store.load::<u32>("k").unwrap(), None);
    }
}
