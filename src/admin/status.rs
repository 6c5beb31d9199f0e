//! The admin status page (`GET /` on the admin listener): an auto-refreshing HTML overview drawn
//! from a [`StatusSnapshot`]. Rendering is a pure function of the snapshot so it is testable
//! without a listener; charts are inline SVG and the page loads nothing from elsewhere, because
//! the admin port is often reachable only from a machine without internet access.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Everything the status page shows, gathered by the admin handler.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatusSnapshot {
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// Requests per serving tier since start (the slowest tier each request needed).
    pub tiers: Vec<TierShare>,
    /// Edge-cache hit ratio samples (unix seconds, ratio 0..=1), oldest first, up to ~360.
    pub hit_ratio_history: Vec<(u64, f64)>,
    /// Most popular content, highest score first (up to 20).
    pub top: Vec<PopularItem>,
    /// Recent promotions, demotions, operator pins, prewarms, newest first (up to 30).
    pub events: Vec<PinEvent>,
    /// Storage providers of the cold tier, best first.
    pub providers: Vec<ProviderHealth>,
    /// FIL spent today.
    pub spend_today: f64,
    /// Daily FIL budget (0 when none is configured).
    pub daily_budget: f64,
}

/// Requests one tier served since start.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TierShare {
    /// Tier name: "cache", "store", "hot" or "cold".
    pub name: String,
    /// Requests this tier served.
    pub requests: u64,
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
/// Space left of the bars for their labels (a shortened CID is 17 monospace characters).
const LABEL_W: f64 = 170.0;
/// Space right of the bars for the value text, including a pin note.
const VALUE_W: f64 = 190.0;
const ROW_H: f64 = 24.0;
const BAR_H: f64 = 16.0;
const PAD: f64 = 12.0;
/// Bars per chart; the tables below the charts list everything.
const MAX_BARS: usize = 20;
/// humantime refuses to format times past the end of year 9999 (and `to_string` would panic).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem auto;padding:0 1rem;max-width:1200px;color:#1d2327;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .25rem}
h2{font-size:1.1rem;margin:1.75rem 0 .5rem}
.meta{color:#555;margin:0 0 1rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem}
figcaption{font-weight:600;margin-bottom:.25rem}
svg{display:block;width:100%;height:auto}
svg text{font-size:12px;fill:#333}
svg .mono{font-family:ui-monospace,monospace}
svg .bg{fill:#fff}
svg .axis{stroke:#888;stroke-width:1}
svg .grid{stroke:#ddd;stroke-dasharray:3 3}
svg .track{fill:#f1f1f1}
svg .bar{fill:#4a7fb5}
svg .tier-cache{fill:#2b7bb9}
svg .tier-store{fill:#3a9d5d}
svg .tier-hot{fill:#e08a1e}
svg .tier-cold{fill:#7b5ea7}
svg .pinned{fill:#c2571a}
svg .good{fill:#3a9d5d}
svg .warn{fill:#e0a100}
svg .bad{fill:#c0392b}
svg .line{fill:none;stroke:#2b7bb9;stroke-width:2}
svg .dot{fill:#2b7bb9}
svg .empty{fill:#888;font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-size:12px;word-break:break-all}
.ev-up{color:#2e7d32}
.ev-down{color:#8d6e00}
.ev-pin{color:#1565c0}
.ev-fail{color:#c62828}
.none{color:#888;font-style:italic}
";

/// Counts the charts that actually laid out, so a headless browser test can check the page
/// from `--dump-dom` alone. Counted at once (getBBox forces layout) and again after load, in
/// case the dump is taken only after the load event.
const SCRIPT: &str = "<script>
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
</script>
";

/// The status page as HTML.
pub fn render(s: &StatusSnapshot) -> String {
    let mut out = String::with_capacity(48 * 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"refresh\" content=\"5\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<title>cidgate status</title>\n<style>\n");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>cidgate status</h1>\n");
    let served = s
        .tiers
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.requests));
    let _ = writeln!(
        out,
        "<p class=\"meta\">up {} · {} requests served · refreshes every 5 s</p>",
        humantime::format_duration(Duration::from_secs(s.uptime_secs)),
        served
    );

    out.push_str("<section class=\"charts\">\n");
    figure(
        &mut out,
        "Requests by serving tier (hit ratio per tier)",
        |o| tiers_chart(o, &s.tiers),
    );
    figure(&mut out, "Edge-cache hit ratio", |o| {
        hit_ratio_chart(o, &s.hit_ratio_history)
    });
    figure(&mut out, "Most popular content", |o| top_chart(o, &s.top));
    figure(&mut out, "Cold-tier providers", |o| {
        providers_chart(o, &s.providers)
    });
    out.push_str("</section>\n");

    top_table(&mut out, &s.top);
    events_table(&mut out, &s.events);
    providers_table(&mut out, &s.providers);
    spend(&mut out, s.spend_today, s.daily_budget);

    out.push_str(SCRIPT);
    out.push_str("</body>\n</html>\n");
    out
}

fn figure(out: &mut String, caption: &str, chart: impl FnOnce(&mut String)) {
    let _ = write!(
        out,
        "<figure>\n<figcaption>{}</figcaption>\n",
        escape(caption)
    );
    chart(out);
    out.push_str("\n</figure>\n");
}

/// Opens a chart's `<svg>` and paints its background, which also guarantees a non-empty
/// bounding box even when the chart has nothing to draw.
fn svg_open(out: &mut String, chart: &str, height: f64, aria: &str) {
    let _ = write!(
        out,
        "<svg data-chart=\"{chart}\" viewBox=\"0 0 {w:.0} {h:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" \
         role=\"img\" aria-label=\"{label}\"><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{w:.0}\" \
         height=\"{h:.0}\"/>",
        chart = escape(chart),
        w = WIDTH,
        h = height,
        label = escape(aria),
    );
}

/// One row of a horizontal bar chart; strings are raw and escaped when drawn.
struct Bar {
    label: String,
    title: Option<String>,
    fraction: f64,
    class: &'static str,
    value: String,
}

/// Draws rows of horizontal bars, or an empty axis with `empty` when there are none; `hidden`
/// counts rows left out for space.
fn bar_chart(out: &mut String, chart: &str, aria: &str, empty: &str, bars: &[Bar], hidden: usize) {
    let plot_w = WIDTH - LABEL_W - VALUE_W;
    let rows = if bars.is_empty() {
        2
    } else {
        bars.len() + usize::from(hidden > 0)
    };
    let h = 2.0 * PAD + rows as f64 * ROW_H;
    svg_open(out, chart, h, aria);
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{y1:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\"/>",
        x = LABEL_W,
        y1 = PAD,
        y2 = h - PAD,
    );
    if bars.is_empty() {
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"empty\" x=\"{tx:.1}\" y=\"{ty:.1}\" dominant-baseline=\"middle\">{t}</text>",
            x1 = LABEL_W,
            x2 = LABEL_W + plot_w,
            y = h - PAD,
            tx = LABEL_W + 8.0,
            ty = h / 2.0,
            t = escape(empty),
        );
        out.push_str("</svg>");
        return;
    }
    for (i, bar) in bars.iter().enumerate() {
        let mid = PAD + (i as f64 + 0.5) * ROW_H;
        let top = mid - BAR_H / 2.0;
        let title = bar
            .title
            .as_deref()
            .map(|t| format!("<title>{}</title>", escape(t)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g><text class=\"label\" x=\"{lx:.1}\" y=\"{mid:.1}\" text-anchor=\"end\" \
             dominant-baseline=\"middle\">{title}{label}</text>\
             <rect class=\"track\" x=\"{bx:.1}\" y=\"{top:.1}\" width=\"{pw:.1}\" height=\"{bh:.1}\"/>\
             <rect class=\"bar {class}\" x=\"{bx:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\"/>\
             <text class=\"value\" x=\"{vx:.1}\" y=\"{mid:.1}\" dominant-baseline=\"middle\">{value}</text></g>",
            lx = LABEL_W - 8.0,
            label = escape(&bar.label),
            bx = LABEL_W,
            pw = plot_w,
            bh = BAR_H,
            class = bar.class,
            bw = clamp01(bar.fraction) * plot_w,
            vx = LABEL_W + plot_w + 8.0,
            value = escape(&bar.value),
        );
    }
    if hidden > 0 {
        let _ = write!(
            out,
            "<text class=\"empty\" x=\"{x:.1}\" y=\"{y:.1}\" dominant-baseline=\"middle\">\
             +{hidden} more in the table below</text>",
            x = LABEL_W + 8.0,
            y = PAD + (bars.len() as f64 + 0.5) * ROW_H,
        );
    }
    out.push_str("</svg>");
}

fn tiers_chart(out: &mut String, tiers: &[TierShare]) {
    let total = tiers
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.requests));
    if total == 0 {
        bar_chart(
            out,
            "tiers",
            "Share of requests per serving tier: no traffic yet",
            "no traffic yet",
            &[],
            0,
        );
        return;
    }
    let shown = tiers.len().min(MAX_BARS);
    let bars: Vec<Bar> = tiers[..shown]
        .iter()
        .map(|t| {
            let share = t.requests as f64 / total as f64;
            Bar {
                label: t.name.clone(),
                title: None,
                fraction: share,
                class: tier_class(&t.name),
                value: format!("{:.1} % ({})", share * 100.0, t.requests),
            }
        })
        .collect();
    let aria = format!(
        "Share of requests per serving tier: {}",
        bars.iter()
            .map(|b| format!("{} {:.1} %", b.label, b.fraction * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    bar_chart(
        out,
        "tiers",
        &aria,
        "no traffic yet",
        &bars,
        tiers.len() - shown,
    );
}

/// Only known tier names get a colour class, so no snapshot text ends up in a class attribute.
fn tier_class(name: &str) -> &'static str {
    match name {
        "cache" => "tier-cache",
        "store" => "tier-store",
        "hot" => "tier-hot",
        "cold" => "tier-cold",
        _ => "",
    }
}

fn hit_ratio_chart(out: &mut String, history: &[(u64, f64)]) {
    const H: f64 = 220.0;
    let (left, right, top, bottom) = (56.0, WIDTH - 16.0, 20.0, H - 36.0);
    let y_of = |r: f64| bottom - clamp01(r) * (bottom - top);
    let aria = match history.last() {
        Some(&(_, r)) if history.len() >= 2 => format!(
            "Edge-cache hit ratio over {} samples, latest {:.1} %",
            history.len(),
            clamp01(r) * 100.0
        ),
        _ => "Edge-cache hit ratio: collecting samples".to_string(),
    };
    svg_open(out, "hit-ratio", H, &aria);
    for (r, label) in [(0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")] {
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{lx:.1}\" y=\"{y:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{label}</text>",
            y = y_of(r),
            lx = left - 6.0,
        );
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left:.1}\" y1=\"{top:.1}\" x2=\"{left:.1}\" y2=\"{bottom:.1}\"/>\
         <line class=\"axis\" x1=\"{left:.1}\" y1=\"{bottom:.1}\" x2=\"{right:.1}\" y2=\"{bottom:.1}\"/>"
    );
    if history.len() < 2 {
        let _ = write!(
            out,
            "<text class=\"empty\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
             dominant-baseline=\"middle\">collecting…</text></svg>",
            x = (left + right) / 2.0,
            y = (top + bottom) / 2.0,
        );
        return;
    }
    let tmin = history.iter().map(|p| p.0).min().unwrap_or(0);
    let tmax = history.iter().map(|p| p.0).max().unwrap_or(0);
    let span = tmax - tmin;
    let last = history.len() - 1;
    // Samples normally sit on their timestamps; if they all share one, spread them evenly.
    let x_of = |i: usize, t: u64| {
        let f = if span > 0 {
            (t - tmin) as f64 / span as f64
        } else {
            i as f64 / last as f64
        };
        left + f * (right - left)
    };
    out.push_str("<polyline class=\"line\" points=\"");
    for (i, &(t, r)) in history.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(out, "{sep}{:.1},{:.1}", x_of(i, t), y_of(r));
    }
    out.push_str("\"/>");
    if let Some(&(t, r)) = history.last() {
        let _ = write!(
            out,
            "<circle class=\"dot\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/>\
             <text x=\"{right:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">latest {pct:.1} %</text>",
            x = x_of(last, t),
            y = y_of(r),
            ty = top - 6.0,
            pct = clamp01(r) * 100.0,
        );
    }
    let _ = write!(
        out,
        "<text x=\"{left:.1}\" y=\"{y:.1}\">{from}</text>\
         <text x=\"{right:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{to}</text></svg>",
        y = H - 12.0,
        from = rfc3339(tmin),
        to = rfc3339(tmax),
    );
}

fn top_chart(out: &mut String, top: &[PopularItem]) {
    let max = max_positive(top.iter().map(|p| p.score));
    let shown = top.len().min(MAX_BARS);
    let bars: Vec<Bar> = top[..shown]
        .iter()
        .map(|p| {
            let score = finite(p.score);
            let value = match &p.pinned {
                Some(why) => format!("{score:.2} · pinned ({why})"),
                None => format!("{score:.2}"),
            };
            Bar {
                label: shorten(&p.cid, 10, 6),
                title: Some(p.cid.clone()),
                fraction: ratio(score, max),
                class: if p.pinned.is_some() { "pinned" } else { "" },
                value,
            }
        })
        .collect();
    let pinned = top.iter().filter(|p| p.pinned.is_some()).count();
    let aria = format!(
        "Popularity scores of the {} most popular items, {} of them pinned",
        top.len(),
        pinned
    );
    bar_chart(
        out,
        "top",
        &aria,
        "nothing requested yet",
        &bars,
        top.len() - shown,
    );
}

fn providers_chart(out: &mut String, providers: &[ProviderHealth]) {
    let max = max_positive(providers.iter().map(|p| p.score));
    let shown = providers.len().min(MAX_BARS);
    let bars: Vec<Bar> = providers[..shown]
        .iter()
        .map(|p| {
            let score = finite(p.score);
            Bar {
                label: shorten_end(&p.label, 22),
                title: Some(format!("{} ({})", p.label, p.url)),
                fraction: ratio(score, max),
                class: health_class(p),
                value: format!("{score:.3} · {} ok / {} failed", p.successes, p.failures),
            }
        })
        .collect();
    let healthy = providers.iter().filter(|p| p.failures == 0).count();
    let aria = format!(
        "Scores of {} cold-tier providers, {} without failures",
        providers.len(),
        healthy
    );
    bar_chart(
        out,
        "providers",
        &aria,
        "no providers",
        &bars,
        providers.len() - shown,
    );
}

/// Green without failures, amber with some, red once failures outnumber successes.
fn health_class(p: &ProviderHealth) -> &'static str {
    if p.failures == 0 {
        "good"
    } else if p.failures > p.successes {
        "bad"
    } else {
        "warn"
    }
}

fn top_table(out: &mut String, top: &[PopularItem]) {
    out.push_str(
        "<h2>Most popular content</h2>\n<table>\n<thead><tr><th>#</th><th>CID</th><th>score</th>\
         <th>requests</th><th>bytes</th><th>pinned</th></tr></thead>\n<tbody>\n",
    );
    if top.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"none\">nothing requested yet</td></tr>\n");
    }
    for (i, p) in top.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"num\">{:.2}</td>\
             <td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            i + 1,
            escape(&p.cid),
            finite(p.score),
            finite(p.requests),
            human_bytes(p.bytes),
            p.pinned.as_deref().map(escape).unwrap_or_default(),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn events_table(out: &mut String, events: &[PinEvent]) {
    out.push_str(
        "<h2>Recent pin events</h2>\n<table>\n<thead><tr><th>time</th><th>kind</th><th>CID</th>\
         <th>backend</th><th>detail</th></tr></thead>\n<tbody>\n",
    );
    if events.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"none\">no events yet</td></tr>\n");
    }
    for e in events {
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"{}\">{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{}</td></tr>",
            rfc3339(e.at),
            event_class(&e.kind),
            escape(&e.kind),
            escape(&e.cid),
            escape(&e.backend),
            escape(&e.detail),
        );
    }
    out.push_str("</tbody>\n</table>\n");
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

fn providers_table(out: &mut String, providers: &[ProviderHealth]) {
    out.push_str(
        "<h2>Cold-tier providers</h2>\n<table>\n<thead><tr><th>label</th><th>URL</th>\
         <th>score</th><th>successes</th><th>failures</th><th>TTFB</th><th>last error</th></tr>\
         </thead>\n<tbody>\n",
    );
    if providers.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"none\">no providers</td></tr>\n");
    }
    for p in providers {
        let ttfb = match p.ttfb_ms {
            Some(ms) => format!("{:.0} ms", finite(ms)),
            None => "–".to_string(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{:.3}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td></tr>",
            escape(&p.label),
            escape(&p.url),
            finite(p.score),
            p.successes,
            p.failures,
            ttfb,
            p.last_error.as_deref().map(escape).unwrap_or_default(),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn spend(out: &mut String, spent: f64, budget: f64) {
    let spent = finite(spent).max(0.0);
    let budget = finite(budget).max(0.0);
    out.push_str("<h2>Spend today</h2>\n");
    if budget > 0.0 {
        let _ = writeln!(
            out,
            "<p><meter min=\"0\" max=\"{budget:.6}\" high=\"{high:.6}\" value=\"{spent:.6}\"></meter> \
             {spent:.4} FIL of {budget:.4} FIL ({pct:.1} %)</p>",
            high = budget * 0.8,
            pct = spent / budget * 100.0,
        );
    } else {
        let _ = writeln!(out, "<p>{spent:.4} FIL (no daily budget set)</p>");
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(s: &str) -> String {
    crate::gateway::unixfs_dir::html_escape(s)
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
    if max > 0.0 {
        clamp01(x / max)
    } else {
        0.0
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

/// At most `max` characters, the last one an ellipsis when cut.
fn shorten_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn rfc3339(at: u64) -> String {
    if at > LAST_RFC3339_SECOND {
        return format!("unix {at}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at)).to_string()
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = finite(b).max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    const EVIL: &str = "<script>alert(1)</script>";

    fn filled() -> StatusSnapshot {
        StatusSnapshot {
            uptime_secs: 3725,
            tiers: ["cache", "store", "hot", "cold"]
                .iter()
                .zip([600, 250, 100, 50])
                .map(|(n, b)| TierShare {
                    name: n.to_string(),
                    requests: b,
                })
                .collect(),
            hit_ratio_history: (0..60u64)
                .map(|i| (1_700_000_000 + i * 10, (i as f64 / 60.0).min(1.0)))
                .collect(),
            top: vec![
                PopularItem {
                    cid: CID.into(),
                    score: 12.5,
                    requests: 40.0,
                    bytes: 3.5 * 1048576.0,
                    pinned: Some("operator".into()),
                },
                PopularItem {
                    cid: "bafkreiabc".into(),
                    score: 3.0,
                    requests: 9.0,
                    bytes: 512.0,
                    pinned: None,
                },
            ],
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
        }
    }

    /// True when `html` holds a formatted NaN or infinity as a word of its own.
    fn has_non_finite(html: &str) -> bool {
        html.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "NaN" || w == "inf")
    }

    #[test]
    fn renders_four_charts() {
        let html = render(&filled());
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert_eq!(html.matches("<svg data-chart=\"").count(), 4);
        assert_eq!(html.matches("</svg>").count(), 4);
        for chart in ["tiers", "hit-ratio", "top", "providers"] {
            assert!(html.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
        }
        assert_eq!(html.matches("role=\"img\"").count(), 4);
        assert!(html.contains("<polyline"));
        assert!(html.contains("60.0 %"));
        assert!(html.contains(&format!("<title>{CID}</title>bafybeigdy…5fbzdi")));
        assert!(html.contains("pinned (operator)"));
        assert!(html.contains("bar good") && html.contains("bar warn"));
        assert!(html.contains("3.5 MiB"));
        assert!(html.contains("2023-11-14T22:23:20Z"));
        assert!(html.contains("chartsRendered"));
        assert!(!has_non_finite(&html));
        // Nothing may be fetched from elsewhere.
        assert!(!html.contains(" src="));
        assert!(!html.contains(" href="));
    }

    #[test]
    fn escapes_snapshot_text() {
        let mut s = filled();
        s.tiers[0].name = EVIL.into();
        s.top[0].cid = EVIL.into();
        s.top[0].pinned = Some(EVIL.into());
        s.events[0].detail = EVIL.into();
        s.events[0].kind = EVIL.into();
        s.providers[0].label = EVIL.into();
        s.providers[0].url = "\"><img src=x onerror=alert(1)>".into();
        s.providers[1].last_error = Some("it's <b>&</b>".into());
        let html = render(&s);
        assert!(!html.contains(EVIL));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("it&#39;s &lt;b&gt;&amp;&lt;/b&gt;"));
        // Only the page's own script tag.
        assert_eq!(html.matches("<script").count(), 1);
        assert_eq!(escape("a&b\"c'd"), "a&amp;b&quot;c&#39;d");
    }

    #[test]
    fn empty_snapshot_still_draws_every_chart() {
        let html = render(&StatusSnapshot::default());
        assert_eq!(html.matches("<svg data-chart=\"").count(), 4);
        assert_eq!(html.matches("</svg>").count(), 4);
        assert!(html.contains("no traffic yet"));
        assert!(html.contains("collecting…"));
        assert!(html.contains("no providers"));
        assert!(html.contains("no daily budget set"));
        assert!(!has_non_finite(&html));
    }

    #[test]
    fn non_finite_numbers_render_as_zero() {
        let mut s = filled();
        s.hit_ratio_history = vec![(5, f64::NAN), (5, f64::INFINITY), (5, -1.0)];
        s.top[0].score = f64::NAN;
        s.top[0].bytes = f64::INFINITY;
        s.top[1].score = f64::NEG_INFINITY;
        s.providers[0].score = f64::NAN;
        s.providers[0].ttfb_ms = Some(f64::NAN);
        s.spend_today = f64::NAN;
        s.daily_budget = f64::INFINITY;
        s.events[0].at = u64::MAX;
        let html = render(&s);
        assert_eq!(html.matches("<svg data-chart=\"").count(), 4);
        assert!(html.contains("<polyline"));
        assert!(html.contains("unix 18446744073709551615"));
        assert!(!has_non_finite(&html));
    }

    #[test]
    fn shortening_counts_chars() {
        assert_eq!(shorten(CID, 10, 6), "bafybeigdy…5fbzdi");
        assert_eq!(shorten("short", 10, 6), "short");
        assert_eq!(shorten(&"é".repeat(40), 10, 6).chars().count(), 17);
        assert_eq!(shorten_end("abcdef", 4), "abc…");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
    }
}
