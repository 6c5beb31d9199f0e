//! What an operator sees of a running `cidgate serve`: the access log (text and JSON lines,
//! no colour codes on a pipe), refusal of a bad log filter, `/readyz` and the hot node's
//! circuit breaker, the process and build gauges, SIGHUP reloads (and surviving a broken
//! file), and `cidgate config`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, client, metric_sum};

/// A `cidgate serve` whose stderr (the log) is kept for the test to read.
struct Proc {
    child: Child,
    url: String,
    admin: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `serve` on a fresh data directory with `config` (if any) and `env`; `RUST_LOG`
    /// is removed so that `telemetry.log` decides.
    fn start(config: Option<&Path>, env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .env("CIDGATE_SERVER__SAMPLE", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning cidgate serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut admin) = (String::new(), String::new());
        while url.is_empty() || admin.is_empty() {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("serve exited early: {}", log.lock().unwrap()))
                .unwrap();
            if let Some(u) = line.strip_prefix("cidgate: public ") {
                url = u.to_string();
            } else if let Some(u) = line.strip_prefix("cidgate: admin ") {
                admin = u.to_string();
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Proc {
            child,
            url,
            admin,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` `times` times; panics with the log after 15 s.
    fn wait_log(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.log().matches(needle).count() >= times {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} (x{times}) in the log:\n{}", self.log());
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    r.bytes().await.unwrap();
    s
}

#[tokio::test]
async fn access_log_json_lines_name_the_client_behind_a_proxy() {
    let p = Proc::start(
        None,
        &[
            ("CIDGATE_TELEMETRY__LOG_FORMAT", "json"),
            ("CIDGATE_TELEMETRY__LOG", "warn,cidgate::access=info"),
        ],
    );
    // 127.0.0.1 is a trusted proxy by default: the client is the address it forwards.
    let r = client()
        .get(format!("{}/ipfs/bafkqaaa?format=raw&x=1", p.url))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_eq!(
        status_of(client().get(format!("{}/ipfs/nope", p.url))).await,
        400
    );
    p.wait_log("cidgate::access", 2);
    let log = p.log();
    assert!(!log.contains('\u{1b}'), "no colour codes on a pipe:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["target"] == "cidgate::access")
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    let ok = access[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["client"], "198.51.100.7");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/ipfs/bafkqaaa?format=raw&x=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes"], 0);
    assert!(ok["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["ttfb_ms"].as_f64().unwrap());
    assert!(ok["timestamp"].is_string());
    assert!(ok["tiers"].is_string() && ok["cache"].is_string());
    assert_eq!(access[1]["status"], 400);
    assert_eq!(access[1]["cache"], "none");
}

#[tokio::test]
async fn text_access_log_has_the_fields_and_can_be_turned_off() {
    let on = Proc::start(None, &[]);
    let cid = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";
    // Not in this (empty) store: 404 after the tiers were asked.
    assert_eq!(
        status_of(client().get(format!("{}/ipfs/{cid}?format=raw", on.url))).await,
        404
    );
    on.wait_log("cidgate::access", 1);
    let line = on
        .log()
        .lines()
        .find(|l| l.contains("cidgate::access"))
        .unwrap()
        .to_string();
    assert!(!line.contains('\u{1b}'), "{line}");
    for field in [
        "client=127.0.0.1",
        "method=GET",
        "status=404",
        "bytes=",
        "duration_ms=",
        "ttfb_ms=",
        "tiers=",
        "cache=",
        &format!("path=\"/ipfs/{cid}?format=raw\""),
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    let off = Proc::start(None, &[("CIDGATE_TELEMETRY__ACCESS_LOG", "false")]);
    for _ in 0..3 {
        status_of(client().get(format!("{}/ipfs/bafkqaaa", off.url))).await;
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!off.log().contains("cidgate::access"), "{}", off.log());
}

#[test]
fn an_invalid_log_filter_stops_the_start_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, named) in [
        ("CIDGATE_TELEMETRY__LOG", "cidgate=loud", "telemetry.log"),
        ("RUST_LOG", "info,cidgate=[", "RUST_LOG"),
    ] {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(named) && err.contains("filter"), "{err}");
    }
    let out = Command::new(bin())
        .args(["config"])
        .env("CIDGATE_TELEMETRY__LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn readyz_follows_the_hot_nodes_circuit() {
    // A hot node that refuses every connection; one failure opens the circuit for a minute.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let p = Proc::start(
        None,
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &dead_url),
            ("CIDGATE_HOT__BREAKER_FAILURES", "1"),
            ("CIDGATE_HOT__BREAKER_COOLDOWN", "60s"),
            ("CIDGATE_TELEMETRY__LOG", "error"),
        ],
    );
    let ready = client()
        .get(format!("{}/readyz", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");
    let m = common::metrics_at(&p.admin).await;
    assert_eq!(metric_sum(&m, "cidgate_breaker_open", "tier=\"hot\""), 0.0);
    let cid = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";
    let s = status_of(client().get(format!("{}/ipfs/{cid}?format=raw", p.url))).await;
    assert!(s == 502 || s == 504, "{s}");
    let not = client()
        .get(format!("{}/readyz", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(not.status(), 503);
    let retry: u64 = not.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let body = not.text().await.unwrap();
    assert!(body.contains("not ready: hot node circuit open"), "{body}");
    assert!(body.contains(&dead_url), "{body}");
    // Liveness is not readiness.
    assert_eq!(
        status_of(client().get(format!("{}/healthz", p.admin))).await,
        200
    );
    let m = common::metrics_at(&p.admin).await;
    assert_eq!(metric_sum(&m, "cidgate_breaker_open", "tier=\"hot\""), 1.0);
    // The status page says so too.
    let page = client().get(format!("{}/", p.admin)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("not ready") && html.contains("circuit open"));
}

#[tokio::test]
async fn process_build_and_store_gauges() {
    let p = Proc::start(None, &[("CIDGATE_TELEMETRY__LOG", "error")]);
    let m = common::metrics_at(&p.admin).await;
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(metric_sum(&m, "cidgate_build_info", &version), 1.0, "{m}");
    assert!(metric_sum(&m, "cidgate_process_resident_memory_bytes", "") > 1e6);
    assert!(metric_sum(&m, "cidgate_process_open_fds", "") >= 5.0);
    assert!(metric_sum(&m, "cidgate_process_max_fds", "") >= 64.0);
    assert!(metric_sum(&m, "cidgate_store_size_bytes", "") > 0.0);
    assert_eq!(
        metric_sum(&m, "cidgate_breaker_open", "tier=\"hot\""),
        0.0,
        "the embedded store never opens a circuit"
    );
    assert!(m.contains("cidgate_served_bytes_total"));
}

#[tokio::test]
async fn sighup_applies_a_new_config_and_survives_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cidgate.toml");
    std::fs::write(
        &file,
        "[telemetry]\nlog = \"info,cidgate::access=off\"\n[cold]\nproviders = [\"http://127.0.0.1:9/a\"]\n",
    )
    .unwrap();
    let mut p = Proc::start(Some(&file), &[]);
    // No DNSLink site yet, no rate limit, no access log.
    let url = p.url.clone();
    let site = || {
        client()
            .get(format!("{url}/"))
            .header("host", "site.example.org")
    };
    // Without a DNSLink site for its Host, `/` is the gateway's landing page.
    let landing = site().send().await.unwrap().text().await.unwrap();
    assert!(landing.contains("<h1>cidgate</h1>"), "{landing}");
    for _ in 0..3 {
        assert_eq!(
            status_of(client().get(format!("{}/ipfs/bafkqaaa", p.url))).await,
            200
        );
    }
    assert!(!p.log().contains("cidgate::access"));
    std::fs::write(
        &file,
        "[telemetry]\nlog = \"info\"\n\
         [server]\nclient_rate = 0.5\nclient_burst = 2\nidle_timeout = \"5s\"\n\
         [cold]\nproviders = [\"http://127.0.0.1:9/b\", \"http://127.0.0.1:9/c\"]\n\
         [dnslink.names]\n\"site.example.org\" = \"/ipfs/bafkqaaa\"\n",
    )
    .unwrap();
    p.hup();
    p.wait_log("configuration reloaded", 1);
    let log = p.log();
    assert!(
        log.contains("server.idle_timeout") && log.contains("restart"),
        "a key that needs a restart is named:\n{log}"
    );
    // The DNSLink table, the rate limit (burst 2), the log filter and the providers changed.
    let r = site().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-ipfs-path").is_some(),
        "served as a DNSLink site: {:?}",
        r.headers()
    );
    assert_eq!(r.bytes().await.unwrap().len(), 0, "the empty identity file");
    assert_eq!(
        status_of(client().get(format!("{}/ipfs/bafkqaaa", p.url))).await,
        200
    );
    assert_eq!(
        status_of(client().get(format!("{}/ipfs/bafkqaaa", p.url))).await,
        429
    );
    p.wait_log("cidgate::access", 2);
    let report: serde_json::Value = serde_json::from_str(
        &client()
            .get(format!("{}/admin/providers", p.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["static_providers"],
        serde_json::json!(["http://127.0.0.1:9/b", "http://127.0.0.1:9/c"])
    );

    // A broken file: logged, the process lives on with the configuration it had.
    std::fs::write(&file, "[server\nclient_rate = ").unwrap();
    p.hup();
    p.wait_log("configuration reload failed", 1);
    // A valid file with a bad value is refused the same way.
    std::fs::write(&file, "[server]\nclient_rate = -1.0\n").unwrap();
    p.hup();
    p.wait_log("configuration reload failed", 2);
    assert!(p.log().contains("server.client_rate"), "{}", p.log());
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.alive(), "SIGHUP never ends the process");
    assert_eq!(
        status_of(client().get(format!("{}/healthz", p.admin))).await,
        200
    );
    assert_eq!(
        status_of(client().get(format!("{}/ipfs/bafkqaaa", p.url))).await,
        429,
        "the rate limit of the last good configuration stays"
    );
    assert_eq!(status_of(site()).await, 429);
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[admin]\ntoken = \"s3cret-token\"\n\
         [hot]\nbackend = \"kubo\"\nurl = \"http://alice:hunter2@127.0.0.1:5001/\"\n\
         [cold]\nproviders = [\"https://sp.example/?token=abc&page=2\", { url = \"https://bob:pw@sp2.example\", label = \"two\" }]\n\
         [server]\nclient_rate = 3.0\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["config", "--listen", "127.0.0.1:1234"])
        .env("CIDGATE_SERVER__CLIENT_BURST", "7")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in ["s3cret-token", "hunter2", "token=abc", "bob:pw"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["admin"]["token"].as_str(), Some("****"));
    assert_eq!(
        v["hot"]["url"].as_str(),
        Some("http://alice:****@127.0.0.1:5001/")
    );
    assert_eq!(
        v["cold"]["providers"][0].as_str(),
        Some("https://sp.example/?token=****&page=2")
    );
    assert_eq!(
        v["cold"]["providers"][1]["url"].as_str(),
        Some("https://bob:****@sp2.example/")
    );
    // Defaults, file, environment and flags, in that order.
    assert_eq!(v["server"]["client_rate"].as_float(), Some(3.0));
    assert_eq!(v["server"]["client_burst"].as_integer(), Some(7));
    assert_eq!(v["server"]["listen"].as_str(), Some("127.0.0.1:1234"));
    assert_eq!(
        v["store"]["dir"].as_str(),
        Some(dir.path().join("data").to_str().unwrap())
    );
    assert_eq!(v["telemetry"]["access_log"].as_bool(), Some(true));
    assert_eq!(v["cache"]["memory"].as_str(), Some("256.0 MiB"));
    // What it prints is itself a valid configuration file.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&again)
        .arg("config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_during_the_start_is_applied_after_it_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen"])
        .arg(format!("127.0.0.1:{admin_port}"))
        .env_remove("RUST_LOG")
        // The sample is built and imported during the start: a window for the signal.
        .env("CIDGATE_SERVER__SAMPLE", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = started.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("cidgate: public ") {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    // The admin listener answers from the first moments of the start; from then on a SIGHUP
    // must never end the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(Instant::now() < deadline, "no admin listener");
        assert!(matches!(child.try_wait(), Ok(None)), "exited early");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sent = 0;
    while !started.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "never started");
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "a SIGHUP during the start ended the process:\n{}",
            log.lock().unwrap()
        );
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status();
        sent += 1;
    }
    assert!(sent > 0);
    // The reload asked for during the start runs once the server is up.
    while !log.lock().unwrap().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(child.try_wait(), Ok(None)));
    let _ = child.kill();
    let _ = child.wait();
}
