#!/usr/bin/env python3
"""Helpers of loadtest/fleet.sh (standard library only).

    fleet.py gen     --out DIR ...        content tree, request list, manifest (deterministic)
    fleet.py drive   --lb HOST:PORT ...   send a request list through the balancer, per-request record
    fleet.py scrape  --token T NAME=URL   Prometheus text of several admin listeners -> JSON
    fleet.py holding --token T ...        which keys each gateway holds in its memory cache
    fleet.py sites   --work DIR ...       DNSLink sites for the key check (dnslink.names of the gateways)
    fleet.py keycheck --lb HOST:PORT ...  every form of request the balancer keys, checked per key
    fleet.py moves   --work DIR --run R   which keys changed gateway in a failure run, per phase
    fleet.py model   --work DIR ...       expected cold-tier bytes of each run (a model of the edge cache)
    fleet.py haproxy --socket PATH CMD    one command on HAProxy's runtime API socket
    fleet.py report  --work DIR ...       Markdown + JSON report, and the last `fleet:` line

Content: --objects "catalogue" objects requested with Zipf(s) popularity, plus one-hit objects
that are requested exactly once each (--one-hit-share of all requests). Each object is a single
file (one raw block: its CID is the CIDv1 raw sha2-256 of its bytes) or, for --dir-share of
them, a directory of two files requested as /ipfs/{dir}/{file} (dag-pb CID computed here; the
harness checks every CID against the provider before the runs). --subdomain-share of the
requests use the subdomain form Host: {cid}.ipfs.{host}, so that the balancer's key extraction
is exercised both ways for the same CIDs.
"""
import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.request
from collections import deque

from popularity_load import percentile  # the same nearest-rank percentile as the popularity harness

KIB = 1024


# ------------------------------------------------------------------------------ CIDs
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def cid_bytes(codec: int, data: bytes) -> bytes:
    return bytes([0x01]) + varint(codec) + bytes([0x12, 0x20]) + hashlib.sha256(data).digest()


def cid_str(b: bytes) -> str:
    return "b" + base64.b32encode(b).decode("ascii").lower().rstrip("=")


def pb_field(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def dir_node(entries):
    """UnixFS directory (dag-pb): links sorted by name, then Data {Type: Directory}."""
    body = b""
    for name, cidb, tsize in sorted(entries):
        link = pb_field(1, cidb) + pb_field(2, name.encode()) + varint(3 << 3) + varint(tsize)
        body += pb_field(2, link)
    body += pb_field(1, b"\x08\x01")
    return body


# ------------------------------------------------------------------------------ gen
def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def gen(a):
    rng = random.Random(a.seed)
    one_hit = round(a.requests * a.one_hit_share)
    head_requests = a.requests - one_hit
    total = a.objects + one_hit
    files_root = os.path.join(a.out, "files")
    objects = []
    for i in range(total):
        part = os.path.join(files_root, f"part{i // 1000:03d}")
        os.makedirs(part, exist_ok=True)
        # catalogue objects, then the one-hit objects (a size range of their own)
        lo, hi = (a.min_kib, a.max_kib) if i < a.objects else (a.one_hit_min_kib, a.one_hit_max_kib)
        if rng.random() < a.dir_share:
            d = os.path.join(part, f"o{i:05d}")
            os.makedirs(d, exist_ok=True)
            entries, files = [], []
            for j in range(2):
                size = log_uniform(rng, lo * KIB, hi * KIB // 2)
                data = rng.randbytes(size)
                name = f"f{j}.bin"
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
                cb = cid_bytes(0x55, data)
                entries.append((name, cb, size))
                files.append({"name": name, "size": size})
            node = dir_node(entries)
            objects.append({"cid": cid_str(cid_bytes(0x70, node)), "kind": "dir", "files": files,
                            "size": sum(f["size"] for f in files) + len(node)})
        else:
            size = log_uniform(rng, lo * KIB, hi * KIB)
            data = rng.randbytes(size)
            with open(os.path.join(part, f"o{i:05d}.bin"), "wb") as f:
                f.write(data)
            objects.append({"cid": cid_str(cid_bytes(0x55, data)), "kind": "file", "size": size})
    # Zipf over the catalogue; ranks mapped to objects by a seeded permutation.
    ranks = list(range(a.objects))
    rng.shuffle(ranks)
    weights = [1 / (r + 1) ** a.exponent for r in range(a.objects)]
    picks = rng.choices(ranks, weights=weights, k=head_requests)
    picks += list(range(a.objects, total))
    rng.shuffle(picks)
    lines, counts, paths = [], {}, {}
    for i in picks:
        o = objects[i]
        counts[i] = counts.get(i, 0) + 1
        if o["kind"] == "dir":
            fi = rng.randrange(len(o["files"]))
            sub, size = "/" + o["files"][fi]["name"], o["files"][fi]["size"]
        else:
            sub, size = "", o["size"]
        # blocks a cold fetch brings: the file's block, and the directory's own block (once)
        paths[(i, sub)] = size
        if o["kind"] == "dir":
            paths[(i, "")] = o["size"] - sum(f["size"] for f in o["files"])
        if rng.random() < a.subdomain_share:
            lines.append(f"{o['cid']}.ipfs.{a.subdomain_host} {sub or '/'} {size} {o['cid']}")
        else:
            lines.append(f"- /ipfs/{o['cid']}{sub} {size} {o['cid']}")
    os.makedirs(os.path.join(a.out, "lists"), exist_ok=True)
    with open(os.path.join(a.out, "lists", "requests.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # every object once (the provider check): path form
    with open(os.path.join(a.out, "lists", "all.txt"), "w") as f:
        for o in objects:
            sub, size = (("/" + o["files"][0]["name"], o["files"][0]["size"]) if o["kind"] == "dir"
                         else ("", o["size"]))
            f.write(f"- /ipfs/{o['cid']}{sub} {size} {o['cid']}\n")
    distinct = len(counts)
    once = sum(1 for c in counts.values() if c == 1)
    manifest = {
        "seed": a.seed, "catalogue_objects": a.objects, "one_hit_objects": one_hit,
        "objects": total, "requests": a.requests, "exponent": a.exponent,
        "one_hit_share_of_requests": one_hit / a.requests,
        "dir_objects": sum(1 for o in objects if o["kind"] == "dir"),
        "subdomain_share": a.subdomain_share,
        "content_bytes": sum(o["size"] for o in objects),
        "distinct_requested": distinct, "requested_once": once,
        # every distinct object fetched once: what any cache must fetch (compulsory misses)
        "distinct_requested_bytes": sum(paths.values()),
        # the one-hit objects' blocks: every configuration fetches them exactly once
        "one_hit_bytes": sum(v for (i, _), v in paths.items() if i >= a.objects),
        "size_kib": [a.min_kib, a.max_kib],
        "one_hit_size_kib": [a.one_hit_min_kib, a.one_hit_max_kib],
        # the catalogue's distinct requested blocks (one-hit objects left out)
        "catalogue_requested_bytes": sum(v for (i, _), v in paths.items() if i < a.objects),
        "catalogue_bytes": sum(o["size"] for o in objects[:a.objects]),
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump({"manifest": manifest, "objects": objects}, f)
    json.dump(manifest, sys.stdout)
    print()


# ------------------------------------------------------------------------------ drive
def read_list(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                out.append((parts[0], parts[1], int(parts[2]), parts[3]))
    return out


def drive(a):
    reqs = read_list(a.list)
    host, port = a.lb.rsplit(":", 1)
    port = int(port)
    lock = threading.Lock()
    state = {"next": 0}
    records = []  # (t_start, t_end, ok, status, gateway, key, bytes)
    t0 = time.time()
    deadline = t0 + a.seconds if a.seconds else None
    stop_file = a.stop_file

    def take():
        with lock:
            i = state["next"]
            if deadline is None and i >= len(reqs):
                return None
            if deadline is not None and (time.time() >= deadline or (stop_file and os.path.exists(stop_file))):
                return None
            state["next"] = i + 1
        return reqs[i % len(reqs)]

    def worker():
        conn = None
        local = []
        while True:
            r = take()
            if r is None:
                break
            h, path, size, key = r
            headers = {} if h == "-" else {"Host": h}
            ts = time.time()
            status, ok, gw, n = 0, False, "", 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                status, n = resp.status, len(body)
                gw = resp.getheader("X-Fleet-Gateway", "")
                ok = status == 200 and n == size
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            local.append((ts, time.time(), ok, status, gw, key, n))
        if conn is not None:
            conn.close()
        with lock:
            records.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    records.sort()
    lat = [(e - s) * 1000 for s, e, *_ in records]
    by_status, by_gw = {}, {}
    for r in records:
        by_status[str(r[3])] = by_status.get(str(r[3]), 0) + 1
        by_gw[r[4] or "-"] = by_gw.get(r[4] or "-", 0) + 1
    failed = [r for r in records if not r[2]]
    out = {
        "requests": len(records), "ok": len(records) - len(failed), "failed": len(failed),
        "wall_s": wall, "rps": len(records) / wall if wall else 0,
        "bytes": sum(r[6] for r in records),
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "status": by_status, "by_gateway": by_gw, "t0": t0,
        "list_entries": len(reqs),
    }
    with open(a.out, "w") as f:
        json.dump(out, f)
    if a.records:
        with open(a.records, "w") as f:
            for r in records:
                f.write(f"{r[0]:.4f} {r[1]:.4f} {int(r[2])} {r[3]} {r[4] or '-'} {r[5]} {r[6]}\n")
    print(f"    {len(records):,} requests in {wall:.1f} s ({out['rps']:,.0f}/s), failed {len(failed)}, "
          f"p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, by gateway {by_gw}", file=sys.stderr)


# ------------------------------------------------------------------------------ scrape
def fetch_metrics(url, token):
    req = urllib.request.Request(url.rstrip("/") + "/metrics", headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip() or "_bucket{" in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def scrape(a):
    out = {}
    for spec in a.targets:
        name, url = spec.split("=", 1)
        try:
            out[name] = fetch_metrics(url, a.token)
        except OSError as e:
            out[name] = {"_error": str(e)}
    json.dump(out, sys.stdout)
    print()


def msum(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


# ------------------------------------------------------------------------------ holding
def holding(a):
    """For each key: does its gateway hold it in the memory cache? HEAD with only-if-cached
    (cidgate answers 412 when it would have to fetch)."""
    owners = {}
    with open(a.records) as f:
        for line in f:
            p = line.split()
            if len(p) >= 6 and p[4] != "-":
                owners[p[5]] = p[4]
    gws = dict(s.split("=", 1) for s in a.gateway)
    held = {}
    for key, gw in owners.items():
        if gw not in gws:
            continue
        h, port = gws[gw].rsplit(":", 1)
        c = http.client.HTTPConnection(h, int(port), timeout=10)
        try:
            c.request("HEAD", f"/ipfs/{key}?format=raw", headers={"Cache-Control": "only-if-cached"})
            r = c.getresponse()
            r.read()
            held[key] = {"owner": gw, "held": r.status == 200, "status": r.status}
        except OSError:
            held[key] = {"owner": gw, "held": False, "status": 0}
        finally:
            c.close()
    json.dump(held, sys.stdout)
    print()


# ------------------------------------------------------------------------------ key check
def base36(b: bytes) -> str:
    n, out = int.from_bytes(b, "big"), ""
    while n:
        n, r = divmod(n, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + out
    return "k" + out


def ipns_name(i: int) -> str:
    """A libp2p-key IPNS name (CIDv1 libp2p-key, identity multihash of an ed25519 public key
    protobuf) in base36, as gateways print them. No record exists for it: the gateways answer
    502, which is all the key check needs (the balancer's headers are on every answer)."""
    key = hashlib.sha256(f"fleet-ipns-{i}".encode()).digest()
    pub = bytes([0x08, 0x01, 0x12, 0x20]) + key
    return base36(bytes([0x01, 0x72, 0x00, len(pub)]) + pub)


def dns_label(domain: str) -> str:
    """The DNS label of a DNSLink domain in a subdomain host: `-` doubled, then `.` as `-`."""
    return domain.replace("-", "--").replace(".", "-")


def site_names(n: int):
    # DNSLink sites: plain ones, ones with a `-` (the label doubles it), and one whose name has
    # `.ipfs.` in it (a DNSLink host, not a subdomain of the gateways' host).
    return [f"site-{i}.dnslink.test" for i in range(n)] + ["docs.ipfs.tech"]


def sites(a):
    """`domain=/ipfs/{dir},...` for CIDGATE_DNSLINK__NAMES: the DNSLink sites of the key check,
    each a directory of the generated content (from the static table: no DNS lookup)."""
    objs = load(os.path.join(a.work, "manifest.json"), {}).get("objects", [])
    dirs = [o for o in objs if o["kind"] == "dir"]
    names = site_names(a.count)
    if len(dirs) < len(names):
        raise SystemExit(f"fleet.py sites: {len(dirs)} directories for {len(names)} sites")
    table = {n: dirs[-1 - i] for i, n in enumerate(names)}
    with open(os.path.join(a.work, "sites.json"), "w") as f:
        json.dump({n: {"cid": o["cid"], "files": [x["name"] for x in o["files"]]} for n, o in table.items()}, f)
    print(",".join(f"{n}=/ipfs/{o['cid']}" for n, o in table.items()))


def keycheck_cases(work, sub, cids, names):
    """(case, Host or "-", path, expected key) for every request form the balancer keys."""
    objs = load(os.path.join(work, "manifest.json"), {})
    cat = objs["manifest"]["catalogue_objects"]
    site_map = load(os.path.join(work, "sites.json"), {})
    used = {v["cid"] for v in site_map.values()}
    objects = [o for o in objs["objects"][:cat] if o["cid"] not in used][:cids]
    other_hosts = ["gw.ipfs.example", "gateway.ipfs.io"]
    out = []
    for i, o in enumerate(objects):
        c = o["cid"]
        subs = [""] + (["/" + o["files"][0]["name"]] if o["kind"] == "dir" else [])
        for p in subs:
            out.append(("ipfs path", "-", f"/ipfs/{c}{p}", c))
            # the subdomain host in any case and with a port: still the CID
            host = f"{c}.ipfs.{sub}" if i % 3 else f"{c}.ipfs.{sub.upper()}:80"
            out.append(("ipfs subdomain", host, p or "/", c))
            out.append(("ipfs path, other host", other_hosts[i % 2], f"/ipfs/{c}{p}", c))
        # a path request to the subdomain gateway's own host (cidgate redirects it: 301)
        out.append(("ipfs path, subdomain gw host", sub, f"/ipfs/{c}", c))
    for i in range(names):
        n = ipns_name(i)
        out.append(("ipns path", "-", f"/ipns/{n}", n))
        out.append(("ipns path", "-", f"/ipns/{n}/index.html", n))
        out.append(("ipns subdomain", f"{n}.ipns.{sub}", "/", n))
        out.append(("ipns path, other host", other_hosts[i % 2], f"/ipns/{n}", n))
    for i, (d, v) in enumerate(sorted(site_map.items())):
        for f in ["/"] + ["/" + x for x in v["files"]]:
            out.append(("dnslink host", d, f, d))
        out.append(("dnslink host", f"{d.upper()}:8080", "/", d))
        out.append(("dnslink /ipns/ path", "-", f"/ipns/{d}/{v['files'][0]}", d))
        out.append(("dnslink ipns subdomain", f"{dns_label(d)}.ipns.{sub}", "/", d))
        out.append(("dnslink ipns subdomain, whole name", f"{d}.ipns.{sub}", "/", d))
        out.append(("dnslink host, absolute name", f"{d}.", "/", d))
    return out


def keycheck(a):
    """Sends every form through the balancer (HEAD, shuffled, on a few keep-alive connections)
    and checks X-Fleet-Key (the balancer's key) against the expected key, and that all the
    requests of one key reached one gateway (X-Fleet-Gateway). Exit 1 on any mismatch."""
    cases = keycheck_cases(a.work, a.subdomain_host, a.cids, a.names)
    random.Random(7).shuffle(cases)  # errors (the IPNS names' 502) spread among the 200s
    host, port = a.lb.rsplit(":", 1)
    lock = threading.Lock()
    todo = list(cases)
    results = []

    def worker():
        conn = None
        while True:
            with lock:
                if not todo:
                    break
                case, h, path, want = todo.pop()
            gw, key, status = "", None, 0
            for attempt in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host, int(port), timeout=30)
                    conn.request("HEAD", path, headers={} if h == "-" else {"Host": h})
                    r = conn.getresponse()
                    r.read()
                    status, gw, key = r.status, r.getheader("X-Fleet-Gateway", ""), r.getheader("X-Fleet-Key")
                    if r.will_close:
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
            with lock:
                results.append((case, h, path, want, status, gw, key))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_key = {}
    for case, h, path, want, status, gw, key in results:
        by_key.setdefault(want, set()).add(gw)
    split = {k for k, g in by_key.items() if len(g) > 1 or "" in g}
    per_case, problems = {}, []
    for case, h, path, want, status, gw, key in results:
        c = per_case.setdefault(case, {"requests": 0, "keys": set(), "wrong_key": 0, "no_gateway": 0,
                                       "split_key_requests": 0, "status": {}, "gateways": {}})
        c["requests"] += 1
        c["keys"].add(want)
        c["status"][str(status)] = c["status"].get(str(status), 0) + 1
        c["gateways"][gw or "-"] = c["gateways"].get(gw or "-", 0) + 1
        bad = []
        if not gw:
            c["no_gateway"] += 1
            bad.append("no gateway answered")
        if key != want:
            c["wrong_key"] += 1
            bad.append(f"key {key!r}")
        if want in split:
            c["split_key_requests"] += 1
            bad.append(f"key on {sorted(by_key[want])}")
        if bad and len(problems) < 20:
            problems.append(f"{case}: Host {h} {path} -> {gw or '-'} ({status}): want key {want!r}, " + "; ".join(bad))
    # Shares: the keys of each kind spread over the gateways (one gateway for all would mean
    # the balancer keyed them on something they share, as the Host).
    kinds = {"cid": [k for c, _, _, k, *_ in cases if c.startswith("ipfs")],
             "ipns name": [k for c, _, _, k, *_ in cases if c.startswith("ipns")],
             "dnslink site": [k for c, _, _, k, *_ in cases if c.startswith("dnslink")]}
    shares = {}
    for kind, keys in kinds.items():
        cnt = {}
        for k in set(keys):
            g = sorted(by_key.get(k, {""}))[0] or "-"
            cnt[g] = cnt.get(g, 0) + 1
        shares[kind] = dict(sorted(cnt.items()))
    want_gws = min(3, a.gateways)
    spread_bad = [kind for kind, cnt in shares.items() if len([g for g in cnt if g != "-"]) < (want_gws if kind == "cid" else 2)]
    out = {"requests": len(results), "keys": len(by_key), "split_keys": len(split),
           "wrong_key": sum(c["wrong_key"] for c in per_case.values()),
           "no_gateway": sum(c["no_gateway"] for c in per_case.values()),
           "shares": shares, "not_spread": spread_bad, "problems": problems,
           "cases": {k: dict(v, keys=len(v["keys"])) for k, v in per_case.items()}}
    out["passed"] = not (out["split_keys"] or out["wrong_key"] or out["no_gateway"] or spread_bad)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    for case, c in sorted(out["cases"].items()):
        print(f"{case}: {c['requests']} requests, {c['keys']} keys, wrong key {c['wrong_key']}, "
              f"on a split key {c['split_key_requests']}, no gateway {c['no_gateway']}; "
              f"status {dict(sorted(c['status'].items()))}; gateways {dict(sorted(c['gateways'].items()))}")
    print(f"all: {out['requests']} requests, {out['keys']} keys, {out['split_keys']} keys on more than one gateway, "
          f"{out['wrong_key']} wrong keys; keys per gateway {shares}"
          + (f"; NOT SPREAD over the gateways: {spread_bad}" if spread_bad else ""))
    for p in problems:
        print("  " + p)
    sys.exit(0 if out["passed"] else 1)


# ------------------------------------------------------------------------------ moves
def read_records(path):
    """(t_start, t_end, ok, status, gateway, key) of a drive's records."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) >= 6:
                    out.append((float(p[0]), float(p[1]), p[2] == "1", int(p[3]), p[4], p[5]))
    except OSError:
        pass
    return out


def owners_of(records):
    """key -> {gateway: requests} of the requests a gateway answered."""
    o = {}
    for r in records:
        if r[4] != "-":
            d = o.setdefault(r[5], {})
            d[r[4]] = d.get(r[4], 0) + 1
    return o


def moves(a):
    """Which gateway owned each key before the signal, while the victim was away and after it
    rejoined, against the owners of the affinity run (the same ring, no failure). The keys of
    the surviving gateways must never move; the victim's move to the survivors while it is
    away and back to it after it rejoined."""
    ref_all = owners_of(read_records(os.path.join(a.work, f"{a.reference}.records.txt")))
    ref = {k: max(g, key=g.get) for k, g in ref_all.items()}
    ev = load(os.path.join(a.work, f"{a.run}.events.json"), {})
    recs = read_records(os.path.join(a.work, f"{a.run}.records.txt"))
    victim, t_sig, t_back = ev["victim"], ev["signal_at"], ev.get("restarted_at")
    # rejoined: the victim's first answer after its restart (+ a margin: requests routed
    # before HAProxy saw it up may start a little after that answer's request)
    first = min((r[0] for r in recs if t_back and r[0] >= t_back and r[4] == victim), default=None)
    rejoin = first + a.margin if first else None
    phases = {"before": [r for r in recs if r[0] < t_sig],
              "during": [r for r in recs if r[0] >= t_sig and (rejoin is None or r[0] < (first or 0))],
              "after": [r for r in recs if rejoin is not None and r[0] >= rejoin]}
    out = {"victim": victim, "reference_keys": len(ref),
           "reference_split_keys": sum(1 for g in ref_all.values() if len(g) > 1),
           "rejoined_at": first, "phases": {}}
    for name, rs in phases.items():
        own = owners_of(rs)
        surv = {k: g for k, g in own.items() if k in ref and ref[k] != victim}
        vict = {k: g for k, g in own.items() if k in ref and ref[k] == victim}
        moved = {k: g for k, g in surv.items() if set(g) != {ref[k]}}
        ph = {"requests": len(rs), "keys": len(own), "unknown_keys": sum(1 for k in own if k not in ref),
              "survivor_keys": len(surv), "survivor_keys_moved": len(moved),
              "survivor_requests_moved": sum(n for k, g in moved.items() for gw, n in g.items() if gw != ref[k]),
              "victim_keys": len(vict),
              "victim_keys_on_victim": sum(1 for g in vict.values() if set(g) == {victim}),
              "victim_keys_elsewhere": sum(1 for g in vict.values() if victim not in g),
              "victim_keys_mixed": sum(1 for g in vict.values() if victim in g and len(g) > 1)}
        to = {}
        for g in vict.values():
            for gw, n in g.items():
                if gw != victim:
                    to[gw] = to.get(gw, 0) + n
        ph["victim_requests_to"] = dict(sorted(to.items()))
        if moved:
            ph["moved_examples"] = {k: {"owner": ref[k], "answered_by": g} for k, g in list(moved.items())[:5]}
        out["phases"][name] = ph
    P = out["phases"]
    out["survivor_keys_moved"] = sum(p["survivor_keys_moved"] for p in P.values())
    out["survivor_requests_moved"] = sum(p["survivor_requests_moved"] for p in P.values())
    out["before_matches_reference"] = P["before"]["survivor_keys_moved"] == 0 and \
        P["before"]["victim_keys"] == P["before"]["victim_keys_on_victim"]
    out["victim_keys_back"] = P["after"]["victim_keys_on_victim"]
    out["victim_keys_after"] = P["after"]["victim_keys"]
    json.dump(out, sys.stdout, indent=2)
    print()
    b, d, f = P["before"], P["during"], P["after"]
    print(f"{a.run}: survivors' keys moved: {out['survivor_keys_moved']} ({out['survivor_requests_moved']} requests) "
          f"[before {b['survivor_keys_moved']}/{b['survivor_keys']}, during {d['survivor_keys_moved']}/{d['survivor_keys']}, "
          f"after {f['survivor_keys_moved']}/{f['survivor_keys']}]; {victim}'s keys: before on {victim} "
          f"{b['victim_keys_on_victim']}/{b['victim_keys']}, during elsewhere {d['victim_keys_elsewhere']}/{d['victim_keys']} "
          f"(requests to {d['victim_requests_to']}), after back on {victim} {f['victim_keys_on_victim']}/{f['victim_keys']}",
          file=sys.stderr)


# ------------------------------------------------------------------------------ sibling
def sibling(a):
    """Upper bound of a sibling tier after gw4 joined: the bytes gw4 fetched first for keys that
    moved to it and that their previous owner still held when it joined."""
    def owners(path):
        o, paths = {}, {}
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 7 and p[4] != "-" and p[2] == "1":
                    o.setdefault(p[5], p[4])
                    paths.setdefault(p[5], set()).add(int(p[6]))
        return o, paths
    before, _ = owners(a.before)
    after, paths = owners(a.after)
    held = load(a.holding, {})
    moved = [k for k, g in after.items() if g == a.new and before.get(k) not in (None, a.new)]
    moved_held = [k for k in moved if held.get(k, {}).get("held")]
    saveable = sum(sum(paths[k]) for k in moved_held)
    not_held = sum(len(paths[k]) for k in moved if k not in set(moved_held))
    replay = run_figures(a.work, "replay4", ["gw1", "gw2", "gw3", "gw4"])
    aff = run_figures(a.work, "affinity", ["gw1", "gw2", "gw3"])
    out = {
        "keys": len(after), "moved_keys": len(moved), "moved_share": len(moved) / max(1, len(after)),
        "moved_held": len(moved_held), "saveable_bytes": saveable,
        "gw4_cold_bytes": replay["per_gateway_cold_bytes"].get(a.new, 0),
        "saveable_share_of_replay_cold": saveable / max(1, replay["cold_bytes"]),
        "saveable_share_of_affinity_cold": saveable / max(1, aff["cold_bytes"]),
        "gw4_misses_not_held": not_held,
        "held_keys_total": sum(1 for v in held.values() if v.get("held")),
    }
    json.dump(out, sys.stdout)
    print()


# ------------------------------------------------------------------------------ model
class ModelShard:
    """One shard of cidgate's edge cache as quick_cache 0.7 runs it (src/tiers/cache.rs): a CLOCK
    hot ring (80 % of the bytes), a cold FIFO that admits new blocks and promotes those read again
    before they reach its head, and a ghost list (half the estimated item count) whose keys come
    back hot. Weight = bytes + 128. Reads bump a 2-step reference count."""

    def __init__(self, cap, items):
        self.cap, self.target_hot, self.ghost_cap = cap, int(cap * 0.8), int(items * 0.5)
        self.e = {}  # key -> [state h/c/g, referenced, weight]
        self.hot, self.cold, self.ghost = [deque() for _ in range(3)]
        self.wh = self.wc = 0

    def get(self, k):
        x = self.e.get(k)
        if x and x[0] != "g":
            x[1] = min(x[1] + 1, 2)
            return True
        return False

    def _hot(self):
        while self.hot:
            k = self.hot.popleft()
            x = self.e[k]
            if x[1]:
                x[1] -= 1
                self.hot.append(k)
                continue
            self.wh -= x[2]
            del self.e[k]
            return True
        return False

    def _cold(self):
        if not self.cold:
            return self._hot()
        k = self.cold.popleft()
        x = self.e[k]
        if x[1]:
            x[1] -= 1
            x[0] = "h"
            self.wh, self.wc = self.wh + x[2], self.wc - x[2]
            self.hot.append(k)
            while self.wh > self.target_hot and self._hot():
                pass
            return True
        self.wc -= x[2]
        x[0] = "g"
        self.ghost.append(k)
        while len(self.ghost) > self.ghost_cap:
            g = self.ghost.popleft()
            if self.e.get(g, ["-"])[0] == "g":
                del self.e[g]
        return True

    def insert(self, k, size):
        w = size + 128
        if w > self.target_hot:
            return
        x = self.e.get(k)
        if x and x[0] == "g":
            self.ghost.remove(k)
            self.e[k] = ["h", 0, w]
            self.wh += w
            self.hot.append(k)
            while self.wh + self.wc > self.cap and self._cold():
                pass
            return
        hot = self.wh + w <= self.target_hot
        while self.wh + self.wc + w > self.cap and self._cold():
            pass
        self.e[k] = ["h" if hot else "c", 0, w]
        if hot:
            self.wh += w
            self.hot.append(k)
        else:
            self.wc += w
            self.cold.append(k)


class ModelCache:
    def __init__(self, nbytes):
        n = min(16, max(1, nbytes // (32 * KIB * KIB)))
        n = min(16, 1 << (n - 1).bit_length())
        items = max(64, nbytes // (16 * KIB))
        self.shards = [ModelShard(-(-nbytes // n), -(-items // n)) for _ in range(n)]

    def fetch(self, k, size):
        """Bytes fetched from below for one block read."""
        sh = self.shards[int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") % len(self.shards)]
        if sh.get(k):
            return 0
        sh.insert(k, size)
        return size


def model(a):
    """Expected cold-tier bytes of the three configurations: the request list replayed in order
    through a model of the edge cache (ModelCache), without concurrency. Affinity: a consistent-hash
    ring of 3 x 1024 points (not HAProxy's hash: the share of each gateway differs a little);
    round robin: request i to gateway i mod 3; the reference: one cache of 3x the bytes. Also the
    first-pass figure of round robin on paper: a block read n times is fetched by
    3 (1 - (2/3)^n) of the 3 gateways on average, before any capacity miss."""
    import bisect
    man = load(os.path.join(a.work, "manifest.json"), {})
    objs = {o["cid"]: o for o in man["objects"]}
    cat = {o["cid"] for o in man["objects"][:man["manifest"]["catalogue_objects"]]}
    reqs, reads = [], {}
    for h, path, size, key in read_list(os.path.join(a.work, "lists", "requests.txt")):
        o = objs[key]
        if o["kind"] == "dir":
            name = path.rsplit("/", 1)[1]
            blocks = [(key, o["size"] - sum(f["size"] for f in o["files"])),
                      (f"{key}/{name}", next(f["size"] for f in o["files"] if f["name"] == name))]
        else:
            blocks = [(key, o["size"])]
        reqs.append((key, blocks))
        for b in blocks:
            reads.setdefault(b, [key in cat, 0])[1] += 1
    ring = sorted((int.from_bytes(hashlib.sha256(f"{g}-{p}".encode()).digest()[:8], "big"), g)
                  for g in ("gw1", "gw2", "gw3") for p in range(1024))

    def owner(key):
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return ring[bisect.bisect(ring, (h, "")) % len(ring)][1]

    G = a.gw_cache_mib * KIB * KIB

    def run(route, caches):
        return sum(caches[route(i, key)].fetch(k, n) for i, (key, blocks) in enumerate(reqs) for k, n in blocks)

    gws = ("gw1", "gw2", "gw3")
    out = {"affinity": run(lambda i, k: owner(k), {g: ModelCache(G) for g in gws}),
           "round_robin": run(lambda i, k: gws[i % 3], {g: ModelCache(G) for g in gws}),
           "single_3x": run(lambda i, k: 0, {0: ModelCache(3 * G)})}
    C = sum(n for (k, n), (c, _) in reads.items() if c)
    O = sum(n for (k, n), (c, _) in reads.items() if not c)
    first_pass = sum(n * 3 * (1 - (2 / 3) ** r) for (k, n), (c, r) in reads.items() if c)
    S = out["single_3x"] or 1
    out.update({
        "gw_cache_mib": a.gw_cache_mib, "catalogue_bytes": C, "one_hit_bytes": O,
        "catalogue_over_gw_cache": C / G,
        "round_robin_first_pass_catalogue_bytes": int(first_pass),
        "paper": {"single_3x": C + O, "affinity": C + O, "round_robin_first_pass": int(first_pass + O),
                  "round_robin_first_pass_over_single_3x": (first_pass + O) / (C + O)},
        "affinity_over_single_3x": out["affinity"] / S, "round_robin_over_single_3x": out["round_robin"] / S,
    })
    json.dump(out, sys.stdout)
    print()


# ------------------------------------------------------------------------------ haproxy
def haproxy(a):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(a.socket)
    s.sendall((" ".join(a.command) + "\n").encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    sys.stdout.write(data.decode())


# ------------------------------------------------------------------------------ report
def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def delta(before, after, name, prefix):
    return msum(after.get(name, {}), prefix) - msum(before.get(name, {}), prefix)


def run_figures(work, run, gateways):
    d = load(os.path.join(work, f"{run}.drive.json"), {})
    b = load(os.path.join(work, f"{run}.before.json"), {})
    e = load(os.path.join(work, f"{run}.after.json"), {})
    cold = sum(delta(b, e, g, 'cidgate_tier_bytes_total{tier="cold"}') for g in gateways)
    served = {}
    for g in gateways:
        for k in set(e.get(g, {})) | set(b.get(g, {})):
            m = re.fullmatch(r'cidgate_served_by_total\{tier="([^"]+)"\}', k)
            if m:
                served[m.group(1)] = served.get(m.group(1), 0) + delta(b, e, g, k)
    responses = sum(served.values())
    hits = sum(delta(b, e, g, "cidgate_cache_hits_total") for g in gateways)
    misses = sum(delta(b, e, g, "cidgate_cache_misses_total") for g in gateways)
    return {
        "requests": d.get("requests", 0), "failed": d.get("failed", 0),
        "wall_s": round(d.get("wall_s", 0), 2), "rps": round(d.get("rps", 0)),
        "p50_ms": round(d.get("p50_ms", 0), 2), "p99_ms": round(d.get("p99_ms", 0), 2),
        "by_gateway": d.get("by_gateway", {}), "status": d.get("status", {}),
        "cold_bytes": int(cold),
        "per_gateway_cold_bytes": {g: int(delta(b, e, g, 'cidgate_tier_bytes_total{tier="cold"}')) for g in gateways},
        "hit_ratio": served.get("cache", 0) / responses if responses else 0.0,
        "block_hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
        "served_by": {k: int(v) for k, v in sorted(served.items())},
        "hot_requests": int(delta(b, e, "hot", "cidgate_requests_total")),
        "provider_requests": int(delta(b, e, "prov", "cidgate_requests_total")),
        "provider_bytes": int(delta(b, e, "prov", "cidgate_response_bytes_total")),
    }


def fmt_bytes(n):
    return f"{n / (1024 * 1024):,.1f} MiB"


def failure_figures(work, run):
    d = load(os.path.join(work, f"{run}.drive.json"), {})
    ev = load(os.path.join(work, f"{run}.events.json"), {})
    recs = []
    try:
        with open(os.path.join(work, f"{run}.records.txt")) as f:
            for line in f:
                p = line.split()
                recs.append((float(p[0]), float(p[1]), p[2] == "1", int(p[3]), p[4]))
    except OSError:
        pass
    t_stop = ev.get("signal_at")
    failed = [r for r in recs if not r[2]]
    out = {"requests": len(recs), "failed": len(failed),
           "failed_status": {}, "p50_ms": round(d.get("p50_ms", 0), 2), "p99_ms": round(d.get("p99_ms", 0), 2)}
    for r in failed:
        out["failed_status"][str(r[3])] = out["failed_status"].get(str(r[3]), 0) + 1
    out.update({k: v for k, v in ev.items()})
    if t_stop:
        victim = ev.get("victim")
        # time until the fleet serves everything again: from the signal to the end of the last
        # failed request (0 when none failed)
        out["recovery_s"] = round(max((r[1] for r in failed), default=t_stop) - t_stop, 3)
        after = [r for r in recs if r[0] >= t_stop]
        out["victim_requests_after_signal"] = sum(1 for r in after if r[4] == victim)
        back = ev.get("restarted_at")
        if back:
            # back in the ring: the victim's first answer after its restart
            first = min((r[0] for r in recs if r[0] >= back and r[4] == victim), default=None)
            out["victim_back_after_restart_s"] = round(first - back, 3) if first else None
            before_sig = [r for r in recs if r[0] < t_stop]
            out["victim_share_before"] = round(sum(1 for r in before_sig if r[4] == victim) / max(1, len(before_sig)), 3)
            ra = [r for r in recs if first and r[0] >= first]
            out["victim_share_after_rejoin"] = round(sum(1 for r in ra if r[4] == victim) / max(1, len(ra)), 3) if ra else None
    return out


def report(a):
    work = a.work
    meta = load(a.meta, {})
    man = load(os.path.join(work, "manifest.json"), {}).get("manifest", {})
    gw3 = ["gw1", "gw2", "gw3"]
    runs = {
        "affinity": run_figures(work, "affinity", gw3),
        "round_robin": run_figures(work, "roundrobin", gw3),
        "single_3x": run_figures(work, "single", ["gw1"]),
    }
    join = {
        "warm_replay_3": run_figures(work, "replay3", gw3),
        "replay_with_gw4": run_figures(work, "replay4", gw3 + ["gw4"]),
    }
    sib = load(os.path.join(work, "sibling.json"), {})
    fails = {"sigterm": failure_figures(work, "sigterm"), "kill9": failure_figures(work, "kill9")}
    key_moves = {r: load(os.path.join(work, f"{r}.moves.json")) for r in ("sigterm", "kill9")}
    keycheck_result = load(os.path.join(work, "keycheck.json"), {})
    if os.path.exists(os.path.join(work, "hotdown.events.json")):
        fails["hotdown"] = failure_figures(work, "hotdown")
    S = runs["single_3x"]["cold_bytes"] or 1
    A, R = runs["affinity"]["cold_bytes"], runs["round_robin"]["cold_bytes"]
    goals = {
        "affinity_within_10pct_of_single_3x": abs(A - S) <= 0.10 * S,
        "round_robin_about_3x_single_3x": 2.5 <= R / S <= 3.5,
        "sigterm_zero_failed": fails["sigterm"]["failed"] == 0,
        "kill9_failed_bounded_by_open_connections":
            fails["kill9"]["failed"] <= fails["kill9"].get("open_connections_at_kill", -1),
        "key_check_passed": bool(keycheck_result.get("passed")),
        "sigterm_survivor_keys_never_moved": bool(key_moves["sigterm"]) and key_moves["sigterm"]["survivor_keys_moved"] == 0,
        "kill9_survivor_keys_never_moved": bool(key_moves["kill9"]) and key_moves["kill9"]["survivor_keys_moved"] == 0,
    }
    oh = man.get("one_hit_bytes", 0)
    repeated = {k: r["cold_bytes"] - oh for k, r in runs.items()}
    Sr = repeated["single_3x"] or 1
    mod = load(os.path.join(work, "model.json"), {})
    result = {"meta": meta, "content": man, "model": mod, "key_check": keycheck_result, "runs": runs, "join": join,
              "sibling_upper_bound": sib, "failures": fails, "key_moves": key_moves, "goals": goals,
              "ratios": {"affinity_over_single_3x": A / S, "round_robin_over_single_3x": R / S,
                         "expected_affinity_over_single_3x": mod.get("affinity_over_single_3x"),
                         "expected_round_robin_over_single_3x": mod.get("round_robin_over_single_3x"),
                         "repeated_content": {"one_hit_bytes": oh,
                                              "affinity_over_single_3x": repeated["affinity"] / Sr,
                                              "round_robin_over_single_3x": repeated["round_robin"] / Sr}}}
    with open(a.prefix + ".json", "w") as f:
        json.dump(result, f, indent=2)

    L = []
    L.append(f"# Fleet harness ({meta.get('date', '')})\n")
    L.append(f"`{meta.get('command', 'loadtest/fleet.sh')}` — {meta.get('version', '?')}, "
             f"{meta.get('haproxy', '?')}, {meta.get('cpus', '?')} CPUs, wall time "
             f"{meta.get('wall_s', '?')} s (QUICK={meta.get('quick', 0)}).\n")
    L.append(f"Topology: load balancer, 3 cidgates (memory cache {meta.get('gw_cache')} each), one shared hot "
             f"node (empty: every miss asks it, then the cold tier), one storage provider holding all content; "
             f"each in its own network namespace on one bridge. Reference: one cidgate with "
             f"{meta.get('single_cache')} behind the same balancer. Popularity (prewarm, promotion) off and "
             f"the response cache off in every gateway, so that only the block cache and the routing differ.\n")
    L.append(f"Workload: {man.get('requests', 0):,} requests ({meta.get('conns')} keep-alive connections), "
             f"Zipf s={man.get('exponent')} over {man.get('catalogue_objects', 0):,} objects plus "
             f"{man.get('one_hit_objects', 0):,} one-hit objects ({man.get('one_hit_share_of_requests', 0):.0%} of "
             f"requests), {man.get('size_kib', [0, 0])[0]}–{man.get('size_kib', [0, 0])[1]} KiB "
             f"(one-hit objects {man.get('one_hit_size_kib', man.get('size_kib', [0, 0]))[0]}–"
             f"{man.get('one_hit_size_kib', man.get('size_kib', [0, 0]))[1]} KiB), "
             f"{man.get('dir_objects', 0)} of them directories of 2 files, {man.get('subdomain_share', 0):.0%} of "
             f"requests in subdomain form; {man.get('distinct_requested', 0):,} distinct objects "
             f"({fmt_bytes(man.get('distinct_requested_bytes', 0))} of blocks: the cold bytes of an unbounded cache; "
             f"{fmt_bytes(man.get('one_hit_bytes', 0))} of them one-hit; the catalogue's "
             f"{fmt_bytes(man.get('catalogue_requested_bytes', 0))} = "
             f"{mod.get('catalogue_over_gw_cache', 0):.2f}× one gateway's cache). "
             f"The same list for every run; the gateways keep no fetched blocks on disk "
             f"(`store.keep_fetched = false`), so only the memory cache stands between them and the cold tier.\n")
    if keycheck_result:
        L.append("## Balancer key\n")
        L.append("Before the runs, every form of request the balancer keys is sent once (HEAD) through it to a "
                 "fresh affinity fleet: the key HAProxy computed (`X-Fleet-Key`) must be the expected one, and "
                 "all the requests of one key must reach one gateway (`X-Fleet-Gateway`). Other host: "
                 "`gw.ipfs.example` / `gateway.ipfs.io`, path gateways whose name has `.ipfs.` in it; the "
                 "subdomain gateway host is `fleet.test`; DNSLink sites come from the gateways' `dnslink.names` "
                 "(one of them `docs.ipfs.tech`); the IPNS names have no record (502 from the gateway).\n")
        L.append("| case | requests | keys | wrong key | on a key split over gateways | status | requests per gateway |")
        L.append("|---|---|---|---|---|---|---|")
        for case, c in sorted(keycheck_result.get("cases", {}).items()):
            L.append(f"| {case} | {c['requests']} | {c['keys']} | {c['wrong_key']} | {c['split_key_requests']} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(c['status'].items()))} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(c['gateways'].items()))} |")
        L.append(f"\n{keycheck_result.get('keys', 0)} keys, {keycheck_result.get('split_keys', 0)} of them on more "
                 f"than one gateway; keys per gateway: "
                 + "; ".join(f"{kind} {', '.join(f'{g} {n}' for g, n in cnt.items())}"
                             for kind, cnt in keycheck_result.get("shares", {}).items()) + ".\n")
    L.append("## Affinity vs round robin vs one gateway with 3× the cache\n")
    L.append("| run | cold-tier bytes | × single-3x | fleet hit ratio | block hit ratio | hot-node requests | "
             "provider bytes (CAR) | p50 ms | p99 ms | req/s | failed | requests per gateway |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        L.append(f"| {name} | {r['cold_bytes']:,} ({fmt_bytes(r['cold_bytes'])}) | {r['cold_bytes'] / S:.2f} | "
                 f"{r['hit_ratio']:.3f} | {r['block_hit_ratio']:.3f} | {r['hot_requests']:,} | "
                 f"{r['provider_bytes']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['rps']:,} | {r['failed']} | "
                 f"{', '.join(f'{k} {v}' for k, v in sorted(r['by_gateway'].items()))} |")
    L.append("\nFleet hit ratio: responses served from a gateway's memory cache / all responses "
             "(`cidgate_served_by_total`, summed over the gateways). Block hit ratio: "
             "`cidgate_cache_hits_total / (hits + misses)`. Cold-tier bytes: `cidgate_tier_bytes_total{tier=\"cold\"}` "
             "summed over the gateways (verified block bytes); provider bytes: the provider's "
             "`cidgate_response_bytes_total` (CAR framing included), as a cross-check. Latency: client-side, "
             "to the last body byte, through the balancer.\n")
    L.append("## Graceful stop and crash (affinity, steady load)\n")
    L.append("| event | requests | failed | failed by status | open connections on the victim at the signal | "
             "recovery s | victim back in the ring s after its restart | victim's share before → after |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, f in fails.items():
        share = (f"{f.get('victim_share_before', '–')} → {f.get('victim_share_after_rejoin', '–')}"
                 if "victim_share_before" in f else "–")
        L.append(f"| {name} ({f.get('victim', '?')}) | {f['requests']:,} | {f['failed']} | {f['failed_status'] or '–'} | "
                 f"{f.get('open_connections_at_kill', '–')} | {f.get('recovery_s', '–')} | "
                 f"{f.get('victim_back_after_restart_s', '–')} | {share} |")
    if any(key_moves.values()):
        L.append("\nWhich gateway each key went to, against the affinity run's owners (the same ring, no failure): "
                 "*before* the signal, *during* (from the signal to the victim's first answer after its restart) "
                 "and *after* it rejoined (from 0.5 s after that answer). The survivors' keys must never move "
                 "(the run fails otherwise); the victim's go to the survivors (after its last answers: a SIGTERM "
                 "drains, a kill -9 lands in the middle of answers) and come back to it.\n")
        L.append("| event | survivors' keys moved (requests) | before: survivors' / victim's keys at their owner | "
                 "during: victim's keys on survivors only / on both / on the victim only | "
                 "victim's requests went to | after: victim's keys back on it |")
        L.append("|---|---|---|---|---|---|")
        for name, m in key_moves.items():
            if not m:
                continue
            b, d, f = m["phases"]["before"], m["phases"]["during"], m["phases"]["after"]
            L.append(f"| {name} ({m['victim']}) | {m['survivor_keys_moved']} ({m['survivor_requests_moved']}) of "
                     f"{max(b['survivor_keys'], d['survivor_keys'], f['survivor_keys'])} seen | "
                     f"{b['survivor_keys'] - b['survivor_keys_moved']}/{b['survivor_keys']}, "
                     f"{b['victim_keys_on_victim']}/{b['victim_keys']} | "
                     f"{d['victim_keys_elsewhere']} / {d['victim_keys_mixed']} / "
                     f"{d['victim_keys'] - d['victim_keys_elsewhere'] - d['victim_keys_mixed']} of {d['victim_keys']} | "
                     f"{', '.join(f'{g} {n}' for g, n in d['victim_requests_to'].items()) or '–'} | "
                     f"{f['victim_keys_on_victim']}/{f['victim_keys']} |")
    L.append("\nRecovery: from the signal to the end of the last failed request (0: none failed). Open "
             "connections: HAProxy's `scur` of the victim just before the signal. The victim is started again "
             "(empty cache) halfway through the load; \"back\" is the time from that restart to the first request it "
             "answers, and its share after counts the requests from then on.\n")
    hd = fails.get("hotdown")
    if hd:
        L.append(f"hotdown: the shared hot node was killed at 1/3 of the load and started again at 2/3. "
                 f"Every gateway marked not ready at once (all `/readyz` 503): "
                 f"{'seen' if hd.get('all_gateways_not_ready_seen') else 'not seen'}; requests served through the "
                 f"liveness fallback (`gateways_alive`): {hd.get('fallback_requests', 0):,}; failed requests "
                 f"{hd['failed']} of {hd['requests']:,}.\n")
    j3, j4 = join["warm_replay_3"], join["replay_with_gw4"]
    L.append("## Adding a 4th gateway (and what a sibling tier could save)\n")
    L.append("After the affinity run, the warm fleet replays the same list once as it is (3 gateways), "
             "and once more after gw4 (empty) joins the ring.\n")
    L.append("| replay | cold-tier bytes | gw4's cold bytes | fleet hit ratio | requests per gateway |")
    L.append("|---|---|---|---|---|")
    for name, r in (("3 gateways, warm", j3), ("gw4 joined", j4)):
        L.append(f"| {name} | {r['cold_bytes']:,} ({fmt_bytes(r['cold_bytes'])}) | "
                 f"{r['per_gateway_cold_bytes'].get('gw4', 0):,} | {r['hit_ratio']:.3f} | "
                 f"{', '.join(f'{k} {v}' for k, v in sorted(r['by_gateway'].items()))} |")
    if sib:
        L.append(f"\nKeys that moved to gw4: {sib.get('moved_keys', 0):,} of {sib.get('keys', 0):,} "
                 f"({sib.get('moved_share', 0):.1%}). Of those, the previous owner still held "
                 f"{sib.get('moved_held', 0):,} in its memory cache when gw4 joined "
                 f"(HEAD `?format=raw` with `Cache-Control: only-if-cached` on the owner). Upper bound of what a "
                 f"sibling tier (ask the previous owner before the hot node and the cold tier) could have saved: "
                 f"{sib.get('saveable_bytes', 0):,} bytes ({fmt_bytes(sib.get('saveable_bytes', 0))}) = "
                 f"{sib.get('saveable_share_of_replay_cold', 0):.1%} of the replay's cold-tier bytes, "
                 f"{sib.get('saveable_share_of_affinity_cold', 0):.1%} of a full affinity run's. "
                 f"It would add a round trip to every one of gw4's "
                 f"{sib.get('gw4_misses_not_held', 0):,} misses the sibling could not answer, and to every "
                 f"miss of every gateway after any future ring change.\n")
    L.append("## Goals\n")
    for k, v in goals.items():
        L.append(f"- {k}: {'met' if v else 'MISSED'}")
    L.append("\n## Cold-bytes ratios\n")
    L.append("Against the reference (one gateway with 3× the cache) in the same session. Expected: from "
             "`fleet.py model`, the same list replayed in order through a model of the edge cache (quick_cache's "
             "hot ring, cold queue and ghost list, shards and weights as cidgate sets them) before the runs; "
             "first pass: round robin with each catalogue block read n times fetched by 3 (1 − (2/3)^n) "
             "gateways, no capacity miss.\n")
    L.append("| ratio | measured | expected (model) | goal |")
    L.append("|---|---|---|---|")
    L.append(f"| affinity / single-3x | {A / S:.3f} | {mod.get('affinity_over_single_3x', 0):.3f} | 0.90–1.10 |")
    L.append(f"| round robin / single-3x | {R / S:.3f} | {mod.get('round_robin_over_single_3x', 0):.3f} "
             f"(first pass {mod.get('paper', {}).get('round_robin_first_pass_over_single_3x', 0):.3f}) | about 3 (2.5–3.5) |")
    L.append(f"| affinity / single-3x, one-hit bytes left out | {repeated['affinity'] / Sr:.3f} | – | – |")
    L.append(f"| round robin / single-3x, one-hit bytes left out | {repeated['round_robin'] / Sr:.3f} | – | – |")
    L.append(f"\nCold-tier bytes (measured / model): affinity {A:,} / {mod.get('affinity', 0):,}, round robin "
             f"{R:,} / {mod.get('round_robin', 0):,}, single-3x {runs['single_3x']['cold_bytes']:,} / "
             f"{mod.get('single_3x', 0):,}; the one-hit objects' {oh:,} bytes are fetched exactly once by every "
             f"configuration.")
    L.append(f"\ncold-bytes ratios: affinity/single_3x={A / S:.3f} round_robin/single_3x={R / S:.3f}")
    for n in meta.get("notes", []):
        L.append(f"\nNote: {n}")
    text = "\n".join(L) + "\n"
    with open(a.prefix + ".md", "w") as f:
        f.write(text)
    sys.stdout.write(text)
    print(f"\nfleet: affinity_cold_bytes={A} round_robin_cold_bytes={R} "
          f"single_3x_cold_bytes={runs['single_3x']['cold_bytes']} sigterm_failed={fails['sigterm']['failed']} "
          f"kill9_failed={fails['kill9']['failed']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--objects", type=int, default=1500)
    g.add_argument("--requests", type=int, default=10000)
    g.add_argument("--one-hit-share", type=float, default=0.2)
    g.add_argument("--exponent", type=float, default=1.0)
    g.add_argument("--dir-share", type=float, default=0.2)
    g.add_argument("--subdomain-share", type=float, default=0.1)
    g.add_argument("--subdomain-host", default="fleet.test")
    g.add_argument("--min-kib", type=int, default=16)
    g.add_argument("--max-kib", type=int, default=512)
    g.add_argument("--one-hit-min-kib", type=int, default=16)
    g.add_argument("--one-hit-max-kib", type=int, default=512)
    g.add_argument("--seed", type=int, default=13)
    d = sub.add_parser("drive")
    d.add_argument("--lb", required=True)
    d.add_argument("--list", required=True)
    d.add_argument("--conns", type=int, default=24)
    d.add_argument("--timeout", type=float, default=90)
    d.add_argument("--seconds", type=float, default=0, help="loop over the list for this long (0: once)")
    d.add_argument("--stop-file", default="", help="with --seconds: stop early when this file exists")
    d.add_argument("--out", required=True)
    d.add_argument("--records", default="")
    s = sub.add_parser("scrape")
    s.add_argument("--token", required=True)
    s.add_argument("targets", nargs="+")
    h = sub.add_parser("holding")
    h.add_argument("--records", required=True)
    h.add_argument("--gateway", action="append", required=True, help="NAME=HOST:PORT")
    st = sub.add_parser("sites")
    st.add_argument("--work", required=True)
    st.add_argument("--count", type=int, default=16)
    k = sub.add_parser("keycheck")
    k.add_argument("--lb", required=True)
    k.add_argument("--work", required=True, help="the work directory (manifest.json, sites.json)")
    k.add_argument("--subdomain-host", default="fleet.test")
    k.add_argument("--cids", type=int, default=150)
    k.add_argument("--names", type=int, default=24)
    k.add_argument("--conns", type=int, default=8)
    k.add_argument("--gateways", type=int, default=3)
    k.add_argument("--out", required=True)
    m = sub.add_parser("moves")
    m.add_argument("--work", required=True)
    m.add_argument("--run", required=True)
    m.add_argument("--reference", default="affinity", help="the run whose owners are the ring without failures")
    m.add_argument("--margin", type=float, default=0.5, help="seconds after the victim's first answer before 'after'")
    b = sub.add_parser("sibling")
    b.add_argument("--work", required=True)
    b.add_argument("--before", required=True, help="records of the run that warmed the fleet")
    b.add_argument("--after", required=True, help="records of the replay after the join")
    b.add_argument("--holding", required=True)
    b.add_argument("--new", default="gw4")
    mo = sub.add_parser("model")
    mo.add_argument("--work", required=True)
    mo.add_argument("--gw-cache-mib", type=int, default=32)
    x = sub.add_parser("haproxy")
    x.add_argument("--socket", required=True)
    x.add_argument("command", nargs="+")
    r = sub.add_parser("report")
    r.add_argument("--work", required=True)
    r.add_argument("--meta", required=True)
    r.add_argument("--prefix", required=True)
    a = p.parse_args()
    {"gen": gen, "drive": drive, "scrape": scrape, "holding": holding, "sites": sites, "keycheck": keycheck,
     "moves": moves, "sibling": sibling, "model": model, "haproxy": haproxy, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
