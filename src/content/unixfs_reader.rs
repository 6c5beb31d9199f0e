//! Streams the bytes of a UnixFS file, or a byte range of it: only the blocks that cover the
//! range are fetched (children are skipped by their `blocksizes`), with a bounded read-ahead
//! window so memory stays bounded whatever the file size.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::source::BlockSource;
use super::ContentError;
use crate::ipld::unixfs::FsNode;
use crate::ipld::Block;

/// Blocks fetched ahead of the one being sent, per file level.
pub const READ_AHEAD: usize = 4;

type ReadFuture = Pin<Box<dyn Future<Output = Result<bool, ContentError>> + Send>>;

/// Sends bytes `start..=end` of the file rooted at `root` to `tx`. Returns `Ok(false)` when the
/// receiver went away. Every block is verified by the source before its bytes are sent.
pub async fn read_range(
    src: Arc<dyn BlockSource>,
    root: Block,
    start: u64,
    end: u64,
    tx: mpsc::Sender<Bytes>,
) -> Result<bool, ContentError> {
    read_node(src, root, start, end, tx).await
}

fn read_node(
    src: Arc<dyn BlockSource>,
    block: Block,
    lo: u64,
    hi: u64,
    tx: mpsc::Sender<Bytes>,
) -> ReadFuture {
    Box::pin(async move {
        let cid = *block.cid();
        let FsNode::File { data, children, .. } =
            FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))?
        else {
            return Err(ContentError::Malformed {
                cid,
                reason: "a file's DAG contains a non-file node".into(),
            });
        };
        drop(block);
        let inline = data.len() as u64;
        if lo < inline && !data.is_empty() {
            let slice = data.slice(lo as usize..=(hi.min(inline - 1)) as usize);
            if tx.send(slice).await.is_err() {
                return Ok(false);
            }
        }
        let mut offset = inline;
        let mut wanted: Vec<(Cid, u64, u64)> = Vec::new();
        for (child, size) in children {
            let start = offset;
            offset += size;
            if size == 0 || hi < start || lo >= start + size {
                continue;
            }
            wanted.push((child, lo.saturating_sub(start), (hi - start).min(size - 1)));
        }
        // Spawned fetches make progress while the previous child is being sent.
        let mut fetches = futures::stream::iter(wanted)
            .map(|(child, clo, chi)| {
                let src = src.clone();
                let handle = tokio::spawn(async move { src.get(&child).await });
                async move { (handle.await, clo, chi) }
            })
            .buffered(READ_AHEAD);
        while let Some((joined, clo, chi)) = fetches.next().await {
            let child = joined
                .map_err(|e| ContentError::Unsupported(format!("fetch task failed: {e}")))??;
            if !read_node(src.clone(), child, clo, chi, tx.clone()).await? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// Up to `n` bytes from the start of the file (for content sniffing); reads only the first
/// leaf on the way down.
pub async fn head_bytes(
    src: &dyn BlockSource,
    root: &Block,
    n: usize,
) -> Result<Bytes, ContentError> {
    let mut block = root.clone();
    loop {
        let cid = *block.cid();
        let FsNode::File { data, children, .. } =
            FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))?
        else {
            return Ok(Bytes::new());
        };
        if !data.is_empty() || children.is_empty() {
            return Ok(data.slice(..data.len().min(n)));
        }
        let Some((first, _)) = children.iter().find(|(_, size)| *size > 0) else {
            return Ok(Bytes::new());
        };
        block = src.get(first).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::source::TierError;
    use crate::ipld::builder::{FileBuilder, CHUNK_SIZE};
    use async_trait::async_trait;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct MemSource {
        blocks: HashMap<Cid, Block>,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl BlockSource for MemSource {
        async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.blocks
                .get(cid)
                .cloned()
                .ok_or(TierError::NotFound(*cid))
        }
        async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
            Ok(self.blocks.contains_key(cid))
        }
        fn name(&self) -> &'static str {
            "mem"
        }
    }

    fn file(len: usize) -> (Vec<u8>, Arc<MemSource>, Block) {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut blocks = Vec::new();
        let mut b = FileBuilder::new();
        b.write(&data, &mut blocks).unwrap();
        let root = b.finish(&mut blocks).unwrap();
        let map: HashMap<Cid, Block> = blocks.into_iter().map(|b| (*b.cid(), b)).collect();
        let root_block = map[&root.cid].clone();
        (
            data,
            Arc::new(MemSource {
                blocks: map,
                gets: AtomicUsize::new(0),
            }),
            root_block,
        )
    }

    async fn collect(src: Arc<MemSource>, root: Block, lo: u64, hi: u64) -> Vec<u8> {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(async move { read_range(src, root, lo, hi, tx).await });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        assert!(task.await.unwrap().unwrap());
        out
    }

    #[tokio::test]
    async fn ranges_read_exactly_the_covering_blocks() {
        let (data, src, root) = file(CHUNK_SIZE * 3 + 100);
        let all = collect(src.clone(), root.clone(), 0, data.len() as u64 - 1).await;
        assert_eq!(all, data);
        src.gets.store(0, Ordering::Relaxed);
        let lo = CHUNK_SIZE as u64 + 10;
        let hi = CHUNK_SIZE as u64 + 20;
        assert_eq!(
            collect(src.clone(), root.clone(), lo, hi).await,
            &data[lo as usize..=hi as usize]
        );
        assert_eq!(
            src.gets.load(Ordering::Relaxed),
            1,
            "one leaf for a range inside it"
        );
        let across = collect(
            src.clone(),
            root.clone(),
            CHUNK_SIZE as u64 - 5,
            CHUNK_SIZE as u64 + 4,
        )
        .await;
        assert_eq!(across, &data[CHUNK_SIZE - 5..CHUNK_SIZE + 5]);
        let head = head_bytes(src.as_ref(), &root, 8).await.unwrap();
        assert_eq!(&head[..], &data[..8]);
    }
}
