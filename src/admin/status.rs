//! The admin status page (`GET /` on the admin listener): an auto-refreshing HTML overview drawn
//! from a [`StatusSnapshot`]. Rendering is a pure function of the snapshot so it is testable
//! without a listener. The page is a `maud` template, so every piece of snapshot text is
//! escaped by the template engine rather than by hand; charts are inline SVG and the page loads
//! nothing from elsewhere, because the admin port is often reachable only from a machine without
//! internet access. Each topic has one section: health, traffic over time, bytes by tier,
//! popular content, pins, pin events, storage providers.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Everything the status page shows, gathered by the admin handler.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatusSnapshot {
    /// The running version.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// Base URL of the public gateway (`http://host:port`), for links to content.
    pub public_base: Option<String>,
    /// Why the gateway is not ready (what `/readyz` says); empty when it is.
    pub not_ready: Vec<String>,
    /// The hot pinning node.
    pub hot: HotHealth,
    /// Bytes the edge cache holds now.
    pub cache_bytes: u64,
    /// Bytes the edge cache may hold.
    pub cache_capacity: u64,
    /// Bytes of the store on disk (segment files and database).
    pub store_bytes: u64,
    /// The store's space: pinned and cache bytes, budget, evictions, collections.
    pub store: crate::tiers::space::StoreSummary,
    /// Resident memory of the process, when known.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors and their limit, when known.
    pub open_fds: Option<(u64, Option<u64>)>,
    /// Traffic samples, oldest first (one per sampling interval, up to an hour).
    pub traffic: Vec<TrafficSample>,
    /// Requests and bytes per serving tier since start (the slowest tier each request needed).
    pub tiers: Vec<TierShare>,
    /// Most popular content, highest score first (up to 20).
    pub top: Vec<PopularItem>,
    /// Pins in the embedded store, newest first (up to 50).
    pub pins: Vec<PinRow>,
    /// Pins in the embedded store in all.
    pub pins_total: usize,
    /// Recent promotions, demotions, operator pins, prewarms, newest first (up to 30).
    pub events: Vec<PinEvent>,
    /// Storage providers of the cold tier, best first.
    pub providers: Vec<ProviderHealth>,
    /// FIL spent today.
    pub spend_today: f64,
    /// Daily FIL budget (0 when none is configured).
    pub daily_budget: f64,
    /// Retrievability of the pins, when the checks are on.
    pub retrievability: Option<crate::retrievability::Report>,
}

/// The hot node's health.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HotHealth {
    /// `embedded`, `trustless` or `kubo`.
    pub backend: String,
    /// Its URL (credentials masked); empty for the embedded store.
    pub url: String,
    /// Whether it has a circuit breaker (remote nodes do).
    pub has_breaker: bool,
    /// Seconds the open circuit has left; `None` when closed.
    pub open_for_secs: Option<u64>,
    /// Consecutive failures.
    pub failures: u32,
}

/// Traffic over one sampling interval.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrafficSample {
    /// Unix seconds at the end of the interval.
    pub at: u64,
    /// Finished requests per second.
    pub requests_per_s: f64,
    /// Share of those answered 5xx; `None` without requests.
    pub server_errors: Option<f64>,
    /// Share of those answered 4xx; `None` without requests.
    pub client_errors: Option<f64>,
    /// Latency percentiles in milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p95_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
    /// Edge-cache hit ratio of block lookups; `None` without lookups.
    pub hit_ratio: Option<f64>,
}

/// What one tier served since start.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TierShare {
    /// Tier name: "cache", "store", "hot" or "cold".
    pub name: String,
    /// Requests this tier served.
    pub requests: u64,
    /// Body bytes of those responses.
    pub bytes: u64,
}

/// One entry of the popularity ranking.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PopularItem {
    /// Root CID as text.
    pub cid: String,
    /// Popularity score (higher is more popular).
    pub score: f64,
    /// Decayed request count.
    pub requests: f64,
    /// Decayed bytes served.
    pub bytes: f64,
    /// Why it is pinned, if it is: "operator", "auto" or "sample".
    pub pinned: Option<String>,
    /// The pin's name, if it has one.
    pub pin_name: Option<String>,
}

/// One pin of the embedded store.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PinRow {
    /// Root CID.
    pub cid: String,
    /// operator, auto or sample.
    pub reason: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Unix seconds when it was pinned.
    pub created: u64,
}

/// A change to what the hot tier holds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PinEvent {
    /// Unix seconds.
    pub at: u64,
    /// CID the event is about.
    pub cid: String,
    /// promoted, demoted, pinned, unpinned, prewarmed or failed.
    pub kind: String,
    /// Backend that carried it out.
    pub backend: String,
    /// Free-form detail, e.g. the error of a failed promotion.
    pub detail: String,
}

/// How one cold-tier storage provider has been doing.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProviderHealth {
    /// Short name (usually the provider id).
    pub label: String,
    /// Retrieval endpoint.
    pub url: String,
    /// Ranking score, higher is better; only meaningful relative to the other providers.
    pub score: f64,
    /// Successful retrievals.
    pub successes: u64,
    /// Failed retrievals.
    pub failures: u64,
    /// Moving average of the time to first byte, in milliseconds.
    pub ttfb_ms: Option<f64>,
    /// Most recent error, if any.
    pub last_error: Option<String>,
}

/// viewBox width shared by all charts, so they line up when stacked.
const WIDTH: f64 = 720.0;
/// Space left of the bars for their labels.
const LABEL_W: f64 = 90.0;
/// Space right of the bars for the value text.
const VALUE_W: f64 = 230.0;
const ROW_H: f64 = 24.0;
const BAR_H: f64 = 16.0;
const PAD: f64 = 12.0;
/// Height of the time-series charts.
const LINE_H: f64 = 200.0;
/// humantime refuses to format times past the end of year 9999 (and `to_string` would panic).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem auto;padding:0 1rem;max-width:1200px;color:#1d2327;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .25rem}
h2{font-size:1.1rem;margin:1.75rem 0 .5rem}
.meta{color:#555;margin:0 0 1rem}
.health{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.75rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .75rem}
.card h3{font-size:.85rem;margin:0 0 .25rem;color:#555;font-weight:600}
.card .big{font-size:1.1rem;font-weight:600}
.ok{color:#2e7d32}
.bad-text{color:#c62828}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem}
figcaption{font-weight:600;margin-bottom:.25rem}
.legend span{margin-right:.75rem;font-size:12px}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.25em;vertical-align:-1px}
svg{display:block;width:100%;height:auto}
svg text{font-size:12px;fill:#333}
svg .bg{fill:#fff}
svg .axis{stroke:#888;stroke-width:1}
svg .grid{stroke:#ddd;stroke-dasharray:3 3}
svg .track{fill:#f1f1f1}
svg .empty{fill:#888;font-style:italic}
svg polyline{fill:none;stroke-width:2;stroke-linejoin:round}
svg polyline.s0{stroke:#2b7bb9}
svg polyline.s1{stroke:#e08a1e}
svg polyline.s2{stroke:#c0392b}
svg polyline.s3{stroke:#7b5ea7}
.tier-cache{fill:#2b7bb9;background:#2b7bb9}
.tier-store{fill:#3a9d5d;background:#3a9d5d}
.tier-hot{fill:#e08a1e;background:#e08a1e}
.tier-cold{fill:#7b5ea7;background:#7b5ea7}
.legend i.s0{background:#2b7bb9}
.legend i.s1{background:#e08a1e}
.legend i.s2{background:#c0392b}
.legend i.s3{background:#7b5ea7}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-size:12px;word-break:break-all}
meter{width:8rem}
.ev-up{color:#2e7d32}
.ev-down{color:#8d6e00}
.ev-pin{color:#1565c0}
.ev-fail{color:#c62828}
.none{color:#888;font-style:italic}
";

/// Counts the charts that actually laid out, so a headless browser test can check the page
/// from `--dump-dom` alone. Counted at once (getBBox forces layout) and again after load, in
/// case the dump is taken only after the load event.
const SCRIPT: &str = "
(function () {
  function count() {
    var n = 0;
    document.querySelectorAll('svg[data-chart]').forEach(function (e) {
      try {
        var b = e.getBBox();
        if (b.width > 0 && b.height > 0) { n++; }
      } catch (err) {}
    });
    document.body.dataset.chartsRendered = String(n);
  }
  count();
  window.addEventListener('load', count);
})();
";

/// The charts the page draws, in order (the browser test counts them).
pub const CHARTS: [&str; 5] = ["rate", "latency", "errors", "hit-ratio", "tiers"];

/// The status page as HTML.
pub fn render(s: &StatusSnapshot) -> String {
    let served = s
        .tiers
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.requests));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "cidgate status" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "cidgate status" }
                p.meta {
                    "cidgate " (s.version) " · up "
                    (humantime::format_duration(Duration::from_secs(s.uptime_secs)))
                    " · " (served) " requests served · "
                    @if let Some(base) = &s.public_base {
                        "gateway " a href=(base) { (base) } " · "
                    }
                    "refreshes every 5 s"
                }
                (health(s))
                h2 { "Traffic" }
                section.charts {
                    (figure("Requests per second", line_chart(
                        "rate", "Finished requests per second",
                        &[Series::new("requests/s", s.traffic.iter().map(|t| (t.at, Some(t.requests_per_s))))],
                        |v| format!("{v:.1}/s"), None)))
                    (figure("Latency (p50 / p95 / p99)", line_chart(
                        "latency", "Request latency percentiles in milliseconds",
                        &[
                            Series::new("p50", s.traffic.iter().map(|t| (t.at, t.p50_ms))),
                            Series::new("p95", s.traffic.iter().map(|t| (t.at, t.p95_ms))),
                            Series::new("p99", s.traffic.iter().map(|t| (t.at, t.p99_ms))),
                        ],
                        human_ms, None)))
                    (figure("Error rate", line_chart(
                        "errors", "Share of requests answered 5xx and 4xx",
                        &[
                            Series::new("5xx", s.traffic.iter().map(|t| (t.at, t.server_errors))),
                            Series::new("4xx", s.traffic.iter().map(|t| (t.at, t.client_errors))),
                        ],
                        percent, Some(1.0))))
                    (figure("Edge-cache hit ratio", line_chart(
                        "hit-ratio", "Edge-cache hit ratio of block lookups",
                        &[Series::new("hit ratio", s.traffic.iter().map(|t| (t.at, t.hit_ratio)))],
                        percent, Some(1.0))))
                    (figure("Bytes and requests by serving tier", tiers_chart(&s.tiers)))
                }
                (popular_section(s))
                (pins_section(s))
                (events_section(s))
                (providers_section(s))
                @if let Some(r) = &s.retrievability {
                    (retrievability_section(r, s.public_base.as_deref()))
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

fn health(s: &StatusSnapshot) -> Markup {
    let fill = ratio(s.cache_bytes as f64, s.cache_capacity as f64);
    html! {
        h2 { "Health" }
        section.health {
            div.card {
                h3 { "Readiness" }
                @if s.not_ready.is_empty() {
                    div.big.ok { "ready" }
                } @else {
                    div.big.bad-text { "not ready" }
                    @for r in &s.not_ready { div { (r) } }
                }
            }
            div.card {
                h3 { "Hot node" }
                div.big {
                    (s.hot.backend)
                    @if !s.hot.has_breaker {
                        " (local, no circuit breaker)"
                    } @else if let Some(left) = s.hot.open_for_secs {
                        span.bad-text { " · circuit open, " (left) " s left" }
                    } @else {
                        span.ok { " · circuit closed" }
                    }
                }
                @if !s.hot.url.is_empty() { div { code { (s.hot.url) } } }
                @if s.hot.has_breaker { div { (s.hot.failures) " consecutive failures" } }
            }
            div.card {
                h3 { "Edge cache" }
                div.big { (human_bytes(s.cache_bytes as f64)) " of " (human_bytes(s.cache_capacity as f64)) }
                div {
                    meter min="0" max="1" high="0.95" value=(format!("{fill:.3}")) {}
                    " " (format!("{:.1} %", fill * 100.0)) " full"
                }
            }
            div.card {
                h3 { "Store" }
                div.big { (human_bytes(s.store_bytes as f64)) " on disk" }
                @if s.store.max_size > 0 {
                    @let used = (s.store.disk_bytes.saturating_sub(s.store.index_bytes)) as f64 / s.store.max_size as f64;
                    div {
                        meter min="0" max="1" high="0.95" value=(format!("{used:.3}")) {}
                        " " (format!("{:.1} %", used * 100.0)) " of " (human_bytes(s.store.max_size as f64))
                    }
                }
                div { (human_bytes(s.store.pinned_bytes as f64)) " pinned · " (human_bytes(s.store.cache_bytes as f64)) " cache" }
                div { (s.pins_total) @if s.pins_total == 1 { " pin" } @else { " pins" } }
                div {
                    (human_bytes(s.store.evicted_bytes as f64)) " evicted · "
                    (s.store.gc_runs) " collections · "
                    (human_bytes(s.store.dead_bytes as f64)) " dead"
                }
            }
            div.card {
                h3 { "Process" }
                div.big {
                    @match s.resident_bytes {
                        Some(b) => { (human_bytes(b as f64)) " resident" }
                        None => { "memory unknown" }
                    }
                }
                div {
                    @match s.open_fds {
                        Some((n, Some(max))) => { (n) " of " (max) " file descriptors" }
                        Some((n, None)) => { (n) " file descriptors" }
                        None => { "file descriptors unknown" }
                    }
                }
            }
        }
    }
}

fn figure(caption: &str, chart: Markup) -> Markup {
    html! {
        figure {
            figcaption { (caption) }
            (chart)
        }
    }
}

/// One line of a time-series chart: points `(unix seconds, value)`, `None` where there was
/// nothing to measure (the line has a gap there).
struct Series {
    name: &'static str,
    points: Vec<(u64, Option<f64>)>,
}

impl Series {
    fn new(name: &'static str, points: impl Iterator<Item = (u64, Option<f64>)>) -> Self {
        Self {
            name,
            points: points
                .map(|(t, v)| (t, v.map(finite).filter(|v| *v >= 0.0)))
                .collect(),
        }
    }
}

/// A time-series chart of up to four lines with a legend, a zero-based y axis up to `y_max`
/// (or the largest value) and the first and last sample times on the x axis.
fn line_chart(
    chart: &str,
    aria: &str,
    series: &[Series],
    label: fn(f64) -> String,
    y_max: Option<f64>,
) -> Markup {
    let (left, right, top, bottom) = (70.0, WIDTH - 16.0, 20.0, LINE_H - 36.0);
    let largest = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0, f64::max);
    let y_max = y_max.unwrap_or(largest).max(largest).max(1e-9);
    let y_of = |v: f64| bottom - (v / y_max).clamp(0.0, 1.0) * (bottom - top);
    let times: Vec<u64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let tmin = times.iter().copied().min().unwrap_or(0);
    let tmax = times.iter().copied().max().unwrap_or(0);
    let span = tmax.saturating_sub(tmin);
    let x_of = |t: u64| {
        let f = if span > 0 {
            t.saturating_sub(tmin) as f64 / span as f64
        } else {
            1.0
        };
        left + f * (right - left)
    };
    let enough = series
        .iter()
        .any(|s| s.points.iter().filter(|p| p.1.is_some()).count() >= 2);
    let latest: Vec<String> = series
        .iter()
        .filter_map(|s| {
            s.points
                .iter()
                .rev()
                .find_map(|p| p.1)
                .map(|v| format!("{} {}", s.name, label(v)))
        })
        .collect();
    let aria = if enough {
        format!("{aria}; latest: {}", latest.join(", "))
    } else {
        format!("{aria}: collecting samples")
    };
    html! {
        @if series.len() > 1 {
            div.legend {
                @for (i, s) in series.iter().enumerate() {
                    span { i class=(format!("s{i}")) {} (s.name) }
                }
            }
        }
        svg data-chart=(chart) viewBox=(format!("0 0 {WIDTH:.0} {LINE_H:.0}"))
            width=(format!("{WIDTH:.0}")) height=(format!("{LINE_H:.0}"))
            role="img" aria-label=(aria) {
            rect.bg x="0" y="0" width=(format!("{WIDTH:.0}")) height=(format!("{LINE_H:.0}")) {}
            @for f in [0.0, 0.5, 1.0] {
                line.grid x1=(f1(left)) y1=(f1(y_of(f * y_max))) x2=(f1(right)) y2=(f1(y_of(f * y_max))) {}
                text x=(f1(left - 6.0)) y=(f1(y_of(f * y_max))) text-anchor="end" dominant-baseline="middle" {
                    (label(f * y_max))
                }
            }
            line.axis x1=(f1(left)) y1=(f1(top)) x2=(f1(left)) y2=(f1(bottom)) {}
            line.axis x1=(f1(left)) y1=(f1(bottom)) x2=(f1(right)) y2=(f1(bottom)) {}
            @if !enough {
                text.empty x=(f1((left + right) / 2.0)) y=(f1((top + bottom) / 2.0))
                    text-anchor="middle" dominant-baseline="middle" { "collecting…" }
            } @else {
                @for (i, s) in series.iter().enumerate() {
                    @for run in runs(&s.points) {
                        polyline class=(format!("s{i}")) points=(
                            run.iter().map(|&(t, v)| format!("{:.1},{:.1}", x_of(t), y_of(v)))
                                .collect::<Vec<_>>().join(" ")
                        ) {}
                    }
                }
                text x=(f1(right)) y=(f1(top - 6.0)) text-anchor="end" { "latest " (latest.join(" · ")) }
                text x=(f1(left)) y=(f1(LINE_H - 12.0)) { (rfc3339(tmin)) }
                text x=(f1(right)) y=(f1(LINE_H - 12.0)) text-anchor="end" { (rfc3339(tmax)) }
            }
        }
    }
}

/// The stretches of consecutive measured points (a `None` ends one).
fn runs(points: &[(u64, Option<f64>)]) -> Vec<Vec<(u64, f64)>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for &(t, v) in points {
        match v {
            Some(v) => run.push((t, v)),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    // A lone point still shows, as a dot-long line.
    out.into_iter()
        .map(|r| if r.len() == 1 { vec![r[0], r[0]] } else { r })
        .collect()
}

/// Bytes and requests per serving tier, as horizontal bars scaled by bytes.
fn tiers_chart(tiers: &[TierShare]) -> Markup {
    let total_bytes = tiers.iter().fold(0u64, |a, t| a.saturating_add(t.bytes));
    let total_requests = tiers.iter().fold(0u64, |a, t| a.saturating_add(t.requests));
    let plot_w = WIDTH - LABEL_W - VALUE_W;
    let rows = tiers.len().max(2);
    let h = 2.0 * PAD + rows as f64 * ROW_H;
    let aria = if total_requests == 0 {
        "Bytes served per tier: no traffic yet".to_string()
    } else {
        format!(
            "Bytes served per tier: {}",
            tiers
                .iter()
                .map(|t| format!("{} {}", t.name, human_bytes(t.bytes as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    html! {
        svg data-chart="tiers" viewBox=(format!("0 0 {WIDTH:.0} {h:.0}"))
            width=(format!("{WIDTH:.0}")) height=(format!("{h:.0}")) role="img" aria-label=(aria) {
            rect.bg x="0" y="0" width=(format!("{WIDTH:.0}")) height=(format!("{h:.0}")) {}
            line.axis x1=(f1(LABEL_W)) y1=(f1(PAD)) x2=(f1(LABEL_W)) y2=(f1(h - PAD)) {}
            @if total_requests == 0 {
                text.empty x=(f1(LABEL_W + 8.0)) y=(f1(h / 2.0)) dominant-baseline="middle" { "no traffic yet" }
            } @else {
                @for (i, t) in tiers.iter().enumerate() {
                    @let mid = PAD + (i as f64 + 0.5) * ROW_H;
                    @let share = ratio(t.bytes as f64, total_bytes as f64);
                    g {
                        text x=(f1(LABEL_W - 8.0)) y=(f1(mid)) text-anchor="end" dominant-baseline="middle" { (t.name) }
                        rect.track x=(f1(LABEL_W)) y=(f1(mid - BAR_H / 2.0)) width=(f1(plot_w)) height=(f1(BAR_H)) {}
                        rect class=(tier_class(&t.name)) x=(f1(LABEL_W)) y=(f1(mid - BAR_H / 2.0))
                            width=(f1(share * plot_w)) height=(f1(BAR_H)) {}
                        text x=(f1(LABEL_W + plot_w + 8.0)) y=(f1(mid)) dominant-baseline="middle" {
                            (human_bytes(t.bytes as f64)) " · " (t.requests) " requests ("
                            (format!("{:.1} %", ratio(t.requests as f64, total_requests as f64) * 100.0)) ")"
                        }
                    }
                }
            }
        }
    }
}

/// Only known tier names get a colour class, so no snapshot text ends up in a class attribute.
fn tier_class(name: &str) -> &'static str {
    match name {
        "cache" => "tier-cache",
        "store" => "tier-store",
        "hot" => "tier-hot",
        "cold" => "tier-cold",
        _ => "track",
    }
}

/// A CID, linked to the content on the public gateway when its address is known.
fn cid_link(base: Option<&str>, cid: &str, short: bool) -> Markup {
    let text = if short {
        shorten(cid, 10, 6)
    } else {
        cid.to_string()
    };
    // Only something that parses as a CID becomes part of a link.
    let linkable = cid::Cid::try_from(cid).is_ok();
    html! {
        @match base.filter(|_| linkable) {
            Some(b) => { a href=(format!("{b}/ipfs/{cid}/")) title=(cid) { code { (text) } } }
            None => { code title=(cid) { (text) } }
        }
    }
}

fn popular_section(s: &StatusSnapshot) -> Markup {
    let max = max_positive(s.top.iter().map(|p| p.score));
    let base = s.public_base.as_deref();
    html! {
        h2 { "Popular content" }
        table {
            thead { tr { th { "#" } th { "CID" } th { "score" } th { "requests" } th { "bytes" } th { "pin" } } }
            tbody {
                @if s.top.is_empty() {
                    tr { td.none colspan="6" { "nothing requested yet" } }
                }
                @for (i, p) in s.top.iter().enumerate() {
                    tr {
                        td.num { (i + 1) }
                        td { (cid_link(base, &p.cid, false)) }
                        td.num {
                            meter min="0" max="1" value=(format!("{:.3}", ratio(finite(p.score), max))) {}
                            " " (format!("{:.2}", finite(p.score)))
                        }
                        td.num { (format!("{:.1}", finite(p.requests))) }
                        td.num { (human_bytes(p.bytes)) }
                        td {
                            @if let Some(why) = &p.pinned {
                                "pinned (" (why) ")"
                                @if let Some(name) = &p.pin_name { " · " strong { (name) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pins_section(s: &StatusSnapshot) -> Markup {
    let base = s.public_base.as_deref();
    html! {
        h2 { "Pins" }
        table {
            thead { tr { th { "name" } th { "CID" } th { "pinned by" } th { "since" } } }
            tbody {
                @if s.pins.is_empty() {
                    tr { td.none colspan="4" { "no pins" } }
                }
                @for p in &s.pins {
                    tr {
                        td { @match &p.name { Some(n) => { strong { (n) } } None => { span.none { "unnamed" } } } }
                        td { (cid_link(base, &p.cid, false)) }
                        td { (p.reason) }
                        td.num { (rfc3339(p.created)) }
                    }
                }
                @if s.pins_total > s.pins.len() {
                    tr { td.none colspan="4" { "+" (s.pins_total - s.pins.len()) " more (GET /admin/pins lists all)" } }
                }
            }
        }
    }
}

/// Like [`tier_class`], a fixed set so no snapshot text reaches a class attribute.
fn event_class(kind: &str) -> &'static str {
    match kind {
        "promoted" | "prewarmed" => "ev-up",
        "demoted" => "ev-down",
        "pinned" | "unpinned" => "ev-pin",
        "failed" => "ev-fail",
        _ => "",
    }
}

fn events_section(s: &StatusSnapshot) -> Markup {
    let base = s.public_base.as_deref();
    html! {
        h2 { "Pin events" }
        table {
            thead { tr { th { "time" } th { "kind" } th { "CID" } th { "backend" } th { "detail" } } }
            tbody {
                @if s.events.is_empty() {
                    tr { td.none colspan="5" { "no events yet" } }
                }
                @for e in &s.events {
                    tr {
                        td.num { (rfc3339(e.at)) }
                        td class=(event_class(&e.kind)) { (e.kind) }
                        td { (cid_link(base, &e.cid, true)) }
                        td { (e.backend) }
                        td { (e.detail) }
                    }
                }
            }
        }
    }
}

fn retrievability_section(r: &crate::retrievability::Report, base: Option<&str>) -> Markup {
    let failing: Vec<_> = r.roots.iter().filter(|x| x.failing()).take(20).collect();
    html! {
        h2 { "Retrievability" }
        p {
            @for (state, n) in &r.states {
                span class=(if *state == "healthy" { "ok" } else if *n > 0 { "bad-text" } else { "" }) {
                    (state) ": " (n)
                }
                " · "
            }
            (r.roots.len()) " roots checked"
        }
        table {
            thead { tr { th { "root" } th { "state" } th { "providers" } th { "checked" } th { "failing places" } } }
            tbody {
                @if failing.is_empty() {
                    tr { td.none colspan="5" { "every checked root is retrievable from the hot layer and enough providers" } }
                }
                @for root in &failing {
                    tr {
                        td { (cid_link(base, &root.root, true)) }
                        td.bad-text { (root.state.as_str()) }
                        td.num { (root.providers) }
                        td.num { (rfc3339(root.checked_at as u64)) }
                        td {
                            @for p in root.places.iter().filter(|p| !p.ok) {
                                code { (p.place) } ": " (p.detail) br;
                            }
                        }
                    }
                }
            }
        }
        @if !r.events.is_empty() {
            table {
                thead { tr { th { "time" } th { "repair or flag" } th { "root" } th { "detail" } } }
                tbody {
                    @for e in r.events.iter().take(20) {
                        tr {
                            td.num { (rfc3339(e.at as u64)) }
                            td { (e.kind) }
                            td { (cid_link(base, &e.root, true)) }
                            td { (e.detail) }
                        }
                    }
                }
            }
        }
        table {
            thead { tr { th { "provider" } th { "checks passed" } th { "checks" } th { "last error" } } }
            tbody {
                @if r.providers.is_empty() {
                    tr { td.none colspan="4" { "no provider checked yet" } }
                }
                @for p in &r.providers {
                    tr {
                        td { code { (crate::config::mask_url(&p.url)) } }
                        td.num { (format!("{:.0} %", p.success_rate * 100.0)) }
                        td.num { (p.checks) }
                        td { @if let Some(e) = &p.last_error { (e) } }
                    }
                }
            }
        }
    }
}

/// Green without failures, amber with some, red once failures outnumber successes.
fn health_class(p: &ProviderHealth) -> &'static str {
    if p.failures == 0 {
        "ok"
    } else if p.failures > p.successes {
        "bad-text"
    } else {
        "ev-down"
    }
}

fn providers_section(s: &StatusSnapshot) -> Markup {
    let max = max_positive(s.providers.iter().map(|p| p.score));
    let spent = finite(s.spend_today).max(0.0);
    let budget = finite(s.daily_budget).max(0.0);
    html! {
        h2 { "Storage providers (cold tier)" }
        table {
            thead { tr {
                th { "label" } th { "URL" } th { "score" } th { "successes" } th { "failures" }
                th { "TTFB" } th { "last error" }
            } }
            tbody {
                @if s.providers.is_empty() {
                    tr { td.none colspan="7" { "no providers" } }
                }
                @for p in &s.providers {
                    tr {
                        td class=(health_class(p)) { (p.label) }
                        td { code { (p.url) } }
                        td.num {
                            meter min="0" max="1" value=(format!("{:.3}", ratio(finite(p.score), max))) {}
                            " " (format!("{:.3}", finite(p.score)))
                        }
                        td.num { (p.successes) }
                        td.num { (p.failures) }
                        td.num { @match p.ttfb_ms { Some(ms) => { (format!("{:.0} ms", finite(ms))) } None => { "–" } } }
                        td { @if let Some(e) = &p.last_error { (e) } }
                    }
                }
            }
        }
        p {
            "Spent today: "
            @if budget > 0.0 {
                meter min="0" max=(format!("{budget:.6}")) high=(format!("{:.6}", budget * 0.8)) value=(format!("{spent:.6}")) {}
                " " (format!("{spent:.4} FIL of {budget:.4} FIL ({:.1} %)", spent / budget * 100.0))
            } @else {
                (format!("{spent:.4} FIL (no daily budget set)"))
            }
        }
    }
}

/// One decimal, for SVG geometry.
fn f1(x: f64) -> String {
    format!("{:.1}", finite(x))
}

/// NaN and infinities become 0 so they never reach the page or SVG geometry; adding 0.0 also
/// turns -0.0 into 0.0, which would otherwise print as "-0.00".
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x + 0.0
    } else {
        0.0
    }
}

fn clamp01(x: f64) -> f64 {
    finite(x).clamp(0.0, 1.0)
}

/// Largest finite positive value, or 0 when there is none.
fn max_positive(values: impl Iterator<Item = f64>) -> f64 {
    values.map(finite).fold(0.0, f64::max)
}

/// `x / max` clamped to 0..=1, or 0 when `max` is not positive.
fn ratio(x: f64, max: f64) -> f64 {
    if finite(max) > 0.0 {
        clamp01(x / max)
    } else {
        0.0
    }
}

fn percent(v: f64) -> String {
    format!("{:.1} %", clamp01(v) * 100.0)
}

fn human_ms(v: f64) -> String {
    let v = finite(v);
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// First `head` and last `tail` characters around an ellipsis; counted in chars so CIDs that
/// are not ASCII cannot split a code point.
fn shorten(s: &str, head: usize, tail: usize) -> String {
    let n = s.chars().count();
    if n <= head + tail + 1 {
        return s.to_string();
    }
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

fn rfc3339(at: u64) -> String {
    if at > LAST_RFC3339_SECOND {
        return format!("unix {at}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at)).to_string()
}

fn human_bytes(b: f64) -> String {
    // Gauges are floats; a byte count is never negative nor fractional.
    bytesize::ByteSize::b(finite(b).max(0.0) as u64)
        .display()
        .iec()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    const EVIL: &str = "<script>alert(1)</script>";

    fn filled() -> StatusSnapshot {
        StatusSnapshot {
            version: "0.1.0".into(),
            uptime_secs: 3725,
            public_base: Some("http://127.0.0.1:8080".into()),
            not_ready: Vec::new(),
            hot: HotHealth {
                backend: "trustless".into(),
                url: "http://127.0.0.1:9".into(),
                has_breaker: true,
                open_for_secs: None,
                failures: 0,
            },
            cache_bytes: 64 << 20,
            cache_capacity: 256 << 20,
            store_bytes: 3 << 20,
            store: Default::default(),
            resident_bytes: Some(50 << 20),
            open_fds: Some((40, Some(1024))),
            traffic: (0..60u64)
                .map(|i| TrafficSample {
                    at: 1_700_000_000 + i * 10,
                    requests_per_s: i as f64,
                    server_errors: Some(0.01),
                    client_errors: if i == 30 { None } else { Some(0.05) },
                    p50_ms: Some(1.0),
                    p95_ms: Some(5.0),
                    p99_ms: Some(20.0 + i as f64),
                    hit_ratio: Some((i as f64 / 60.0).min(1.0)),
                })
                .collect(),
            tiers: ["cache", "store", "hot", "cold"]
                .iter()
                .zip([600, 250, 100, 50])
                .map(|(n, b)| TierShare {
                    name: n.to_string(),
                    requests: b,
                    bytes: b * 4096,
                })
                .collect(),
            top: vec![
                PopularItem {
                    cid: CID.into(),
                    score: 12.5,
                    requests: 40.0,
                    bytes: 3.5 * 1048576.0,
                    pinned: Some("operator".into()),
                    pin_name: Some("my site".into()),
                },
                PopularItem {
                    cid: "bafkreiabc".into(),
                    score: 3.0,
                    requests: 9.0,
                    bytes: 512.0,
                    pinned: None,
                    pin_name: None,
                },
            ],
            pins: vec![PinRow {
                cid: CID.into(),
                reason: "operator".into(),
                name: Some("my site".into()),
                created: 1_700_000_000,
            }],
            pins_total: 3,
            events: vec![PinEvent {
                at: 1_700_000_600,
                cid: CID.into(),
                kind: "promoted".into(),
                backend: "kubo".into(),
                detail: "score 12.5".into(),
            }],
            providers: vec![
                ProviderHealth {
                    label: "f01234".into(),
                    url: "https://sp.example/ipfs".into(),
                    score: 2.5,
                    successes: 10,
                    failures: 0,
                    ttfb_ms: Some(120.0),
                    last_error: None,
                },
                ProviderHealth {
                    label: "f05678".into(),
                    url: "https://other.example".into(),
                    score: 0.7,
                    successes: 3,
                    failures: 2,
                    ttfb_ms: None,
                    last_error: Some("timeout".into()),
                },
            ],
            spend_today: 0.25,
            daily_budget: 1.0,
            retrievability: Some(crate::retrievability::Report {
                roots: vec![crate::retrievability::RootRecord {
                    root: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".into(),
                    state: crate::retrievability::RootState::UnderReplicated,
                    checked_at: 1_700_000_000.0,
                    last_success: Some(1_700_000_000.0),
                    last_failure: Some(1_700_000_000.0),
                    last_error: Some("http://p: answered 502".into()),
                    hot: true,
                    providers: 0,
                    places: vec![crate::retrievability::PlaceResult {
                        place: "http://p".into(),
                        kind: crate::retrievability::PlaceKind::Provider,
                        ok: false,
                        detail: "answered 502".into(),
                        ttfb_ms: Some(3.0),
                        repaired: None,
                    }],
                }],
                providers: Vec::new(),
                events: Vec::new(),
                states: [("healthy", 0), ("under_replicated", 1)]
                    .into_iter()
                    .collect(),
            }),
        }
    }

    /// True when `html` holds a formatted NaN or infinity as a word of its own.
    fn has_non_finite(html: &str) -> bool {
        html.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "NaN" || w == "inf")
    }

    #[test]
    fn renders_every_chart_and_section_once() {
        let html = render(&filled());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert_eq!(html.matches("<svg data-chart=\"").count(), CHARTS.len());
        assert_eq!(html.matches("</svg>").count(), CHARTS.len());
        for chart in CHARTS {
            assert!(html.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
        }
        for heading in [
            "Health",
            "Traffic",
            "Popular content",
            "Pins",
            "Pin events",
            "Storage providers (cold tier)",
            "Retrievability",
        ] {
            assert_eq!(
                html.matches(&format!("<h2>{heading}</h2>")).count(),
                1,
                "{heading}"
            );
        }
        assert_eq!(html.matches("<h2>").count(), 7);
        assert!(html.contains("answered 502"), "a failing place is shown");
        // The 4xx series has a gap: two runs.
        assert!(html.matches("<polyline class=\"s1\"").count() >= 2);
        assert!(html.contains("p99 79 ms"), "latest p99 in the aria label");
        assert!(html.contains("ready"));
        assert!(html.contains("circuit closed"));
        assert!(html.contains("25.0 % full"));
        assert!(html.contains("50.0 MiB resident"));
        assert!(html.contains("40 of 1024 file descriptors"));
        // CIDs link to the content on the public gateway; pin names are shown.
        assert!(html.contains(&format!("href=\"http://127.0.0.1:8080/ipfs/{CID}/\"")));
        assert!(!html.contains("href=\"http://127.0.0.1:8080/ipfs/bafkreiabc/\""));
        assert!(html.contains("<strong>my site</strong>"));
        assert!(html.contains("+2 more"));
        assert!(html.contains("2.3 MiB · 600 requests (60.0 %)"));
        assert!(html.contains("3.5 MiB"));
        assert!(html.contains("2023-11-14T22:23:20Z"));
        assert!(html.contains("chartsRendered"));
        assert!(html.contains("0.2500 FIL of 1.0000 FIL (25.0 %)"));
        assert!(!has_non_finite(&html));
        // Nothing is loaded from elsewhere.
        assert!(!html.contains(" src="));
    }

    #[test]
    fn not_ready_and_open_circuit_show() {
        let mut s = filled();
        s.not_ready = vec!["hot node circuit open".into()];
        s.hot.open_for_secs = Some(12);
        s.hot.failures = 5;
        let html = render(&s);
        assert!(html.contains("not ready"));
        assert!(html.contains("hot node circuit open"));
        assert!(html.contains("circuit open, 12 s left"));
        assert!(html.contains("5 consecutive failures"));
    }

    #[test]
    fn escapes_snapshot_text() {
        let mut s = filled();
        s.tiers[0].name = EVIL.into();
        s.top[0].cid = EVIL.into();
        s.top[0].pinned = Some(EVIL.into());
        s.top[0].pin_name = Some(EVIL.into());
        s.pins[0].name = Some(EVIL.into());
        s.events[0].detail = EVIL.into();
        s.events[0].kind = EVIL.into();
        s.providers[0].label = EVIL.into();
        s.providers[0].url = "\"><img src=x onerror=alert(1)>".into();
        s.providers[1].last_error = Some("it's <b>&</b>".into());
        s.not_ready = vec![EVIL.into()];
        s.public_base = Some("\"><script>".into());
        let html = render(&s);
        assert!(!html.contains(EVIL));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("it's &lt;b&gt;&amp;&lt;/b&gt;"));
        // Only the page's own script tag.
        assert_eq!(html.matches("<script").count(), 1);
        // Text that is not a CID never becomes a link.
        assert!(!html.contains("/ipfs/&lt;script"));
    }

    #[test]
    fn empty_snapshot_still_draws_every_chart() {
        let html = render(&StatusSnapshot::default());
        assert_eq!(html.matches("<svg data-chart=\"").count(), CHARTS.len());
        assert_eq!(html.matches("</svg>").count(), CHARTS.len());
        assert!(html.contains("no traffic yet"));
        assert!(html.contains("collecting…"));
        assert!(html.contains("no providers"));
        assert!(html.contains("no pins"));
        assert!(html.contains("no daily budget set"));
        assert!(html.contains("memory unknown"));
        assert!(!has_non_finite(&html));
    }

    #[test]
    fn non_finite_numbers_render_as_zero() {
        let mut s = filled();
        s.traffic[0].p99_ms = Some(f64::NAN);
        s.traffic[1].requests_per_s = f64::INFINITY;
        s.traffic[2].hit_ratio = Some(-1.0);
        s.top[0].score = f64::NAN;
        s.top[0].bytes = f64::INFINITY;
        s.top[1].score = f64::NEG_INFINITY;
        s.providers[0].score = f64::NAN;
        s.providers[0].ttfb_ms = Some(f64::NAN);
        s.spend_today = f64::NAN;
        s.daily_budget = f64::INFINITY;
        s.events[0].at = u64::MAX;
        let html = render(&s);
        assert_eq!(html.matches("<svg data-chart=\"").count(), CHARTS.len());
        assert!(html.contains("<polyline"));
        assert!(html.contains("unix 18446744073709551615"));
        assert!(!has_non_finite(&html));
    }

    #[test]
    fn helpers() {
        assert_eq!(shorten(CID, 10, 6), "bafybeigdy…5fbzdi");
        assert_eq!(shorten("short", 10, 6), "short");
        assert_eq!(shorten(&"é".repeat(40), 10, 6).chars().count(), 17);
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_ms(0.5), "0.50 ms");
        assert_eq!(human_ms(2500.0), "2.50 s");
        let r = runs(&[(1, Some(1.0)), (2, None), (3, Some(2.0)), (4, Some(3.0))]);
        assert_eq!(r, vec![vec![(1, 1.0), (1, 1.0)], vec![(3, 2.0), (4, 3.0)]]);
    }
}
