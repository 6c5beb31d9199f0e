//! Loading denylists: local files (polled for changes) and subscriptions (HTTP, followed as
//! they grow, kept on disk), compiled into one [`Denylist`] and swapped into a
//! [`DenylistHandle`] without a restart.
//!
//! Subscriptions follow the spec's "append-only" design: a refresh asks only for the bytes
//! after the copy it holds, with a small overlap (`Range: bytes={len - 1024}-`) so it can see
//! that its copy is still the start of the list. A 206 whose overlap matches is appended; a
//! 200 (the server ignores ranges) replaces the copy; an overlap that differs, a 416 (the list
//! shrank) or a 206 for another range means the list was rewritten, and it is fetched whole.
//! `If-None-Match` with the stored ETag makes an unchanged list a bodiless 304. (nopfs sends
//! the bare range and appends whatever comes back, which silently corrupts the copy when a
//! list is rewritten; an `If-Range` would refetch the whole list on every append, since
//! appending changes a file's ETag.)
//!
//! The copy of each subscription lives in `{data_dir}/denylists/` and is used at start and
//! whenever a fetch fails, so a gateway restarted while the list's server is down keeps
//! blocking what it blocked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Denylist, DenylistHandle};
use crate::config::DenylistConfig;

/// Bytes of the held copy asked for again to check that it is still the list's start.
const OVERLAP: usize = 1024;
/// Longest wait for a connection to a subscription's server: a host that is down must not
/// hold up the start for the whole request deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest list accepted from a subscription (about 15 million double-hashed lines); a
/// server streaming without end must not fill the disk or the memory.
const MAX_LIST_BYTES: usize = 1 << 30;

/// Why the denylist service could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum DenylistError {
    /// A configured local list could not be read at start.
    #[error("denylist file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directory for subscription copies could not be created.
    #[error("denylist store {}: {source}", path.display())]
    Store {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("denylist HTTP client: {0}")]
    Client(String),
    /// The service task has ended (shutdown).
    #[error("the denylist service has stopped")]
    Stopped,
}

/// Where a list comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSource {
    /// A local file.
    File,
    /// A subscription URL.
    Url,
}

/// Figures of one list, for metrics and the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStats {
    /// The list's name: its file path, or its URL without credentials and query.
    pub name: Arc<str>,
    /// File or subscription.
    pub source: ListSource,
    /// Rules compiled from it.
    pub rules: usize,
    /// Bytes of the list held.
    pub bytes: u64,
    /// Unix time of the last successful read or fetch (None: never).
    pub last_success: Option<u64>,
    /// Failed reads or fetches since start.
    pub failures: u64,
}

/// Figures of the whole denylist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenylistStats {
    /// Generation of the current list (bumped on every reload that changed something).
    pub generation: u64,
    /// Rules in force.
    pub rules: usize,
    /// Per list, in precedence order.
    pub lists: Vec<ListStats>,
}

/// Owns the loading of denylists: start, periodic refresh, reload on demand, figures.
#[derive(Clone, Debug)]
pub struct DenylistService {
    handle: DenylistHandle,
    reloads: mpsc::Sender<oneshot::Sender<()>>,
    stats: Arc<Mutex<Vec<ListStats>>>,
}

impl DenylistService {
    /// Reads every list (local files must exist; a subscription that cannot be fetched falls
    /// back to its stored copy, or is skipped with a warning), installs the compiled list and
    /// spawns the task that keeps it current until `shutdown`.
    pub async fn start(
        config: &DenylistConfig,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), DenylistError> {
        // Files first: a missing one fails the start before any subscription is fetched.
        let mut files = Vec::new();
        for path in &config.files {
            let mut f = LocalFile::new(path.clone());
            f.poll().await.map_err(|source| DenylistError::File {
                path: path.clone(),
                source,
            })?;
            files.push(Source::File(f));
        }
        let mut sources = Vec::new();
        if !config.urls.is_empty() {
            let dir = data_dir.join("denylists");
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| DenylistError::Store {
                    path: dir.clone(),
                    source,
                })?;
            let client = crate::tiers::remote::http_client(config.timeout.min(CONNECT_TIMEOUT), 1)
                .map_err(DenylistError::Client)?;
            let mut subs: Vec<Subscription> = config
                .urls
                .iter()
                .map(|u| Subscription::new(u, &dir, client.clone(), config.timeout))
                .collect();
            futures::future::join_all(subs.iter_mut().map(|s| s.open())).await;
            sources.extend(subs.into_iter().map(Source::Url));
        }
        sources.extend(files);
        let handle = DenylistHandle::default();
        let stats = Arc::new(Mutex::new(Vec::new()));
        let mut state = State {
            sources,
            handle: handle.clone(),
            stats: stats.clone(),
        };
        state.compile(true).await;
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(state.run(rx, shutdown, config.poll, config.refresh));
        Ok((
            Self {
                handle,
                reloads: tx,
                stats,
            },
            task,
        ))
    }

    /// The handle to the current list (cheap to clone).
    pub fn handle(&self) -> DenylistHandle {
        self.handle.clone()
    }

    /// Re-reads changed files and fetches every subscription now (SIGHUP); returns when the
    /// resulting list is installed.
    pub async fn reload_now(&self) -> Result<(), DenylistError> {
        let (tx, rx) = oneshot::channel();
        self.reloads
            .send(tx)
            .await
            .map_err(|_| DenylistError::Stopped)?;
        rx.await.map_err(|_| DenylistError::Stopped)
    }

    /// Rules per list, last successful refresh and failures, for metrics.
    pub fn stats(&self) -> DenylistStats {
        let lists = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        DenylistStats {
            generation: self.handle.generation(),
            rules: self.handle.load().rules(),
            lists,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One list and what is known of it.
enum Source {
    File(LocalFile),
    Url(Subscription),
}

impl Source {
    /// Whether an unterminated last line is left out of compiles: a subscription's may be a
    /// rule cut halfway by a list being written (`/ipfs/CID/path*` read as `/ipfs/CID/pa`);
    /// the next refresh brings the rest. A local file's is the operator's last rule.
    fn whole_lines_only(&self) -> bool {
        matches!(self, Source::Url(_))
    }

    fn common(&self) -> &Common {
        match self {
            Source::File(f) => &f.common,
            Source::Url(u) => &u.common,
        }
    }

    fn common_mut(&mut self) -> &mut Common {
        match self {
            Source::File(f) => &mut f.common,
            Source::Url(u) => &mut u.common,
        }
    }
}

/// What every source holds: its name, its last good bytes and its figures.
struct Common {
    name: Arc<str>,
    /// The last good content (shared with a compile in progress without a copy).
    bytes: Arc<Vec<u8>>,
    /// Changed since the last compile.
    changed: bool,
    last_success: Option<u64>,
    failures: u64,
}

impl Common {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            bytes: Arc::new(Vec::new()),
            changed: false,
            last_success: None,
            failures: 0,
        }
    }

    fn set(&mut self, bytes: Vec<u8>) {
        if *self.bytes != bytes {
            self.bytes = Arc::new(bytes);
            self.changed = true;
        }
    }
}

/// A local `.deny` file, re-read when its modification time or size changes.
struct LocalFile {
    path: PathBuf,
    seen: Option<(Option<SystemTime>, u64)>,
    common: Common,
}

impl LocalFile {
    fn new(path: PathBuf) -> Self {
        let name = Arc::from(path.display().to_string());
        Self {
            path,
            seen: None,
            common: Common::new(name),
        }
    }

    /// Re-reads the file if it changed.
    async fn poll(&mut self) -> std::io::Result<()> {
        let meta = tokio::fs::metadata(&self.path).await?;
        let stamp = (meta.modified().ok(), meta.len());
        if self.seen == Some(stamp) {
            self.common.last_success = Some(unix_now());
            return Ok(());
        }
        let bytes = tokio::fs::read(&self.path).await?;
        // Stamp taken before the read: a write during the read shows up at the next poll.
        self.seen = Some(stamp);
        self.common.set(bytes);
        self.common.last_success = Some(unix_now());
        Ok(())
    }
}

/// The sidecar of a stored copy.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Meta {
    url: String,
    etag: Option<String>,
}

/// A subscription: a URL, its stored copy and validator.
struct Subscription {
    url: String,
    copy: PathBuf,
    meta: PathBuf,
    etag: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
    common: Common,
}

/// What a refresh found.
#[derive(Debug, PartialEq, Eq)]
enum Fetched {
    Unchanged,
    Appended(usize),
    Replaced(usize),
}

impl Subscription {
    fn new(url: &str, dir: &Path, client: reqwest::Client, timeout: Duration) -> Self {
        let stem = store_stem(url);
        Self {
            url: url.to_string(),
            copy: dir.join(format!("{stem}.deny")),
            meta: dir.join(format!("{stem}.json")),
            etag: None,
            client,
            timeout,
            common: Common::new(Arc::from(public_name(url))),
        }
    }

    /// Loads the stored copy, then fetches; a failed fetch keeps the copy.
    async fn open(&mut self) {
        if let Ok(bytes) = tokio::fs::read(&self.copy).await {
            if let Ok(text) = tokio::fs::read(&self.meta).await {
                if let Ok(m) = serde_json::from_slice::<Meta>(&text) {
                    if m.url == self.url {
                        self.etag = m.etag;
                    }
                }
            }
            tracing::info!(list = %self.common.name, bytes = bytes.len(), "denylist: stored copy loaded");
            self.common.set(bytes);
        }
        self.refresh().await;
        if self.common.bytes.is_empty() && self.common.last_success.is_none() {
            tracing::warn!(list = %self.common.name, "denylist: no copy of this subscription yet; starting without it");
        }
    }

    /// Fetches what is new; on failure logs, counts and keeps the last good copy.
    async fn refresh(&mut self) {
        match self.fetch().await {
            Ok(outcome) => {
                self.common.last_success = Some(unix_now());
                if outcome != Fetched::Unchanged {
                    tracing::info!(list = %self.common.name, ?outcome, "denylist: subscription updated");
                }
            }
            Err(e) => {
                self.common.failures += 1;
                tracing::warn!(
                    list = %self.common.name,
                    error = %e,
                    "denylist: fetch failed; keeping the last good copy"
                );
            }
        }
    }

    async fn fetch(&mut self) -> Result<Fetched, String> {
        let held = self.common.bytes.len();
        if held == 0 {
            return self.fetch_whole().await;
        }
        let from = held - held.min(OVERLAP);
        let mut req = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::RANGE, format!("bytes={from}-"));
        if let Some(etag) = &self.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            304 => Ok(Fetched::Unchanged),
            200 => {
                let etag = etag_of(&resp);
                let body = read_capped(resp, 0).await?;
                self.replace(body, etag).await
            }
            206 => {
                let start = content_range_start(&resp);
                let etag = etag_of(&resp);
                let body = read_capped(resp, from).await?;
                let tail = &self.common.bytes[from..];
                if start != Some(from as u64)
                    || body.len() < tail.len()
                    || body[..tail.len()] != *tail
                {
                    tracing::info!(list = %self.common.name, "denylist: the list was rewritten; fetching it whole");
                    return self.fetch_whole().await;
                }
                let new = &body[tail.len()..];
                if new.is_empty() {
                    self.etag = etag.or(self.etag.take());
                    return Ok(Fetched::Unchanged);
                }
                self.append(new, etag).await
            }
            416 => {
                tracing::info!(list = %self.common.name, "denylist: the list shrank; fetching it whole");
                self.fetch_whole().await
            }
            s => Err(format!("HTTP {s}")),
        }
    }

    async fn fetch_whole(&mut self) -> Result<Fetched, String> {
        let resp = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().as_u16() != 200 {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let etag = etag_of(&resp);
        let body = read_capped(resp, 0).await?;
        self.replace(body, etag).await
    }

    async fn replace(&mut self, body: Vec<u8>, etag: Option<String>) -> Result<Fetched, String> {
        let n = body.len();
        if *self.common.bytes == body {
            self.etag = etag;
            self.save_meta().await;
            return Ok(Fetched::Unchanged);
        }
        // An error page served with 200 (a proxy, a captive portal, a moved list) must not
        // replace a list that blocks things with one that blocks nothing.
        if !super::has_rules(&String::from_utf8_lossy(&body))
            && super::has_rules(&String::from_utf8_lossy(&self.common.bytes))
        {
            return Err(format!(
                "the fetched list ({n} bytes) has no rule this gateway can read; \
                 keeping the last good copy"
            ));
        }
        // Atomic: a crash leaves the old copy or the new one, never half of one.
        let tmp = self.copy.with_extension("deny.tmp");
        tokio::fs::write(&tmp, &body)
            .await
            .and(tokio::fs::rename(&tmp, &self.copy).await)
            .map_err(|e| format!("storing {}: {e}", self.copy.display()))?;
        self.common.set(body);
        self.etag = etag;
        self.save_meta().await;
        Ok(Fetched::Replaced(n))
    }

    async fn append(&mut self, new: &[u8], etag: Option<String>) -> Result<Fetched, String> {
        use tokio::io::AsyncWriteExt;
        // Appending keeps the copy a prefix of the list even if it stops halfway; the next
        // refresh continues from whatever length is on disk.
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.copy)
            .await
            .map_err(|e| format!("storing {}: {e}", self.copy.display()))?;
        f.write_all(new)
            .await
            .map_err(|e| format!("storing {}: {e}", self.copy.display()))?;
        f.sync_data()
            .await
            .map_err(|e| format!("storing {}: {e}", self.copy.display()))?;
        let mut bytes = Vec::with_capacity(self.common.bytes.len() + new.len());
        bytes.extend_from_slice(&self.common.bytes);
        bytes.extend_from_slice(new);
        self.common.set(bytes);
        self.etag = etag;
        self.save_meta().await;
        Ok(Fetched::Appended(new.len()))
    }

    async fn save_meta(&self) {
        let meta = Meta {
            url: self.url.clone(),
            etag: self.etag.clone(),
        };
        let Ok(text) = serde_json::to_vec(&meta) else {
            return;
        };
        let tmp = self.meta.with_extension("json.tmp");
        if let Err(e) = tokio::fs::write(&tmp, text)
            .await
            .and(tokio::fs::rename(&tmp, &self.meta).await)
        {
            // Only the validator is lost: the next refresh gets a 206 instead of a 304.
            tracing::warn!(file = %self.meta.display(), error = %e, "denylist: cannot store the ETag");
        }
    }
}

fn etag_of(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get(reqwest::header::ETAG)?.to_str().ok()?;
    // Weak validators are fine for If-None-Match.
    Some(v.to_string())
}

/// The first byte of a 206's `Content-Range: bytes {start}-{end}/{total}`.
fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Reads a body, refusing lists larger than [`MAX_LIST_BYTES`] (counting `offset` bytes
/// already held before it).
async fn read_capped(mut resp: reqwest::Response, offset: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if offset + body.len() + chunk.len() > MAX_LIST_BYTES {
            return Err(format!("list larger than {MAX_LIST_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A URL without credentials, query or fragment: how the list is named in logs, metrics and
/// [`super::Blocked::list`] (the query may hold an access token).
fn public_name(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// A file name for a URL's stored copy: readable, and unique through a hash of the whole URL.
fn store_stem(url: &str) -> String {
    let readable: String = public_name(url)
        .split("://")
        .last()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let h = Sha256::digest(url.as_bytes());
    format!(
        "{readable}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        h[0], h[1], h[2], h[3], h[4], h[5]
    )
}

/// One list as handed to a compile off the runtime.
struct CompileInput {
    name: Arc<str>,
    bytes: Arc<Vec<u8>>,
    changed: bool,
    whole_lines: bool,
}

impl CompileInput {
    /// The text to compile: up to the last newline when only whole lines count.
    fn text(&self) -> std::borrow::Cow<'_, str> {
        let end = if self.whole_lines {
            self.bytes
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        } else {
            self.bytes.len()
        };
        String::from_utf8_lossy(&self.bytes[..end])
    }
}

/// The service task's state.
struct State {
    /// Subscriptions first, then files: later lists override earlier ones, so an operator's
    /// own exceptions can lift a subscribed rule.
    sources: Vec<Source>,
    handle: DenylistHandle,
    stats: Arc<Mutex<Vec<ListStats>>>,
}

impl State {
    async fn run(
        mut self,
        mut reloads: mpsc::Receiver<oneshot::Sender<()>>,
        shutdown: CancellationToken,
        poll: Duration,
        refresh: Duration,
    ) {
        let start = tokio::time::Instant::now();
        let mut poll = tokio::time::interval_at(start + poll, poll);
        let mut refresh = tokio::time::interval_at(start + refresh, refresh);
        for t in [&mut poll, &mut refresh] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let reply = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poll.tick() => {
                    self.poll_files().await;
                    None
                }
                _ = refresh.tick() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.refresh_urls() => {}
                    }
                    None
                }
                Some(reply) = reloads.recv() => {
                    self.poll_files().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.refresh_urls() => {}
                    }
                    Some(reply)
                }
            };
            if self.sources.iter().any(|s| s.common().changed) {
                self.compile(false).await;
            }
            self.publish_stats();
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        }
    }

    async fn poll_files(&mut self) {
        for s in &mut self.sources {
            if let Source::File(f) = s {
                if let Err(e) = f.poll().await {
                    f.common.failures += 1;
                    tracing::warn!(
                        file = %f.path.display(),
                        error = %e,
                        "denylist: cannot read; keeping its last good rules"
                    );
                }
            }
        }
    }

    async fn refresh_urls(&mut self) {
        let subs = self.sources.iter_mut().filter_map(|s| match s {
            Source::Url(u) => Some(u.refresh()),
            Source::File(_) => None,
        });
        futures::future::join_all(subs).await;
    }

    /// Compiles every list off the runtime and installs the result; logs the warnings of the
    /// lists that changed (all of them at start).
    async fn compile(&mut self, initial: bool) {
        let inputs: Vec<CompileInput> = self
            .sources
            .iter_mut()
            .map(|s| {
                let whole_lines = s.whole_lines_only();
                let c = s.common_mut();
                CompileInput {
                    name: c.name.clone(),
                    bytes: c.bytes.clone(),
                    changed: std::mem::take(&mut c.changed) || initial,
                    whole_lines,
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            // Borrowed when the bytes are UTF-8 (the usual case): no copy of a big list.
            let texts: Vec<std::borrow::Cow<'_, str>> =
                inputs.iter().map(CompileInput::text).collect();
            let (list, warnings) =
                Denylist::compile_lists(inputs.iter().zip(&texts).map(|(i, t)| (&*i.name, &**t)));
            drop(texts);
            let changed: Vec<Arc<str>> = inputs
                .into_iter()
                .filter(|i| i.changed)
                .map(|i| i.name)
                .collect();
            (list, warnings, changed)
        })
        .await;
        let Ok((list, warnings, changed)) = joined else {
            tracing::error!("denylist: compiling panicked; keeping the current list");
            return;
        };
        for w in &warnings {
            if changed.iter().any(|n| w.starts_with(&format!("{n}:"))) {
                tracing::warn!("denylist: {w}");
            }
        }
        let rules = list.rules();
        let generation = self.handle.replace(list);
        tracing::info!(
            rules,
            generation,
            lists = self.sources.len(),
            ms = started.elapsed().as_millis() as u64,
            "denylist: compiled"
        );
        self.publish_stats();
    }

    fn publish_stats(&self) {
        let current = self.handle.load();
        let stats: Vec<ListStats> = self
            .sources
            .iter()
            .map(|s| {
                let c = s.common();
                ListStats {
                    name: c.name.clone(),
                    source: match s {
                        Source::File(_) => ListSource::File,
                        Source::Url(_) => ListSource::Url,
                    },
                    rules: current
                        .lists()
                        .iter()
                        .find(|l| l.name == c.name)
                        .map_or(0, |l| l.rules),
                    bytes: c.bytes.len() as u64,
                    last_success: c.last_success,
                    failures: c.failures,
                }
            })
            .collect();
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
    }
}

#[cfg(test)]
mod tests;
