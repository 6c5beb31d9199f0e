//! Interop with real third-party IPFS software from `../shared/peers` (ipfs-car, verified-fetch).
//! These need the peers installed (`../shared/peers/setup.sh`), so they are ignored by a plain
//! `cargo test`; `.ci/run` installs the peers and runs them with `-- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cidgate, client, fixture, Server};

fn peers_run() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/run");
    assert!(p.exists(), "{} missing", p.display());
    p
}

fn peer(args: &[&str]) -> std::process::Output {
    let out = Command::new(peers_run())
        .args(args)
        .output()
        .expect("running a peer");
    if !out.status.success() {
        eprintln!(
            "peer {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn pack(paths: &[&Path], no_wrap: bool, out: &Path) -> String {
    let mut args: Vec<String> = vec!["ipfs-car".into(), "pack".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    if no_wrap {
        args.push("--no-wrap".into());
    }
    args.push("--output".into());
    args.push(out.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = peer(&refs);
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn add(store: &Path, paths: &[&Path]) -> String {
    let mut args = vec!["add"];
    let strs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(strs.iter().map(String::as_str));
    let o = cidgate(store, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
#[ignore = "needs ../shared/peers (run by .ci/run)"]
fn add_gives_the_same_cids_as_ipfs_car_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    std::fs::create_dir_all(d.join("tree/nested/deeper")).unwrap();
    std::fs::create_dir_all(d.join("tree/empty-dir")).unwrap();
    std::fs::write(d.join("tree/hello.txt"), b"hello\n").unwrap();
    std::fs::write(d.join("tree/.hidden"), b"dot").unwrap();
    std::fs::write(d.join("tree/nested/zero"), b"").unwrap();
    std::fs::write(
        d.join("tree/nested/deeper/Ünïcødé name.txt"),
        "ü".repeat(1000),
    )
    .unwrap();
    let mib: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(d.join("tree/exactly-1mib.bin"), &mib).unwrap();
    let big: Vec<u8> = (0..3_000_001u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("tree/nested/big.bin"), &big).unwrap();

    let files = [
        "tree/hello.txt",
        "tree/nested/zero",
        "tree/exactly-1mib.bin",
        "tree/nested/big.bin",
    ];
    for f in files {
        let p = d.join(f);
        assert_eq!(
            add(&store, &[&p]),
            pack(&[&p], true, &d.join("f.car")),
            "{f}"
        );
    }
    let tree = d.join("tree");
    assert_eq!(
        add(&store, &[&tree]),
        pack(&[&tree], false, &d.join("t.car")),
        "directory"
    );
    let a = d.join("tree/hello.txt");
    let b = d.join("tree/nested");
    assert_eq!(
        add(&store, &[&a, &b]),
        pack(&[&a, &b], false, &d.join("m.car")),
        "several paths"
    );
}

#[tokio::test]
#[ignore = "needs ../shared/peers (run by .ci/run)"]
async fn ipfs_car_unpack_verifies_exports_and_car_responses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    let hamt = fixture("trustless_gateway_car/single-layer-hamt-with-multi-block-files.car");
    assert!(cidgate(&store, &["import", hamt.to_str().unwrap()])
        .status
        .success());
    let hamt_root = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i";
    let exported = d.join("hamt.car");
    assert!(cidgate(
        &store,
        &["export", hamt_root, "-o", exported.to_str().unwrap()]
    )
    .status
    .success());
    let o = peer(&[
        "ipfs-car",
        "unpack",
        exported.to_str().unwrap(),
        "--output",
        d.join("hamt-out").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "ipfs-car rejected cidgate's export");
    assert!(d.join("hamt-out/685.txt").exists());

    let tmp = tempfile::tempdir().unwrap();
    let s = Server::spawn(tmp, &[("CIDGATE_SERVER__SAMPLE", "true")], &[]);
    let (sample, _) = cidgate::sample::build().unwrap();
    let body = client()
        .get(format!("{}/ipfs/{}?format=car", s.url, sample.cid))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let served = d.join("sample.car");
    std::fs::write(&served, &body).unwrap();
    let out = d.join("sample-out");
    let o = peer(&[
        "ipfs-car",
        "unpack",
        served.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "ipfs-car rejected a ?format=car response"
    );
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample/verified-lines.txt");
    assert_eq!(
        std::fs::read(out.join("verified-lines.txt")).unwrap(),
        std::fs::read(original).unwrap()
    );
}

#[tokio::test]
#[ignore = "needs ../shared/peers (run by .ci/run)"]
async fn verified_fetch_retrieves_through_cidgate() {
    let s = Server::start(&["trustless_gateway_car/subdir-with-mixed-block-files.car"]);
    let (sample, blocks) = cidgate::sample::build().unwrap();
    // Put the sample in through the running server's admin listener.
    let mut car = cidgate::ipld::car::header(&[sample.cid]).unwrap().to_vec();
    for b in &blocks {
        car.extend_from_slice(&cidgate::ipld::car::frame_prefix(b.cid(), b.len()));
        car.extend_from_slice(b.data());
    }
    let resp = client()
        .post(format!("{}/admin/import", s.admin))
        .body(car)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("ipfs://{}/verified-lines.txt", sample.cid),
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample/verified-lines.txt")).unwrap(),
        ),
        (
            "ipfs://bafybeidh6k2vzukelqtrjsmd4p52cpmltd2ufqrdtdg6yigi73in672fwu/subdir/multiblock.txt".to_string(),
            Vec::new(),
        ),
    ];
    for (i, (resource, expected)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let url = s.url.clone();
        let resource = resource.clone();
        let out2 = out.clone();
        let o = tokio::task::spawn_blocking(move || {
            peer(&["verified-fetch", &url, &resource, out2.to_str().unwrap()])
        })
        .await
        .unwrap();
        assert!(
            o.status.success(),
            "verified-fetch failed for {}",
            cases[i].0
        );
        let got = std::fs::read(&out).unwrap();
        if expected.is_empty() {
            assert_eq!(got.len(), 1026, "multiblock.txt is 1026 bytes");
        } else {
            assert_eq!(&got, expected);
        }
    }
}
