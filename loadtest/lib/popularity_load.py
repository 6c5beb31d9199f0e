#!/usr/bin/env python3
"""Drive a skewed workload at a gateway and report latency, cold-tier bytes and hit ratio.

The request list: files of `--items` popular items drawn Zipf(s) by item and uniformly by file
within the item (clients read different parts of popular content), mixed with one-off items
requested once each, so that about half the distinct items are one-offs. Seeded: every run sees
the same list. Requests run on --workers threads; latency is measured per request to the last
body byte. "Popular" = the 10 most requested items."""
import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def metrics(admin):
    text = urllib.request.urlopen(admin + "/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def metric(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def requests_list(roots, files, n, seed, s):
    rng = random.Random(seed)
    items = len(roots)
    popular = items // 2
    weights = [1 / (r + 1) ** s for r in range(popular)]
    one_offs = list(range(popular, items))
    out = []
    for _ in range(n - len(one_offs)):
        i = rng.choices(range(popular), weights)[0]
        out.append((i, rng.randrange(files)))
    for i in one_offs:
        out.append((i, rng.randrange(files)))
    rng.shuffle(out)
    return out


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def run(gateway, admin, roots, plan, workers):
    host, port = gateway.replace("http://", "").split(":")
    local = threading.local()

    def one(req):
        i, f = req
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        t = time.perf_counter()
        try:
            local.conn.request("GET", f"/ipfs/{roots[i]}/f{f}.bin")
            r = local.conn.getresponse()
            r.read()
            status = r.status
        except Exception:
            local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
            status = 0
        return i, time.perf_counter() - t, status

    before = metrics(admin)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(one, plan))
    wall = time.perf_counter() - t0
    after = metrics(admin)
    counts = {}
    for i, _ in plan:
        counts[i] = counts.get(i, 0) + 1
    top = set(sorted(counts, key=lambda k: -counts[k])[:10])
    pop = [lat * 1000 for i, lat, s in results if i in top]
    allv = [lat * 1000 for _, lat, _ in results]
    hits = metric(after, "cidgate_cache_hits_total") - metric(before, "cidgate_cache_hits_total")
    misses = metric(after, "cidgate_cache_misses_total") - metric(before, "cidgate_cache_misses_total")
    return {
        "requests": len(results),
        "errors": sum(1 for _, _, s in results if s != 200),
        "wall_s": wall,
        "popular_p50_ms": percentile(pop, 50),
        "popular_p95_ms": percentile(pop, 95),
        "all_p50_ms": percentile(allv, 50),
        "all_p95_ms": percentile(allv, 95),
        "cold_bytes": metric(after, 'cidgate_tier_bytes_total{tier="cold"}')
        - metric(before, 'cidgate_tier_bytes_total{tier="cold"}'),
        "cache_hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
        "promotions": metric(after, 'cidgate_popularity_actions_total{action="promote",outcome="ok"}'),
        "prewarms": metric(after, 'cidgate_popularity_actions_total{action="prewarm",outcome="ok"}'),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--roots", required=True, help="file with one item root per line")
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wait", type=float, default=0, help="seconds to wait before measuring")
    a = ap.parse_args()
    roots = [l.strip() for l in open(a.roots) if l.strip()]
    plan = requests_list(roots, a.files, a.requests, a.seed, a.zipf)
    if a.wait:
        time.sleep(a.wait)
    print(json.dumps(run(a.gateway, a.admin, roots, plan, a.workers)))


if __name__ == "__main__":
    main()
