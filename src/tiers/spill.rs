//! Write-behind of fetched blocks into the store's disk cache.
//!
//! Blocks fetched from the hot node or the cold tier are offered here after they were
//! verified; a task writes them to the store in batches as cache entries. The offer never
//! waits: when the queue holds its byte limit (the disk is slower than the network), the
//! block is not kept on disk, and the memory cache still has it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::local::LocalStore;
use crate::ipld::Block;

/// Bytes written to the store in one transaction at most.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// How often a failing write is logged at most.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The write-behind queue into the store.
pub struct CacheWriter {
    queue: mpsc::UnboundedSender<Block>,
    queued: Arc<AtomicU64>,
    limit: u64,
    store: LocalStore,
}

impl CacheWriter {
    /// Starts the writer task (on the current runtime) with a queue of at most `limit` bytes.
    pub fn start(store: LocalStore, limit: u64) -> Arc<CacheWriter> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Block>();
        let queued = Arc::new(AtomicU64::new(0));
        let writer = Arc::new(CacheWriter {
            queue: tx,
            queued: queued.clone(),
            limit,
            store: store.clone(),
        });
        tokio::spawn(async move {
            // A full disk fails every batch: said once a minute, not once a batch.
            let mut last_warning: Option<tokio::time::Instant> = None;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let mut bytes = batch[0].data().len() as u64;
                while bytes < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(b) => {
                            bytes += b.data().len() as u64;
                            batch.push(b);
                        }
                        Err(_) => break,
                    }
                }
                let s = store.clone();
                let written = tokio::task::spawn_blocking(move || s.put_cached(&batch)).await;
                queued.fetch_sub(bytes, Ordering::AcqRel);
                match written {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        store.space().note_cache_skip(bytes);
                        if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            last_warning = Some(tokio::time::Instant::now());
                            tracing::warn!(error = %e, "keeping fetched blocks in the store failed (cidgate_store_cache_skipped_bytes_total counts what was not kept)");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "store cache writer task failed"),
                }
            }
        });
        writer
    }

    /// Offers a verified fetched block; never waits.
    pub fn offer(&self, block: &Block) {
        let len = block.data().len() as u64;
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limit || self.queue.send(block.clone()).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.store.space().note_cache_skip(len);
        }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}
