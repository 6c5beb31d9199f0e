//! What the `cidgate` commands print: progress bars with percentage and ETA when stderr is a
//! terminal (one summary line otherwise, so logs and pipes get no control codes), sizes in
//! KiB / MiB / GiB, the pin table, prewarm results and error reports that name each cause once.

use std::error::Error;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytesize::ByteSize;

use crate::admin_client::{PinList, PrewarmEvent};

/// `n` bytes for people: "512 B", "1.5 MiB".
pub fn size(n: u64) -> String {
    ByteSize::b(n).display().iec().to_string()
}

/// Bytes per second over `elapsed`, for people: "12.3 MiB/s".
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let per_sec = bytes as f64 / elapsed.as_secs_f64().max(1e-3);
    format!("{}/s", size(per_sec as u64))
}

/// Progress of one transfer of bytes. Cheap to clone and to update from any thread.
#[derive(Clone)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    done: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    /// A bar labelled `label`, out of `total` bytes when known (then with percentage and ETA),
    /// drawn only when stderr is a terminal.
    pub fn new(label: &str, total: Option<u64>) -> Self {
        Self::with_terminal(label, total, std::io::stderr().is_terminal())
    }

    /// [`Progress::new`], drawing the bar or not as `terminal` says.
    pub fn with_terminal(label: &str, total: Option<u64>, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bytes = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", size(state.pos()));
            };
            let total_bytes = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", size(state.len().unwrap_or(0)));
            };
            let speed = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", rate(state.pos(), state.elapsed()));
            };
            let (bar, template) = match total {
                Some(t) => (
                    indicatif::ProgressBar::new(t),
                    "{prefix} [{bar:30}] {percent:>3}% {done} / {total} {speed}, ETA {eta}",
                ),
                None => (
                    indicatif::ProgressBar::new_spinner(),
                    "{spinner} {prefix} {done} {speed} [{elapsed}]",
                ),
            };
            let style = indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key("done", bytes)
                .with_key("total", total_bytes)
                .with_key("speed", speed)
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            start: Instant::now(),
            done: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Whether a bar is drawn.
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Sets the bytes done so far.
    pub fn set(&self, done: u64) {
        self.done.store(done, std::sync::atomic::Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            // A total that was only an estimate grows rather than showing more than 100 %.
            if bar.length().is_some_and(|len| done > len) {
                bar.set_length(done);
            }
            bar.set_position(done);
        }
    }

    /// Adds to the bytes done.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        self.set(done);
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Clears the bar (if any) and prints `summary` as one line on stderr.
    pub fn finish(&self, summary: &str) {
        self.clear();
        eprintln!("{summary}");
    }

    /// Clears the bar (if any) without printing.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Prints a line above the bar (or plainly when there is none).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }
}

/// A moment as "2025-05-01 12:00:00 UTC".
fn when(unix_secs: u64) -> String {
    if unix_secs == 0 {
        return "-".into();
    }
    // humantime formats four-digit years only.
    let t = UNIX_EPOCH + Duration::from_secs(unix_secs.min(253_402_300_799));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // "2025-05-01T12:00:00Z" → "2025-05-01 12:00:00 UTC"
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

/// Aligned columns under a header row; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `cidgate pin ls`: a header row and one aligned row per pin (CID, name, kind, size when the
/// root records it, when it was pinned, where). Pins cidgate made in a remote hot layer follow
/// the store's.
pub fn pin_table(list: &PinList) -> String {
    let mut rows: Vec<Vec<String>> = list
        .store
        .iter()
        .map(|p| {
            vec![
                p.cid.clone(),
                p.name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("-".into()),
                p.reason.clone(),
                p.size.map(size).unwrap_or("-".into()),
                when(p.created),
                "store".into(),
            ]
        })
        .collect();
    if list.target != "embedded" {
        rows.extend(
            list.made_by_cidgate
                .iter()
                .filter(|p| p.state == "pinned")
                .map(|p| {
                    vec![
                        p.cid.clone(),
                        if p.name.is_empty() {
                            "-".into()
                        } else {
                            p.name.clone()
                        },
                        if p.auto { "auto" } else { "operator" }.into(),
                        "-".into(),
                        when(p.since.max(0.0) as u64),
                        p.target.clone(),
                    ]
                }),
        );
    }
    table(
        &["CID", "NAME", "KIND", "SIZE", "PINNED AT", "WHERE"],
        &rows,
    )
}

/// The line for a finished prewarm: how much was read and, when not all of it stays in the
/// edge cache, how much did and why the rest did not.
pub fn prewarm_line(ev: &PrewarmEvent) -> String {
    if let Some(e) = &ev.error {
        return format!("{}: failed: {e}", ev.cid);
    }
    let mut line = format!("{}: {} blocks, {} read", ev.cid, ev.blocks, size(ev.bytes));
    if ev.truncated {
        line.push_str(&format!(
            "; the DAG is larger than popularity.max_dag_bytes ({}), the rest was not read",
            ev.max_dag_bytes.map(size).unwrap_or("?".into())
        ));
    }
    match (ev.cached_bytes, ev.cache_capacity) {
        (Some(cached), Some(capacity)) if cached < ev.bytes => {
            let why = if ev.bytes > capacity {
                format!(
                    "larger than the edge cache ({}, cache.memory)",
                    size(capacity)
                )
            } else {
                format!(
                    "more than the edge cache ({}, cache.memory) keeps of blocks read once",
                    size(capacity)
                )
            };
            line.push_str(&format!(
                "; {why}: {} stayed cached, {} did not (read from the store or hot node on demand)",
                size(cached),
                size(ev.bytes - cached)
            ));
        }
        (Some(_), Some(_)) if !ev.truncated => line.push_str(", all in the edge cache"),
        _ => {}
    }
    line
}

/// Whether a finished prewarm left its whole DAG in the cache.
pub fn prewarm_complete(ev: &PrewarmEvent) -> bool {
    ev.error.is_none() && !ev.truncated && ev.cached_bytes.is_none_or(|c| c >= ev.bytes)
}

/// An error and its causes as one line, each cause said once: a cause whose text an outer
/// message already contains (errors that embed their source's text and also report it as
/// their `source`) is not repeated.
pub fn error_report<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// The outcome of `cidgate check`: the root's state, then one line per place.
pub fn check_report(r: &crate::retrievability::RootRecord) -> String {
    use crate::retrievability::{PlaceKind, RootState};
    let providers = r
        .places
        .iter()
        .filter(|p| p.ok && p.kind == PlaceKind::Provider)
        .count();
    let summary = match r.state {
        RootState::Healthy => format!("retrievable from the hot layer and {providers} provider(s)"),
        RootState::UnderReplicated => {
            format!("retrievable from the hot layer, but only {providers} provider(s): flagged")
        }
        RootState::ColdOnly => {
            format!("not in the hot layer; retrievable from {providers} provider(s)")
        }
        RootState::Unretrievable => "retrievable from no place".to_string(),
    };
    let mut out = format!("{}: {} ({summary})\n", r.root, r.state.as_str());
    if r.places.is_empty() {
        out.push_str("  no place to check: not pinned here, and no provider named it\n");
    }
    let width = r.places.iter().map(|p| p.place.len()).max().unwrap_or(0);
    for p in &r.places {
        let ttfb = p
            .ttfb_ms
            .map(|ms| format!(" {ms:.0} ms"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<width$}  {:<6}{ttfb}  {}\n",
            p.place,
            if p.ok { "ok" } else { "FAILED" },
            p.detail
        ));
        if let Some(rep) = &p.repaired {
            out.push_str(&format!("  {:<width$}  repaired: {rep}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_client::StorePin;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /x: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Embeds { source: inner }).context("adding");
        assert_eq!(
            format!("{e:#}"),
            "adding: reading /x: No such file: No such file"
        );
        assert_eq!(error_report(e.chain()), "adding: reading /x: No such file");
    }

    #[test]
    fn sizes_are_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(size(2 * 1024 * 1024 * 1024), "2.0 GiB");
    }

    #[test]
    fn the_pin_table_has_a_header_and_aligned_columns() {
        let list = PinList {
            target: "embedded".into(),
            store: vec![
                StorePin {
                    cid: "bafyshort".into(),
                    reason: "operator".into(),
                    name: Some("site".into()),
                    created: 1_700_000_000,
                    size: Some(1536),
                },
                StorePin {
                    cid: "bafylongerthanthat".into(),
                    reason: "sample".into(),
                    name: None,
                    created: 1_700_000_000,
                    size: None,
                },
            ],
            made_by_cidgate: Vec::new(),
        };
        let t = pin_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CID "), "{t}");
        assert!(
            lines[0].contains("NAME") && lines[0].contains("PINNED AT"),
            "{t}"
        );
        let col = lines[0].find("NAME").unwrap();
        assert_eq!(&lines[1][col..col + 4], "site", "{t}");
        assert_eq!(&lines[2][col..col + 1], "-", "{t}");
        assert!(lines[1].contains("1.5 KiB") && lines[1].contains("2023-11-14 22:13:20 UTC"));
    }

    #[test]
    fn a_prewarm_larger_than_the_cache_says_so() {
        let ev = PrewarmEvent {
            cid: "bafy".into(),
            done: true,
            blocks: 21,
            bytes: 20 << 20,
            cache_capacity: Some(8 << 20),
            cached_bytes: Some(6 << 20),
            ..Default::default()
        };
        let line = prewarm_line(&ev);
        assert!(
            line.contains("larger than the edge cache (8.0 MiB"),
            "{line}"
        );
        assert!(
            line.contains("6.0 MiB stayed cached, 14.0 MiB did not"),
            "{line}"
        );
        assert!(!prewarm_complete(&ev));
        let fits = PrewarmEvent {
            cached_bytes: Some(20 << 20),
            cache_capacity: Some(64 << 20),
            ..ev
        };
        assert!(prewarm_line(&fits).ends_with("all in the edge cache"));
        assert!(prewarm_complete(&fits));
    }
}
