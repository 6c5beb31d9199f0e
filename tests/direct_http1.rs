//! The direct HTTP/1.1 path (`server.direct_http1`): `GET` and `HEAD` answers, kept in memory or
//! worked out (streamed), are written by the server itself, and must be byte for byte what
//! hyper writes for the same request, on the same connection as requests hyper serves,
//! pipelined or not; a client that leaves while its answer is worked out is let go as hyper
//! lets it go.

mod common;

use std::time::Duration;

use common::{metric_sum, metrics, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURES: &[&str] = &[
    "path_gateway_unixfs/dir-with-files.car",
    "dir_listing/fixtures.car",
    "path_gateway_dag/dag-json-traversal.car",
];
const DIR: &str = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
const RAW: &str = "bafkreialihlqnf5uwo4byh4n3cmwlntwqzxxs2fg5vanqdi3d7tb2l5xkm";
const DAG_JSON: &str = "baguqeeram5ujjqrwheyaty3w5gdsmoz6vittchvhk723jjqxk7hakxkd47xq";

/// One request: method, target, extra header lines.
struct Req {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
}

fn req(method: &'static str, target: impl Into<String>, headers: &[(&str, &str)]) -> Req {
    Req {
        method,
        target: target.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

impl Req {
    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            s.push_str(&format!("Host: {host}\r\n"));
        }
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

fn host_of(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// Reads one answer to a request (`head_only` for HEAD): its head and its body, framed by
/// `Content-Length`, chunked, or the end of the connection; `None` when it ends first.
async fn read_answer(
    c: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_only: bool,
) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(c, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    pending.drain(..end + 4);
    let lower = head.to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        lower.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    if head_only || status == 204 || status == 304 || status < 200 {
        return Some((head, Vec::new()));
    }
    if header("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(e) = pending.windows(2).position(|w| w == b"\r\n") {
                    break e;
                }
                fill(c, pending).await?;
            };
            let size_text = String::from_utf8_lossy(&pending[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pending.drain(..line_end + 2);
            while pending.len() < size + 2 {
                fill(c, pending).await?;
            }
            body.extend_from_slice(&pending[..size]);
            pending.drain(..size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    match header("content-length") {
        Some(len) => {
            let len: usize = len.parse().ok()?;
            while pending.len() < len {
                fill(c, pending).await?;
            }
            let body = pending.drain(..len).collect();
            Some((head, body))
        }
        None => {
            while fill(c, pending).await.is_some() {}
            Some((head, std::mem::take(pending)))
        }
    }
}

/// Reads more of the connection into `pending`; `None` at its end.
async fn fill(c: &mut TcpStream, pending: &mut Vec<u8>) -> Option<()> {
    let mut buf = [0u8; 16384];
    match tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => None,
        Ok(Ok(n)) => {
            pending.extend_from_slice(&buf[..n]);
            Some(())
        }
    }
}

/// An answer with what may differ between two runs taken out: the `Date` line and the
/// durations in `Server-Timing`.
fn normalized((head, body): &(String, Vec<u8>)) -> (String, Vec<u8>) {
    let lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("server-timing:") {
                let mut out = String::new();
                let mut rest = l;
                while let Some(at) = rest.find("dur=") {
                    out.push_str(&rest[..at + 4]);
                    rest =
                        rest[at + 4..].trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
                    out.push('X');
                }
                out.push_str(rest);
                out
            } else {
                l.to_string()
            }
        })
        .collect();
    (lines.join("\r\n"), body.clone())
}

/// The requests, one after the other on one connection, and their answers.
async fn one_by_one(s: &Server, reqs: &[Req]) -> Vec<(String, Vec<u8>)> {
    let host = host_of(s);
    let mut c = TcpStream::connect(&host).await.unwrap();
    let mut pending = Vec::new();
    let mut answers = Vec::new();
    for r in reqs {
        c.write_all(&r.bytes(&host)).await.unwrap();
        let a = read_answer(&mut c, &mut pending, r.method == "HEAD")
            .await
            .unwrap_or_else(|| panic!("no answer to {} {}", r.method, r.target));
        answers.push(a);
    }
    answers
}

/// The requests written at once (pipelined) on one connection, and their answers.
async fn pipelined(s: &Server, reqs: &[Req]) -> Vec<(String, Vec<u8>)> {
    let host = host_of(s);
    let mut c = TcpStream::connect(&host).await.unwrap();
    let all: Vec<u8> = reqs.iter().flat_map(|r| r.bytes(&host)).collect();
    c.write_all(&all).await.unwrap();
    let mut pending = Vec::new();
    let mut answers = Vec::new();
    for r in reqs {
        let a = read_answer(&mut c, &mut pending, r.method == "HEAD")
            .await
            .unwrap_or_else(|| panic!("no pipelined answer to {} {}", r.method, r.target));
        answers.push(a);
    }
    answers
}

/// Panics unless the answers `a` and `b` to `reqs` are alike but for what differs between two
/// runs ([`normalized`]); `tiers`: also where their blocks came from (`X-Cidgate-Tier` and the
/// names in `Server-Timing`), which for many large blocks depends on when the memory cache took
/// them in, not on the HTTP path.
fn assert_alike(
    reqs: &[Req],
    a: &[(String, Vec<u8>)],
    b: &[(String, Vec<u8>)],
    round: usize,
    tiers: bool,
) {
    let tierless = |(head, body): (String, Vec<u8>)| {
        let head: Vec<&str> = head
            .split("\r\n")
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                tiers || !(l.starts_with("x-cidgate-tier:") || l.starts_with("server-timing:"))
            })
            .collect();
        (head.join("\r\n"), body)
    };
    for ((r, a), b) in reqs.iter().zip(a).zip(b) {
        let (a, b) = (tierless(normalized(a)), tierless(normalized(b)));
        assert_eq!(
            a.0, b.0,
            "round {round}: heads differ for {} {} {:?}",
            r.method, r.target, r.headers
        );
        assert!(
            a.1 == b.1,
            "round {round}: bodies differ for {} {} {:?}",
            r.method,
            r.target,
            r.headers
        );
    }
}

/// Each request on a connection of its own, and the answers.
async fn each_alone(s: &Server, reqs: &[Req]) -> Vec<(String, Vec<u8>)> {
    let mut answers = Vec::new();
    for r in reqs {
        answers.extend(one_by_one(s, std::slice::from_ref(r)).await);
    }
    answers
}

async fn direct_answers(s: &Server) -> f64 {
    metric_sum(&metrics(s).await, "cidgate_http1_direct_answers_total", "")
}

/// Waits until the direct answers of `s` reach `n` (they are counted when a connection ends,
/// which the server sees a moment after the client closes it).
async fn wait_direct(s: &Server, n: f64) -> f64 {
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = direct_answers(s).await;
        if seen >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

fn requests(etag: &str) -> Vec<Req> {
    let file = format!("/ipfs/{DIR}/ascii.txt");
    vec![
        req("GET", &file, &[]),
        req("HEAD", &file, &[]),
        req("GET", &file, &[("If-None-Match", etag)]),
        req("HEAD", &file, &[("If-None-Match", etag)]),
        req("GET", &file, &[("Range", "bytes=2-9")]),
        req(
            "GET",
            &file,
            &[
                ("Origin", "https://example.org"),
                ("Accept-Encoding", "gzip"),
            ],
        ),
        req(
            "GET",
            &file,
            &[("Connection", "keep-alive"), ("Content-Length", "0")],
        ),
        req("GET", &file, &[("X-Forwarded-For", "203.0.113.9")]),
        req(
            "GET",
            format!("{file}?filename=a%20b.txt&download=true"),
            &[],
        ),
        req("GET", format!("/ipfs/{DIR}/multiblock.txt"), &[]),
        req("HEAD", format!("/ipfs/{DIR}/multiblock.txt"), &[]),
        req("GET", format!("/ipfs/{DIR}/"), &[("Accept", "text/html")]),
        req("GET", format!("/ipfs/{DIR}"), &[]),
        req("GET", format!("/ipfs/{RAW}?format=raw"), &[]),
        req(
            "GET",
            format!("/ipfs/{RAW}"),
            &[("Accept", "application/vnd.ipld.raw")],
        ),
        req("GET", format!("/ipfs/{RAW}?format=car"), &[]),
        req("GET", format!("/ipfs/{DAG_JSON}"), &[]),
        req(
            "GET",
            format!("/ipfs/{DAG_JSON}"),
            &[("Accept", "text/html")],
        ),
        req(
            "GET",
            "/ascii.txt",
            &[("Host", &format!("{DIR}.ipfs.localhost"))],
        ),
        req("GET", "/ipfs/not-a-cid", &[]),
        req("HEAD", "/ipfs/not-a-cid", &[]),
        req("GET", "/ipfs/../etc/passwd", &[]),
        req("OPTIONS", &file, &[("Origin", "https://example.org")]),
    ]
}

/// Every request of the matrix, first one by one (filling the response cache), then pipelined,
/// then one by one again, gets the same bytes from a gateway with the direct path as from one
/// without; the direct one answered every `GET` and `HEAD` itself, the other none.
#[tokio::test]
async fn the_direct_path_answers_as_hyper_does() {
    let direct = Server::start(FIXTURES);
    let hyper_only =
        Server::start_with(FIXTURES, &[("CIDGATE_SERVER__DIRECT_HTTP1", "false")], &[]);
    // Both warmed alike: the tier an answer names depends on what was asked before.
    // (On a connection that ends here, so that its direct answer is counted at once.)
    one_by_one(
        &direct,
        &[req("GET", format!("/ipfs/{DIR}/ascii.txt"), &[])],
    )
    .await;
    let etag = reqwest::get(format!("{}/ipfs/{DIR}/ascii.txt", hyper_only.url))
        .await
        .unwrap()
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let reqs = requests(&etag);
    // Round 0 fills the response cache; round 1 sends everything at once (hyper takes the
    // connection at the `OPTIONS`, the last); round 2 sends each request on a connection of its
    // own.
    for round in 0..3 {
        let (a, b) = match round {
            0 => (
                one_by_one(&direct, &reqs).await,
                one_by_one(&hyper_only, &reqs).await,
            ),
            1 => (
                pipelined(&direct, &reqs).await,
                pipelined(&hyper_only, &reqs).await,
            ),
            _ => (
                each_alone(&direct, &reqs).await,
                each_alone(&hyper_only, &reqs).await,
            ),
        };
        assert_alike(&reqs, &a, &b, round, true);
        let statuses: Vec<&str> = a.iter().map(|(h, _)| &h[9..12]).collect();
        assert!(statuses.contains(&"200") && statuses.contains(&"304"));
        assert!(statuses.contains(&"206") && statuses.contains(&"301"));
        assert!(statuses.contains(&"400"), "{statuses:?}");
    }
    // Every `GET` and `HEAD` of the three rounds (and the warming one) was written directly, kept
    // or worked out, the `OPTIONS` by hyper (a count lands when the server sees the client close
    // the connection, or hands it to hyper).
    let gets = reqs.iter().filter(|r| r.method != "OPTIONS").count() as f64;
    assert_eq!(
        wait_direct(&direct, 1.0 + 3.0 * gets).await,
        1.0 + 3.0 * gets
    );
    // Each alone once more, counted one by one.
    for r in &reqs {
        let before = direct_answers(&direct).await;
        one_by_one(&direct, std::slice::from_ref(r)).await;
        let written_directly = r.method != "OPTIONS";
        let after = if written_directly {
            wait_direct(&direct, before + 1.0).await
        } else {
            tokio::time::sleep(Duration::from_millis(150)).await;
            direct_answers(&direct).await
        };
        assert_eq!(
            after - before,
            f64::from(u8::from(written_directly)),
            "{} {} {:?}",
            r.method,
            r.target,
            r.headers
        );
    }
    assert_eq!(direct_answers(&hyper_only).await, 0.0);
}

/// A data directory holding one file of `len` noise bytes, added with `cidgate add`, and its CID.
fn store_with_file(len: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("large.bin");
    std::fs::write(&file, common::noise(len, 12)).unwrap();
    let out = common::cidgate(dir.path(), &["add", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (dir, cid)
}

/// A body larger than the response cache keeps by value (a 1 MiB block, as a file and raw) is
/// kept as a reference to the memory cache's block: once the block is there it is written
/// directly, byte for byte what hyper writes, and the answer is the file.
#[tokio::test]
async fn large_blocks_are_kept_by_reference_and_written_directly() {
    let len = 1 << 20;
    let (dir_a, cid) = store_with_file(len);
    let (dir_b, cid_b) = store_with_file(len);
    assert_eq!(cid, cid_b);
    assert!(cid.starts_with("bafkrei"), "one raw block: {cid}");
    // The block enters the memory cache when a request reads it from the store and hashes it.
    // Without a scrub: one that hashed it first would leave its pages trusted where they
    // cannot be dropped (a tmpfs, a busy machine), and a large block the store serves from
    // trusted pages is never copied into the memory cache.
    let no_scrub = ("CIDGATE_STORE__SCRUB_RATE", "0 B");
    let direct = Server::spawn(dir_a, &[no_scrub], &[]);
    let hyper_only = Server::spawn(
        dir_b,
        &[("CIDGATE_SERVER__DIRECT_HTTP1", "false"), no_scrub],
        &[],
    );
    let reqs = vec![
        req("GET", format!("/ipfs/{cid}"), &[]),
        req("GET", format!("/ipfs/{cid}?format=raw"), &[]),
    ];
    let file = common::noise(len, 12);
    // The first rounds read the store and fill the memory and response caches.
    for round in 0..4 {
        let a = each_alone(&direct, &reqs).await;
        let b = each_alone(&hyper_only, &reqs).await;
        assert_alike(&reqs, &a, &b, round, false);
        for (r, a) in reqs.iter().zip(&a) {
            assert!(a.1 == file, "round {round}: not the file for {}", r.target);
        }
    }
    // Every answer of the rounds was written directly.
    assert_eq!(wait_direct(&direct, 8.0).await, 8.0);
    for r in &reqs {
        let before = direct_answers(&direct).await;
        let kept_before = response_cache_hits(&direct).await;
        let answer = one_by_one(&direct, std::slice::from_ref(r)).await;
        let (head, body) = &answer[0];
        assert!(body == &file, "{}", r.target);
        assert!(head.contains("x-cidgate-tier: cache\r\n"), "{head}");
        assert_eq!(
            wait_direct(&direct, before + 1.0).await - before,
            1.0,
            "{}",
            r.target
        );
        // Answered from the response cache, not worked out again.
        assert_eq!(
            response_cache_hits(&direct).await - kept_before,
            1.0,
            "{}",
            r.target
        );
    }
    assert_eq!(direct_answers(&hyper_only).await, 0.0);
}

/// Answers streamed in many frames (a 3 MiB file of many blocks, whole, as a range, as a CAR
/// and as a TAR, and HEAD) are written by the direct path byte for byte as hyper writes them,
/// one by one and pipelined, by length and chunked.
#[tokio::test]
async fn streamed_answers_of_many_blocks_match_hyper() {
    let len = 3 << 20;
    let (dir_a, cid) = store_with_file(len);
    let (dir_b, _) = store_with_file(len);
    assert!(cid.starts_with("bafybei"), "a file of many blocks: {cid}");
    let direct = Server::spawn(dir_a, &[], &[]);
    let hyper_only = Server::spawn(dir_b, &[("CIDGATE_SERVER__DIRECT_HTTP1", "false")], &[]);
    let file = common::noise(len, 12);
    let reqs = vec![
        req("GET", format!("/ipfs/{cid}"), &[]),
        req(
            "GET",
            format!("/ipfs/{cid}"),
            &[("Range", "bytes=1000-2000999")],
        ),
        req("GET", format!("/ipfs/{cid}?format=car"), &[]),
        req("GET", format!("/ipfs/{cid}?format=tar"), &[]),
        req("HEAD", format!("/ipfs/{cid}"), &[]),
        req("GET", format!("/ipfs/{cid}?format=raw"), &[]),
        req("HEAD", format!("/ipfs/{cid}?format=car"), &[]),
        req("HEAD", format!("/ipfs/{cid}?format=tar"), &[]),
        req(
            "GET",
            format!("/ipfs/{cid}"),
            &[(
                "Accept",
                "application/vnd.ipld.car; version=1; order=dfs; dups=n",
            )],
        ),
        req("HEAD", format!("/ipfs/{cid}"), &[("Range", "bytes=0-10")]),
    ];
    for round in 0..3 {
        let (a, b) = if round == 1 {
            (
                pipelined(&direct, &reqs).await,
                pipelined(&hyper_only, &reqs).await,
            )
        } else {
            (
                each_alone(&direct, &reqs).await,
                each_alone(&hyper_only, &reqs).await,
            )
        };
        assert_alike(&reqs, &a, &b, round, false);
        assert!(a[0].1 == file, "round {round}: not the file");
        assert!(
            a[1].1 == file[1000..2001000],
            "round {round}: not the range"
        );
        assert!(a[1].0.starts_with("HTTP/1.1 206"), "{}", a[1].0);
        assert!(a[2].0.contains("transfer-encoding: chunked"), "{}", a[2].0);
        assert!(a[3].0.starts_with("HTTP/1.1 200"), "{}", a[3].0);
        assert!(
            a[2].1.len() > len,
            "round {round}: a CAR of {} bytes",
            a[2].1.len()
        );
    }
    assert_eq!(direct_answers(&hyper_only).await, 0.0);
    assert_eq!(wait_direct(&direct, 30.0).await, 30.0);
}

async fn response_cache_hits(s: &Server) -> f64 {
    metric_sum(&metrics(s).await, "cidgate_response_cache_hits_total", "")
}

async fn inflight_requests(s: &Server) -> f64 {
    metric_sum(&metrics(s).await, "cidgate_inflight_requests", "")
}

/// Waits (up to 5 s) until the server has `n` requests in progress; what it has then.
async fn wait_inflight(s: &Server, n: f64) -> f64 {
    let mut seen = inflight_requests(s).await;
    for _ in 0..100 {
        if seen == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = inflight_requests(s).await;
    }
    seen
}

/// While an answer is worked out (here: a hot node that fails after 2 s), the direct path
/// watches the client as hyper does: a client that closes its side is let go at once, without
/// an answer, and its request is dropped (nothing stays in flight); a request pipelined while
/// the answer is worked out is answered after it, in order. Both paths alike.
#[tokio::test]
async fn a_client_leaving_during_a_worked_out_answer_is_let_go_as_hyper_does() {
    let hot = Server::start(&[]);
    let proxy = common::fault_proxy::FaultProxy::start(
        &hot.url,
        common::fault_proxy::ProxyFault::SlowStatus {
            wait: Duration::from_secs(2),
            status: 502,
        },
    )
    .await;
    for direct_http1 in ["true", "false"] {
        let g = Server::spawn(
            tempfile::tempdir().unwrap(),
            &[
                ("CIDGATE_HOT__BACKEND", "trustless"),
                ("CIDGATE_HOT__URL", &proxy.url),
                ("CIDGATE_SERVER__DIRECT_HTTP1", direct_http1),
            ],
            &[],
        );
        let host = host_of(&g);
        let slow = req("GET", format!("/ipfs/{RAW}?format=raw"), &[]).bytes(&host);

        // Closes its side while the answer is worked out.
        let mut c = TcpStream::connect(&host).await.unwrap();
        c.write_all(&slow).await.unwrap();
        assert_eq!(wait_inflight(&g, 1.0).await, 1.0, "direct {direct_http1}");
        c.shutdown().await.unwrap();
        let left = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "direct {direct_http1}: the connection stayed open"
        );
        // Closed before the answer (due 2 s after the request) could have been written.
        let closed_after = left.elapsed();
        assert!(
            closed_after < Duration::from_millis(1500),
            "direct {direct_http1}: let go only after {closed_after:?}"
        );
        assert!(
            rest.is_empty(),
            "direct {direct_http1}: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(wait_inflight(&g, 0.0).await, 0.0, "direct {direct_http1}");

        // A request pipelined while the first is worked out waits for its turn.
        let before = direct_answers(&g).await;
        let mut c = TcpStream::connect(&host).await.unwrap();
        c.write_all(&slow).await.unwrap();
        assert_eq!(wait_inflight(&g, 1.0).await, 1.0, "direct {direct_http1}");
        c.write_all(&req("GET", "/ipfs/not-a-cid", &[]).bytes(&host))
            .await
            .unwrap();
        let mut pending = Vec::new();
        let (h1, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
        let (h2, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
        assert!(
            h1.starts_with("HTTP/1.1 502"),
            "direct {direct_http1}: {h1}"
        );
        assert!(
            h2.starts_with("HTTP/1.1 400"),
            "direct {direct_http1}: {h2}"
        );
        drop(c);
        let written = if direct_http1 == "true" { 2.0 } else { 0.0 };
        assert_eq!(
            wait_direct(&g, before + written).await - before,
            written,
            "direct {direct_http1}"
        );
    }
}

/// A kept answer is written directly whether its request came whole or in pieces, a miss is
/// written directly too, and a request behind a handed-over one (a body) is answered by hyper
/// on the same connection, in order.
#[tokio::test]
async fn pieces_and_handover_keep_the_connection_in_order() {
    let s = Server::start(FIXTURES);
    let host = host_of(&s);
    let file = format!("/ipfs/{DIR}/ascii.txt");
    // Kept by the first (the same request: the cache varies by `Accept`), itself written
    // directly (counted once the server has seen the connection close).
    one_by_one(&s, &[req("GET", &file, &[])]).await;
    let before = wait_direct(&s, 1.0).await;
    assert_eq!(before, 1.0);

    // The head in three writes, 100 ms apart.
    let mut c = TcpStream::connect(&host).await.unwrap();
    let whole = req("GET", &file, &[]).bytes(&host);
    for piece in whole.chunks(whole.len() / 3 + 1) {
        c.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pending = Vec::new();
    let (head, body) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"hello application/vnd.ipld.car\n");
    drop(c);
    assert_eq!(wait_direct(&s, before + 1.0).await, before + 1.0);

    // 100 pipelined in one write: all written directly, in order.
    let mut c = TcpStream::connect(&host).await.unwrap();
    let all: Vec<u8> = (0..100)
        .flat_map(|_| req("GET", &file, &[]).bytes(&host))
        .collect();
    c.write_all(&all).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..100 {
        let (head, body) = read_answer(&mut c, &mut pending, false)
            .await
            .unwrap_or_else(|| panic!("answer {i} missing"));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, b"hello application/vnd.ipld.car\n");
    }
    drop(c);
    assert_eq!(wait_direct(&s, before + 101.0).await, before + 101.0);

    // After a direct answer, bytes that look like the HTTP/2 preface are a bad HTTP/1.1
    // request, not a switch to HTTP/2 (which would escape the HTTP/1 idle deadline).
    let mut c = TcpStream::connect(&host).await.unwrap();
    let mut two = req("GET", &file, &[]).bytes(&host);
    two.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    c.write_all(&two).await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    while fill(&mut c, &mut pending).await.is_some() {}
    // hyper's HTTP/1.1 server closes on it without an answer (an HTTP/2 server would have sent
    // its SETTINGS frame).
    assert!(
        pending.is_empty() || pending.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&pending)
    );
    drop(c);
    assert_eq!(wait_direct(&s, before + 102.0).await, before + 102.0);

    // Hit, miss (first request of a file), a request with a body, hit: four answers in order.
    let mut c = TcpStream::connect(&host).await.unwrap();
    let mut all = req("GET", &file, &[]).bytes(&host);
    all.extend(req("GET", format!("/ipfs/{DIR}/multiblock.txt"), &[]).bytes(&host));
    all.extend(
        format!("POST {file} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc").bytes(),
    );
    all.extend(req("GET", &file, &[]).bytes(&host));
    c.write_all(&all).await.unwrap();
    let mut pending = Vec::new();
    let (h1, b1) = read_answer(&mut c, &mut pending, false).await.unwrap();
    let (h2, b2) = read_answer(&mut c, &mut pending, false).await.unwrap();
    let (h3, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
    let (h4, b4) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(h1.starts_with("HTTP/1.1 200") && b1 == b"hello application/vnd.ipld.car\n");
    assert!(h2.starts_with("HTTP/1.1 200") && b2.len() == 1026, "{h2}");
    assert!(h3.starts_with("HTTP/1.1 405"), "{h3}");
    assert!(h4.starts_with("HTTP/1.1 200") && b4 == b"hello application/vnd.ipld.car\n");
    drop(c);
    // The hit and the miss: after the request with a body, hyper has the connection.
    assert_eq!(wait_direct(&s, before + 104.0).await, before + 104.0);
}

/// The connection watch holds on the direct path too: a kept-alive connection idle past
/// `idle_timeout` is closed, and `Connection: close` closes after its answer.
#[tokio::test]
async fn idle_and_close_end_direct_connections() {
    let s = Server::start_with(FIXTURES, &[("CIDGATE_SERVER__IDLE_TIMEOUT", "1s")], &[]);
    let host = host_of(&s);
    let file = format!("/ipfs/{DIR}/ascii.txt");
    one_by_one(&s, &[req("GET", &file, &[])]).await;
    let before = wait_direct(&s, 1.0).await;
    assert_eq!(before, 1.0);

    let mut c = TcpStream::connect(&host).await.unwrap();
    c.write_all(&req("GET", &file, &[]).bytes(&host))
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"));
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "not closed: {closed:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(wait_direct(&s, before + 1.0).await, before + 1.0);

    let mut c = TcpStream::connect(&host).await.unwrap();
    let mut two = req("GET", &file, &[("Connection", "close")]).bytes(&host);
    two.extend(req("GET", &file, &[]).bytes(&host));
    c.write_all(&two).await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(read_answer(&mut c, &mut pending, false).await.is_none());
}

/// At shutdown a kept-alive connection of the direct path that waits for its next request is
/// closed at once, not after the grace period.
#[tokio::test]
async fn shutdown_closes_an_idle_direct_connection() {
    let s = Server::start_with(FIXTURES, &[("CIDGATE_SERVER__SHUTDOWN_GRACE", "20s")], &[]);
    let host = host_of(&s);
    let file = format!("/ipfs/{DIR}/ascii.txt");
    one_by_one(&s, &[req("GET", &file, &[])]).await;
    let mut c = TcpStream::connect(&host).await.unwrap();
    c.write_all(&req("GET", &file, &[]).bytes(&host))
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_answer(&mut c, &mut pending, false).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"));
    s.terminate();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "not closed: {closed:?}");
}
