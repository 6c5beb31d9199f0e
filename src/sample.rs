//! The bundled sample site (`config/sample`), added to a fresh store so a new gateway has
//! something to serve.

use crate::ipld::builder::{directory, BuildError, Entry, FileBuilder};
use crate::ipld::Block;

const FILES: &[(&str, &[u8])] = &[
    (
        "cidgate.png",
        include_bytes!("../config/sample/cidgate.png"),
    ),
    ("index.html", include_bytes!("../config/sample/index.html")),
    (
        "verified-lines.txt",
        include_bytes!("../config/sample/verified-lines.txt"),
    ),
];

/// Builds the sample DAG; returns its root and every block.
pub fn build() -> Result<(Entry, Vec<Block>), BuildError> {
    let mut blocks = Vec::new();
    let mut entries = Vec::new();
    for (name, data) in FILES {
        let mut f = FileBuilder::new();
        f.write(data, &mut blocks)?;
        entries.push((name.to_string(), f.finish(&mut blocks)?));
    }
    let root = directory(entries, &mut blocks)?;
    Ok((root, blocks))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_has_a_multi_block_file() {
        let (root, blocks) = super::build().unwrap();
        assert_eq!(root.cid.codec(), crate::ipld::DAG_PB);
        assert!(
            blocks.len() >= 6,
            "html, png, two leaves + parent, directory"
        );
    }
}
