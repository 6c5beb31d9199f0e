//! The service against real files and a small HTTP server on 127.0.0.1:0 that serves a list
//! with ranges and ETags and can be told to fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::*;
use crate::config::DenylistConfig;

const X: &str = "QmesfgDQ3q6prBy2Kg2gKbW4MAGuWiRP2DVuGA5MZSERLo";
const Y: &str = "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR";
const Z: &str = "QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK";

fn cid(s: &str) -> cid::Cid {
    cid::Cid::try_from(s).unwrap()
}

fn blocked(s: &DenylistService, c: &str) -> bool {
    s.handle().current().check_cid(&cid(c)).is_some()
}

fn config(files: Vec<PathBuf>, urls: Vec<String>) -> DenylistConfig {
    DenylistConfig {
        files,
        urls,
        refresh: Duration::from_secs(3600),
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
    }
}

/// What the test server serves and how.
#[derive(Default)]
struct Served {
    body: Vec<u8>,
    /// Bumped on every change: part of the ETag, as a file server's mtime would be.
    version: u32,
    fail: bool,
    ignore_range: bool,
    /// (Range header, status) of every request.
    log: Vec<(Option<String>, u16)>,
}

impl Served {
    fn etag(&self) -> String {
        format!("\"{}-{}\"", self.body.len(), self.version)
    }

    fn set(&mut self, body: &str) {
        self.body = body.as_bytes().to_vec();
        self.version += 1;
    }
}

type Shared = Arc<Mutex<Served>>;

fn answer(
    served: &Shared,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let mut s = served.lock().unwrap();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let etag = s.etag();
    let len = s.body.len();
    let (status, body, content_range) = if s.fail {
        (500, Vec::new(), None)
    } else if inm.as_deref() == Some(etag.as_str()) {
        (304, Vec::new(), None)
    } else {
        match range
            .as_deref()
            .filter(|_| !s.ignore_range)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok())
        {
            Some(from) if from >= len => (416, Vec::new(), Some(format!("bytes */{len}"))),
            Some(from) => (
                206,
                s.body[from..].to_vec(),
                Some(format!("bytes {from}-{}/{len}", len - 1)),
            ),
            None => (200, s.body.clone(), None),
        }
    };
    s.log.push((range, status));
    let mut resp = hyper::Response::builder()
        .status(status)
        .header("etag", etag);
    if let Some(cr) = content_range {
        resp = resp.header("content-range", cr);
    }
    resp.body(Full::new(Bytes::from(body))).unwrap()
}

async fn server(served: Shared) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/lists/test.deny?token=secret",
        listener.local_addr().unwrap()
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = answer(&served, &req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    (url, task)
}

fn list(cids: &[&str]) -> String {
    let mut s = String::from("version: 1\nname: test\n---\n");
    for c in cids {
        s.push_str(&format!("/ipfs/{c}\n"));
    }
    s
}

#[tokio::test]
async fn local_files_reload_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.deny");
    std::fs::write(&a, list(&[X])).unwrap();
    let shutdown = CancellationToken::new();
    let (svc, task) = DenylistService::start(
        &config(vec![a.clone()], vec![]),
        dir.path(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert!(blocked(&svc, X));
    let gen0 = svc.handle().generation();
    let mut changes = svc.handle().subscribe();

    // Polled: a new size is noticed without being asked.
    std::fs::write(&a, list(&[Y, Z])).unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the change is picked up by polling")
        .unwrap();
    assert!(!blocked(&svc, X));
    assert!(blocked(&svc, Y) && blocked(&svc, Z));
    assert!(svc.handle().generation() > gen0);

    // reload_now reads it at once.
    std::fs::write(&a, list(&[X])).unwrap();
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X) && !blocked(&svc, Y));
    let stats = svc.stats();
    assert_eq!(stats.rules, 1);
    assert_eq!(stats.lists[0].source, ListSource::File);
    assert_eq!(stats.lists[0].rules, 1);
    assert!(stats.lists[0].last_success.is_some());

    // A file that disappears keeps its last good rules.
    std::fs::remove_file(&a).unwrap();
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X));
    assert!(svc.stats().lists[0].failures >= 1);

    shutdown.cancel();
    task.await.unwrap();
    assert!(matches!(
        svc.reload_now().await,
        Err(DenylistError::Stopped)
    ));
}

#[tokio::test]
async fn a_missing_file_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.deny");
    let err = DenylistService::start(
        &config(vec![missing.clone()], vec![]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DenylistError::File { .. }));
    assert!(err.to_string().contains("nope.deny"), "{err}");
}

#[tokio::test]
async fn subscriptions_follow_growth_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    served.lock().unwrap().set(&list(&[X]));
    let (url, _srv) = server(served.clone()).await;
    let shutdown = CancellationToken::new();
    let (svc, _task) = DenylistService::start(
        &config(vec![], vec![url.clone()]),
        dir.path(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert!(blocked(&svc, X));
    let b = svc.handle().current().check_cid(&cid(X)).cloned().unwrap();
    assert_eq!(
        &*b.list,
        url.split('?').next().unwrap(),
        "no query in the name"
    );
    assert_eq!(b.line, 4);
    assert_eq!(served.lock().unwrap().log, [(None, 200)]);

    // Unchanged: a 304 thanks to the stored ETag, and no new generation.
    let gen = svc.handle().generation();
    svc.reload_now().await.unwrap();
    assert_eq!(served.lock().unwrap().log.last().unwrap().1, 304);
    assert_eq!(svc.handle().generation(), gen);

    // Appended: only the tail is asked for (with an overlap) and appended.
    let old_len = served.lock().unwrap().body.len();
    let grown = list(&[X, Y]);
    served.lock().unwrap().set(&grown);
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X) && blocked(&svc, Y));
    let (range, status) = served.lock().unwrap().log.last().cloned().unwrap();
    assert_eq!(status, 206);
    assert_eq!(
        range.unwrap(),
        format!("bytes={}-", old_len - old_len.min(OVERLAP))
    );
    assert!(svc.handle().generation() > gen);

    // The stored copy is the whole list.
    let stored: Vec<_> = std::fs::read_dir(dir.path().join("denylists"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deny"))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), grown.as_bytes());

    let stats = svc.stats();
    assert_eq!(stats.lists[0].source, ListSource::Url);
    assert_eq!(stats.lists[0].rules, 2);
    assert_eq!(stats.lists[0].bytes, grown.len() as u64);
    assert_eq!(stats.lists[0].failures, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn long_lists_grow_by_their_tail_only() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    let mut text = String::from("---\n");
    for i in 0..200 {
        text.push_str(&format!("/ipns/site{i}.example\n"));
    }
    served.lock().unwrap().set(&text);
    let (url, _srv) = server(served.clone()).await;
    let (svc, _task) = DenylistService::start(
        &config(vec![], vec![url]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(svc.stats().rules, 200);
    let len = text.len();
    text.push_str("/ipns/new.example\n");
    served.lock().unwrap().set(&text);
    svc.reload_now().await.unwrap();
    assert!(svc
        .handle()
        .current()
        .check_ipns_path("new.example", &[])
        .is_some());
    assert_eq!(svc.stats().rules, 201);
    let (range, status) = served.lock().unwrap().log.last().cloned().unwrap();
    assert_eq!(
        (range.unwrap(), status),
        (format!("bytes={}-", len - OVERLAP), 206)
    );

    // Shrunk below the overlap's start: 416, then the whole list.
    served.lock().unwrap().set("/ipns/only.example\n");
    svc.reload_now().await.unwrap();
    assert_eq!(svc.stats().rules, 1);
    let log = served.lock().unwrap().log.clone();
    assert_eq!(log[log.len() - 2].1, 416);
    assert_eq!(log[log.len() - 1], (None, 200));
}

#[tokio::test]
async fn rewritten_or_shrunk_lists_are_fetched_whole() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    served.lock().unwrap().set(&list(&[X, Y]));
    let (url, _srv) = server(served.clone()).await;
    let (svc, _task) = DenylistService::start(
        &config(vec![], vec![url]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(blocked(&svc, X) && blocked(&svc, Y));

    // Same length, other content: the overlap differs, so the whole list is fetched.
    served.lock().unwrap().set(&list(&[Z, Y]));
    svc.reload_now().await.unwrap();
    assert!(!blocked(&svc, X) && blocked(&svc, Z));
    let log = served.lock().unwrap().log.clone();
    assert_eq!(log[log.len() - 2].1, 206);
    assert_eq!(log[log.len() - 1], (None, 200));

    // Shorter than what is held: the overlap cannot match.
    served.lock().unwrap().set("/ipfs/bafkqaaa\n");
    svc.reload_now().await.unwrap();
    assert!(!blocked(&svc, Z) && blocked(&svc, "bafkqaaa"));
    assert_eq!(served.lock().unwrap().log.last().unwrap(), &(None, 200));

    // A server that ignores ranges answers 200 with everything: it replaces the copy.
    served.lock().unwrap().ignore_range = true;
    served.lock().unwrap().set(&list(&[Y]));
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, Y) && !blocked(&svc, "bafkqaaa"));
}

#[tokio::test]
async fn the_last_good_copy_survives_failures_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    served.lock().unwrap().set(&list(&[X]));
    let (url, _srv) = server(served.clone()).await;
    let cfg = config(vec![], vec![url.clone()]);
    let shutdown = CancellationToken::new();
    let (svc, task) = DenylistService::start(&cfg, dir.path(), shutdown.clone())
        .await
        .unwrap();
    assert!(blocked(&svc, X));

    // The server fails: the list stays, the failure is counted.
    served.lock().unwrap().fail = true;
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X));
    let stats = svc.stats();
    assert_eq!(stats.lists[0].failures, 1);
    assert!(stats.lists[0].last_success.is_some());
    shutdown.cancel();
    task.await.unwrap();

    // Restart while the server still fails: the stored copy is used.
    let (svc, _task) = DenylistService::start(&cfg, dir.path(), CancellationToken::new())
        .await
        .unwrap();
    assert!(blocked(&svc, X));
    assert_eq!(svc.stats().lists[0].failures, 1);
    assert_eq!(svc.stats().lists[0].last_success, None);

    // Back again, grown: followed from the stored copy with a range.
    served.lock().unwrap().fail = false;
    served.lock().unwrap().set(&list(&[X, Z]));
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, Z));
    assert_eq!(served.lock().unwrap().log.last().unwrap().1, 206);
}

#[tokio::test]
async fn a_half_written_last_line_waits_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    let full = list(&[X, Y]);
    // Cut inside Y's CID: read now it would be a malformed (or worse, another) rule.
    let cut = &full[..full.len() - 10];
    served.lock().unwrap().set(cut);
    let (url, _srv) = server(served.clone()).await;
    let (svc, _task) = DenylistService::start(
        &config(vec![], vec![url]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(blocked(&svc, X) && !blocked(&svc, Y));
    assert_eq!(svc.stats().rules, 1);
    served.lock().unwrap().set(&full);
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X) && blocked(&svc, Y));
    assert_eq!(served.lock().unwrap().log.last().unwrap().1, 206);
}

#[tokio::test]
async fn an_error_page_does_not_replace_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    served.lock().unwrap().set(&list(&[X]));
    let (url, _srv) = server(served.clone()).await;
    let (svc, _task) = DenylistService::start(
        &config(vec![], vec![url]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    {
        let mut s = served.lock().unwrap();
        s.ignore_range = true;
        s.set("<html><body>Service moved</body></html>\n");
    }
    svc.reload_now().await.unwrap();
    assert!(blocked(&svc, X));
    assert_eq!(svc.stats().lists[0].failures, 1);
}

#[tokio::test]
async fn an_unreachable_subscription_without_a_copy_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = dir.path().join("local.deny");
    std::fs::write(&file, list(&[Y])).unwrap();
    let (svc, _task) = DenylistService::start(
        &config(vec![file], vec![format!("http://127.0.0.1:{port}/x.deny")]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(blocked(&svc, Y));
    let stats = svc.stats();
    assert_eq!(stats.lists.len(), 2);
    assert_eq!(stats.lists[0].source, ListSource::Url);
    assert_eq!((stats.lists[0].rules, stats.lists[0].failures), (0, 1));
    assert_eq!(stats.lists[1].rules, 1);
}

#[tokio::test]
async fn files_override_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let served: Shared = Arc::default();
    served.lock().unwrap().set(&list(&[X, Y]));
    let (url, _srv) = server(served.clone()).await;
    let file = dir.path().join("exceptions.deny");
    std::fs::write(&file, format!("!/ipfs/{X}\n")).unwrap();
    let (svc, _task) = DenylistService::start(
        &config(vec![file], vec![url]),
        dir.path(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!blocked(&svc, X));
    assert!(blocked(&svc, Y));
}

#[test]
fn stored_names_are_readable_unique_and_free_of_secrets() {
    let a = store_stem("https://user:pw@badbits.example/deny/list.deny?token=1");
    let b = store_stem("https://user:pw@badbits.example/deny/list.deny?token=2");
    assert_ne!(a, b);
    assert!(a.starts_with("badbits.example_deny_list.deny-"), "{a}");
    assert!(!a.contains("pw") && !a.contains("token"));
    assert_eq!(
        public_name("https://user:pw@badbits.example/deny/list.deny?token=1#x"),
        "https://badbits.example/deny/list.deny"
    );
}
