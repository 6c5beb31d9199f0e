//! Hostile and faulty clients against the public listener (design invariants 8 and 10): silent
//! and idle connections are closed, over-limit connections and requests are answered at once,
//! readers that stop reading are cut off, slow upstreams answer 504, forwarding headers count
//! only from trusted proxies, size caps answer 410, and the admin listener stays reachable.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, ProxyFault};
use common::{cidgate, client, metric_sum, metrics, noise, Server};

const MIB: usize = 1 << 20;

/// A data directory holding one site: `big.bin` (`size` bytes), `small.txt`, and a directory
/// named like a host (`evil.example/`); returns it with the site's root CID.
fn site(size: usize) -> (tempfile::TempDir, String) {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = src.path().join("site");
    std::fs::create_dir_all(root.join("evil.example")).unwrap();
    std::fs::write(root.join("evil.example/index.txt"), "inside\n").unwrap();
    std::fs::write(root.join("big.bin"), noise(size, 3)).unwrap();
    std::fs::write(root.join("small.txt"), "small\n").unwrap();
    let out = cidgate(dir.path(), &["add", root.to_str().unwrap()]);
    assert!(out.status.success());
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (dir, cid)
}

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// The value of one `cidgate_inflight_work` gauge.
async fn work(s: &Server, kind: &str) -> f64 {
    metric_sum(
        &metrics(s).await,
        "cidgate_inflight_work",
        &format!("kind=\"{kind}\""),
    )
}

/// Waits up to `limit` for `cond` on the gateway's metrics.
async fn eventually(s: &Server, limit: Duration, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let m = metrics(s).await;
        if cond(&m) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the server closed `c` (EOF or reset) within `limit`.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let (dir, root) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("CIDGATE_SERVER__IDLE_TIMEOUT", "1500ms"),
        ],
        &[],
    );
    // Connections that never send a byte (stuck in HTTP/1-vs-2 detection), half a request
    // line, or a partial HTTP/2 preface.
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    let mut partial = TcpStream::connect(addr(&s)).unwrap();
    partial.write_all(b"GET /ipfs/").unwrap();
    let mut preface = TcpStream::connect(addr(&s)).unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let start = Instant::now();
    for c in silent.iter_mut().chain([&mut partial, &mut preface]) {
        assert!(closed_within(c, Duration::from_secs(5)), "closed");
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );

    // HTTP/1.1 keep-alive: closed once idle for idle_timeout, not before.
    let mut ka = TcpStream::connect(addr(&s)).unwrap();
    ka.write_all(
        format!("GET /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    ka.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = ka.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_start = Instant::now();
    assert!(closed_within(&mut ka, Duration::from_secs(5)));
    let idle = idle_start.elapsed();
    assert!(
        idle >= Duration::from_millis(1200) && idle < Duration::from_secs(4),
        "{idle:?}"
    );

    // A next head trickled in after an answer (slow-loris on a kept-alive connection) has the
    // same idle_timeout from the end of that answer: the head never completes, and bytes
    // dribbling in do not keep the connection open.
    let mut trickle = TcpStream::connect(addr(&s)).unwrap();
    trickle
        .write_all(
            format!("GET /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        )
        .unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = trickle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let trickle_start = Instant::now();
    for b in b"GET /ipfs/" {
        trickle.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed_within(&mut trickle, Duration::from_secs(5)));
    let took = trickle_start.elapsed();
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // HTTP/2: a connection with no open stream is closed after idle_timeout too.
    let tcp = tokio::net::TcpStream::connect(addr(&s)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1/ipfs/{root}/small.txt"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let h2_start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "the idle h2 connection was closed");
    assert!(h2_start.elapsed() >= Duration::from_millis(1200));
    eventually(&s, Duration::from_secs(3), "no connection left", |m| {
        metric_sum(m, "cidgate_inflight_work", "kind=\"connections\"") == 0.0
    })
    .await;
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body from `c`: its head (lower-cased) and
/// its body; `None` when the connection ends first.
fn read_answer(c: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return Some((head, body));
            }
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// A request body the read-only gateway does not want is read and dropped, so that the request
/// behind it on the connection is answered (hyper alone closes the connection, unannounced,
/// when such a body has not fully arrived by the time the answer is done); a body too large to
/// wait for, or one held back for `100 Continue`, gets its answer with `Connection: close`.
#[tokio::test]
async fn stray_request_bodies_do_not_cost_the_requests_behind_them() {
    let (dir, root) = site(1000);
    let s = Server::spawn(dir, &[], &[]);
    let small = format!("GET /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    for (method, body_len) in [("POST", 3usize), ("PUT", 60 * 1024), ("GET", 10)] {
        let mut c = TcpStream::connect(addr(&s)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(
            format!(
                "{method} /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {body_len}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        // The body comes late, in pieces, with the next request right behind it.
        std::thread::sleep(Duration::from_millis(200));
        let body = vec![b'x'; body_len];
        let (first, rest) = body.split_at(body_len / 2);
        c.write_all(first).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        c.write_all(rest).unwrap();
        c.write_all(small.as_bytes()).unwrap();
        let mut pending = Vec::new();
        let (head, _) = read_answer(&mut c, &mut pending).expect("first answer");
        let want = if method == "GET" { "200" } else { "405" };
        assert!(
            head.starts_with(&format!("http/1.1 {want}")),
            "{method}: {head}"
        );
        assert!(!head.contains("connection: close"), "{method}: {head}");
        let (head, body) = read_answer(&mut c, &mut pending).expect("the request behind it");
        assert!(head.starts_with("http/1.1 200"), "{method}: {head}");
        assert_eq!(body, b"small\n");
    }

    // Too large to read for nothing, or held back for 100 Continue (none is sent for a body
    // that would be dropped): answered, and the close is announced.
    for extra in [
        "Content-Length: 10000000",
        "Content-Length: 5\r\nExpect: 100-continue",
    ] {
        let mut c = TcpStream::connect(addr(&s)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(
            format!("POST /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut pending = Vec::new();
        let (head, _) = read_answer(&mut c, &mut pending).expect("answered");
        assert!(head.starts_with("http/1.1 405"), "{extra}: {head}");
        assert!(head.contains("connection: close"), "{extra}: {head}");
        assert!(closed_within(&mut c, Duration::from_secs(5)), "{extra}");
    }
}

#[tokio::test]
async fn over_limit_connections_are_answered_at_once_and_admin_stays_up() {
    let (dir, root) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__MAX_CONNECTIONS", "4"),
            ("CIDGATE_SERVER__HEADER_READ_TIMEOUT", "30s"),
        ],
        &[],
    );
    // Four clients that are served and stay connected (keep-alive) hold every place.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&s)).unwrap();
            c.write_all(
                format!("GET /ipfs/{root}/small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let mut buf = [0u8; 1024];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let n = c.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            c
        })
        .collect();
    // Refused without even sending a request: the answer comes at once, then the close.
    for _ in 0..50 {
        let mut extra = TcpStream::connect(addr(&s)).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut head = String::new();
        let _ = extra.read_to_string(&mut head);
        assert!(head.starts_with("HTTP/1.1 503"), "{head:?}");
        assert!(head.to_ascii_lowercase().contains("retry-after: 1"));
    }
    // The operator is not locked out.
    let r = client()
        .get(format!("{}/healthz", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics(&s).await;
    assert!(metric_sum(&m, "cidgate_limited_total", "reason=\"connections\"") >= 50.0);
    drop(held);
    // Freed slots serve again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = client()
            .get(format!("{}/ipfs/{root}/small.txt", s.url))
            .send()
            .await
        {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn silent_connections_give_their_place_to_real_clients() {
    let (dir, root) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__MAX_CONNECTIONS", "4"),
            ("CIDGATE_SERVER__HEADER_READ_TIMEOUT", "60s"),
        ],
        &[],
    );
    // A flood that fills every place and never sends a request …
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // … does not keep a real client out for the header timeout: the oldest silent one goes.
    for _ in 0..3 {
        let r = client()
            .get(format!("{}/ipfs/{root}/small.txt", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(3)),
        "evicted"
    );
    let m = metrics(&s).await;
    assert!(metric_sum(&m, "cidgate_limited_total", "reason=\"evicted_unproven\"") >= 1.0);
}

#[tokio::test]
async fn per_client_connections_are_bounded_unless_the_peer_is_a_trusted_proxy() {
    let (dir, _root) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__MAX_CONNECTIONS_PER_CLIENT", "3"),
            ("CIDGATE_SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
        ],
        &[],
    );
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr(&s)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut head = String::new();
    let _ = extra.read_to_string(&mut head);
    assert!(head.starts_with("HTTP/1.1 503"), "{head:?}");
    let m = metrics(&s).await;
    assert_eq!(
        metric_sum(&m, "cidgate_limited_total", "reason=\"client_connections\""),
        1.0
    );
    drop(s);

    // Loopback is a trusted proxy by default: its connections carry many clients.
    let (dir, root) = site(1000);
    let s = Server::spawn(
        dir,
        &[("CIDGATE_SERVER__MAX_CONNECTIONS_PER_CLIENT", "3")],
        &[],
    );
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    let r = client()
        .get(format!("{}/ipfs/{root}/small.txt", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readers_that_stop_reading_are_cut_off() {
    let (dir, root) = site(24 * MIB);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__SEND_TIMEOUT", "1s"),
            ("CIDGATE_CACHE__ZERO_COPY", "false"),
        ],
        &[],
    );
    let mut c = TcpStream::connect(addr(&s)).unwrap();
    c.write_all(format!("GET /ipfs/{root}/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    // Read the head and a little, then stop reading: the socket buffers fill up.
    let mut buf = [0u8; 8192];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.read(&mut buf).unwrap();
    eventually(
        &s,
        Duration::from_secs(10),
        "the stuck response was cut off",
        |m| {
            metric_sum(m, "cidgate_inflight_requests", "") == 0.0
                && metric_sum(m, "cidgate_inflight_work", "kind=\"connections\"") == 0.0
        },
    )
    .await;
    // What was sent is less than the file: the response never completed.
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.len() < 24 * MIB, "cut short");
}

#[tokio::test]
async fn request_limits_answer_429_with_retry_after() {
    let (dir, root) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__CLIENT_RATE", "1"),
            ("CIDGATE_SERVER__CLIENT_BURST", "3"),
        ],
        &[],
    );
    let url = format!("{}/ipfs/{root}/small.txt", s.url);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = client().get(&url).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&after), "{after}");
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another client (behind the trusted loopback proxy) has a bucket of its own.
    let r = client()
        .get(&url)
        .header("x-forwarded-for", "198.51.100.20")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(s);

    // The global cap: requests in progress beyond it are refused, not queued.
    let (dir, root) = site(24 * MIB);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__MAX_CONCURRENT_REQUESTS", "2"),
            ("CIDGATE_CACHE__ZERO_COPY", "false"),
        ],
        &[],
    );
    let big = format!("GET /ipfs/{root}/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    // Two responses in progress, their readers reading nothing for now.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr(&s)).unwrap();
        c.write_all(big.as_bytes()).unwrap();
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = client()
        .get(format!("{}/ipfs/{root}/small.txt", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client()
            .get(format!("{}/ipfs/{root}/small.txt", s.url))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let (dir, root) = site(1000);
    let cidv1 = root.clone();
    let subdomain_host = format!("{cidv1}.ipfs.localhost");
    // Loopback is trusted by default: X-Forwarded-Host picks the subdomain site.
    let s = Server::spawn(
        dir,
        &[(
            "CIDGATE_DNSLINK__NAMES",
            &format!("site.example=/ipfs/{root}"),
        )],
        &[],
    );
    let ask = |host: &'static str, xfh: String| {
        let url = format!("{}/small.txt", s.url);
        async move {
            client()
                .get(url)
                .header("host", host)
                .header("x-forwarded-host", xfh)
                .send()
                .await
                .unwrap()
        }
    };
    let r = ask("127.0.0.1", subdomain_host.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "small\n");
    let r = ask("127.0.0.1", "site.example".into()).await;
    assert_eq!(r.status(), 200, "DNSLink site chosen by the trusted proxy");
    drop(s);

    // A gateway that trusts no loopback proxy ignores (and drops) the headers.
    let (dir, _) = site(1000);
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__TRUSTED_PROXIES", ""),
            (
                "CIDGATE_DNSLINK__NAMES",
                &format!("site.example=/ipfs/{root}"),
            ),
        ],
        &[],
    );
    for xfh in [subdomain_host.clone(), "site.example".to_string()] {
        let r = client()
            .get(format!("{}/small.txt", s.url))
            .header("host", "127.0.0.1")
            .header("x-forwarded-host", xfh.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{xfh} was not believed");
    }
    // Nor does X-Forwarded-Proto choose the scheme of redirects.
    let r = client()
        .get(format!("{}/ipfs/{root}", s.url))
        .header("host", "localhost")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://"), "{location}");
}

#[tokio::test]
async fn ranges_that_overlap_are_served_once_and_redirects_stay_on_the_origin() {
    let (dir, root) = site(3 * MIB);
    let s = Server::spawn(dir, &[], &[]);
    let many = format!("bytes={}", vec!["0-"; 64].join(","));
    let r = client()
        .get(format!("{}/ipfs/{root}/big.bin", s.url))
        .header("range", many)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served whole, once");
    assert_eq!(r.bytes().await.unwrap().len(), 3 * MIB);

    // `//evil.example` names the directory inside the site; the redirect to its slash form
    // must not become a protocol-relative URL to another host.
    let r = client()
        .get(format!("{}//evil.example", s.url))
        .header("host", format!("{root}.ipfs.localhost"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        !location.starts_with("//") && !location.starts_with("/\\"),
        "{location}"
    );
    assert_eq!(location, "/evil.example/");
}

#[tokio::test]
async fn slow_upstreams_answer_504_and_stalled_bodies_are_cut() {
    let (dir, root) = site(3 * MIB);
    let hot = Server::spawn(dir, &[], &[]);
    let slow =
        FaultProxy::start(&hot.url, ProxyFault::SlowFirstByte(Duration::from_secs(20))).await;
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &slow.url),
            ("CIDGATE_HOT__TIMEOUT", "30s"),
            ("CIDGATE_SERVER__RETRIEVAL_TIMEOUT", "1s"),
        ],
        &[],
    );
    let start = Instant::now();
    let r = client()
        .get(format!("{}/ipfs/{root}/small.txt", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.headers().contains_key("retry-after"));
    assert!(start.elapsed() < Duration::from_secs(5));
    let body = r.text().await.unwrap();
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert_eq!(
        work(&g, "block_flights").await + work(&g, "dag_streams").await,
        0.0
    );
    drop(g);

    // A hot node that stops sending in the middle of a body: the response ends unclean.
    let stall = FaultProxy::start(&hot.url, ProxyFault::StallBody { after: 1_200_000 }).await;
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &stall.url),
            ("CIDGATE_HOT__TIMEOUT", "30s"),
            ("CIDGATE_SERVER__STALL_TIMEOUT", "1s"),
        ],
        &[],
    );
    let start = Instant::now();
    let r = client()
        .get(format!("{}/ipfs/{root}/big.bin", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "no clean end");
    assert!(start.elapsed() < Duration::from_secs(10));
    eventually(&g, Duration::from_secs(5), "nothing left in flight", |m| {
        metric_sum(m, "cidgate_inflight_requests", "") == 0.0
            && metric_sum(m, "cidgate_inflight_work", "kind=\"dag_streams\"") == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_response_that_never_stalls_is_still_cut_at_the_maximum_request_duration() {
    let (dir, root) = site(12 * MIB);
    let hot = Server::spawn(dir, &[], &[]);
    // 12 MiB at 256 KiB every 100 ms takes about 5 s, and a 1 MiB leaf arrives whole every
    // 0.4 s: never the 2 s without a byte the stall timer waits for, so only the maximum
    // duration can end it.
    let trickle = FaultProxy::start(
        &hot.url,
        ProxyFault::Trickle {
            chunk: 256 * 1024,
            every: Duration::from_millis(100),
        },
    )
    .await;
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &trickle.url),
            ("CIDGATE_HOT__TIMEOUT", "30s"),
            ("CIDGATE_SERVER__STALL_TIMEOUT", "2s"),
            ("CIDGATE_SERVER__MAX_REQUEST_DURATION", "2s"),
        ],
        &[],
    );
    let start = Instant::now();
    let r = client()
        .get(format!("{}/ipfs/{root}/big.bin", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (body, end) = common::body_until_end(r).await;
    let got = body.len();
    let took = start.elapsed();
    assert!(end.is_err(), "no clean end: {got} bytes arrived");
    assert!(got > 0 && got < 12 * MIB, "cut mid-body, {got} bytes");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "cut at the 2 s deadline, not by the stall timer or the end: {took:?}"
    );
    eventually(&g, Duration::from_secs(5), "nothing left in flight", |m| {
        metric_sum(m, "cidgate_inflight_requests", "") == 0.0
            && metric_sum(m, "cidgate_inflight_work", "kind=\"dag_streams\"") == 0.0
    })
    .await;

    // Without the cap the same trickle is a complete, correct body.
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &trickle.url),
            ("CIDGATE_HOT__TIMEOUT", "30s"),
            ("CIDGATE_SERVER__STALL_TIMEOUT", "2s"),
        ],
        &[],
    );
    let body = client()
        .get(format!("{}/ipfs/{root}/big.bin", g.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 12 * MIB);
}

#[tokio::test]
async fn size_caps_answer_a_cacheable_410_naming_the_cap() {
    let (dir, root) = site(3 * MIB);
    let s = Server::spawn(
        dir,
        &[("CIDGATE_GATEWAY__MAX_DESERIALIZED_RESPONSE_SIZE", "1MiB")],
        &[],
    );
    let big = format!("{}/ipfs/{root}/big.bin", s.url);
    let r = client().get(&big).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("gateway.max_deserialized_response_size"),
        "{text}"
    );
    assert!(text.contains("1.0 MiB"), "{text}");
    // A range within the file is a small response: served.
    let r = client()
        .get(&big)
        .header("range", "bytes=2000000-2000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &noise(3 * MIB, 3)[2_000_000..2_000_100]
    );
    // Verifiable formats are not deserialized responses.
    let r = client()
        .get(format!("{big}?format=car"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .get(format!("{}/ipfs/{root}?format=tar", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    drop(s);

    let (dir, root) = site(3 * MIB);
    let s = Server::spawn(
        dir,
        &[("CIDGATE_GATEWAY__MAX_UNIXFS_DAG_RESPONSE_SIZE", "2MiB")],
        &[],
    );
    let r = client()
        .get(format!("{}/ipfs/{root}/big.bin?format=car", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("gateway.max_unixfs_dag_response_size"));
    let r = client()
        .get(format!(
            "{}/ipfs/{root}/big.bin?format=car&dag-scope=entity&entity-bytes=0:1000",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a part of it is fine");
    let r = client()
        .get(format!("{}/ipfs/{root}?format=car", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "the whole site is over the cap");
}

#[tokio::test]
async fn an_admin_listener_off_loopback_needs_the_token_for_reads() {
    let (dir, _) = site(1000);
    let s = Server::spawn(
        dir,
        &[("CIDGATE_ADMIN__TOKEN", "s3cret")],
        &["--admin-listen", "0.0.0.0:0"],
    );
    let port = s.admin.rsplit(':').next().unwrap().to_string();
    let admin = format!("http://127.0.0.1:{port}");
    for path in [
        "/metrics",
        "/",
        "/admin/pins",
        "/admin/popular",
        "/admin/providers",
    ] {
        let r = client().get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = client()
            .get(format!("{admin}{path}"))
            .header("authorization", "bearer s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with a lowercase scheme");
    }
    let r = client()
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "liveness stays open");
}

/// `cidgate serve` of `dir` with its open-files limit set to `files` by the shell.
fn spawn_with_file_limit(dir: tempfile::TempDir, files: u32) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
        .arg(common::bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .env("CIDGATE_SERVER__SAMPLE", "false")
        .env("CIDGATE_SERVER__HEADER_READ_TIMEOUT", "60s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut admin) = (String::new(), String::new());
    while url.is_empty() || admin.is_empty() {
        let line = lines.next().unwrap().unwrap();
        if let Some(u) = line.strip_prefix("cidgate: public ") {
            url = u.to_string();
        } else if let Some(u) = line.strip_prefix("cidgate: admin ") {
            admin = u.to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url,
        admin,
        dir,
    }
}

#[tokio::test]
async fn a_connection_flood_cannot_run_the_process_out_of_files() {
    let (dir, root) = site(1000);
    // 700 files: the public port gets what is left after the process's own reserve.
    let s = spawn_with_file_limit(dir, 700);
    let mut flood = Vec::new();
    for _ in 0..1500 {
        match TcpStream::connect(addr(&s)) {
            Ok(c) => flood.push(c),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // The operator still gets in, and the store and the admin API still work.
    let r = client()
        .get(format!("{}/healthz", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics(&s).await;
    assert!(metric_sum(&m, "cidgate_limited_total", "reason=\"connections\"") > 0.0);
    assert_eq!(
        metric_sum(&m, "cidgate_limited_total", "reason=\"accept_error\""),
        0.0,
        "never out of descriptors"
    );
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client()
            .get(format!("{}/ipfs/{root}/small.txt", s.url))
            .send()
            .await
        {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the public port never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
