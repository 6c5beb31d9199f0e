#!/usr/bin/env python3
"""Helpers for loadtest/run.sh (standard library only).

  results.py scrape ADMIN_URL                 Prometheus snapshot of cidgate's /metrics as JSON
  results.py meta --bin B --repo R ...        machine and tool versions as JSON
  results.py record --runs F --scenario S --target T [...]   append one run to F (JSON lines)
  results.py skip --runs F --scenario S --target T --reason R  record a target that could not run
  results.py report --runs F --meta M --prefix P   write P.json, P.md, P.svg; print the Markdown
"""
import argparse
import datetime
import hashlib
import html
import json
import math
import os
import platform
import re
import subprocess
import sys
import urllib.error
import urllib.request

# Metric names cidgate is to expose on the admin listener (summed over all label sets).
METRICS = ("cidgate_cache_hits_total", "cidgate_cache_misses_total", "cidgate_requests_total")
# X-Cidgate-Tier lists the tiers that took part in a response, comma-separated (e.g. "cache",
# "store", "hot"): a response is a local hit when none of them is a remote tier.
REMOTE_TIERS = {"hot", "cold", "remote", "trustless", "kubo", "origin"}


def tier_is_local(value):
    parts = [p.strip().lower() for p in value.split(",") if p.strip()]
    return bool(parts) and not any(p in REMOTE_TIERS for p in parts)
# nginx $upstream_cache_status values served from the cache.
NGINX_HITS = {"HIT", "STALE", "UPDATING", "REVALIDATED"}
NGINX_MISSES = {"MISS", "EXPIRED", "BYPASS"}

# The comparisons the run is for: (scenario, cidgate target, nginx target, goal or None).
PAIRS = [
    ("hit-4k", "cidgate", "nginx-static", 0.9),
    ("hit-1m", "cidgate", "nginx-static", 0.9),
    ("zipf", "cidgate-hot", "nginx-proxy_cache", None),
    ("zipf", "cidgate-embedded", "nginx-proxy_cache", None),
]
SCENARIOS = ["hit-4k", "hit-1m", "zipf"]
COLORS = {
    "cidgate": "#2b6cb0",
    "cidgate-hot": "#2b6cb0",
    "cidgate-embedded": "#90cdf4",
    "nginx-static": "#2f855a",
    "nginx-proxy_cache": "#2f855a",
}


# --------------------------------------------------------------------------- scrape
def parse_prometheus(text):
    sums = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
    return sums


def cmd_scrape(a):
    url = a.admin.rstrip("/") + "/metrics"
    out = {"url": url, "available": False}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            sums = parse_prometheus(r.read().decode("utf-8", "replace"))
            out["status"] = r.status
            out["metrics"] = {k: sums[k] for k in METRICS if k in sums}
            out["available"] = bool(out["metrics"])
    except urllib.error.HTTPError as e:
        out["status"] = e.code
    except OSError as e:
        out["error"] = str(e)
    print(json.dumps(out))


# --------------------------------------------------------------------------- meta
def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable ({e})"


def cmd_meta(a):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    sha = hashlib.sha256()
    with open(a.bin, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    git_rev = run(["git", "-C", a.repo, "rev-parse", "--short=12", "HEAD"])
    dirty = run(["git", "-C", a.repo, "status", "--porcelain", "--untracked-files=no"])
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu,
            "mem_total_gib": round(mem_kib / 1048576, 1) if mem_kib else None,
            "kernel": platform.release(),
            "os": platform.platform(),
        },
        "versions": {
            "nginx": run([a.nginx, "-v"]).replace("nginx version: ", ""),
            "wrk": run(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0] if run(["wrk", "-v"]) else "",
            "curl": run(["curl", "--version"]).splitlines()[0],
            "python": platform.python_version(),
            "cidgate": run([a.bin, "--version"]),
            "cidgate_binary_sha256": sha.hexdigest(),
            "cidgate_git": git_rev + (" (work tree modified)" if dirty else ""),
        },
        "config": json.loads(a.config),
        "features": json.loads(a.features),
        "zipf_list": json.load(open(a.manifest))["zipf"]["list"],
        "notes": [n for n in a.note if n],
    }
    print(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------- record
def load_json(path):
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        return json.load(f)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def ttfb_stats(path):
    if not path or not os.path.exists(path):
        return None
    times, bad = [], 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            if parts[1] != "200":
                bad += 1
                continue
            times.append(float(parts[0]) * 1000.0)
    times.sort()
    return {
        "samples": len(times) + bad,
        "non_200": bad,
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "p99_ms": percentile(times, 99),
        "method": "curl %{time_starttransfer}, sequential requests on one keep-alive connection",
    }


def delta(before, after, name):
    if not before or not after or not before.get("available") or not after.get("available"):
        return None
    b, c = before["metrics"].get(name), after["metrics"].get(name)
    if b is None or c is None:
        return None
    return c - b


def hit_ratio(kind, wrk, m_before, m_after):
    """Return (ratio or None, source text)."""
    if kind == "nginx":
        tiers = (wrk or {}).get("tiers") or {}
        hits = sum(v for k, v in tiers.items() if k in NGINX_HITS)
        misses = sum(v for k, v in tiers.items() if k in NGINX_MISSES)
        if hits + misses:
            return hits / (hits + misses), "X-Cache-Status (requests)"
        return None, "no X-Cache-Status"
    dh = delta(m_before, m_after, "cidgate_cache_hits_total")
    dm = delta(m_before, m_after, "cidgate_cache_misses_total")
    if dh is not None and dm is not None and dh + dm > 0:
        return dh / (dh + dm), "/metrics cache hits/(hits+misses) (blocks)"
    tiers = {k: v for k, v in ((wrk or {}).get("tiers") or {}).items() if k != "-"}
    if tiers:
        local = sum(v for k, v in tiers.items() if tier_is_local(k))
        return local / sum(tiers.values()), "X-Cidgate-Tier without hot/cold (requests)"
    return None, "n/a in this build"


def cmd_record(a):
    wrk = load_json(a.wrk)
    mb, ma = load_json(a.metrics_before), load_json(a.metrics_after)
    ob, oa = load_json(a.origin_before), load_json(a.origin_after)
    ratio, source = hit_ratio(a.kind, wrk, mb, ma)
    entry = {
        "scenario": a.scenario,
        "target": a.target,
        "round": a.round,
        "kind": a.kind,
        "available": wrk is not None,
        "description": a.description,
        "wrk": wrk,
        "ttfb": ttfb_stats(a.ttfb),
        "hit_ratio": ratio,
        "hit_ratio_source": source,
        "metrics_delta": {n: delta(mb, ma, n) for n in METRICS} if mb and mb.get("available") else None,
        "origin_requests": delta(ob, oa, "cidgate_requests_total"),
    }
    if wrk and a.list_entries:
        sent = sum(t.get("sent") or 0 for t in wrk.get("threads") or [])
        entry["list_consumed_share"] = sent / a.list_entries
    with open(a.runs, "a") as f:
        f.write(json.dumps(entry) + "\n")


def cmd_skip(a):
    entry = {"scenario": a.scenario, "target": a.target, "kind": a.kind, "available": False,
             "description": a.description, "reason": a.reason}
    with open(a.runs, "a") as f:
        f.write(json.dumps(entry) + "\n")


# --------------------------------------------------------------------------- report
def fmt(v, digits=0, suffix=""):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def ms(us):
    return None if us is None else us / 1000.0


def tiers_text(wrk):
    tiers = (wrk or {}).get("tiers") or {}
    total = sum(tiers.values())
    if not total or set(tiers) == {"-"}:
        return ""
    return ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(tiers.items(), key=lambda kv: -kv[1]))


def aggregate(runs):
    """One run per (scenario, target): the median round by req/s, with every round's req/s."""
    groups = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["target"]), []).append(r)
    out = []
    for rs in groups.values():
        ok = [r for r in rs if r.get("available")]
        if len(ok) < 2:
            out.append(rs[0] if not ok else ok[0])
            continue
        median = sorted(ok, key=lambda r: r["wrk"]["rps"])[len(ok) // 2]
        row = dict(median)
        row["rounds_rps"] = [r["wrk"]["rps"] for r in sorted(ok, key=lambda r: r.get("round", 1))]
        out.append(row)
    return out


def build_ratios(runs):
    by = {(r["scenario"], r["target"]): r for r in runs}
    out = []
    for scen, cg, ng, goal in PAIRS:
        a, b = by.get((scen, cg)), by.get((scen, ng))
        if a is None and b is None:
            continue
        row = {"scenario": scen, "cidgate_target": cg, "nginx_target": ng, "goal_min_ratio": goal,
               "cidgate_rps": None, "nginx_rps": None, "ratio": None, "goal_met": None, "note": ""}
        if a and a.get("available"):
            row["cidgate_rps"] = a["wrk"]["rps"]
        else:
            row["note"] = f"n/a: {cg} not available in this build"
        if b and b.get("available"):
            row["nginx_rps"] = b["wrk"]["rps"]
        elif not row["note"]:
            row["note"] = f"n/a: {ng} not available"
        if row["cidgate_rps"] and row["nginx_rps"]:
            row["ratio"] = row["cidgate_rps"] / row["nginx_rps"]
            if goal is not None:
                row["goal_met"] = row["ratio"] >= goal
        out.append(row)
    return out


def markdown(meta, runs, ratios, prefix):
    m, v, c, feat = meta["machine"], meta["versions"], meta["config"], meta["features"]
    z = meta.get("zipf_list") or {}
    yes = lambda b: "yes" if b else "no"
    L = []
    L.append(f"# cidgate load test — {meta['date']}")
    L.append("")
    L.append(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}; "
             f"load generator and servers share it. {v['nginx']}, {v['wrk']}, {v['cidgate']} "
             f"(git {v['cidgate_git']}, binary sha256 {v['cidgate_binary_sha256'][:12]}).")
    L.append(f"wrk: {c['threads']} threads, {c['connections']} connections, {c['duration']} per hit run, "
             f"{c.get('rounds', 1)} round(s) per target "
             f"(Zipf: one pass over the list, at most {c['once_cap']}){' — QUICK smoke run' if c.get('quick') else ''}.")
    L.append(f"cidgate features in this build: memory cache {yes(feat.get('memory_cache'))}, "
             f"hot tier {yes(feat.get('hot_tier'))}, /metrics {yes(feat.get('metrics'))}, "
             f"X-Cidgate-Tier {yes(feat.get('tier_header'))}.")
    L.append("")
    L.append("## cidgate / nginx")
    L.append("")
    L.append("| scenario | cidgate | nginx | cidgate req/s | nginx req/s | ratio | goal |")
    L.append("|---|---|---|---:|---:|---:|---|")
    for r in ratios:
        if r["goal_min_ratio"] is not None:
            if r["goal_met"] is None:
                goal = f"≥ {r['goal_min_ratio']:.2f}: not measured"
            else:
                goal = f"≥ {r['goal_min_ratio']:.2f}: {'met' if r['goal_met'] else 'NOT met'}"
        else:
            goal = "reference" if r["cidgate_target"] == "cidgate-embedded" else "recorded (no goal)"
        ratio = fmt(r["ratio"], 2) if r["ratio"] is not None else (r["note"] or "—")
        L.append(f"| {r['scenario']} | {r['cidgate_target']} | {r['nginx_target']} | {fmt(r['cidgate_rps'])} | "
                 f"{fmt(r['nginx_rps'])} | {ratio} | {goal} |")
    L.append("")
    multi = [r for r in runs if len(r.get("rounds_rps") or []) > 1]
    if multi:
        L.append(f"Hit runs: {c.get('rounds', len(multi[0]['rounds_rps']))} rounds per target, odd rounds "
                 "starting with cidgate and even ones with nginx; each row shows the median round. "
                 "req/s per round, in order:")
        L.append("")
        for r in multi:
            L.append(f"- {r['scenario']} / {r['target']}: " + ", ".join(fmt(v) for v in r["rounds_rps"]))
        L.append("")
    L.append("## All runs")
    L.append("")
    L.append("| scenario | target | req/s | MiB/s | p50 ms | p95 ms | p99 ms | TTFB p50 / p95 / p99 ms | hit ratio | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---|---|---:|")
    for r in runs:
        if not r.get("available"):
            L.append(f"| {r['scenario']} | {r['target']} | not available in this build | | | | | | {r.get('reason', '')} | |")
            continue
        w, lat, t = r["wrk"], r["wrk"]["latency_us"], r.get("ttfb") or {}
        errs = sum(w["errors"].values())
        ttfb = " / ".join(fmt(t.get(k), 2) for k in ("p50_ms", "p95_ms", "p99_ms")) if t else "—"
        hr = "—"
        if r.get("hit_ratio") is not None:
            hr = f"{r['hit_ratio']:.1%} ({r['hit_ratio_source']})"
        tt = tiers_text(w)
        if tt and r["kind"] == "cidgate":
            hr += f"; tiers: {tt}"
        if r.get("origin_requests") is not None:
            hr += f"; origin requests {r['origin_requests']:.0f}"
        if w.get("list_finished") is False:
            hr += f"; list {r.get('list_consumed_share', 0):.0%} consumed before the cap"
        L.append(f"| {r['scenario']} | {r['target']} | {fmt(w['rps'])} | {fmt(w['bytes_per_s'] / 1048576, 1)} | "
                 f"{fmt(ms(lat['p50']), 2)} | {fmt(ms(lat['p95']), 2)} | {fmt(ms(lat['p99']), 2)} | {ttfb} | {hr} | {errs} |")
    L.append("")
    if z:
        L.append(f"Zipf list: {z['requests']:,} requests over {z['distinct_requested']:,} distinct objects "
                 f"(of {z['objects_total']:,}; 2–64 KiB, mean {z['mean_request_bytes'] / 1024:.1f} KiB per request), "
                 f"exponent {z['exponent']}, {z['requested_once_share_of_distinct']:.0%} of distinct objects requested "
                 f"exactly once, top object {z['top1_share_of_requests']:.1%} of requests, best possible hit ratio for "
                 f"a cold cache {z['ideal_hit_ratio']:.1%}.")
        L.append("")
    notes = list(meta.get("notes") or [])
    for r in runs:
        if not r.get("available") and r.get("reason"):
            notes.append(f"{r['scenario']} / {r['target']}: not available in this build — {r['reason']}")
    if notes:
        L.append("Notes:")
        L.append("")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    base = os.path.basename(prefix)
    L.append(f"Files: `{base}.json` (all figures), `{base}.svg` (chart).")
    return "\n".join(L) + "\n"


def nice_max(v):
    """Smallest round number (1, 1.2, 1.5, 2, ... 8 x 10^k) at or above v: the axis top."""
    if not v or v <= 0:
        return 1.0
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * k >= v:
            return m * k
    return 10 * k


def short(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def svg_chart(meta, runs, ratios):
    esc = html.escape
    scen = [s for s in SCENARIOS if any(r["scenario"] == s for r in runs)]
    cw, ch = 300, 200           # one small chart
    ml, mt, gap_x, gap_y = 60, 78, 50, 95
    width = ml + len(scen) * (cw + gap_x)
    height = mt + 2 * ch + gap_y + 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{ml}" y="24" font-size="16" font-weight="bold">cidgate vs nginx — {esc(meta["date"])}</text>',
           f'<text x="{ml}" y="42" fill="#555">{esc(str(meta["machine"]["nproc"]))} CPUs, '
           f'{esc(meta["machine"]["cpu_model"])}; wrk -t{meta["config"]["threads"]} -c{meta["config"]["connections"]}; '
           f'{esc(meta["versions"]["cidgate"])}, {esc(meta["versions"]["nginx"])}'
           f'{" — QUICK smoke run" if meta["config"].get("quick") else ""}</text>']
    rows = [("requests/s (higher is better)", lambda r: r["wrk"]["rps"], lambda v: fmt(v)),
            ("p99 latency, ms (lower is better)", lambda r: ms(r["wrk"]["latency_us"]["p99"]), lambda v: fmt(v, 2))]
    for ri, (title, value, label) in enumerate(rows):
        y0 = mt + ri * (ch + gap_y)
        for si, s in enumerate(scen):
            x0 = ml + si * (cw + gap_x)
            rs = [r for r in runs if r["scenario"] == s]
            vals = [value(r) for r in rs if r.get("available") and value(r) is not None]
            vmax = nice_max(max(vals) * 1.1 if vals else 1.0)
            out.append(f'<text x="{x0}" y="{y0 - 10}" font-weight="bold">{esc(s)}: {esc(title)}</text>')
            for k in range(0, 5):
                gy = y0 + ch - ch * k / 4
                if k:
                    out.append(f'<line x1="{x0}" y1="{gy:.1f}" x2="{x0 + cw}" y2="{gy:.1f}" stroke="#e2e2e2"/>')
                out.append(f'<text x="{x0 - 5}" y="{gy + 4:.1f}" text-anchor="end" fill="#666">{esc(short(vmax * k / 4))}</text>')
            out.append(f'<line x1="{x0}" y1="{y0 + ch}" x2="{x0 + cw}" y2="{y0 + ch}" stroke="#333"/>')
            out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + ch}" stroke="#333"/>')
            slot = cw / max(1, len(rs))
            bw = min(60, slot * 0.6)
            for i, r in enumerate(rs):
                cx = x0 + slot * (i + 0.5)
                name = r["target"]
                first, _, rest = name.partition("-")
                out.append(f'<text x="{cx:.1f}" y="{y0 + ch + 15}" text-anchor="middle">{esc(first)}</text>')
                if rest:
                    out.append(f'<text x="{cx:.1f}" y="{y0 + ch + 28}" text-anchor="middle">{esc(rest)}</text>')
                if not r.get("available"):
                    out.append(f'<text x="{cx:.1f}" y="{y0 + ch - 22}" text-anchor="middle" fill="#a00">not available</text>')
                    out.append(f'<text x="{cx:.1f}" y="{y0 + ch - 8}" text-anchor="middle" fill="#a00">in this build</text>')
                    continue
                v = value(r)
                h = 0 if v is None else ch * v / vmax
                color = COLORS.get(name, "#718096")
                out.append(f'<rect x="{cx - bw / 2:.1f}" y="{y0 + ch - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                           f'fill="{color}"><title>{esc(name)}: {esc(label(v))}</title></rect>')
                out.append(f'<text x="{cx:.1f}" y="{y0 + ch - h - 4:.1f}" text-anchor="middle">{esc(label(v))}</text>')
            if ri == 0:
                texts = []
                for q in ratios:
                    if q["scenario"] != s or q["ratio"] is None:
                        continue
                    t = f"{q['cidgate_target']} / {q['nginx_target']} = {q['ratio']:.2f}"
                    if q["goal_min_ratio"] is not None:
                        t += f" (goal ≥ {q['goal_min_ratio']:.1f}: {'met' if q['goal_met'] else 'not met'})"
                    texts.append((t, q["goal_met"]))
                for j, (t, met) in enumerate(texts):
                    fill = "#2f855a" if met else ("#c53030" if met is False else "#333")
                    out.append(f'<text x="{x0}" y="{y0 + ch + 46 + 14 * j}" fill="{fill}">{esc(t)}</text>')
    out.append(f'<text x="{ml}" y="{height - 30}" fill="#555">Dark blue: cidgate (memory cache or store for hit-*, '
               f'cache tier over the hot origin for zipf); light blue: cidgate serving zipf from its own store.</text>')
    out.append(f'<text x="{ml}" y="{height - 14}" fill="#555">Green: nginx (static files for hit-*, '
               f'proxy_cache over the hot origin for zipf).</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_report(a):
    meta = load_json(a.meta)
    runs = []
    with open(a.runs) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    rounds = runs
    runs = aggregate(rounds)
    ratios = build_ratios(runs)
    result = dict(meta)
    result["schema"] = 1
    result["runs"] = runs
    result["round_runs"] = rounds
    result["ratios"] = ratios
    result["goal"] = "cidgate cache hits >= 0.9x nginx static req/s for hit-4k and hit-1m"
    os.makedirs(os.path.dirname(os.path.abspath(a.prefix)), exist_ok=True)
    with open(a.prefix + ".json", "w") as f:
        json.dump(result, f, indent=1)
    md = markdown(meta, runs, ratios, a.prefix)
    with open(a.prefix + ".md", "w") as f:
        f.write(md)
    with open(a.prefix + ".svg", "w") as f:
        f.write(svg_chart(meta, runs, ratios))
    sys.stdout.write(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("scrape")
    p.add_argument("admin")
    p.set_defaults(fn=cmd_scrape)
    p = sub.add_parser("meta")
    p.add_argument("--bin", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--nginx", default="nginx")
    p.add_argument("--config", required=True, help="JSON")
    p.add_argument("--features", required=True, help="JSON")
    p.add_argument("--manifest", required=True)
    p.add_argument("--note", action="append", default=[])
    p.set_defaults(fn=cmd_meta)
    for name, fn in (("record", cmd_record), ("skip", cmd_skip)):
        p = sub.add_parser(name)
        p.add_argument("--runs", required=True)
        p.add_argument("--scenario", required=True)
        p.add_argument("--target", required=True)
        p.add_argument("--kind", choices=("cidgate", "nginx"), required=True)
        p.add_argument("--description", default="")
        if name == "record":
            p.add_argument("--wrk")
            p.add_argument("--ttfb")
            p.add_argument("--metrics-before")
            p.add_argument("--metrics-after")
            p.add_argument("--origin-before")
            p.add_argument("--origin-after")
            p.add_argument("--list-entries", type=int, default=0)
            p.add_argument("--round", type=int, default=1)
        else:
            p.add_argument("--reason", required=True)
        p.set_defaults(fn=fn)
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--prefix", required=True)
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
