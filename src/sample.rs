//! The bundled sample site (`config/sample`), added to a fresh store so a new gateway has
//! something to serve: a page, a picture, a file of several blocks and a subdirectory (which
//! the gateway lists, since it has no index.html).

use crate::ipld::builder::{directory, BuildError, Entry, FileBuilder};
use crate::ipld::Block;

/// The files of `config/sample`, by path inside the site.
const FILES: &[(&str, &[u8])] = &[
    (
        "cidgate.png",
        include_bytes!("../config/sample/cidgate.png"),
    ),
    (
        "docs/tiers.txt",
        include_bytes!("../config/sample/docs/tiers.txt"),
    ),
    (
        "docs/verification.md",
        include_bytes!("../config/sample/docs/verification.md"),
    ),
    ("index.html", include_bytes!("../config/sample/index.html")),
    (
        "verified-lines.txt",
        include_bytes!("../config/sample/verified-lines.txt"),
    ),
];

fn file(data: &[u8], blocks: &mut Vec<Block>) -> Result<Entry, BuildError> {
    let mut f = FileBuilder::new();
    f.write(data, blocks)?;
    f.finish(blocks)
}

/// Builds the sample DAG; returns its root and every block.
pub fn build() -> Result<(Entry, Vec<Block>), BuildError> {
    let mut blocks = Vec::new();
    let mut entries = Vec::new();
    let mut docs = Vec::new();
    for (path, data) in FILES {
        match path.split_once('/') {
            Some(("docs", name)) => docs.push((name.to_string(), file(data, &mut blocks)?)),
            Some(_) => {
                return Err(BuildError::Unsupported(format!(
                    "sample file {path} is outside docs/"
                )))
            }
            None => entries.push((path.to_string(), file(data, &mut blocks)?)),
        }
    }
    entries.push(("docs".to_string(), directory(docs, &mut blocks)?));
    let root = directory(entries, &mut blocks)?;
    Ok((root, blocks))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_has_a_multi_block_file_and_a_directory_without_index() {
        let (root, blocks) = super::build().unwrap();
        assert_eq!(root.cid.codec(), crate::ipld::DAG_PB);
        assert!(
            blocks.len() >= 9,
            "html, png, two leaves + parent, two docs + docs directory, root directory"
        );
    }

    /// The sample is what `cidgate add config/sample` (and `ipfs-car pack`) makes of the folder.
    #[test]
    fn sample_is_the_folder_as_add_builds_it() {
        let (root, _) = super::build().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample");
        let mut blocks = Vec::new();
        let added = crate::ipld::builder::add_paths(&[dir.as_path()], false, &mut blocks).unwrap();
        assert_eq!(added.cid, root.cid);
    }
}
