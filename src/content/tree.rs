//! A UnixFS tree as a sequence of entries (directories, files, symlinks), depth-first in
//! directory order: what an archive of a directory holds. Entry names that would lead outside
//! the tree's root, and symlinks that point outside it, end the walk with an error.

use std::sync::Arc;

use cid::Cid;

use super::source::BlockSource;
use super::{list_directory, ContentError};
use crate::ipld::unixfs::FsNode;
use crate::ipld::Block;

/// Why an entry was refused: the reference gateway's words, which clients match on.
pub const OUTSIDE_ROOT: &str =
    "relative UnixFS paths outside the root are now allowed, use CAR instead";

/// One entry of a tree; `path` is below the root (empty for the root itself).
#[derive(Debug)]
pub enum TreeEntry {
    /// A directory (plain or HAMT-sharded).
    Directory {
        /// Components below the root.
        path: Vec<String>,
    },
    /// A file of `size` bytes whose root block is `block`.
    File {
        /// Components below the root.
        path: Vec<String>,
        /// Content bytes.
        size: u64,
        /// The file's root block (read its bytes with `unixfs_reader`).
        block: Block,
    },
    /// A symbolic link to `target`, which stays inside the tree.
    Symlink {
        /// Components below the root.
        path: Vec<String>,
        /// Where it points, relative.
        target: String,
    },
}

/// A depth-first walk over a UnixFS tree. Children are read when their turn comes, so a wide
/// directory costs a CID per entry, not a block.
pub struct TreeWalk {
    src: Arc<dyn BlockSource>,
    first: Option<Block>,
    /// (components below the root, CID), the next entry on top.
    stack: Vec<(Vec<String>, Cid)>,
}

impl TreeWalk {
    /// A walk of the tree whose root block is `root`; refused when that block is not UnixFS.
    pub fn new(src: Arc<dyn BlockSource>, root: Block) -> Result<Self, ContentError> {
        let cid = *root.cid();
        FsNode::decode(cid.codec(), root.data()).map_err(|e| ContentError::from((cid, e)))?;
        Ok(Self {
            src,
            first: Some(root),
            stack: vec![(Vec::new(), cid)],
        })
    }

    /// The next entry, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<TreeEntry>, ContentError> {
        let Some((path, cid)) = self.stack.pop() else {
            return Ok(None);
        };
        let block = match self.first.take() {
            Some(b) => b,
            None => self.src.get(&cid).await?,
        };
        Ok(Some(
            match FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))? {
                FsNode::File { size, .. } => TreeEntry::File { path, size, block },
                FsNode::Symlink { target } => {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    if !safe_link(&target, path.len().saturating_sub(1)) {
                        return Err(ContentError::Unsupported(OUTSIDE_ROOT.into()));
                    }
                    TreeEntry::Symlink { path, target }
                }
                node @ (FsNode::Directory { .. } | FsNode::HamtShard { .. }) => {
                    let entries = list_directory(self.src.as_ref(), node).await?;
                    // Pushed in reverse so entries come out in directory order.
                    for e in entries.into_iter().rev() {
                        let Some(child) = join_inside(&path, &e.name) else {
                            return Err(ContentError::Unsupported(OUTSIDE_ROOT.into()));
                        };
                        self.stack.push((child, e.cid));
                    }
                    TreeEntry::Directory { path }
                }
            },
        ))
    }
}

/// The path components of entry `name` inside the directory at `parent`, or `None` when the
/// name leads outside the root. Names may hold relative segments (`../file` inside a
/// subdirectory) as long as the result stays inside.
fn join_inside(parent: &[String], name: &str) -> Option<Vec<String>> {
    if name.is_empty() || name.contains('\0') || name.starts_with('/') {
        return None;
    }
    let mut out = parent.to_vec();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p.to_string()),
        }
    }
    (!out.is_empty() && out != parent).then_some(out)
}

/// Whether a symlink target stays inside the tree when resolved from `dir_depth` levels deep.
fn safe_link(target: &str, dir_depth: usize) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth = dir_depth as isize;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::source::MemorySource;
    use crate::ipld::builder::{directory, FileBuilder};

    #[test]
    fn names_and_links_that_escape_are_refused() {
        let dir = vec!["foobar".to_string(), "directory".to_string()];
        assert_eq!(
            join_inside(&dir, "../file").unwrap(),
            vec!["foobar", "file"]
        );
        assert_eq!(join_inside(&[], "a.txt").unwrap(), vec!["a.txt"]);
        for bad in ["", ".", "..", "../x", "/abs", "x\0"] {
            assert!(join_inside(&[], bad).is_none(), "{bad:?}");
        }
        assert!(safe_link("a/b", 0));
        assert!(safe_link("../x", 1));
        assert!(!safe_link("../x", 0));
        assert!(!safe_link("/etc/passwd", 3));
        assert!(!safe_link("a/../../b", 0));
    }

    #[tokio::test]
    async fn entries_come_depth_first_in_directory_order() {
        let mut blocks = Vec::new();
        let file = |bytes: &[u8], blocks: &mut Vec<Block>| {
            let mut f = FileBuilder::new();
            f.write(bytes, blocks).unwrap();
            f.finish(blocks).unwrap()
        };
        let a = file(b"aaa", &mut blocks);
        let c = file(b"c", &mut blocks);
        let sub = directory(vec![("c.txt".into(), c)], &mut blocks).unwrap();
        let root = directory(vec![("a.txt".into(), a), ("sub".into(), sub)], &mut blocks).unwrap();
        let src = Arc::new(MemorySource::new(blocks));
        let root_block = src.get(&root.cid).await.unwrap();
        let mut walk = TreeWalk::new(src, root_block).unwrap();
        let mut seen = Vec::new();
        while let Some(entry) = walk.next().await.unwrap() {
            seen.push(match entry {
                TreeEntry::Directory { path } => format!("{}/", path.join("/")),
                TreeEntry::File { path, size, .. } => format!("{} {size}", path.join("/")),
                TreeEntry::Symlink { path, target } => format!("{} -> {target}", path.join("/")),
            });
        }
        assert_eq!(seen, ["/", "a.txt 3", "sub/", "sub/c.txt 1"]);
    }
}
