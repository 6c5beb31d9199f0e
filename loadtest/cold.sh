#!/usr/bin/env bash
# Cold-tier measurement (not a timed test): a cidgate in provider role holds a generated file of
# SIZE MiB (default 512); a second cidgate with an empty store and that provider as its only
# `cold.providers` entry retrieves it. For ROUNDS rounds (default 5), alternating, `curl` fetches
# the same trustless CAR straight from the provider and through the gateway (restarted each
# round, so nothing is cached), and records throughput and time to first byte. Medians, ratios
# and every sample go to loadtest/results/cold-<time>.{json,md}.
# Usage: loadtest/cold.sh [SIZE_MIB] [ROUNDS]   (builds the release binary when missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
size_mib="${1:-512}"
rounds="${2:-5}"
bin=target/release/cidgate
[[ -x $bin ]] || cargo build --release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/big.bin" "$size_mib" <<'PY'
import hashlib, sys
path, mib = sys.argv[1], int(sys.argv[2])
block = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(32768))  # 1 MiB
with open(path, "wb") as f:
    for i in range(mib):
        f.write(block[i % 997:] + block[: i % 997])
PY
root=$($bin --data-dir "$work/provider" add "$work/big.bin")
rm "$work/big.bin"

# start NAME DIR [ENV...]: runs `cidgate serve`, prints its public URL.
start() {
  local name=$1 dir=$2
  shift 2
  env CIDGATE_SERVER__SAMPLE=false RUST_LOG=warn "$@" \
    $bin --data-dir "$dir" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  for _ in $(seq 100); do grep -q "cidgate: public" "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/^cidgate: public //p' "$work/$name.out"
}

provider=$(start provider "$work/provider")
query="format=car&dag-scope=all"
accept="Accept: application/vnd.ipld.car;version=1;order=dfs;dups=y"
fetch() { curl -s -o /dev/null -H "$accept" -w '%{time_starttransfer} %{speed_download} %{size_download}\n' "$1"; }
# Warm the provider's page cache so both paths read the same way.
fetch "$provider/ipfs/$root?$query" >/dev/null

samples="$work/samples"
: >"$samples"
for i in $(seq "$rounds"); do
  read -r ttfb speed size < <(fetch "$provider/ipfs/$root?$query")
  echo "direct $i $ttfb $speed $size" >>"$samples"
  rm -rf "$work/gw"
  gw=$(start gw "$work/gw" CIDGATE_COLD__PROVIDERS="$provider" CIDGATE_CACHE__MEMORY="64 MiB")
  read -r ttfb speed size < <(fetch "$gw/ipfs/$root?$query")
  echo "cidgate $i $ttfb $speed $size" >>"$samples"
  kill "$(cat "$work/gw.pid")"
  wait "$(cat "$work/gw.pid")" 2>/dev/null || true
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/results
python3 - "$samples" "$size_mib" "$root" "loadtest/results/cold-$stamp" <<'PY'
import json, statistics, sys, platform, os
path, mib, root, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [l.split() for l in open(path) if l.strip()]
by = {}
for kind, i, ttfb, speed, size in rows:
    by.setdefault(kind, []).append({"ttfb_ms": float(ttfb) * 1000, "mib_s": float(speed) / 1048576, "bytes": int(size)})
med = {k: {"ttfb_ms": statistics.median(s["ttfb_ms"] for s in v), "mib_s": statistics.median(s["mib_s"] for s in v)} for k, v in by.items()}
d, c = med["direct"], med["cidgate"]
result = {
    "file_mib": mib, "root": root, "rounds": len(by["direct"]),
    "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    "median": med,
    "throughput_ratio": c["mib_s"] / d["mib_s"],
    "ttfb_delta_ms": c["ttfb_ms"] - d["ttfb_ms"],
    "samples": by,
}
json.dump(result, open(out + ".json", "w"), indent=2)
sizes = {s["bytes"] for v in by.values() for s in v}
md = [f"# Cold tier: CAR of a {mib} MiB file, curl direct vs through cidgate ({len(by['direct'])} rounds, medians)", "",
      "| path | throughput MiB/s | TTFB ms |", "|---|---|---|",
      f"| provider direct | {d['mib_s']:.0f} | {d['ttfb_ms']:.2f} |",
      f"| through cidgate (cold tier) | {c['mib_s']:.0f} | {c['ttfb_ms']:.2f} |", "",
      f"throughput ratio {result['throughput_ratio']:.3f} (goal >= 0.95), TTFB delta {result['ttfb_delta_ms']:.2f} ms (goal <= 5 ms); CAR sizes seen: {sorted(sizes)}"]
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
