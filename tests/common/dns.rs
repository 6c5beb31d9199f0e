//! A real DNS server for the tests: Debian's `dnsmasq` on 127.0.0.1 with TXT records given by
//! the test, authoritative (NXDOMAIN) for the test zones, and every query it receives logged so
//! tests can count them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Debian installs dnsmasq (`/usr/sbin` is not on every user's PATH).
const CANDIDATES: [&str; 3] = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"];

/// The dnsmasq binary, if installed. `.ci/run` installs it; tests skip with a message without it.
pub fn dnsmasq_binary() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v dnsmasq"])
                .output()
                .ok()?;
            let path = String::from_utf8(out.stdout).ok()?;
            let path = path.trim();
            (!path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    /// UDP and TCP port on 127.0.0.1.
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `txt` (`(name, value)`, several values per name allowed) with
    /// TTL `ttl_secs`, authoritative for `zones` (unknown names in them are NXDOMAIN). `None`
    /// when dnsmasq is not installed.
    pub fn start(txt: &[(&str, &str)], zones: &[&str], ttl_secs: u32) -> Option<Dnsmasq> {
        let binary = dnsmasq_binary()?;
        // A port free now may be taken before dnsmasq binds it: try a few.
        for _ in 0..5 {
            if let Some(d) = Self::try_start(&binary, txt, zones, ttl_secs) {
                return Some(d);
            }
        }
        panic!("dnsmasq did not start on a free port");
    }

    fn try_start(
        binary: &Path,
        txt: &[(&str, &str)],
        zones: &[&str],
        ttl_secs: u32,
    ) -> Option<Dnsmasq> {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(binary);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={ttl_secs}"))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()));
        for zone in zones {
            cmd.arg(format!("--local=/{zone}/"));
        }
        for (name, value) in txt {
            // No shell here: quotes would be part of the text.
            cmd.arg(format!("--txt-record={name},{value}"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning dnsmasq");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("started, version") {
                    let _ = ready_tx.send(true);
                }
                if line.contains("failed to") || line.contains("FAILED") {
                    let _ = ready_tx.send(false);
                }
                sink.lock().unwrap().push(line);
            }
            let _ = ready_tx.send(false);
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(true) => Some(Dnsmasq {
                child,
                port,
                log,
                _dir: dir,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("dnsmasq failed: {:?}", log.lock().unwrap());
                None
            }
        }
    }

    /// `udp://127.0.0.1:{port}`, for `dnslink.resolvers`.
    pub fn url(&self) -> String {
        format!("udp://127.0.0.1:{}", self.port)
    }

    /// Queries received for `name` of any type, as logged (`query[TXT] name from …`).
    pub fn queries(&self, name: &str) -> usize {
        let needle = format!("] {name} from ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("query[") && l.contains(&needle))
            .count()
    }

    /// Every query logged so far.
    pub fn all_queries(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("query["))
            .cloned()
            .collect()
    }

    /// Waits up to `limit` for `name` to have been queried `n` times (logs trail the answer).
    pub fn wait_queries(&self, name: &str, n: usize, limit: Duration) -> usize {
        let start = Instant::now();
        while self.queries(name) < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.queries(name)
    }

    /// Stops the server (its port then answers nothing).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `(domain, path)` pairs of a conformance `dnslink.yml` fixture (read from `../shared`, never
/// copied): each entry's `domain:` and the `path:` after it.
pub fn fixture_dnslinks(rel: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(super::fixture(rel)).unwrap();
    let mut out = Vec::new();
    let mut domain: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(d) = line.strip_prefix("domain:") {
            domain = Some(d.trim().to_string());
        } else if let Some(p) = line.strip_prefix("path:") {
            let path = p.split('#').next().unwrap_or("").trim().to_string();
            if let Some(d) = domain.take() {
                out.push((d, path));
            }
        }
    }
    assert!(!out.is_empty(), "no DNSLink entries in {rel}");
    out
}

/// A DNS-over-HTTPS server (RFC 8484: GET `?dns=` base64url and POST, `application/dns-message`,
/// HTTP/2 over TLS) on 127.0.0.1 answering TXT queries from a table; its certificate is
/// self-signed for 127.0.0.1 (`ca_pem`, to trust it with `dnslink.tls_ca`).
pub struct FakeDoh {
    /// `https://127.0.0.1:PORT/dns-query`.
    pub url: String,
    /// The server's certificate, PEM.
    pub ca_pem: String,
    /// `(method, query name)` of every query received.
    pub queries: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDoh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDoh {
    /// Starts a server answering `txt` (`(name, value)`) with TTL `ttl`; other names NXDOMAIN.
    pub async fn start(txt: Vec<(String, String)>, ttl: u32) -> FakeDoh {
        use hickory_resolver::proto::op::{Message, ResponseCode};
        use hickory_resolver::proto::rr::rdata::TXT;
        use hickory_resolver::proto::rr::{Name, RData, Record};
        use http_body_util::BodyExt;

        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca_pem = certified.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let table = Arc::new(txt);
        let log = queries.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, table, log) = (acceptor.clone(), table.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (table, log) = (table.clone(), log.clone());
                            async move {
                                let method = req.method().to_string();
                                let wire = if req.method() == hyper::Method::POST {
                                    req.into_body()
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes().to_vec())
                                        .unwrap_or_default()
                                } else {
                                    let dns = req
                                        .uri()
                                        .query()
                                        .and_then(|q| {
                                            form_urlencoded::parse(q.as_bytes())
                                                .find(|(k, _)| k == "dns")
                                                .map(|(_, v)| v.into_owned())
                                        })
                                        .unwrap_or_default();
                                    use base64::Engine;
                                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                                        .decode(dns)
                                        .unwrap_or_default()
                                };
                                let mut status = hyper::StatusCode::OK;
                                let body = match Message::from_vec(&wire) {
                                    Ok(query) => {
                                        let mut resp = Message::response(
                                            query.metadata.id,
                                            query.metadata.op_code,
                                        );
                                        resp.metadata.recursion_desired =
                                            query.metadata.recursion_desired;
                                        resp.metadata.recursion_available = true;
                                        let mut found = false;
                                        for q in &query.queries {
                                            let name = q
                                                .name()
                                                .to_ascii()
                                                .trim_end_matches('.')
                                                .to_ascii_lowercase();
                                            log.lock()
                                                .unwrap()
                                                .push((method.clone(), name.clone()));
                                            for (n, v) in table.iter().filter(|(n, _)| *n == name) {
                                                found = true;
                                                let owner =
                                                    Name::from_ascii(format!("{n}.")).unwrap();
                                                resp.add_answer(Record::from_rdata(
                                                    owner,
                                                    ttl,
                                                    RData::TXT(TXT::new(vec![v.clone()])),
                                                ));
                                            }
                                            resp.add_query(q.clone());
                                        }
                                        if !found {
                                            resp.metadata.response_code = ResponseCode::NXDomain;
                                        }
                                        resp.to_vec().unwrap()
                                    }
                                    Err(_) => {
                                        status = hyper::StatusCode::BAD_REQUEST;
                                        Vec::new()
                                    }
                                };
                                let mut r = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                *r.status_mut() = status;
                                r.headers_mut().insert(
                                    "content-type",
                                    hyper::header::HeaderValue::from_static(
                                        "application/dns-message",
                                    ),
                                );
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        FakeDoh {
            url: format!("https://127.0.0.1:{port}/dns-query"),
            ca_pem,
            queries,
            task,
        }
    }

    /// Queries received for `name`.
    pub fn count(&self, name: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n == name)
            .count()
    }
}
