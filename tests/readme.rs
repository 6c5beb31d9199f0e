//! The README's walk-through names the sample site's root CID; it must stay true.

#[test]
fn readme_names_the_current_sample_root() {
    let (root, _) = cidgate::sample::build().unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&root.cid.to_string()),
        "README.md must use the sample root {} (config/sample changed?)",
        root.cid
    );
}
