//! The CLI: import (verification, all-or-nothing, through a running server), add, export, help.

mod common;

use common::{cidgate, client, fixture, parse_car, Server};

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["import", "--help"],
        vec!["add", "--help"],
        vec!["export", "--help"],
    ] {
        let out = cidgate(dir.path(), &cmd);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
    let out = cidgate(dir.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn incomplete_dag_imports_what_it_has_and_stays_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let car = fixture("trustless_gateway_car/file-3k-and-3-blocks-missing-block.car");
    let out = cidgate(dir.path(), &["import", car.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk INCOMPLETE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("QmSNLTo6Wv9dfroVaw7MFYjLqf9ho7PKrgsjdzYDtv8h1W"),
        "names the missing block"
    );
}

fn corrupt_copy(src: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // inside the last block's data
    let p = dir.join("corrupt.car");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_bad_block_or_a_malformed_car_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("trustless_gateway_car/subdir-with-two-single-block-files.car");
    let root = "bafybeietjm63oynimmv5yyqay33nui4y4wx6u3peezwetxgiwvfmelutzu";
    let bad = corrupt_copy(&good, dir.path());
    let store = dir.path().join("store");
    let out = cidgate(&store, &["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not hash"));
    // The root block came before the bad one and was rolled back.
    let out = cidgate(
        &store,
        &[
            "export",
            root,
            "-o",
            dir.path().join("x.car").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());

    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.car");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let out = cidgate(&store, &["import", truncated.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let garbage = dir.path().join("garbage.car");
    std::fs::write(&garbage, b"this is not a CAR file at all").unwrap();
    assert_eq!(
        cidgate(&store, &["import", garbage.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );

    // The good file still imports and exports afterwards.
    assert!(cidgate(&store, &["import", good.to_str().unwrap()])
        .status
        .success());
    let out_car = dir.path().join("out.car");
    assert!(
        cidgate(&store, &["export", root, "-o", out_car.to_str().unwrap()])
            .status
            .success()
    );
    let car = parse_car(&std::fs::read(&out_car).unwrap());
    assert_eq!(car.roots[0].to_string(), root);
    assert_eq!(car.blocks.len(), 4);
}

#[tokio::test]
async fn import_goes_through_a_running_server() {
    let s = Server::start(&[]);
    let car = fixture("gateway-raw-block.car");
    let out = cidgate(s.dir.path(), &["import", car.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("complete, pinned"));
    let resp = client()
        .get(format!(
            "{}/ipfs/bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq?format=raw",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A bad CAR sent through the server is refused as a whole too.
    let bad = corrupt_copy(
        &fixture("trustless_gateway_car/subdir-with-two-single-block-files.car"),
        s.dir.path(),
    );
    let out = cidgate(s.dir.path(), &["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let resp = client()
        .get(format!(
            "{}/ipfs/bafybeietjm63oynimmv5yyqay33nui4y4wx6u3peezwetxgiwvfmelutzu?format=raw",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let pins = client()
        .get(format!("{}/admin/pins", s.admin))
        .send()
        .await
        .unwrap();
    let pins: serde_json::Value = serde_json::from_slice(&pins.bytes().await.unwrap()).unwrap();
    assert_eq!(pins["store"].as_array().unwrap().len(), 1);
    assert_eq!(pins["target"], "embedded");
}

#[test]
fn add_then_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("site");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join(".hidden"), b"secret").unwrap();
    let big: Vec<u8> = (0..(2 * 1024 * 1024 + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    let store = dir.path().join("store");
    let out = cidgate(&store, &["add", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let car_path = dir.path().join("site.car");
    assert!(
        cidgate(&store, &["export", &root, "-o", car_path.to_str().unwrap()])
            .status
            .success()
    );
    let car = parse_car(&std::fs::read(&car_path).unwrap());
    assert_eq!(car.roots[0].to_string(), root);
    // root dir, a.txt, sub, big.bin root + 3 leaves; the hidden file is left out.
    assert_eq!(car.blocks.len(), 7);
    assert!(!car.blocks.iter().any(|(_, d)| &d[..] == b"secret"));
    let out = cidgate(&store, &["add", "--hidden", src.to_str().unwrap()]);
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), root);
}

mod completeness {
    use super::common::{cidgate, client, Server};
    use bytes::Bytes;
    use cidgate::ipld::car::{frame_prefix, header};
    use cidgate::ipld::dagpb::{PbLink, PbNode};
    use cidgate::ipld::{cid_v1_sha256, Cid, DAG_PB, RAW};

    fn node(links: &[Cid]) -> (Cid, Bytes) {
        let data = PbNode {
            links: links
                .iter()
                .enumerate()
                .map(|(i, c)| PbLink {
                    cid: *c,
                    name: Some(format!("f{i}")),
                    tsize: Some(4),
                })
                .collect(),
            data: Some(Bytes::from_static(&[8, 1])),
        }
        .encode();
        (cid_v1_sha256(DAG_PB, &data), data)
    }

    fn car(root: Cid, blocks: &[&(Cid, Bytes)]) -> Vec<u8> {
        let mut out = header(&[root]).unwrap().to_vec();
        for (c, d) in blocks {
            out.extend_from_slice(&frame_prefix(c, d.len()));
            out.extend_from_slice(d);
        }
        out
    }

    /// A dag-pb root whose hash is right but whose bytes are no protobuf, an undecodable inner
    /// node and a missing child: each imports its blocks, stays unpinned, and says why; a CAR
    /// of the undecodable root is refused before any 200.
    #[tokio::test]
    async fn undecodable_or_incomplete_dags_are_never_pinned_as_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = store_dir.path().to_path_buf();
        let leaf = (cid_v1_sha256(RAW, b"leaf"), Bytes::from_static(b"leaf"));
        let bad_root = (
            cid_v1_sha256(DAG_PB, b"not protobuf: root"),
            Bytes::from_static(b"not protobuf: root"),
        );
        let bad_inner = (
            cid_v1_sha256(DAG_PB, b"not protobuf: inner"),
            Bytes::from_static(b"not protobuf: inner"),
        );
        let inner_root = node(&[leaf.0, bad_inner.0]);
        let absent = cid_v1_sha256(RAW, b"absent");
        let missing_root = node(&[leaf.0, absent]);
        let cases = [
            (
                "bad-root.car",
                car(bad_root.0, &[&bad_root]),
                bad_root.0,
                "does not decode",
            ),
            (
                "bad-inner.car",
                car(inner_root.0, &[&inner_root, &leaf, &bad_inner]),
                bad_inner.0,
                "does not decode",
            ),
            (
                "missing.car",
                car(missing_root.0, &[&missing_root, &leaf]),
                absent,
                "is missing",
            ),
        ];
        for (file, bytes, culprit, why) in &cases {
            let path = dir.path().join(file);
            std::fs::write(&path, bytes).unwrap();
            let out = cidgate(&store, &["import", path.to_str().unwrap()]);
            assert!(out.status.success(), "{file}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("INCOMPLETE"), "{file}: {stdout}");
            assert!(
                stdout.contains(&format!("block {culprit} {why}")),
                "{file}: {stdout}"
            );
            assert!(stdout.contains("not pinned"), "{file}: {stdout}");
        }

        let s = Server::spawn(store_dir, &[], &[]);
        let pins: serde_json::Value = serde_json::from_slice(
            &client()
                .get(format!("{}/admin/pins", s.admin))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(pins["store"].as_array().unwrap().len(), 0, "{pins}");
        let r = client()
            .get(format!("{}/ipfs/{}?format=car", s.url, bad_root.0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "refused before the status is committed");
        // The block itself is still served as the bytes it is.
        let r = client()
            .get(format!("{}/ipfs/{}?format=raw", s.url, bad_root.0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&r.bytes().await.unwrap()[..], b"not protobuf: root");
    }
}
