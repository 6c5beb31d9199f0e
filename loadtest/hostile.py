#!/usr/bin/env python3
"""Connection floods against a running cidgate, while a legitimate client keeps asking.

    loadtest/hostile.py [--bin target/release/cidgate] [--sockets 20000]

Starts `cidgate serve` (sample site, no trusted proxies: every peer is a client of its own)
and runs three phases, each while a legitimate client on 127.0.0.2 requests the sample page
every 50 ms and the operator polls the admin /healthz:

1. one attacker (127.0.0.1) opens --sockets idle connections;
2. a distributed attacker opens the same number from 127.0.1.1-127.0.1.N (each address under
   the per-client cap), so the global cap is what holds;
3. slow loris: the distributed attacker sends half a request head on each connection.

For each phase it prints the attacker's connections accepted / answered 503 / reset, the
legitimate client's answers by status and p50/p99 latency, /healthz failures, and how long
after the flood started the idle connections were all closed (header_read_timeout). The last
line is machine readable. Only loopback addresses are used.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(binary, data, env):
    e = dict(os.environ, RUST_LOG="warn", **env)
    p = subprocess.Popen(
        [binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=e, text=True)
    public = admin = None
    while public is None or admin is None:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("cidgate exited early")
        if line.startswith("cidgate: public "):
            public = line.split()[-1]
        elif line.startswith("cidgate: admin "):
            admin = line.split()[-1]
    return p, public, admin


def metric(admin, name, label=""):
    text = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


async def legit(host, port, path, stop, out):
    """A client on 127.0.0.2 asking every 50 ms on fresh connections."""
    while not stop.is_set():
        t = time.monotonic()
        status = "error"
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0)), 5)
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            await w.drain()
            head = await asyncio.wait_for(r.readline(), 5)
            status = head.split()[1].decode() if head else "closed"
            await asyncio.wait_for(r.read(), 5)
            w.close()
        except Exception:
            pass
        out.append((status, time.monotonic() - t))
        await asyncio.sleep(0.05)


async def healthz(admin, stop, out):
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        def probe():
            try:
                return urllib.request.urlopen(admin + "/healthz", timeout=3).status
            except Exception:
                return 0
        out.append(await loop.run_in_executor(None, probe))
        await asyncio.sleep(0.2)


async def attacker(host, port, count, sources, payload, results):
    """Opens `count` connections spread over `sources`; records what each one got."""
    async def one(i):
        src = sources[i % len(sources)]
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(src, 0)), 10)
        except Exception:
            results["connect_failed"] += 1
            return
        if payload:
            try:
                w.write(payload)
                await w.drain()
            except Exception:
                pass
        try:
            first = await asyncio.wait_for(r.read(64), 120)
            if first.startswith(b"HTTP/1.1 503"):
                results["answered_503"] += 1
            elif first:
                results["answered_other"] += 1
            else:
                results["closed_by_server"] += 1
        except asyncio.TimeoutError:
            results["still_open"] += 1
        except Exception:
            results["reset"] += 1
        finally:
            w.close()
    batch = 500
    tasks = []
    for start_i in range(0, count, batch):
        tasks += [asyncio.create_task(one(i)) for i in range(start_i, min(count, start_i + batch))]
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)


async def phase(name, host, port, admin, path, count, sources, payload):
    stop = asyncio.Event()
    legit_out, health_out = [], []
    results = {k: 0 for k in ("connect_failed", "answered_503", "answered_other",
                              "closed_by_server", "still_open", "reset")}
    started = time.monotonic()
    lt = asyncio.create_task(legit(host, port, path, stop, legit_out))
    ht = asyncio.create_task(healthz(admin, stop, health_out))
    await attacker(host, port, count, sources, payload, results)
    drained = time.monotonic() - started
    stop.set()
    await asyncio.gather(lt, ht)
    statuses = {}
    for s, _ in legit_out:
        statuses[s] = statuses.get(s, 0) + 1
    lat = sorted(d for s, d in legit_out if s == "200")
    p = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
    summary = {
        "phase": name, "attacker_connections": count, "sources": len(sources),
        "attacker": results, "legit": statuses, "legit_p50_ms": p(0.5), "legit_p99_ms": p(0.99),
        "healthz_failures": sum(1 for h in health_out if h != 200), "healthz_probes": len(health_out),
        "all_attacker_connections_done_s": round(drained, 1),
        "accept_errors": metric(admin, "cidgate_limited_total", 'reason="accept_error"'),
    }
    print(json.dumps(summary), flush=True)
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/cidgate"))
    ap.add_argument("--sockets", type=int, default=20000)
    ap.add_argument("--header-timeout", default="10s")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = tempfile.mkdtemp()
    try:
        proc, public, admin = start(args.bin, data, {
            "CIDGATE_SERVER__SAMPLE": "true",
            "CIDGATE_SERVER__TRUSTED_PROXIES": "",
            "CIDGATE_SERVER__HEADER_READ_TIMEOUT": args.header_timeout,
        })
        host, port = public.split("//")[1].split(":")
        port = int(port)
        root = subprocess.run([args.bin, "--data-dir", tempfile.mkdtemp(), "add", os.path.join(REPO, "config/sample")],
                              capture_output=True, text=True).stdout.strip()
        path = f"/ipfs/{root}/index.html"
        per_source = 200  # under the default per-client cap of 256
        n_sources = max(1, args.sockets // per_source)
        spread = [f"127.0.1.{i}" if i < 255 else f"127.0.{1 + i // 254}.{1 + i % 254}" for i in range(1, n_sources + 1)]
        out = []
        out.append(asyncio.run(phase("one attacker, idle", host, port, admin, path,
                                     args.sockets, ["127.0.0.1"], b"")))
        out.append(asyncio.run(phase("distributed, idle", host, port, admin, path,
                                     args.sockets, spread, b"")))
        out.append(asyncio.run(phase("distributed, slow loris", host, port, admin, path,
                                     args.sockets, spread, b"GET /ipfs/ HTTP/1.1\r\nHost: x\r\nX-A: ")))
        proc.terminate()
        proc.wait(10)
        print("hostile: " + " ".join(
            f"{i}:legit_ok={o['legit'].get('200', 0)}/{sum(o['legit'].values())},healthz_fail={o['healthz_failures']},accept_errors={int(o['accept_errors'])}"
            for i, o in enumerate(out, 1)))
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
