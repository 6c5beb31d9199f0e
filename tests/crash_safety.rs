//! kill -9 at random points of every write cidgate makes: `cidgate import` of a multi-MB CAR,
//! `cidgate add` of a directory, Pinning Service API `POST /pins`, a popularity promotion and a
//! demotion. After each kill the store is reopened by a restarted `serve` and then by this
//! process: nothing partial may be pinned, every pin made before the kill must still be there
//! and complete, the pinned roots' CARs must be served whole, and the operation must succeed
//! when it is run again.
//!
//! Kill moments come from a seeded RNG (`CRASH_SEED`), as fractions of the operation's measured
//! duration (0..1.3, so some land early, some in the middle, some late or after the end).
//! `CRASH_ITERATIONS` sets the kills per operation (default 10, for CI). Each test prints one
//! `crash_safety:` line with its figures.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cidgate::ipld::builder::{directory, BlockSink, Entry, FileBuilder};
use cidgate::ipld::car::{frame_prefix, header};
use cidgate::ipld::{Block, Cid};
use cidgate::tiers::import::finish_batch;
use cidgate::tiers::local::{LocalStore, PinReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{bin, client, noise, parse_car};

fn iterations() -> usize {
    std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// One RNG per operation, so that each test's choices do not depend on the others.
fn rng(op: u64) -> StdRng {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00c1_d6a7_e5af_e000u64);
    StdRng::seed_from_u64(seed ^ op.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A kill moment: a fraction in 0..1.3 of the operation's duration.
fn kill_delay(rng: &mut StdRng, duration: Duration) -> Duration {
    duration.mul_f64(rng.random_range(0.0..1.3))
}

// ---------------------------------------------------------------------------------------------
// Content

/// A UnixFS DAG built in this process, root first (so an interrupted import has the root
/// without its children).
struct Dag {
    root: Cid,
    blocks: Vec<Block>,
}

impl Dag {
    fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.len() as u64).sum()
    }

    fn cids(&self) -> HashSet<Cid> {
        self.blocks.iter().map(|b| *b.cid()).collect()
    }

    fn car(&self) -> Vec<u8> {
        let mut out = header(&[self.root]).unwrap().to_vec();
        for b in &self.blocks {
            out.extend_from_slice(&frame_prefix(b.cid(), b.len()));
            out.extend_from_slice(b.data());
        }
        out
    }
}

struct Sink(Vec<Block>);

impl BlockSink for Sink {
    fn put(&mut self, block: Block) -> Result<(), cidgate::ipld::builder::BuildError> {
        self.0.push(block);
        Ok(())
    }
}

/// `files` small files of `size` bytes (distinct per `seed`) in directories: the first one
/// has 1100 entries, so it is a HAMT, the others 500.
fn make_dag(seed: u64, files: usize, size: usize) -> Dag {
    let mut sink = Sink(Vec::new());
    let mut dirs: Vec<(String, Entry)> = Vec::new();
    let mut made = 0;
    while made < files {
        let count = (files - made).min(if dirs.is_empty() { 1100 } else { 500 });
        let mut entries = Vec::with_capacity(count);
        for j in 0..count {
            let data = noise(size, seed.wrapping_mul(1_000_003) + (made + j) as u64 + 1);
            let mut fb = FileBuilder::new();
            fb.write(&data, &mut sink).unwrap();
            entries.push((format!("f{j:05}"), fb.finish(&mut sink).unwrap()));
        }
        dirs.push((
            format!("d{}", dirs.len()),
            directory(entries, &mut sink).unwrap(),
        ));
        made += count;
    }
    let root = directory(dirs, &mut sink).unwrap();
    let mut blocks = sink.0;
    blocks.reverse();
    Dag {
        root: root.cid,
        blocks,
    }
}

/// Writes `dags` into the store in `dir` as operator pins (a provider's content, or pins that
/// exist before the kills start).
fn store_dags(dir: &Path, dags: &[&Dag]) {
    let store = LocalStore::open(dir).unwrap();
    for d in dags {
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &d.blocks, true).unwrap();
        let report = finish_batch(&store, batch, &[d.root], PinReason::Operator).unwrap();
        assert!(report[0].pinned);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

struct Serve {
    child: Child,
    url: String,
    admin: String,
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "error")
        .env("CIDGATE_SERVER__SAMPLE", "false");
    cmd
}

/// Starts `serve` on `dir`; an error when it exits (or says nothing) before announcing its
/// addresses, i.e. when the store did not open.
fn serve(dir: &Path, env: &[(&str, &str)]) -> Result<Serve, String> {
    let mut cmd = command(dir);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the child never blocks.
                continue;
            }
        }
    });
    let (mut url, mut admin) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while url.is_empty() || admin.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(u) = line.strip_prefix("cidgate: public ") {
                    url = u.to_string();
                } else if let Some(u) = line.strip_prefix("cidgate: admin ") {
                    admin = u.to_string();
                }
            }
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("serve did not start (exit {status:?})"));
            }
        }
    }
    Ok(Serve { child, url, admin })
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s: a clean stop, so that the next
/// open of the store has no crash to recover from.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(child);
}

/// SIGKILL; true when the process was still running (the kill interrupted it).
fn kill9(child: &mut Child) -> bool {
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The figures of one operation.
#[derive(Default)]
struct Tally {
    kills: usize,
    /// Kills that found the process still running.
    interrupted: usize,
    /// Kills after which the operation's effect was absent (it was cut before its commit).
    unfinished: usize,
    failed_restarts: usize,
    partial_pins: usize,
    lost_bytes: u64,
    reruns_ok: usize,
    problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, msg: String) {
        eprintln!("crash_safety problem: {msg}");
        self.problems.push(msg);
    }

    fn finish(self, op: &str, elapsed: Duration) {
        println!(
            "crash_safety: op={op} kills={} interrupted={} unfinished={} failed_restarts={} \
             partial_pins={} lost_bytes={} reruns_ok={} problems={} ({:.1} s)",
            self.kills,
            self.interrupted,
            self.unfinished,
            self.failed_restarts,
            self.partial_pins,
            self.lost_bytes,
            self.reruns_ok,
            self.problems.len(),
            elapsed.as_secs_f64()
        );
        assert!(
            self.problems.is_empty()
                && self.failed_restarts == 0
                && self.partial_pins == 0
                && self.lost_bytes == 0
                && self.reruns_ok == self.kills,
            "{op}: {:#?}",
            self.problems
        );
    }
}

/// Whether `root` is pinned and complete in the store in `dir` (nothing else running on it).
fn pinned_complete(dir: &Path, root: &Cid) -> bool {
    let Ok(store) = LocalStore::open(dir) else {
        return false;
    };
    store.pin_of(root).is_ok_and(|p| p.is_some())
        && store.check_dag(root).is_ok_and(|g| g.is_none())
}

/// Opens the store in this process (the server is stopped): every pin must be complete (each
/// block reachable from it stored and decodable), and every root in `expected` still pinned.
/// Returns the pinned roots.
fn check_store(dir: &Path, expected: &BTreeMap<Cid, u64>, tally: &mut Tally) -> HashSet<Cid> {
    let store = match LocalStore::open(dir) {
        Ok(s) => s,
        Err(e) => {
            tally.failed_restarts += 1;
            tally.problem(format!("store does not open: {e}"));
            return HashSet::new();
        }
    };
    let pins = store.pins().unwrap();
    let mut pinned = HashSet::new();
    for p in &pins {
        let cid: Cid = p.cid.parse().unwrap();
        match store.check_dag(&cid) {
            Ok(None) => {
                pinned.insert(cid);
            }
            Ok(Some(gap)) => {
                tally.partial_pins += 1;
                tally.problem(format!("{cid} pinned ({:?}) but {gap}", p.reason));
            }
            Err(e) => tally.problem(format!("checking {cid}: {e}")),
        }
    }
    for (root, bytes) in expected {
        if !pinned.contains(root) {
            tally.lost_bytes += bytes;
            tally.problem(format!("{root} was pinned before the kill and is not now"));
        }
    }
    if store.quarantined() > 0 {
        tally.problem(format!("{} records quarantined", store.quarantined()));
    }
    pinned
}

/// GETs the CAR of `dag` (only from what the server holds) and checks it carries every block.
async fn check_car(s: &Serve, dag: &Dag, tally: &mut Tally) {
    let resp = client()
        .get(format!("{}/ipfs/{}?format=car", s.url, dag.root))
        .header("Cache-Control", "only-if-cached")
        .send()
        .await;
    let bytes = match resp {
        Ok(r) if r.status() == 200 => r.bytes().await,
        Ok(r) => {
            tally.problem(format!("CAR of pinned {}: {}", dag.root, r.status()));
            return;
        }
        Err(e) => {
            tally.problem(format!("CAR of pinned {}: {e}", dag.root));
            return;
        }
    };
    match bytes {
        Ok(b) => {
            let car = parse_car(&b);
            let got: HashSet<Cid> = car.blocks.iter().map(|(c, _)| *c).collect();
            if got != dag.cids() {
                tally.problem(format!(
                    "CAR of pinned {} has {} of {} blocks",
                    dag.root,
                    got.len(),
                    dag.cids().len()
                ));
            }
        }
        Err(e) => tally.problem(format!("CAR of pinned {} cut short: {e}", dag.root)),
    }
}

/// After a kill of a CLI command: a restarted server must open the store and serve the CAR of
/// every pinned root in `dags` whole; then (server stopped) the store is checked in this
/// process.
async fn after_kill(
    dir: &Path,
    dags: &[&Dag],
    expected: &BTreeMap<Cid, u64>,
    tally: &mut Tally,
) -> HashSet<Cid> {
    match serve(dir, &[]) {
        Ok(mut s) => {
            for d in dags {
                let pinned = admin_pins(&s)
                    .await
                    .iter()
                    .any(|(c, _)| *c == d.root.to_string());
                if pinned {
                    check_car(&s, d, tally).await;
                }
            }
            stop(&mut s.child);
        }
        Err(e) => {
            tally.failed_restarts += 1;
            tally.problem(e);
        }
    }
    check_store(dir, expected, tally)
}

/// The store's pins as the admin API lists them: (cid, reason).
async fn admin_pins(s: &Serve) -> Vec<(String, String)> {
    let Ok(r) = client().get(format!("{}/admin/pins", s.admin)).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    v["store"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["cid"].as_str().unwrap_or_default().to_string(),
                        p["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("crash_safety: timed out waiting for {what}");
    false
}

// ---------------------------------------------------------------------------------------------
// CLI operations: import and add

/// Kills a CLI store accumulates before it is reset to its first pin: opening a redb file
/// takes time in proportion to its size in debug builds, and the test has a CI budget.
const EPOCH: usize = 5;

/// Copies directory `from` (the database and the segment files under it) into a fresh `to`.
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    common::copy_tree(from, to);
}

/// `cidgate import` of a 2 MB CAR of ~100 blocks, killed at random moments; the store
/// accumulates every import that was run again to completion (reset every [`EPOCH`] kills).
#[tokio::test]
async fn kill_during_import() {
    let start = Instant::now();
    let mut rng = rng(1);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let mut tally = Tally::default();
    let mut expected = BTreeMap::new();
    let import = |car: &Path| {
        let mut cmd = command(&dir);
        cmd.arg("import")
            .arg(car)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    // How long one import takes here (debug builds are slow; CI machines vary).
    let calibration = make_dag(1 << 40, 100, 20_000);
    let cal_car = work.path().join("cal.car");
    std::fs::write(&cal_car, calibration.car()).unwrap();
    let t = Instant::now();
    assert!(import(&cal_car).status().unwrap().success());
    let mut duration = t.elapsed();
    let template = work.path().join("template");
    copy_dir(&dir, &template);
    let first = (calibration.root, calibration.bytes());

    for i in 0..iterations() {
        if i % EPOCH == 0 {
            copy_dir(&template, &dir);
            expected = [first].into();
        }
        let dag = make_dag(i as u64, 100, 20_000);
        let car = work.path().join(format!("{i}.car"));
        std::fs::write(&car, dag.car()).unwrap();
        let mut child = import(&car).spawn().unwrap();
        std::thread::sleep(kill_delay(&mut rng, duration));
        tally.kills += 1;
        tally.interrupted += kill9(&mut child) as usize;

        let committed = after_kill(&dir, &[&dag], &expected, &mut tally)
            .await
            .contains(&dag.root);
        tally.unfinished += !committed as usize;
        let t = Instant::now();
        let out = import(&car).output().unwrap();
        // Later kills aim at the duration seen under the machine's current load (a root
        // committed before its kill makes the next import quick: that one does not count).
        if !committed {
            duration = t.elapsed();
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("complete, pinned") {
            expected.insert(dag.root, dag.bytes());
            if pinned_complete(&dir, &dag.root) {
                tally.reruns_ok += 1;
            }
        } else {
            tally.problem(format!(
                "import {i} again: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::remove_file(&car).unwrap();
    }
    tally.finish("import", start.elapsed());
}

/// `cidgate add` of a directory (a 1.5 MiB file in two leaves and 200 small files), killed
/// at random moments. The tree is the same each time and the store starts each round from a
/// copy holding one other pin (which must survive), so that every round writes every block.
#[tokio::test]
async fn kill_during_add() {
    let start = Instant::now();
    let mut rng = rng(2);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let mut tally = Tally::default();
    let add = |src: &Path| {
        let mut cmd = command(&dir);
        cmd.arg("add")
            .arg(src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    // A tree on disk, and the DAG `add` must make of it (built here the same way).
    let tree = |name: &str, seed: u64| -> (PathBuf, Dag) {
        let src = work.path().join(name);
        std::fs::create_dir_all(src.join("small")).unwrap();
        std::fs::write(src.join("big.bin"), noise(3 << 19, seed)).unwrap();
        for j in 0..200u64 {
            std::fs::write(
                src.join("small").join(format!("{j}.txt")),
                noise(200, seed * 10_000 + j + 1),
            )
            .unwrap();
        }
        let mut sink = Sink(Vec::new());
        let root = cidgate::ipld::builder::add_paths(&[&src], false, &mut sink).unwrap();
        let dag = Dag {
            root: root.cid,
            blocks: sink.0,
        };
        (src, dag)
    };

    let (first_src, first) = tree("first", 1);
    assert!(add(&first_src).status().unwrap().success());
    let template = work.path().join("template");
    copy_dir(&dir, &template);
    let expected: BTreeMap<Cid, u64> = [(first.root, first.bytes())].into();
    let (src, dag) = tree("tree", 2);
    // How long one add takes here, measured on a copy.
    let t = Instant::now();
    assert!(add(&src).status().unwrap().success());
    let mut duration = t.elapsed();

    for i in 0..iterations() {
        copy_dir(&template, &dir);
        let mut child = add(&src).spawn().unwrap();
        std::thread::sleep(kill_delay(&mut rng, duration));
        tally.kills += 1;
        tally.interrupted += kill9(&mut child) as usize;

        let committed = after_kill(&dir, &[&dag, &first], &expected, &mut tally)
            .await
            .contains(&dag.root);
        tally.unfinished += !committed as usize;
        let t = Instant::now();
        let out = add(&src).output().unwrap();
        // Later kills aim at the duration seen under the machine's current load.
        duration = t.elapsed();
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && printed == dag.root.to_string() {
            if pinned_complete(&dir, &dag.root) {
                tally.reruns_ok += 1;
            }
        } else {
            tally.problem(format!(
                "add {i} again: {printed:?} (want {}) {}",
                dag.root,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    tally.finish("add", start.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Server operations: Pinning Service API, promotion, demotion

/// A provider (a cidgate serving `dags`) for the gateways below to fetch from.
fn provider(dags: &[&Dag]) -> (Serve, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    store_dags(dir.path(), dags);
    (serve(dir.path(), &[]).unwrap(), dir)
}

/// Small DAGs for the server operations (~150 KB, ~300 blocks each).
fn server_dags(op: u64, n: usize) -> Vec<Dag> {
    (0..n as u64)
        .map(|i| make_dag(op * 1_000_000 + i, 300, 500))
        .collect()
}

async fn request_statuses(s: &Serve, cid: &Cid) -> Vec<String> {
    let url = format!(
        "{}/pins?cid={cid}&status=queued,pinning,pinned,failed&limit=1000",
        s.admin
    );
    let Ok(r) = client().get(url).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["status"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn post_pin(s: &Serve, cid: &Cid) -> bool {
    client()
        .post(format!("{}/pins", s.admin))
        .header("content-type", "application/json")
        .body(format!(r#"{{"cid":"{cid}"}}"#))
        .send()
        .await
        .is_ok_and(|r| r.status() == 202)
}

/// Pinning Service API: `POST /pins` on the admin listener, the gateway killed while it
/// fetches, imports and records the pin. After a restart the interrupted requests finish by
/// themselves, and posting the pin again succeeds.
#[tokio::test]
async fn kill_during_pin_service_writes() {
    let start = Instant::now();
    let mut rng = rng(3);
    let n = iterations();
    let dags = server_dags(3, n + 1);
    let (p, _pdir) = provider(&dags.iter().collect::<Vec<_>>());
    let env = [
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_POPULARITY__PROMOTE_THRESHOLD", "1000000"),
    ];
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("gateway");
    let mut tally = Tally::default();
    let mut expected = BTreeMap::new();

    let pinned_by_request = async |s: &Serve, cid: &Cid| {
        wait_for("a pin request", Duration::from_secs(60), async || {
            let st = request_statuses(s, cid).await;
            !st.is_empty() && st.iter().all(|x| x == "pinned")
        })
        .await
    };

    let mut g = serve(&dir, &env).unwrap();
    let cal = &dags[n];
    let t = Instant::now();
    assert!(post_pin(&g, &cal.root).await);
    assert!(pinned_by_request(&g, &cal.root).await);
    let duration = t.elapsed();
    expected.insert(cal.root, cal.bytes());

    for dag in &dags[..n] {
        assert!(post_pin(&g, &dag.root).await);
        tokio::time::sleep(kill_delay(&mut rng, duration)).await;
        tally.kills += 1;
        tally.interrupted += kill9(&mut g.child) as usize;

        // The store is checked here first, then the restarted server must open it and
        // serve what was pinned whole.
        let pinned = check_store(&dir, &expected, &mut tally);
        tally.unfinished += !pinned.contains(&dag.root) as usize;
        g = match serve(&dir, &env) {
            Ok(g) => g,
            Err(e) => {
                tally.failed_restarts += 1;
                tally.problem(e);
                break;
            }
        };
        for d in &[dag] {
            if pinned.contains(&d.root) {
                check_car(&g, d, &mut tally).await;
            }
        }
        // Interrupted requests resume; a new request for the same root succeeds too.
        let resumed = pinned_by_request(&g, &dag.root).await
            || request_statuses(&g, &dag.root).await.is_empty();
        let again = post_pin(&g, &dag.root).await && pinned_by_request(&g, &dag.root).await;
        if resumed && again {
            check_car(&g, dag, &mut tally).await;
            expected.insert(dag.root, dag.bytes());
            tally.reruns_ok += 1;
        } else {
            tally.problem(format!(
                "pin {} again: {:?}",
                dag.root,
                request_statuses(&g, &dag.root).await
            ));
        }
    }
    kill9(&mut g.child);
    check_store(&dir, &expected, &mut tally);
    drop(p);
    tally.finish("pin-service", start.elapsed());
}

/// Asks for `root` often enough to cross the promotion threshold.
async fn demand(s: &Serve, root: &Cid) {
    for _ in 0..8 {
        let _ = client()
            .get(format!("{}/ipfs/{root}?format=raw", s.url))
            .send()
            .await;
    }
}

async fn is_auto_pinned(s: &Serve, root: &Cid) -> bool {
    admin_pins(s)
        .await
        .iter()
        .any(|(c, r)| *c == root.to_string() && r == "auto")
}

/// Promotion: demand crosses the threshold, the gateway pins the DAG automatically (fetching
/// it from the provider), and is killed while it does.
#[tokio::test]
async fn kill_during_promotion() {
    let start = Instant::now();
    let mut rng = rng(4);
    let n = iterations();
    let dags = server_dags(4, n + 1);
    let (p, _pdir) = provider(&dags.iter().collect::<Vec<_>>());
    let env = [
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_POPULARITY__INTERVAL", "100ms"),
        ("CIDGATE_POPULARITY__SAVE_EVERY", "300ms"),
        ("CIDGATE_POPULARITY__PREWARM_THRESHOLD", "1000"),
        ("CIDGATE_POPULARITY__PROMOTE_THRESHOLD", "4"),
        ("CIDGATE_POPULARITY__DEMOTE_THRESHOLD", "0.001"),
    ];
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("gateway");
    let mut tally = Tally::default();
    let mut expected = BTreeMap::new();

    let promoted = async |s: &Serve, root: &Cid| {
        wait_for("a promotion", Duration::from_secs(60), async || {
            if is_auto_pinned(s, root).await {
                return true;
            }
            // Demand counted before a kill may be gone (saved every 300 ms); ask again.
            demand(s, root).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            is_auto_pinned(s, root).await
        })
        .await
    };

    let mut g = serve(&dir, &env).unwrap();
    let cal = &dags[n];
    let t = Instant::now();
    demand(&g, &cal.root).await;
    assert!(promoted(&g, &cal.root).await);
    let duration = t.elapsed();
    expected.insert(cal.root, cal.bytes());

    for dag in &dags[..n] {
        demand(&g, &dag.root).await;
        tokio::time::sleep(kill_delay(&mut rng, duration)).await;
        tally.kills += 1;
        tally.interrupted += kill9(&mut g.child) as usize;

        // The store is checked here first, then the restarted server must open it and
        // serve what was pinned whole.
        let pinned = check_store(&dir, &expected, &mut tally);
        tally.unfinished += !pinned.contains(&dag.root) as usize;
        g = match serve(&dir, &env) {
            Ok(g) => g,
            Err(e) => {
                tally.failed_restarts += 1;
                tally.problem(e);
                break;
            }
        };
        for d in &[dag] {
            if pinned.contains(&d.root) {
                check_car(&g, d, &mut tally).await;
            }
        }
        if promoted(&g, &dag.root).await {
            check_car(&g, dag, &mut tally).await;
            expected.insert(dag.root, dag.bytes());
            tally.reruns_ok += 1;
        } else {
            tally.problem(format!("{} not promoted after the restart", dag.root));
        }
    }
    kill9(&mut g.child);
    check_store(&dir, &expected, &mut tally);
    drop(p);
    tally.finish("promotion", start.elapsed());
}

/// Demotion: each round promotes a DAG, then lets it cool (short half-life and
/// `demote_after`) and kills the gateway while it is being unpinned. An operator pin made
/// before the rounds must survive every one of them.
#[tokio::test]
async fn kill_during_demotion() {
    let start = Instant::now();
    let mut rng = rng(5);
    let n = iterations();
    let dags = server_dags(5, n + 2);
    let (p, _pdir) = provider(&dags.iter().collect::<Vec<_>>());
    let env = [
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_POPULARITY__INTERVAL", "50ms"),
        ("CIDGATE_POPULARITY__SAVE_EVERY", "200ms"),
        ("CIDGATE_POPULARITY__HALF_LIFE", "100ms"),
        ("CIDGATE_POPULARITY__PREWARM_THRESHOLD", "1000"),
        ("CIDGATE_POPULARITY__PROMOTE_THRESHOLD", "3"),
        ("CIDGATE_POPULARITY__DEMOTE_THRESHOLD", "1"),
        ("CIDGATE_POPULARITY__DEMOTE_AFTER", "100ms"),
    ];
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("gateway");
    let operator = &dags[n + 1];
    store_dags(&dir, &[operator]);
    let mut tally = Tally::default();
    let expected: BTreeMap<Cid, u64> = [(operator.root, operator.bytes())].into();

    let promoted = async |s: &Serve, root: &Cid| {
        wait_for("a promotion", Duration::from_secs(60), async || {
            demand(s, root).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            is_auto_pinned(s, root).await
        })
        .await
    };
    let demoted = async |s: &Serve, root: &Cid| {
        wait_for("a demotion", Duration::from_secs(60), async || {
            !admin_pins(s)
                .await
                .iter()
                .any(|(c, _)| *c == root.to_string())
        })
        .await
    };

    let mut g = serve(&dir, &env).unwrap();
    let cal = &dags[n];
    assert!(promoted(&g, &cal.root).await);
    let t = Instant::now();
    assert!(demoted(&g, &cal.root).await);
    let duration = t.elapsed();

    for dag in &dags[..n] {
        if !promoted(&g, &dag.root).await {
            tally.problem(format!("{} not promoted", dag.root));
            continue;
        }
        tokio::time::sleep(kill_delay(&mut rng, duration)).await;
        tally.kills += 1;
        tally.interrupted += kill9(&mut g.child) as usize;

        // The store is checked here first, then the restarted server must open it and
        // serve what was pinned whole.
        let pinned = check_store(&dir, &expected, &mut tally);
        tally.unfinished += pinned.contains(&dag.root) as usize;
        g = match serve(&dir, &env) {
            Ok(g) => g,
            Err(e) => {
                tally.failed_restarts += 1;
                tally.problem(e);
                break;
            }
        };
        for d in &[dag, operator] {
            if pinned.contains(&d.root) {
                check_car(&g, d, &mut tally).await;
            }
        }
        if demoted(&g, &dag.root).await {
            tally.reruns_ok += 1;
        } else {
            tally.problem(format!("{} not demoted after the restart", dag.root));
        }
    }
    let operator_kept = admin_pins(&g)
        .await
        .iter()
        .any(|(c, r)| *c == operator.root.to_string() && r == "operator");
    if !operator_kept {
        tally.problem("the operator pin was demoted".into());
    }
    check_car(&g, operator, &mut tally).await;
    kill9(&mut g.child);
    check_store(&dir, &expected, &mut tally);
    drop(p);
    tally.finish("demotion", start.elapsed());
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stored records that cannot be decoded (pin requests, promotion records, demand, provider
/// scores) are moved aside when the server starts, the server starts without them, and the
/// records it writes later leave the quarantined bytes alone.
#[tokio::test]
async fn unreadable_records_are_quarantined_and_the_server_starts() {
    let dag = make_dag(77, 20, 100);
    let (p, _pdir) = provider(&[&dag]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("gateway");
    let damaged: [(&str, &[u8]); 4] = [
        ("pinning.requests", b"[{\"requestid\": 1"),
        ("popularity.pins", b"\xff\x00 not json"),
        ("popularity.tracker", b"{\"at\": \"noon\"}"),
        ("cold.providers", b"{\"providers\": 3}"),
    ];
    {
        let store = LocalStore::open(&dir).unwrap();
        for (key, bytes) in damaged {
            store.meta_put(key, bytes).unwrap();
        }
    }
    let env = [("CIDGATE_COLD__PROVIDERS", p.url.as_str())];
    let mut g = serve(&dir, &env).expect("the server starts without the unreadable records");
    assert!(post_pin(&g, &dag.root).await);
    let pinned = wait_for("a pin request", Duration::from_secs(30), async || {
        request_statuses(&g, &dag.root).await == ["pinned"]
    })
    .await;
    assert!(pinned);
    stop(&mut g.child);

    let store = LocalStore::open(&dir).unwrap();
    let mut quarantined: Vec<(String, Vec<u8>)> = store
        .quarantine_list()
        .unwrap()
        .into_iter()
        .map(|q| (q.key, q.bytes))
        .collect();
    quarantined.sort();
    let mut want: Vec<(String, Vec<u8>)> = damaged
        .iter()
        .map(|(k, b)| (k.to_string(), b.to_vec()))
        .collect();
    want.sort();
    assert_eq!(
        quarantined, want,
        "every unreadable record kept, byte for byte"
    );
    assert!(store.pin_of(&dag.root).unwrap().is_some());
}
