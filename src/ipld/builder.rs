//! UnixFS DAG builder, laid out as `ipfs-car pack` 3.x (@ipld/unixfs) does it so the same input
//! gives the same root CID: CIDv1, sha2-256, 1 MiB raw leaves, balanced layout 1024 links wide,
//! a file of one chunk is its raw leaf, directories are dag-pb nodes with links sorted by name.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use prost::Message;

use super::dagpb::{PbLink, PbNode};
use super::unixfs::{Data, DataType};
use super::{cid_v1_sha256, hamt, Block, DAG_PB, RAW};

/// Size of a file chunk (one raw leaf).
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Maximum links per file node.
pub const MAX_LINKS: usize = 1024;
/// Directories with more entries than this become HAMT shards, as `ipfs-car pack` does.
pub const SHARD_THRESHOLD: usize = 1000;
/// Fanout of HAMT shards (bit width 8).
pub const HAMT_FANOUT: u64 = 256;

/// Why a DAG could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading the input failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The block sink refused a block (e.g. the store failed).
    #[error("storing blocks: {0}")]
    Sink(String),
    /// The input cannot be represented the way ipfs-car would.
    #[error("{0}")]
    Unsupported(String),
}

/// A built DAG node as seen from its parent link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Root CID.
    pub cid: Cid,
    /// Bytes of file content below it (0 for directories).
    pub content_size: u64,
    /// Total encoded size of every block below and including it (the link's `Tsize`).
    pub dag_size: u64,
}

/// Receives every block the builder makes, children before parents.
pub trait BlockSink {
    /// Takes one new block.
    fn put(&mut self, block: Block) -> Result<(), BuildError>;
}

impl BlockSink for Vec<Block> {
    fn put(&mut self, block: Block) -> Result<(), BuildError> {
        self.push(block);
        Ok(())
    }
}

fn make_block(codec: u64, data: Bytes) -> Block {
    let cid = cid_v1_sha256(codec, &data);
    Block::already_verified(cid, data)
}

/// Streams file content into 1 MiB raw leaves and balanced dag-pb parents.
#[derive(Default)]
pub struct FileBuilder {
    buf: BytesMut,
    layers: Vec<Vec<Entry>>,
    leaves: u64,
}

impl FileBuilder {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends content, emitting every block that is complete.
    pub fn write(&mut self, mut data: &[u8], sink: &mut dyn BlockSink) -> Result<(), BuildError> {
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.emit_leaf(sink)?;
            }
        }
        Ok(())
    }

    fn emit_leaf(&mut self, sink: &mut dyn BlockSink) -> Result<(), BuildError> {
        let chunk = self.buf.split().freeze();
        let len = chunk.len() as u64;
        let block = make_block(RAW, chunk);
        let entry = Entry {
            cid: *block.cid(),
            content_size: len,
            dag_size: len,
        };
        sink.put(block)?;
        self.leaves += 1;
        self.push(0, entry, sink)
    }

    fn push(
        &mut self,
        level: usize,
        entry: Entry,
        sink: &mut dyn BlockSink,
    ) -> Result<(), BuildError> {
        if self.layers.len() <= level {
            self.layers.push(Vec::new());
        }
        self.layers[level].push(entry);
        if self.layers[level].len() == MAX_LINKS {
            let children = std::mem::take(&mut self.layers[level]);
            let parent = file_node(&children, sink)?;
            self.push(level + 1, parent, sink)?;
        }
        Ok(())
    }

    /// Flushes the last chunk and the partial layers; returns the file's root.
    pub fn finish(mut self, sink: &mut dyn BlockSink) -> Result<Entry, BuildError> {
        if !self.buf.is_empty() || self.leaves == 0 {
            self.emit_leaf(sink)?;
        }
        let mut level = 0;
        loop {
            let is_top = level + 1 == self.layers.len();
            let layer = std::mem::take(&mut self.layers[level]);
            if is_top && layer.len() == 1 {
                return Ok(layer[0]);
            }
            if !layer.is_empty() {
                let parent = file_node(&layer, sink)?;
                if is_top {
                    self.layers.push(Vec::new());
                }
                self.layers[level + 1].push(parent);
            }
            level += 1;
        }
    }
}

fn file_node(children: &[Entry], sink: &mut dyn BlockSink) -> Result<Entry, BuildError> {
    let content_size: u64 = children.iter().map(|c| c.content_size).sum();
    let data = Data {
        r#type: DataType::File as i32,
        filesize: Some(content_size),
        blocksizes: children.iter().map(|c| c.content_size).collect(),
        ..Default::default()
    };
    let node = PbNode {
        links: children
            .iter()
            .map(|c| PbLink {
                cid: c.cid,
                name: Some(String::new()),
                tsize: Some(c.dag_size),
            })
            .collect(),
        data: Some(Bytes::from(data.encode_to_vec())),
    };
    let block = make_block(DAG_PB, node.encode());
    let entry = Entry {
        cid: *block.cid(),
        content_size,
        dag_size: block.len() as u64 + children.iter().map(|c| c.dag_size).sum::<u64>(),
    };
    sink.put(block)?;
    Ok(entry)
}

/// Builds a UnixFS directory over named entries: a plain node, or a HAMT when it has more than
/// [`SHARD_THRESHOLD`] entries.
pub fn directory(
    mut entries: Vec<(String, Entry)>,
    sink: &mut dyn BlockSink,
) -> Result<Entry, BuildError> {
    if entries.len() > SHARD_THRESHOLD {
        let hashed = entries
            .into_iter()
            .map(|(name, e)| (hamt::hash_name(&name), name, e))
            .collect();
        return hamt_shard(hashed, 0, sink);
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let data = Data {
        r#type: DataType::Directory as i32,
        ..Default::default()
    };
    let node = PbNode {
        links: entries
            .iter()
            .map(|(name, e)| PbLink {
                cid: e.cid,
                name: Some(name.clone()),
                tsize: Some(e.dag_size),
            })
            .collect(),
        data: Some(Bytes::from(data.encode_to_vec())),
    };
    let block = make_block(DAG_PB, node.encode());
    let entry = Entry {
        cid: *block.cid(),
        content_size: 0,
        dag_size: block.len() as u64 + entries.iter().map(|(_, e)| e.dag_size).sum::<u64>(),
    };
    sink.put(block)?;
    Ok(entry)
}

/// One HAMT level: each bucket (a byte of the name's hash) holds its single entry, or a
/// sub-shard when several names share it. The result does not depend on insertion order.
fn hamt_shard(
    entries: Vec<(u64, String, Entry)>,
    depth: u32,
    sink: &mut dyn BlockSink,
) -> Result<Entry, BuildError> {
    if depth >= 8 {
        return Err(BuildError::Unsupported(
            "two names share a 64-bit HAMT hash; the directory cannot be sharded".into(),
        ));
    }
    let mut buckets: std::collections::BTreeMap<u8, Vec<(u64, String, Entry)>> = Default::default();
    for item in entries {
        let index = (item.0 >> (56 - 8 * depth)) as u8;
        buckets.entry(index).or_default().push(item);
    }
    let mut bitfield = [0u8; 32];
    let mut links = Vec::with_capacity(buckets.len());
    let mut children_size = 0;
    for (index, mut items) in buckets {
        bitfield[31 - index as usize / 8] |= 1 << (index % 8);
        let prefix = format!("{index:02X}");
        let (name, cid, size) = if items.len() == 1 {
            let (_, name, e) = items.remove(0);
            (format!("{prefix}{name}"), e.cid, e.dag_size)
        } else {
            let child = hamt_shard(items, depth + 1, sink)?;
            (prefix, child.cid, child.dag_size)
        };
        children_size += size;
        links.push(PbLink {
            cid,
            name: Some(name),
            tsize: Some(size),
        });
    }
    let first = bitfield
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bitfield.len());
    let data = Data {
        r#type: DataType::HamtShard as i32,
        data: Some(Bytes::copy_from_slice(&bitfield[first..])),
        hash_type: Some(hamt::MURMUR3_X64_64),
        fanout: Some(HAMT_FANOUT),
        ..Default::default()
    };
    let node = PbNode {
        links,
        data: Some(Bytes::from(data.encode_to_vec())),
    };
    let block = make_block(DAG_PB, node.encode());
    let entry = Entry {
        cid: *block.cid(),
        content_size: 0,
        dag_size: block.len() as u64 + children_size,
    };
    sink.put(block)?;
    Ok(entry)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Chunks one file from disk.
pub fn add_file(path: &Path, sink: &mut dyn BlockSink) -> Result<Entry, BuildError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut builder = FileBuilder::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        builder.write(&buf[..n], sink)?;
    }
    builder.finish(sink)
}

/// Builds a directory tree from disk. Hidden entries (dot files) are skipped unless `hidden`,
/// and directories that hold no files are left out, as `ipfs-car pack` does. `None` for a
/// directory with no files in it.
pub fn add_dir(
    path: &Path,
    hidden: bool,
    sink: &mut dyn BlockSink,
) -> Result<Option<Entry>, BuildError> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(path).map_err(io_err(path))? {
        let item = item.map_err(io_err(path))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !hidden && name.starts_with('.') {
            continue;
        }
        names.push(name);
    }
    names.sort();
    let mut entries = Vec::new();
    for name in names {
        let child = path.join(&name);
        if let Some(entry) = add_path(&child, hidden, sink)? {
            entries.push((name, entry));
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    directory(entries, sink).map(Some)
}

/// A file or a directory, following symbolic links.
pub fn add_path(
    path: &Path,
    hidden: bool,
    sink: &mut dyn BlockSink,
) -> Result<Option<Entry>, BuildError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        add_dir(path, hidden, sink)
    } else {
        add_file(path, sink).map(Some)
    }
}

/// Bytes of file content [`add_paths`] would read under `paths` (the same files: symbolic
/// links followed, hidden entries skipped unless `hidden`), found from metadata alone, so
/// progress can be shown as a share of it.
pub fn input_size(paths: &[&Path], hidden: bool) -> Result<u64, BuildError> {
    fn walk(path: &Path, hidden: bool) -> Result<u64, BuildError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_dir() {
            return Ok(meta.len());
        }
        let mut total = 0;
        for item in std::fs::read_dir(path).map_err(io_err(path))? {
            let item = item.map_err(io_err(path))?;
            if !hidden && item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            total += walk(&item.path(), hidden)?;
        }
        Ok(total)
    }
    paths.iter().map(|p| walk(p, hidden)).sum()
}

/// What `cidgate add PATH...` builds, as `ipfs-car pack` would: one file alone (`--no-wrap`), one
/// directory as itself, several paths wrapped in a directory named by their base names.
pub fn add_paths(
    paths: &[&Path],
    hidden: bool,
    sink: &mut dyn BlockSink,
) -> Result<Entry, BuildError> {
    let empty = || BuildError::Unsupported("nothing to add: no files under the given paths".into());
    if let [single] = paths {
        return add_path(single, hidden, sink)?.ok_or_else(empty);
    }
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BuildError::Unsupported(format!("{} has no file name", p.display())))?;
        if entries.iter().any(|(n, _)| *n == name) {
            return Err(BuildError::Unsupported(format!(
                "two paths are named {name:?}"
            )));
        }
        if let Some(e) = add_path(p, hidden, sink)? {
            entries.push((name, e));
        }
    }
    if entries.is_empty() {
        return Err(empty());
    }
    directory(entries, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(data: &[u8]) -> (Entry, Vec<Block>) {
        let mut blocks = Vec::new();
        let mut b = FileBuilder::new();
        b.write(data, &mut blocks).unwrap();
        (b.finish(&mut blocks).unwrap(), blocks)
    }

    #[test]
    fn small_file_is_its_raw_leaf() {
        let (e, blocks) = build(b"hello\n");
        // `ipfs-car pack --no-wrap` of "hello\n".
        assert_eq!(
            e.cid.to_string(),
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
        );
        assert_eq!(blocks.len(), 1);
    }

    #[test]
    fn empty_file_is_the_empty_raw_block() {
        let (e, _) = build(b"");
        assert_eq!(
            e.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn multi_chunk_file_has_one_parent_with_blocksizes() {
        let data = vec![7u8; CHUNK_SIZE * 2 + 10];
        let (e, blocks) = build(&data);
        assert_eq!(blocks.len(), 4);
        assert_eq!(e.content_size, data.len() as u64);
        assert_eq!(e.cid.codec(), DAG_PB);
        let root = blocks.last().unwrap();
        match super::super::unixfs::FsNode::decode(DAG_PB, root.data()).unwrap() {
            super::super::unixfs::FsNode::File { size, children, .. } => {
                assert_eq!(size, data.len() as u64);
                assert_eq!(
                    children.iter().map(|c| c.1).collect::<Vec<_>>(),
                    vec![1 << 20, 1 << 20, 10]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_directories_become_hamts_that_lookups_can_walk() {
        let mut blocks = Vec::new();
        let leaf = Entry {
            cid: cid_v1_sha256(RAW, b"x"),
            content_size: 1,
            dag_size: 1,
        };
        let entries: Vec<(String, Entry)> = (0..SHARD_THRESHOLD + 1)
            .map(|i| (format!("f{i}.txt"), leaf))
            .collect();
        let root = directory(entries, &mut blocks).unwrap();
        let root_block = blocks.iter().find(|b| *b.cid() == root.cid).unwrap();
        let node = super::super::unixfs::FsNode::decode(DAG_PB, root_block.data()).unwrap();
        let super::super::unixfs::FsNode::HamtShard {
            links,
            fanout,
            hash_type,
        } = node
        else {
            panic!("expected a HAMT")
        };
        assert_eq!((fanout, hash_type), (256, hamt::MURMUR3_X64_64));
        // Every name is found by hashing it, through sub-shards where buckets collide.
        for i in [0, 500, 1000] {
            let name = format!("f{i}.txt");
            let mut links = links.clone();
            let mut depth = 0;
            loop {
                match hamt::step(&links, 256, hamt::MURMUR3_X64_64, &name, depth).unwrap() {
                    hamt::ShardStep::Found(l) => {
                        assert_eq!(l.cid, leaf.cid);
                        break;
                    }
                    hamt::ShardStep::Descend(l) => {
                        let b = blocks.iter().find(|b| *b.cid() == l.cid).unwrap();
                        let super::super::unixfs::FsNode::HamtShard { links: next, .. } =
                            super::super::unixfs::FsNode::decode(DAG_PB, b.data()).unwrap()
                        else {
                            panic!()
                        };
                        links = next;
                        depth += 1;
                    }
                    hamt::ShardStep::Absent => panic!("{name} not found"),
                }
            }
        }
    }

    #[test]
    fn layers_grow_past_max_links() {
        // Small chunks are not reachable through the public API, so drive the layers directly.
        let mut blocks = Vec::new();
        let mut b = FileBuilder::new();
        let leaf = Entry {
            cid: cid_v1_sha256(RAW, b"x"),
            content_size: 1,
            dag_size: 1,
        };
        for _ in 0..MAX_LINKS + 1 {
            b.leaves += 1;
            b.push(0, leaf, &mut blocks).unwrap();
        }
        let root = b.finish(&mut blocks).unwrap();
        assert_eq!(root.content_size, MAX_LINKS as u64 + 1);
        // One full node, one node over the last leaf, one root over both.
        assert_eq!(blocks.len(), 3);
    }
}
