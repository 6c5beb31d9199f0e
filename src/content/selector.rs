//! Which blocks a CAR response carries, in order: the blocks of the path, then the terminal
//! entity per `dag-scope` (block, entity, all) and `entity-bytes`, depth-first, with or without
//! duplicates.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use cid::Cid;

use super::select::{reach, DagRequest, DagScope, EntityBytes, Place};
use super::source::BlockSource;
use super::{fetch, ContentError, Resolved};
use crate::ipld::{Block, IDENTITY, RAW};

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

impl Selection {
    /// The request this selection makes of the DAG under `target` (the path already resolved).
    fn below(&self, target: Cid) -> DagRequest {
        DagRequest {
            root: target,
            segments: Vec::new(),
            scope: self.scope,
            entity_bytes: self.entity_bytes,
        }
    }
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
    req: DagRequest,
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

    /// Emits `block` and, depth-first, every block below it that the request reaches.
    fn visit<'f>(&'f mut self, block: Block, place: Place) -> WalkFuture<'f> {
        Box::pin(async move {
            // Without dups, a block already sent under dag-scope=all has had its whole DAG
            // sent too. (Not so for part of a file: the same node may hold other wanted bytes
            // at another offset.)
            if !self.dups
                && self.req.effective_scope() == DagScope::All
                && self.seen.contains(block.cid())
            {
                return Ok(());
            }
            self.emit(&block).await;
            for (child, child_place) in reach(&self.req, block.cid(), block.data(), place)? {
                if self.stopped {
                    break;
                }
                let child_block = fetch(self.src, &child).await?;
                if child.codec() == RAW {
                    // A leaf: nothing below it, so no boxed step of the recursion.
                    self.emit(&child_block).await;
                    continue;
                }
                self.visit(child_block, child_place).await?;
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
        req: selection.below(resolved.target),
        dups: selection.dups,
        seen: HashSet::new(),
        stopped: false,
    };
    for b in &resolved.path_blocks {
        w.emit(b).await;
    }
    let target = fetch(src, &resolved.target).await?;
    w.visit(target, Place::ROOT).await
}

/// Whether a walk of `selection` can start at `target`: its block decodes the way the walk
/// will read it. A response checks this before it commits to a status, so that a root whose
/// bytes hash right but do not decode is a clean error instead of a 200 cut after its header.
pub fn check_target(target: &Block, selection: &Selection) -> Result<(), ContentError> {
    reach(
        &selection.below(*target.cid()),
        target.cid(),
        target.data(),
        Place::ROOT,
    )
    .map(|_| ())
}
