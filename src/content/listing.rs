//! One page of a UnixFS directory listing: a plain directory in name order, a HAMT-sharded one
//! in shard order, read only as far as the page goes.
//!
//! A HAMT keeps its entries in the order of their names' hashes, so a page of a sharded
//! directory is a stretch of a depth-first walk over its shards, and the cursor (the last name
//! of the previous page) says where to start again: hashing it gives its bucket at every
//! level, so the walk skips every shard before that path without fetching it. The first page
//! of a 100 000-entry directory reads the root shard and the few shards its entries are in,
//! not the ~600 shards of the whole directory.

use super::source::BlockSource;
use crate::ipld::dagpb::PbLink;
use crate::ipld::hamt;
use crate::ipld::unixfs::FsNode;

use super::entity::Directory;
use super::{fetch, ContentError, DirEntry};

/// One page of a directory.
#[derive(Clone, Debug, Default)]
pub struct DirPage {
    /// The entries of the page, in listing order.
    pub entries: Vec<DirEntry>,
    /// Entries follow this page (the next page starts after the last entry's name).
    pub more: bool,
    /// How many entries the whole directory has, when known without reading it all (a plain
    /// directory; not a HAMT).
    pub total: Option<usize>,
}

/// Up to `limit` entries of the directory `node` that come after the entry named `after`
/// (from the first entry without one). A plain directory lists in byte order of names, a HAMT
/// in shard order; either way `after` set to the last name of a page gives the next page.
pub async fn list_page(
    src: &dyn BlockSource,
    dir: Directory,
    after: Option<&str>,
    limit: usize,
) -> Result<DirPage, ContentError> {
    match dir.0 {
        FsNode::Directory { links } => Ok(plain_page(links, after, limit)),
        FsNode::HamtShard {
            links,
            fanout,
            hash_type,
        } => hamt_page(src, links, fanout, hash_type, after, limit).await,
        _ => Ok(DirPage::default()),
    }
}

fn entry(link: PbLink, name: String) -> DirEntry {
    DirEntry {
        name,
        cid: link.cid,
        size: link.tsize,
    }
}

fn plain_page(links: Vec<PbLink>, after: Option<&str>, limit: usize) -> DirPage {
    let total = links.len();
    let mut all: Vec<DirEntry> = links
        .into_iter()
        .map(|l| {
            let name = l.name.clone().unwrap_or_default();
            entry(l, name)
        })
        .filter(|e| after.is_none_or(|a| e.name.as_bytes() > a.as_bytes()))
        .collect();
    all.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let more = all.len() > limit;
    all.truncate(limit);
    DirPage {
        entries: all,
        more,
        total: Some(total),
    }
}

/// One shard being walked: its remaining links, its depth, and whether it lies on the path of
/// the cursor's hash (where links before the cursor's bucket are skipped).
struct Frame {
    links: std::vec::IntoIter<PbLink>,
    depth: u32,
    on_cursor_path: bool,
}

async fn hamt_page(
    src: &dyn BlockSource,
    links: Vec<PbLink>,
    fanout: u64,
    hash_type: u64,
    after: Option<&str>,
    limit: usize,
) -> Result<DirPage, ContentError> {
    let malformed = |e: &dyn std::fmt::Display| ContentError::Unsupported(e.to_string());
    if fanout < 2 || !fanout.is_power_of_two() {
        return Err(malformed(&hamt::HamtError::BadFanout(fanout)));
    }
    let bits = fanout.trailing_zeros();
    let width = hamt::prefix_len(fanout);
    let cursor = match after {
        Some(_) if hash_type != hamt::MURMUR3_X64_64 => {
            return Err(malformed(&hamt::HamtError::UnsupportedHash(hash_type)));
        }
        Some(name) => Some((hamt::hash_name(name), name)),
        None => None,
    };
    // The cursor's bucket at `depth`, or `None` past the 64 bits of its hash.
    let bucket_of = |hash: u64, depth: u32| -> Option<u64> {
        let used = bits.checked_mul(depth.checked_add(1)?)?;
        (used <= 64).then(|| (hash >> (64 - used)) & (fanout - 1))
    };
    let mut out = Vec::with_capacity(limit.min(4096) + 1);
    let mut stack = vec![Frame {
        links: links.into_iter(),
        depth: 0,
        on_cursor_path: cursor.is_some(),
    }];
    // One entry past the page tells whether another page follows.
    while out.len() <= limit {
        let Some(frame) = stack.last_mut() else { break };
        let Some(link) = frame.links.next() else {
            stack.pop();
            continue;
        };
        let (depth, on_path) = (frame.depth, frame.on_cursor_path);
        let link_name = link.name_str();
        let index = link_name
            .get(..width)
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .ok_or_else(|| ContentError::Malformed {
                cid: link.cid,
                reason: format!("HAMT link name {link_name:?} has no bucket prefix"),
            })?;
        let name = hamt::entry_name(link_name, fanout).map(str::to_string);
        let mut descend_on_path = false;
        if let (true, Some((hash, cursor_name))) = (on_path, cursor) {
            match bucket_of(hash, depth) {
                Some(b) if index < b => continue,
                Some(b) if index == b => match &name {
                    // The cursor itself: the page starts after it.
                    Some(n) if n == cursor_name => continue,
                    Some(_) => {}
                    None => descend_on_path = true,
                },
                _ => {}
            }
        }
        match name {
            Some(name) => out.push(entry(link, name)),
            None => {
                let block = fetch(src, &link.cid).await?;
                match FsNode::decode(link.cid.codec(), block.data()).map_err(|e| (link.cid, e))? {
                    FsNode::HamtShard { links, .. } => stack.push(Frame {
                        links: links.into_iter(),
                        depth: depth + 1,
                        on_cursor_path: descend_on_path,
                    }),
                    _ => {
                        return Err(ContentError::Malformed {
                            cid: link.cid,
                            reason: "HAMT link to a non-shard node".into(),
                        })
                    }
                }
            }
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok(DirPage {
        entries: out,
        more,
        total: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::builder::{self, Entry};
    use crate::ipld::Block;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Blocks in memory, counting reads.
    struct Blocks {
        blocks: HashMap<cid::Cid, Block>,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl BlockSource for Blocks {
        async fn get(&self, cid: &cid::Cid) -> Result<Block, crate::content::source::TierError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.blocks
                .get(cid)
                .cloned()
                .ok_or(crate::content::source::TierError::NotFound(*cid))
        }

        async fn has(&self, cid: &cid::Cid) -> Result<bool, crate::content::source::TierError> {
            Ok(self.blocks.contains_key(cid))
        }

        fn name(&self) -> &'static str {
            "memory"
        }
    }

    fn dir(n: usize) -> (Blocks, FsNode, usize) {
        let mut sink: Vec<Block> = Vec::new();
        let mut fb = builder::FileBuilder::new();
        fb.write(b"x", &mut sink).unwrap();
        let file = fb.finish(&mut sink).unwrap();
        let entries: Vec<(String, Entry)> =
            (0..n).map(|i| (format!("file-{i}.txt"), file)).collect();
        let root = builder::directory(entries, &mut sink).unwrap();
        let shards = sink.len();
        let blocks: HashMap<_, _> = sink.into_iter().map(|b| (*b.cid(), b)).collect();
        let node = FsNode::decode(root.cid.codec(), blocks[&root.cid].data()).unwrap();
        let src = Blocks {
            blocks,
            reads: AtomicUsize::new(0),
        };
        (src, node, shards)
    }

    async fn all_pages(src: &Blocks, node: &FsNode, limit: usize) -> Vec<String> {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = list_page(src, Directory(node.clone()), after.as_deref(), limit)
                .await
                .unwrap();
            assert!(page.entries.len() <= limit);
            names.extend(page.entries.iter().map(|e| e.name.clone()));
            if !page.more {
                return names;
            }
            after = page.entries.last().map(|e| e.name.clone());
        }
    }

    #[tokio::test]
    async fn pages_of_a_plain_directory_go_in_name_order() {
        let (src, node, _) = dir(50);
        assert!(matches!(node, FsNode::Directory { .. }));
        let first = list_page(&src, Directory(node.clone()), None, 20)
            .await
            .unwrap();
        assert_eq!(
            (first.entries.len(), first.more, first.total),
            (20, true, Some(50))
        );
        let names = all_pages(&src, &node, 20).await;
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 50);
    }

    #[tokio::test]
    async fn pages_of_a_hamt_cover_it_once_reading_only_what_they_list() {
        let (src, node, blocks) = dir(5000);
        assert!(matches!(node, FsNode::HamtShard { .. }));
        let page = list_page(&src, Directory(node.clone()), None, 100)
            .await
            .unwrap();
        assert_eq!(
            (page.entries.len(), page.more, page.total),
            (100, true, None)
        );
        let reads = src.reads.swap(0, Ordering::Relaxed);
        assert!(reads < blocks / 4, "{reads} of {blocks} blocks read");
        // Every entry exactly once, whatever the page size.
        for limit in [1, 7, 100, 5000, 6000] {
            let mut names = all_pages(&src, &node, limit).await;
            assert_eq!(names.len(), 5000, "limit {limit}");
            names.sort();
            names.dedup();
            assert_eq!(names.len(), 5000, "limit {limit}");
        }
        // A page after a cursor reads the shards on the cursor's path, not those before it.
        let last = list_page(&src, Directory(node.clone()), None, 4990)
            .await
            .unwrap();
        src.reads.store(0, Ordering::Relaxed);
        let cursor = last.entries.last().unwrap().name.clone();
        let tail = list_page(&src, Directory(node.clone()), Some(&cursor), 100)
            .await
            .unwrap();
        assert_eq!((tail.entries.len(), tail.more), (10, false));
        assert!(src.reads.load(Ordering::Relaxed) < blocks / 4);
        // A cursor that names nothing still gives the entries after where it would be.
        let page = list_page(&src, Directory(node), Some("no such name"), 10)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 10);
    }
}
