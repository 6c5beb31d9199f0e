//! Zero-copy sends: cached blocks of 64 KiB and more, once read twice, leave HTTP/1.1
//! connections by `sendfile` from the cache arena, and every byte a client receives is still the
//! content's byte, over HTTP/1.1 and h2c (which writes arena bytes in frames, as usual), for
//! whole files, ranges and CARs, and while the cache evicts and reuses arena slots under
//! responses that are still being sent. Linux only (elsewhere there is no arena).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{cidgate, client, get_bytes, metric_sum, metrics, noise, parse_car, Server};
use sha2::{Digest, Sha256};

const SENT: &str = "cidgate_zero_copy_response_bytes_total";

/// A store holding `content` as one file; returns the directory and the file's CID.
fn store_with(content: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("content.bin");
    std::fs::write(&file, content).unwrap();
    let out = cidgate(dir.path(), &["add", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    (dir, cid)
}

async fn range(url: &str, spec: &str) -> (u16, bytes::Bytes) {
    let resp = client()
        .get(url)
        .header("range", spec)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap())
}

#[tokio::test]
async fn cached_blocks_go_out_by_sendfile_and_every_byte_is_right() {
    let content = noise(3 * 1024 * 1024 + 4321, 11);
    let (dir, cid) = store_with(&content);
    let s = Server::spawn(dir, &[], &[]);
    let url = format!("{}/ipfs/{cid}", s.url);
    // The first read fills the cache and the second moves the leaves into the arena (a block
    // moves once it is read twice); the next two send from it.
    for _ in 0..4 {
        let body = get_bytes(&url).await;
        assert!(body == content[..], "whole file over HTTP/1.1");
    }
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(
        resp.bytes().await.unwrap() == content[..],
        "whole file over h2c"
    );

    let (status, body) = range(&url, "bytes=1000000-2200000").await;
    assert_eq!(status, 206);
    assert!(
        body == content[1_000_000..=2_200_000],
        "a range across leaves"
    );
    let (status, body) = range(&url, "bytes=-70000").await;
    assert_eq!(status, 206);
    assert!(body == content[content.len() - 70_000..], "a suffix range");
    let (status, body) = range(&url, "bytes=5-9,2097152-2200000").await;
    assert_eq!(status, 206);
    let text = body.as_ref();
    let needle = &content[2_097_152..=2_200_000];
    assert!(
        text.windows(needle.len()).any(|w| w == needle),
        "the second part of a multipart range is intact"
    );

    let car = get_bytes(&format!("{url}?format=car")).await;
    let car = parse_car(&car); // checks every block against its CID
    let total: usize = car.blocks.iter().map(|(_, d)| d.len()).sum();
    assert!(total >= content.len(), "the CAR holds every leaf");

    let sent = metric_sum(&metrics(&s).await, SENT, "");
    assert!(
        sent >= 3.0 * 3.0 * 1024.0 * 1024.0,
        "the cached 1 MiB leaves went by sendfile ({sent} bytes)"
    );
}

#[tokio::test]
async fn turned_off_every_byte_is_written() {
    let content = noise(2 * 1024 * 1024, 12);
    let (dir, cid) = store_with(&content);
    let s = Server::spawn(dir, &[("CIDGATE_CACHE__ZERO_COPY", "false")], &[]);
    let url = format!("{}/ipfs/{cid}", s.url);
    for _ in 0..2 {
        let body = get_bytes(&url).await;
        assert!(body == content[..]);
    }
    let m = metrics(&s).await;
    assert_eq!(metric_sum(&m, SENT, ""), 0.0);
    assert_eq!(metric_sum(&m, "cidgate_cache_arena_bytes", ""), 0.0);
}

/// Reads `url` whole, pausing between chunks when `slow`, and returns the SHA-256 of the body.
async fn digest_of(url: String, slow: bool) -> [u8; 32] {
    let mut resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        hasher.update(&chunk);
        if slow {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    hasher.finalize().into()
}

#[tokio::test]
async fn slots_reused_under_responses_in_flight_never_change_their_bytes() {
    // 40 MiB through an 8 MiB cache: every pass evicts, and freed arena slots are handed to new
    // blocks while slow readers still have the old ones queued in their sockets.
    let content = noise(40 * 1024 * 1024, 13);
    let want: [u8; 32] = Sha256::digest(&content).into();
    let (dir, cid) = store_with(&content);
    let s = Server::spawn(dir, &[("CIDGATE_CACHE__MEMORY", "8 MiB")], &[]);
    let url = format!("{}/ipfs/{cid}", s.url);
    let mut readers = Vec::new();
    for i in 0..6 {
        readers.push(tokio::spawn(digest_of(url.clone(), i < 2)));
    }
    for r in readers {
        assert!(r.await.unwrap() == want, "a body differs from the content");
    }
    let m = metrics(&s).await;
    assert!(metric_sum(&m, SENT, "") > 0.0, "sendfile was used");
    assert!(
        metric_sum(&m, "cidgate_cache_evictions_total", "") > 0.0,
        "the cache evicted while responses were in flight"
    );
}
