//! Which blocks a CAR response carries, in order: the blocks of the path, then the terminal
//! entity per `dag-scope` (block, entity, all) and `entity-bytes`, depth-first, with or without
//! duplicates.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use cid::Cid;

use super::{fetch, ContentError, Resolved};
use crate::ipld::codec;
use crate::ipld::hamt;
use crate::ipld::unixfs::FsNode;
use crate::ipld::{Block, DAG_PB, IDENTITY, RAW};
use crate::tiers::BlockSource;

pub use crate::tiers::{DagScope, EntityBytes};

/// What a CAR response selects below the resolved path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The dag-scope.
    pub scope: DagScope,
    /// The entity-bytes range, if any (only meaningful for files).
    pub entity_bytes: Option<EntityBytes>,
    /// Whether blocks are repeated each time the walk reaches them (`dups=y`).
    pub dups: bool,
}

/// Receives the selected blocks in order; returns false to stop the walk (client went away).
pub trait BlockSink: Send {
    /// Takes the next block.
    fn emit(&mut self, block: Block) -> impl Future<Output = bool> + Send;
}

impl BlockSink for tokio::sync::mpsc::Sender<Block> {
    async fn emit(&mut self, block: Block) -> bool {
        self.send(block).await.is_ok()
    }
}

struct Walker<'a, S: BlockSink> {
    src: &'a dyn BlockSource,
    sink: &'a mut S,
    dups: bool,
    seen: HashSet<Cid>,
    stopped: bool,
}

type WalkFuture<'f> = Pin<Box<dyn Future<Output = Result<(), ContentError>> + Send + 'f>>;

impl<S: BlockSink> Walker<'_, S> {
    /// Emits a block unless dups are off and it was already sent; identity blocks never go out.
    async fn emit(&mut self, block: &Block) {
        if self.stopped || block.cid().hash().code() == IDENTITY {
            return;
        }
        if !self.dups && !self.seen.insert(*block.cid()) {
            return;
        }
        if !self.sink.emit(block.clone()).await {
            self.stopped = true;
        }
    }

    fn all<'f>(&'f mut self, block: Block) -> WalkFuture<'f> {
        Box::pin(async move {
            // Without dups, a block already sent has had its whole DAG sent too.
            if !self.dups && self.seen.contains(block.cid()) {
                return Ok(());
            }
            self.emit(&block).await;
            let links = match codec::links(block.cid(), block.data()) {
                Ok(l) => l,
                Err(codec::CodecError::Unsupported(_)) => Vec::new(),
                Err(e) => return Err((*block.cid(), e).into()),
            };
            for link in links {
                if self.stopped {
                    break;
                }
                let child = fetch(self.src, &link).await?;
                self.all(child).await?;
            }
            Ok(())
        })
    }

    /// A file's blocks whose bytes meet `range` (in this node's coordinates), depth-first.
    fn file<'f>(&'f mut self, block: Block, range: Option<(u64, u64)>) -> WalkFuture<'f> {
        Box::pin(async move {
            self.emit(&block).await;
            let cid = *block.cid();
            let FsNode::File { data, children, .. } =
                FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))?
            else {
                return Ok(());
            };
            let mut offset = data.len() as u64;
            for (child, size) in children {
                if self.stopped {
                    break;
                }
                let start = offset;
                offset += size;
                let child_range = match range {
                    None => None,
                    Some((lo, hi)) => {
                        if size == 0 || hi < start || lo >= start + size {
                            continue;
                        }
                        Some((lo.saturating_sub(start), (hi - start).min(size - 1)))
                    }
                };
                let child_block = fetch(self.src, &child).await?;
                self.file(child_block, child_range).await?;
            }
            Ok(())
        })
    }

    /// A HAMT directory's shard blocks (not its entries).
    fn shards<'f>(&'f mut self, block: Block, fanout: u64) -> WalkFuture<'f> {
        Box::pin(async move {
            self.emit(&block).await;
            let cid = *block.cid();
            let FsNode::HamtShard { links, .. } =
                FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))?
            else {
                return Ok(());
            };
            for link in links {
                if self.stopped {
                    break;
                }
                if hamt::entry_name(link.name_str(), fanout).is_none() {
                    let shard = fetch(self.src, &link.cid).await?;
                    self.shards(shard, fanout).await?;
                }
            }
            Ok(())
        })
    }
}

/// Walks the selection and hands each block to `sink`. The target block must exist before the
/// caller commits to a response; later failures end the walk with an error.
pub async fn walk<S: BlockSink>(
    src: &dyn BlockSource,
    resolved: &Resolved,
    selection: &Selection,
    sink: &mut S,
) -> Result<(), ContentError> {
    let mut w = Walker {
        src,
        sink,
        dups: selection.dups,
        seen: HashSet::new(),
        stopped: false,
    };
    for b in &resolved.path_blocks {
        w.emit(b).await;
    }
    let target = fetch(src, &resolved.target).await?;
    let scope = if selection.entity_bytes.is_some() {
        DagScope::Entity
    } else {
        selection.scope
    };
    match scope {
        DagScope::Block => w.emit(&target).await,
        DagScope::All => w.all(target).await?,
        DagScope::Entity => entity(&mut w, target, selection.entity_bytes).await?,
    }
    Ok(())
}

/// Whether a walk of `selection` can start at `target`: its block decodes the way the walk
/// will read it. A response checks this before it commits to a status, so that a root whose
/// bytes hash right but do not decode is a clean error instead of a 200 cut after its header.
pub fn check_target(target: &Block, selection: &Selection) -> Result<(), ContentError> {
    let cid = *target.cid();
    let scope = if selection.entity_bytes.is_some() {
        DagScope::Entity
    } else {
        selection.scope
    };
    match scope {
        DagScope::Block => Ok(()),
        DagScope::All => match codec::links(&cid, target.data()) {
            Ok(_) | Err(codec::CodecError::Unsupported(_)) => Ok(()),
            Err(e) => Err((cid, e).into()),
        },
        DagScope::Entity if cid.codec() == DAG_PB || cid.codec() == RAW => {
            FsNode::decode(cid.codec(), target.data()).map_err(|e| (cid, e))?;
            Ok(())
        }
        DagScope::Entity => Ok(()),
    }
}

async fn entity<S: BlockSink>(
    w: &mut Walker<'_, S>,
    target: Block,
    bytes: Option<EntityBytes>,
) -> Result<(), ContentError> {
    let cid = *target.cid();
    if cid.codec() != DAG_PB && cid.codec() != RAW {
        // A document's entity is the document block itself.
        w.emit(&target).await;
        return Ok(());
    }
    match FsNode::decode(cid.codec(), target.data()).map_err(|e| (cid, e))? {
        FsNode::File { size, .. } => match bytes {
            None => w.file(target, None).await,
            Some(eb) => match eb.resolve(size) {
                Some(range) => w.file(target, Some(range)).await,
                None => {
                    w.emit(&target).await;
                    Ok(())
                }
            },
        },
        FsNode::HamtShard { fanout, .. } => w.shards(target, fanout).await,
        FsNode::Directory { .. } | FsNode::Symlink { .. } => {
            w.emit(&target).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bytes_resolve_like_the_conformance_cases() {
        let eb = |from, to| EntityBytes { from, to };
        assert_eq!(eb(0, None).resolve(1026), Some((0, 1025)));
        assert_eq!(eb(512, Some(1023)).resolve(1026), Some((512, 1023)));
        assert_eq!(eb(512, Some(-256)).resolve(1026), Some((512, 770)));
        assert_eq!(eb(-5, None).resolve(1026), Some((1021, 1025)));
        assert_eq!(eb(-9999, None).resolve(1026), Some((0, 1025)));
        assert_eq!(eb(-9999, Some(-3)).resolve(1026), Some((0, 1023)));
        assert_eq!(eb(0, Some(0)).resolve(1026), Some((0, 0)));
        assert_eq!(eb(2000, None).resolve(1026), None);
        assert_eq!(eb(0, None).resolve(0), None);
        assert_eq!(eb(0, Some(99999)).resolve(10), Some((0, 9)));
    }
}
