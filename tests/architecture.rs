//! The layers of docs/architecture.md, checked on the source: a lower layer never names a
//! module of a layer above it. (Layers are modules of one crate, so the compiler alone would
//! accept such an import; this test refuses it.)

use std::path::{Path, PathBuf};

/// Top-level modules that sit above content and blocks: the listeners, the HTTP API, the
/// wiring and the commands.
const TOP: &[&str] = &[
    "app",
    "admin",
    "admin_client",
    "cli",
    "gateway",
    "popularity",
    "retrievability",
    "server",
];

/// A layer and what it may name: only `Allowed` modules (besides itself), or anything but the
/// `Forbidden` ones.
enum Rule {
    Allowed(&'static [&'static str]),
    Forbidden(&'static [&'static str]),
}

/// Each layer checked, with its rule.
const LAYERS: &[(&str, Rule)] = &[
    // Blocks, codecs, UnixFS, CAR: knows nothing else of cidgate.
    ("ipld", Rule::Allowed(&[])),
    // Pure parsing of what operators write: below everything.
    ("dns_syntax", Rule::Allowed(&[])),
    // HTTP/1.1 heads as hyper writes them, for the server and the response cache alike.
    ("http1", Rule::Allowed(&[])),
    // The configuration is read by every layer: it names none of them (what it validates with
    // is pure parsing).
    ("config", Rule::Allowed(&["dns_syntax"])),
    // Metrics, logs and traces serve every layer; they name none but their configuration (what
    // a layer's figures are is published by the layer above it, e.g. the admin API's scrape).
    ("telemetry", Rule::Allowed(&["config"])),
    // Resolution, selection, listings, DAG reads through the `BlockSource` it declares.
    ("content", Rule::Allowed(&["ipld"])),
    // Where blocks come from: below everything that speaks HTTP or decides what to keep.
    ("tiers", Rule::Forbidden(TOP)),
    // Names: below the gateway that serves them.
    ("ipns", Rule::Forbidden(TOP)),
    ("denylist", Rule::Forbidden(TOP)),
    // The gateway speaks HTTP over content and tiers; the server runs it without knowing it.
    (
        "gateway",
        Rule::Forbidden(&["app", "admin", "admin_client", "cli", "server"]),
    ),
    (
        "server",
        Rule::Forbidden(&[
            "app",
            "admin",
            "gateway",
            "tiers",
            "content",
            "ipld",
            "ipns",
            "popularity",
        ]),
    ),
];

/// The Rust files of the module at `dir`: `dir.rs` for a module in one file, else the files
/// below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let file = dir.with_extension("rs");
    if file.is_file() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules a file names through `crate::` (plain paths and `use crate::{…}`
/// groups), outside comments.
fn named_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first segment of each path in the group is a top-level module.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let first: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() {
                    out.push(first);
                }
            }
        } else {
            let first: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(first);
        }
    }
    out
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, rule) in LAYERS {
        let files = sources(&src.join(layer));
        assert!(!files.is_empty(), "no sources for layer {layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for module in named_modules(&text) {
                let refused = module != *layer
                    && match rule {
                        Rule::Allowed(ok) => !ok.contains(&module.as_str()),
                        Rule::Forbidden(no) => no.contains(&module.as_str()),
                    };
                if refused {
                    violations.push(format!(
                        "{}: names crate::{module}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_check_sees_plain_and_grouped_imports() {
    let text = "use crate::tiers::BlockSource;\n// crate::gateway in a comment\nuse crate::{ipld::Block, app};\nlet x = crate::config::Config::default();";
    assert_eq!(named_modules(text), ["tiers", "ipld", "app", "config"]);
}
