//! What a CID is, read from its root block: a UnixFS file, directory or symbolic link, or an IPLD
//! document. The gateway asks for an entity and serves it; decoding stays here.

use bytes::Bytes;
use cid::Cid;
use ipld_core::ipld::Ipld;

use super::source::BlockSource;
use super::{fetch, ContentError};
use crate::ipld::codec::decode_ipld;
use crate::ipld::unixfs::FsNode;
use crate::ipld::Block;

/// A UnixFS entity.
#[derive(Debug)]
pub enum UnixFsEntity {
    /// A file of `size` bytes; `block` is its root (read it with `unixfs_reader`).
    File {
        /// The file's root block.
        block: Block,
        /// Content bytes.
        size: u64,
    },
    /// A directory, plain or HAMT-sharded.
    Directory(Directory),
    /// A symbolic link and the bytes of its target.
    Symlink(Bytes),
}

/// A directory's root node, ready to be listed ([`super::listing::list_page`]).
#[derive(Clone, Debug)]
pub struct Directory(pub(crate) FsNode);

impl UnixFsEntity {
    /// The entity whose root block is `block`.
    pub fn decode(block: Block) -> Result<Self, ContentError> {
        let cid = *block.cid();
        Ok(
            match FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))? {
                FsNode::File { size, .. } => UnixFsEntity::File { block, size },
                FsNode::Symlink { target } => UnixFsEntity::Symlink(target),
                dir @ (FsNode::Directory { .. } | FsNode::HamtShard { .. }) => {
                    UnixFsEntity::Directory(Directory(dir))
                }
            },
        )
    }

    /// Reads the entity at `cid`.
    pub async fn read(src: &dyn BlockSource, cid: &Cid) -> Result<Self, ContentError> {
        Self::decode(fetch(src, cid).await?)
    }

    /// Whether it is a file.
    pub fn is_file(&self) -> bool {
        matches!(self, UnixFsEntity::File { .. })
    }
}

/// The IPLD document (dag-json, dag-cbor, JSON or CBOR) at `cid`, decoded: the gateway renders
/// a value, decoding stays here.
pub async fn document(src: &dyn BlockSource, cid: &Cid) -> Result<Ipld, ContentError> {
    let block = fetch(src, cid).await?;
    Ok(decode_ipld(cid.codec(), block.data()).map_err(|e| (*cid, e))?)
}

/// The whole content of a file that is a single block (a raw leaf, or a dag-pb node with its
/// bytes inline and no children): already verified and in memory, so it can be sent as a slice.
pub fn single_block_content(block: &Block) -> Option<Bytes> {
    match FsNode::decode(block.cid().codec(), block.data()) {
        Ok(FsNode::File { data, children, .. }) if children.is_empty() => Some(data),
        _ => None,
    }
}

/// The bytes a UnixFS DAG holds, from its root block alone: a file's size; a directory's own
/// block plus, when `whole`, the cumulative sizes its links record. `None` for other codecs.
pub fn unixfs_dag_size(root: &Block, whole: bool) -> Option<u64> {
    let len = root.data().len() as u64;
    match FsNode::decode(root.cid().codec(), root.data()).ok()? {
        FsNode::File { size, .. } => Some(size),
        FsNode::Directory { links } | FsNode::HamtShard { links, .. } if whole => Some(
            links
                .iter()
                .fold(len, |sum, l| sum.saturating_add(l.tsize.unwrap_or(0))),
        ),
        _ => Some(len),
    }
}
