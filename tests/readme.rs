//! The README's walk-through names the sample site's root CID, the CID of its page (as an
//! Etag) and a directory to list; they must stay true.

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn readme_names_the_current_sample_root() {
    let (root, _) = cidgate::sample::build().unwrap();
    assert!(
        readme().contains(&root.cid.to_string()),
        "README.md must use the sample root {} (config/sample changed?)",
        root.cid
    );
}

/// The `If-None-Match` example uses the Etag the gateway gives the sample's index.html: the
/// CID of that file.
#[test]
fn readme_etag_is_the_sample_page_cid() {
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample/index.html");
    let mut blocks = Vec::new();
    let cid = cidgate::ipld::builder::add_file(&page, &mut blocks)
        .unwrap()
        .cid;
    assert!(
        readme().contains(&format!("If-None-Match: \"{cid}\"")),
        "README.md must use the Etag {cid} of config/sample/index.html"
    );
}

/// The listing example asks for `$ROOT/docs/`: a directory of the sample without an
/// index.html, so the gateway answers with a listing rather than a page.
#[test]
fn readme_listing_example_is_a_directory_without_index() {
    assert!(readme().contains("\"$GW/ipfs/$ROOT/docs/\""));
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample/docs");
    assert!(docs.is_dir());
    assert!(!docs.join("index.html").exists());
    assert!(std::fs::read_dir(&docs).unwrap().count() >= 2);
}
