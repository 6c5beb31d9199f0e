//! The listener: HTTP/2 (h2c and TLS ALPN), limits answered with a status, graceful shutdown,
//! configuration errors at start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{bin, client, parse_car, Server};

const ASCII: &str = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";

#[tokio::test]
async fn h2c_prior_knowledge_and_http1_share_the_port() {
    let s = Server::start(&["gateway-raw-block.car"]);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(format!("{}/ipfs/{ASCII}?format=raw", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 31);
    let resp = client()
        .get(format!("{}/ipfs/{ASCII}?format=raw", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
}

/// Many HTTP/2 streams on one connection, mixing answers the server gives at once (kept small
/// bodies, which are sent on the connection's own task) with ones that wait for flow-control
/// window (1 MiB kept bodies), first-time misses, and streams the client resets midway: every
/// answer is whole and right, and a reset stream does not disturb the others.
#[tokio::test]
async fn h2_streams_answered_at_once_and_later_share_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, len) in [3000usize, 1 << 20].into_iter().enumerate() {
        let path = src.path().join(format!("f{i}"));
        let bytes = common::noise(len, 31 + i as u64);
        std::fs::write(&path, &bytes).unwrap();
        let out = common::cidgate(dir.path(), &["add", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
        files.push((cid, bytes));
    }
    let s = Server::spawn(dir, &[], &[]);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    // Warm: both become kept answers, as a file and raw.
    for (cid, bytes) in &files {
        for q in ["", "?format=raw"] {
            for _ in 0..3 {
                let r = h2
                    .get(format!("{}/ipfs/{cid}{q}", s.url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.version(), reqwest::Version::HTTP_2);
                assert!(r.bytes().await.unwrap() == bytes[..]);
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120usize {
        let (cid, bytes) = files[usize::from(i % 5 == 0)].clone();
        let h2 = h2.clone();
        let url = match i % 3 {
            0 => format!("{}/ipfs/{cid}", s.url),
            1 => format!("{}/ipfs/{cid}?format=raw", s.url),
            // Never asked before: a miss of the response cache, answered by a stream task.
            _ => format!("{}/ipfs/{cid}?filename=n{i}.bin", s.url),
        };
        tasks.spawn(async move {
            let mut r = h2.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            if i % 10 == 5 {
                // Reset midway: take one chunk and drop the stream.
                let _ = r.chunk().await;
                return;
            }
            let got = r.bytes().await.unwrap();
            assert!(got == bytes[..], "{url}: {} bytes", got.len());
        });
    }
    let all = async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("streams still unanswered after 60 s");
    // The connection is still good.
    let (cid, bytes) = &files[1];
    let r = h2
        .get(format!("{}/ipfs/{cid}", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == bytes[..]);
}

#[tokio::test]
async fn tls_negotiates_h2_with_alpn() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let s = Server::start_with(
        &["gateway-raw-block.car"],
        &[
            ("CIDGATE_SERVER__TLS_CERT", cert.to_str().unwrap()),
            ("CIDGATE_SERVER__TLS_KEY", key.to_str().unwrap()),
            // `localhost` is a subdomain gateway by default; here it is a plain path gateway.
            ("CIDGATE_SERVER__SUBDOMAIN_HOSTS", ""),
        ],
        &[],
    );
    assert!(s.url.starts_with("https://"));
    let addr: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().unwrap();
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    for (http1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .resolve("localhost", addr);
        if http1 {
            b = b.http1_only();
        }
        let client = b.build().unwrap();
        let resp = client
            .get(format!(
                "https://localhost:{}/ipfs/{ASCII}?format=raw",
                addr.port()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        // A streamed (chunked) answer over TLS, written by the direct path on HTTP/1.1.
        let car = client
            .get(format!(
                "https://localhost:{}/ipfs/{ASCII}?format=car",
                addr.port()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(car.version(), version);
        assert_eq!(car.status(), 200);
        let car = parse_car(&car.bytes().await.unwrap());
        assert_eq!(car.cids(), vec![ASCII.to_string()]);
    }
}

#[tokio::test]
async fn limits_are_answered_not_dropped() {
    let s = Server::start(&["gateway-raw-block.car"]);
    let long = format!("{}/ipfs/{ASCII}?format=raw&pad={}", s.url, "x".repeat(9000));
    let resp = client().get(long).send().await.unwrap();
    assert_eq!(resp.status(), 414);
    let resp = client()
        .get(format!("{}/ipfs/{ASCII}?format=raw", s.url))
        .header("x-big", "y".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);

    // Hold the only connection slot, then a second connection is told to come back.
    drop(s);
    let s = Server::start_with(
        &["gateway-raw-block.car"],
        &[("CIDGATE_SERVER__MAX_CONNECTIONS", "1")],
        &[],
    );
    let addr = s.url.trim_start_matches("http://").to_string();
    // The held connection has proven itself with a request: a silent one would be evicted
    // for the newcomer (tests/limits.rs covers that).
    let mut held = TcpStream::connect(&addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(format!("GET /ipfs/{ASCII}?format=raw HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 512];
    let n = held.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(&addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    second
        .write_all(format!("GET /ipfs/{ASCII}?format=raw HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 512];
    let n = second.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_responses() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::spawn(dir, &[("CIDGATE_SERVER__SAMPLE", "true")], &[]);
    let (root, _) = cidgate::sample::build().unwrap();
    let resp = client()
        .get(format!("{}/ipfs/{}?format=car", s.url, root.cid))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.terminate();
    // The response that was already under way completes and verifies.
    let car = parse_car(&resp.bytes().await.unwrap());
    assert!(car.blocks.len() >= 6);
    assert!(
        s.wait_exit(Duration::from_secs(15)),
        "server did not exit after SIGTERM"
    );
    assert!(
        client().get(format!("{}/", s.url)).send().await.is_err(),
        "no longer accepting"
    );
}

/// With `server.drain_delay`, SIGTERM first takes the gateway out of its load balancer
/// (`/readyz` 503) while requests are still served, then stops as without it.
#[tokio::test]
async fn sigterm_with_a_drain_delay_serves_on_while_readyz_says_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__SAMPLE", "true"),
            ("CIDGATE_SERVER__DRAIN_DELAY", "3s"),
        ],
        &[],
    );
    let (root, _) = cidgate::sample::build().unwrap();
    let ready = || async { client().get(format!("{}/readyz", s.admin)).send().await };
    assert_eq!(ready().await.unwrap().status(), 200);
    let started = std::time::Instant::now();
    s.terminate();
    // Until the delay ends: not ready, yet new connections and requests are served.
    let deadline = started + Duration::from_secs(2);
    let mut saw_503 = false;
    while std::time::Instant::now() < deadline {
        if ready().await.unwrap().status() == 503 {
            saw_503 = true;
            let r = reqwest::Client::new()
                .get(format!("{}/ipfs/{}", s.url, root.cid))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_503, "/readyz never said 503 during the delay");
    assert!(
        s.wait_exit(Duration::from_secs(15)),
        "server did not exit after the delay"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "stopped before the delay ended: {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_configuration_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["--data-dir", dir.path().to_str().unwrap(), "serve"])
        .env("CIDGATE_SERVER__LISTEM", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CIDGATE_SERVER__LISTEM"));

    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[admin]\ntoken = 5\n").unwrap();
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.token"));
}
