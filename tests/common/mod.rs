//! Test support: runs real `cidgate` processes on 127.0.0.1:0 and reads CARs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use cidgate::ipld::car::{CarDecoder, CarItem};
use cidgate::ipld::Cid;
use tokio_util::codec::Decoder;

/// The conformance fixtures beside the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/fixtures")
}

/// A fixture file by relative path.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(
        p.exists(),
        "fixture {} missing: is ../shared beside the repository?",
        p.display()
    );
    p
}

/// The cidgate binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cidgate")
}

/// Runs a cidgate command to completion.
pub fn cidgate(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running cidgate")
}

/// A running `cidgate serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Imports `cars` into a fresh store and starts serving it.
    pub fn start(cars: &[&str]) -> Server {
        Self::start_with(cars, &[], &[])
    }

    /// Like [`Server::start`] with extra environment and serve arguments.
    pub fn start_with(cars: &[&str], env: &[(&str, &str)], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if !cars.is_empty() {
            let paths: Vec<String> = cars
                .iter()
                .map(|c| fixture(c).display().to_string())
                .collect();
            let mut a = vec!["import"];
            a.extend(paths.iter().map(String::as_str));
            let out = cidgate(dir.path(), &a);
            assert!(
                out.status.success(),
                "import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self::spawn(dir, env, args)
    }

    /// Starts serving an existing data directory.
    pub fn spawn(dir: tempfile::TempDir, env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::spawn_inner(dir, None, env, args)
    }

    /// Like [`Server::spawn`] with a configuration file.
    pub fn spawn_with_config(
        dir: tempfile::TempDir,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        Self::spawn_inner(dir, Some(config), env, &[])
    }

    /// A server on data directory `path`, which outlives it (the caller owns it).
    pub fn spawn_in(path: &Path, env: &[(&str, &str)]) -> Server {
        Self::spawn_at(tempfile::tempdir().unwrap(), Some(path), None, env, &[])
    }

    fn spawn_inner(
        dir: tempfile::TempDir,
        config: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        Self::spawn_at(dir, None, config, env, args)
    }

    fn spawn_at(
        dir: tempfile::TempDir,
        data_dir: Option<&Path>,
        config: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let data_dir = data_dir.unwrap_or(dir.path()).to_path_buf();
        let mut cmd = Command::new(bin());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .env("CIDGATE_SERVER__SAMPLE", "false")
            // Tests send many made-up Host headers: none may become a query to the machine's
            // resolver. Tests of DNSLink over DNS allow domains again, against a loopback server.
            .env("CIDGATE_DNSLINK__ALLOWED", "")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning cidgate serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut url = String::new();
        let mut admin = String::new();
        while url.is_empty() || admin.is_empty() {
            let line = lines
                .next()
                .expect("cidgate serve exited before announcing its addresses")
                .unwrap();
            if let Some(u) = line.strip_prefix("cidgate: public ") {
                url = u.to_string();
            } else if let Some(u) = line.strip_prefix("cidgate: admin ") {
                admin = u.to_string();
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            admin,
            dir,
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit up to `limit`; returns whether it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A parsed CAR: header roots and blocks in order.
pub struct Car {
    pub roots: Vec<Cid>,
    pub blocks: Vec<(Cid, bytes::Bytes)>,
}

impl Car {
    /// CIDs of the blocks in order, as strings.
    pub fn cids(&self) -> Vec<String> {
        self.blocks.iter().map(|(c, _)| c.to_string()).collect()
    }
}

/// Parses a complete CARv1 and checks every block hashes to its CID.
pub fn parse_car(bytes: &[u8]) -> Car {
    let mut buf = BytesMut::from(bytes);
    let mut dec = CarDecoder::new();
    let mut roots = Vec::new();
    let mut blocks = Vec::new();
    while let Some(item) = dec.decode_eof(&mut buf).expect("valid CAR") {
        match item {
            CarItem::Header(r) => roots = r,
            CarItem::Block(c, d) => {
                cidgate::ipld::verify::check(&c, &d).expect("block verifies");
                blocks.push((c, d));
            }
        }
    }
    Car { roots, blocks }
}

pub mod cluster;
pub mod dns;
pub mod fault_proxy;
pub mod faulty;
pub mod ipns_records;
pub mod routing;

/// Sum of all samples of a Prometheus counter family in `/metrics` text (optionally filtered
/// by a label substring).
pub fn metric_sum(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The admin `/metrics` text of a server.
pub async fn metrics(s: &Server) -> String {
    client()
        .get(format!("{}/metrics", s.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `/metrics` text of the admin listener at `admin` (a base URL).
pub async fn metrics_at(admin: &str) -> String {
    client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads a response body to its end or its first error: what arrived, and whether it ended
/// clean (a body cut mid-way, as cidgate cuts one it cannot finish, ends in `Err`).
pub async fn body_until_end(mut r: reqwest::Response) -> (Vec<u8>, Result<(), reqwest::Error>) {
    let mut got = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// The body of a GET, panicking with the URL on failure.
pub async fn get_bytes(url: &str) -> bytes::Bytes {
    let resp = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
}

/// Deterministic pseudo-random bytes (xorshift): every process builds the same content and CIDs.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// GET `url`, panicking with the URL on a transport error.
pub async fn get(url: &str) -> reqwest::Response {
    match client().get(url).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {url}: {e:?}"),
    }
}

/// The `X-Cidgate-Tier` header of a response, empty when absent.
pub fn tier(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cidgate-tier")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Serves HTTP/1.1 and HTTP/2 on 127.0.0.1:0 with `handler` until the returned task is aborted
/// (which ends its connections too); returns the base URL and the task. Every fake server of
/// the tests runs on this.
pub async fn serve_http<F, Fut, B>(handler: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = std::sync::Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            while connections.try_join_next().is_some() {}
            let handler = handler.clone();
            connections.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let reply = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(reply.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

/// A whole response: status, headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// A header's value, empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `req` and reads the whole response.
pub async fn answer(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap(),
    }
}

/// Copies directory `from` into `to`, subdirectories included (a data directory: the database
/// and the segment files under `blocks/`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
