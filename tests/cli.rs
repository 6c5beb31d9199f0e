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

/// Runs a cidgate command with extra environment variables.
fn cidgate_env(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CIDGATE_ADMIN__TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running cidgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A folder with a small file, a hidden one and a 2 MiB + 17 B file in a subdirectory.
fn site(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let src = dir.join("site");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join(".hidden"), b"secret").unwrap();
    let big = common::noise(2 * 1024 * 1024 + 17, 7);
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    (src, big)
}

/// `add` and `export` while `serve` holds the data directory: the DAG is streamed to the admin
/// listener as it is built and pinned there (same root as offline), served at once, listed by
/// `pin ls`; export streams it back, with a path too; each prints one summary line in KiB / MiB.
#[tokio::test]
async fn add_and_export_go_through_a_running_server() {
    let s = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let (src, big) = site(work.path());
    let offline = cidgate(
        &work.path().join("offline"),
        &["add", src.to_str().unwrap()],
    );
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    let expected = text(&offline.stdout).trim().to_string();

    let out = cidgate(s.dir.path(), &["add", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = text(&out.stdout).trim().to_string();
    assert_eq!(root, expected, "the same DAG through the server");
    let stderr = text(&out.stderr);
    let summary: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        summary.len(),
        1,
        "one summary line when not a terminal: {stderr}"
    );
    assert!(
        summary[0].starts_with("cidgate: added 2.0 MiB") && summary[0].contains("pinned"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no control codes: {stderr:?}");

    let served = common::get_bytes(&format!("{}/ipfs/{root}/sub/big.bin", s.url)).await;
    assert_eq!(&served[..], &big[..]);
    let ls = cidgate(s.dir.path(), &["pin", "ls"]);
    assert!(text(&ls.stdout).contains(&root), "{}", text(&ls.stdout));

    let car_path = work.path().join("out.car");
    let out = cidgate(
        s.dir.path(),
        &["export", &root, "-o", car_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("cidgate: exported ") && stderr.contains("MiB of CAR"),
        "{stderr}"
    );
    let car = parse_car(&std::fs::read(&car_path).unwrap());
    assert_eq!(car.roots[0].to_string(), root);
    assert_eq!(
        car.blocks.len(),
        7,
        "root, a.txt, sub, big.bin root + 3 leaves"
    );

    // With a path: the path's blocks, then the subtree; to standard output.
    let out = cidgate(s.dir.path(), &["export", &format!("{root}/sub")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let car = parse_car(&out.stdout);
    assert_eq!(car.roots[0].to_string(), root);
    assert_eq!(car.blocks.len(), 6);

    // A DAG the store lacks: a clear error, no partial file left behind.
    let missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    let partial = work.path().join("missing.car");
    let out = cidgate(
        s.dir.path(),
        &["export", missing, "-o", partial.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    assert!(!partial.exists());

    // A path that does not exist: the cause, once, and nothing pinned.
    let out = cidgate(s.dir.path(), &["add", "/nonexistent/cidgate-test"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "each cause once: {stderr}"
    );
}

/// The server side of `add`: `POST /admin/import?root=last` pins the last block of the CAR,
/// and a stream cut short keeps nothing.
#[tokio::test]
async fn import_with_the_last_block_as_root_is_all_or_nothing() {
    use cidgate::ipld::car::{frame_prefix, header};
    let s = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let (src, _) = site(work.path());
    let mut blocks = Vec::new();
    let root = cidgate::ipld::builder::add_paths(&[src.as_path()], false, &mut blocks).unwrap();
    let mut car = header(&[cidgate::tiers::import::placeholder_root()])
        .unwrap()
        .to_vec();
    for b in &blocks {
        car.extend_from_slice(&frame_prefix(b.cid(), b.len()));
        car.extend_from_slice(b.data());
    }
    let url = format!("{}/admin/import?root=last", s.admin);
    let cut = client()
        .post(&url)
        .body(car[..car.len() - 10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 400);
    let leaf = blocks[0].cid().to_string();
    let r = common::get(&format!("{}/ipfs/{leaf}?format=raw", s.url)).await;
    assert_eq!(r.status(), 404, "nothing of a cut stream was kept");

    let whole = client().post(&url).body(car).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let report: serde_json::Value = serde_json::from_slice(&whole.bytes().await.unwrap()).unwrap();
    assert_eq!(report["roots"][0]["cid"], root.cid.to_string());
    assert_eq!(report["roots"][0]["pinned"], true);
}

/// A token on the admin listener: without it (or with a wrong one) the CLI says the listener
/// refused the token, also for a CAR or a DAG it would stream; `--token` and
/// `CIDGATE_ADMIN__TOKEN` both work, and `--help` documents the variable.
#[test]
fn the_admin_token_comes_from_a_flag_or_the_environment_and_a_401_says_so() {
    let s = Server::start_with(&[], &[("CIDGATE_ADMIN__TOKEN", "s3cret")], &[]);
    let work = tempfile::tempdir().unwrap();
    let (src, _) = site(work.path());
    // A CAR of several MiB: a server that refuses it early must not look like a broken pipe.
    let mut blocks = Vec::new();
    let big = work.path().join("big.bin");
    std::fs::write(&big, common::noise(6 << 20, 3)).unwrap();
    let root = cidgate::ipld::builder::add_paths(&[big.as_path()], false, &mut blocks).unwrap();
    let mut car = cidgate::ipld::car::header(&[root.cid]).unwrap().to_vec();
    for b in &blocks {
        car.extend_from_slice(&cidgate::ipld::car::frame_prefix(b.cid(), b.len()));
        car.extend_from_slice(b.data());
    }
    let car_path = work.path().join("big.car");
    std::fs::write(&car_path, car).unwrap();

    let refused =
        "the admin listener refused the token (401): pass --token or set CIDGATE_ADMIN__TOKEN";
    let dir = s.dir.path();
    for (args, env) in [
        (vec!["import", car_path.to_str().unwrap()], vec![]),
        (vec!["add", src.to_str().unwrap()], vec![]),
        (vec!["export", &root.cid.to_string()], vec![]),
        (vec!["pin", "add", &root.cid.to_string()], vec![]),
        (
            vec!["--token", "wrong", "add", src.to_str().unwrap()],
            vec![],
        ),
        (
            vec!["add", src.to_str().unwrap()],
            vec![("CIDGATE_ADMIN__TOKEN", "wrong")],
        ),
    ] {
        let out = cidgate_env(dir, &args, &env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(refused), "{args:?}: {stderr}");
        assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    }
    let out = cidgate_env(
        dir,
        &["--token", "s3cret", "import", car_path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("complete, pinned"));
    let out = cidgate_env(
        dir,
        &["add", src.to_str().unwrap()],
        &[("CIDGATE_ADMIN__TOKEN", "s3cret")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cidgate_env(
        dir,
        &["export", "--token", "s3cret", &root.cid.to_string()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(parse_car(&out.stdout).roots[0], root.cid);

    let help = cidgate_env(dir, &["--help"], &[]);
    let help = text(&help.stdout);
    assert!(
        help.contains("--token") && help.contains("CIDGATE_ADMIN__TOKEN"),
        "{help}"
    );
}

/// `pin ls`: a header row, then aligned columns with the name given to `pin add`.
#[test]
fn pin_ls_has_a_header_row_and_shows_names() {
    let s = Server::start(&["gateway-raw-block.car"]);
    let cid = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";
    let out = cidgate(s.dir.path(), &["pin", "add", cid, "--name", "my site"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cidgate(s.dir.path(), &["pin", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    for col in ["CID", "NAME", "KIND", "SIZE", "PINNED AT", "WHERE"] {
        assert!(header.contains(col), "{table}");
    }
    let at = |col: &str| header.find(col).unwrap();
    let row = lines.iter().find(|l| l.starts_with(cid)).unwrap();
    assert!(row[at("NAME")..].starts_with("my site"), "{table}");
    assert!(row[at("KIND")..].starts_with("operator"), "{table}");
    assert!(row[at("SIZE")..].starts_with("31 B "), "{table}");
    assert!(row[at("PINNED AT")..].starts_with("20"), "{table}");
    assert!(row.ends_with("store"), "{table}");
}

/// `prewarm` of a DAG larger than `cache.memory` says what stayed cached and what did not; a
/// small DAG is reported as all in the cache.
#[test]
fn prewarm_says_when_the_dag_is_larger_than_the_cache() {
    let s = Server::start_with(&[], &[("CIDGATE_CACHE__MEMORY", "8 MiB")], &[]);
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    std::fs::write(&big, common::noise(20 << 20, 11)).unwrap();
    let out = cidgate(s.dir.path(), &["add", big.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = text(&out.stdout).trim().to_string();
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"a small file\n").unwrap();
    let out = cidgate(s.dir.path(), &["add", small.to_str().unwrap()]);
    let small_root = text(&out.stdout).trim().to_string();

    let out = cidgate(s.dir.path(), &["prewarm", &root, &small_root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let big_line = stdout.lines().find(|l| l.starts_with(&root)).unwrap();
    assert!(big_line.contains("20.0 MiB read"), "{stdout}");
    assert!(
        big_line.contains("larger than the edge cache (8.0 MiB, cache.memory)"),
        "{stdout}"
    );
    assert!(
        big_line.contains("stayed cached") && big_line.contains("did not"),
        "{stdout}"
    );
    let small_line = stdout.lines().find(|l| l.starts_with(&small_root)).unwrap();
    assert!(small_line.ends_with("all in the edge cache"), "{stdout}");
    assert!(
        text(&out.stderr).contains("1 of 2 DAGs are only partly in the edge cache"),
        "{}",
        text(&out.stderr)
    );
}

/// With stderr on a terminal, `add` draws a bar with a percentage and an ETA.
#[test]
fn a_terminal_gets_a_progress_bar() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to give the command a terminal");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    std::fs::write(&big, common::noise(32 << 20, 5)).unwrap();
    let cmd = format!(
        "{} --data-dir {} add {}",
        common::bin(),
        work.path().join("store").display(),
        big.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
    let all = text(&out.stdout);
    assert!(all.contains('%') && all.contains("ETA"), "{all:?}");
    assert!(all.contains("cidgate: added 32.0 MiB"), "{all:?}");
}

/// `serve` logs the sample site's subdomain URL, the one a browser should open.
#[test]
fn the_start_log_names_the_sample_subdomain_url() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env("CIDGATE_SERVER__SAMPLE", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let port = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("cidgate: public http://")
                .map(str::to_string)
        })
        .and_then(|addr| addr.rsplit(':').next().map(str::to_string))
        .expect("serve announced its port");
    let (root, _) = cidgate::sample::build().unwrap();
    let want = format!("sample site: http://{}.ipfs.localhost:{port}/", root.cid);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let found = stderr
        .lines()
        .map_while(Result::ok)
        .take(200)
        .any(|l| l.contains(&want));
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no {want:?} in the start log");
}

/// Through a running server too, `add`, `export` and `import` draw a progress bar with
/// percentage and ETA on a terminal, and finish with their summary line.
#[tokio::test]
async fn a_terminal_gets_progress_bars_through_a_running_server() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to give the command a terminal");
        return;
    }
    let s = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    std::fs::write(&big, common::noise(48 << 20, 9)).unwrap();
    let on_terminal = |args: &str| {
        let cmd = format!(
            "{} --data-dir {} {args}",
            common::bin(),
            s.dir.path().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args}: {}", text(&out.stdout));
        text(&out.stdout)
    };
    let added = on_terminal(&format!("add {}", big.display()));
    assert!(added.contains('%') && added.contains("ETA"), "{added:?}");
    assert!(added.contains("cidgate: added 48.0 MiB"), "{added:?}");
    let root = added
        .split_whitespace()
        .find(|w| w.starts_with("bafy"))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .expect("the root CID");
    let car = work.path().join("big.car");
    let exported = on_terminal(&format!("export {root} -o {}", car.display()));
    assert!(
        exported.contains('%') && exported.contains("ETA"),
        "{exported:?}"
    );
    assert!(exported.contains("48.0 MiB"), "{exported:?}");
    let imported = on_terminal(&format!("import {}", car.display()));
    assert!(
        imported.contains('%') && imported.contains("ETA"),
        "{imported:?}"
    );
    assert!(imported.contains(&root), "{imported:?}");
}
