#!/usr/bin/env python3
"""Generate the load-test content and request lists (deterministic, never committed).

Layout written under --out:
  files/hit/obj-4k.bin, files/hit/obj-1m.bin     the two hit-path objects
  files/zipf/oNNNN.bin                           --objects files of 2..64 KiB (one directory)
  docroot/ipfs/<cid>                             hard links for nginx-static: same URL as cidgate
  lists/hit-4k.txt, lists/hit-1m.txt             one URL path each (/ipfs/<cid>)
  lists/zipf.txt                                 the Zipf request list (/ipfs/<cid> per line)
  lists/zipf-all.txt                             every Zipf object once (origin warm-up, checks)
  manifest.json                                  CIDs, sizes and the request-list statistics

Every object is at most 1 MiB, so `cidgate add` stores it as one raw block and its CID is the
CIDv1 raw (0x55) sha2-256 CID computed here; run.sh cross-checks that against `cidgate add`.

The Zipf list: K = objects/2 "head" objects drawn with P(rank r) ~ 1/r^s (ranks mapped to
objects by a seeded permutation, so popularity is unrelated to size or name), plus U one-off
objects requested exactly once each, shuffled into the list. U is chosen so that one-offs plus
head objects drawn only once make up ~50 % of the distinct objects requested.
"""
import argparse
import base64
import bisect
import hashlib
import json
import os
import random

MIB = 1024 * 1024


def raw_cid(data: bytes) -> str:
    """CIDv1, raw codec (0x55), sha2-256 multihash, base32 lower with the 'b' prefix."""
    mh = bytes([0x12, 0x20]) + hashlib.sha256(data).digest()
    cid = bytes([0x01, 0x55]) + mh
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def link(docroot: str, cid: str, src: str) -> None:
    dst = os.path.join(docroot, "ipfs", cid)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.exists(dst):
        os.link(src, dst)


def zipf_list(rng, objects, requests, exponent):
    """Return (list of object indices, statistics)."""
    head_n = max(1, objects // 2)
    max_oneoffs = objects - head_n
    perm = list(range(objects))
    rng.shuffle(perm)
    head_objs, oneoff_objs = perm[:head_n], perm[head_n:]
    cum, total = [], 0.0
    for r in range(1, head_n + 1):
        total += 1.0 / (r ** exponent)
        cum.append(total)
    draws_n = max(1, requests - max_oneoffs)
    draws = [head_objs[bisect.bisect_left(cum, rng.random() * total)] for _ in range(draws_n)]
    counts = {}
    for o in draws:
        counts[o] = counts.get(o, 0) + 1
    head_distinct = len(counts)
    head_single = sum(1 for c in counts.values() if c == 1)
    # singletons / distinct = (head_single + U) / (head_distinct + U) = 1/2
    oneoffs_n = max(0, min(max_oneoffs, head_distinct - 2 * head_single))
    seq = draws + oneoff_objs[:oneoffs_n]
    rng.shuffle(seq)
    distinct = head_distinct + oneoffs_n
    singles = head_single + oneoffs_n
    top = sorted(counts.values(), reverse=True)
    stats = {
        "requests": len(seq),
        "objects_total": objects,
        "head_objects": head_n,
        "exponent": exponent,
        "head_draws": draws_n,
        "one_off_objects": oneoffs_n,
        "distinct_requested": distinct,
        "requested_once": singles,
        "requested_once_share_of_distinct": round(singles / distinct, 4) if distinct else 0,
        "top1_share_of_requests": round(top[0] / len(seq), 4) if top else 0,
        "top10_share_of_requests": round(sum(top[:10]) / len(seq), 4) if top else 0,
        # Lower bound of misses for a cache that starts empty: every distinct object once.
        "ideal_hit_ratio": round(1 - distinct / len(seq), 4) if seq else 0,
    }
    return seq, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--exponent", type=float, default=1.0)
    ap.add_argument("--min-size", type=int, default=2 * 1024)
    ap.add_argument("--max-size", type=int, default=64 * 1024)
    ap.add_argument("--seed", type=int, default=20261121)
    a = ap.parse_args()
    if a.objects < 2:
        ap.error("--objects must be at least 2")

    rng = random.Random(a.seed)
    out = os.path.abspath(a.out)
    files, docroot, lists = (os.path.join(out, d) for d in ("files", "docroot", "lists"))
    os.makedirs(lists, exist_ok=True)
    manifest = {"seed": a.seed, "hit": {}, "zipf": {"dir": os.path.join(files, "zipf"), "objects": []}}

    for name, size in (("4k", 4096), ("1m", MIB)):
        data = rng.randbytes(size)
        path = os.path.join(files, "hit", f"obj-{name}.bin")
        write(path, data)
        cid = raw_cid(data)
        link(docroot, cid, path)
        manifest["hit"][name] = {"cid": cid, "size": size, "file": path}
        with open(os.path.join(lists, f"hit-{name}.txt"), "w") as f:
            f.write(f"/ipfs/{cid}\n")

    cids, sizes = [], []
    for i in range(a.objects):
        size = rng.randint(a.min_size, a.max_size)
        data = rng.randbytes(size)
        path = os.path.join(files, "zipf", f"o{i:05d}.bin")
        write(path, data)
        cid = raw_cid(data)
        link(docroot, cid, path)
        cids.append(cid)
        sizes.append(size)
        manifest["zipf"]["objects"].append({"name": os.path.basename(path), "cid": cid, "size": size})

    seq, stats = zipf_list(rng, a.objects, a.requests, a.exponent)
    stats["mean_object_bytes"] = round(sum(sizes) / len(sizes))
    stats["mean_request_bytes"] = round(sum(sizes[o] for o in seq) / len(seq))
    with open(os.path.join(lists, "zipf.txt"), "w") as f:
        f.writelines(f"/ipfs/{cids[o]}\n" for o in seq)
    with open(os.path.join(lists, "zipf-all.txt"), "w") as f:
        f.writelines(f"/ipfs/{c}\n" for c in cids)
    manifest["zipf"]["list"] = stats
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
