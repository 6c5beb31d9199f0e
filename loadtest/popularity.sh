#!/usr/bin/env bash
# Popularity measurement (not a timed test): storage providers 200 ms away (a delaying proxy in
# front of a cidgate in provider role), a gateway with an edge cache of CACHE (default 8 MiB)
# and no hot node, and a skewed workload over 60 items of 8 files (Zipf over 30 items, files
# within an item picked uniformly, 30 more items requested once each). Scenarios, each on a
# fresh gateway running the same request list twice (pass 1 learns, pass 2 runs after it):
#   off       popularity.enabled = false
#   prewarm   prewarming only (promotion threshold out of reach)
#   promote   prewarming and promotion
#   listed    like prewarm, plus the 10 most popular items listed in popularity.prewarm_file
#             (an operator prewarming at start; pass 1 starts 5 s after the gateway)
# Reported per pass: p50/p95 latency of the 10 most requested items and of all requests, bytes
# fetched from the cold tier, edge-cache hit ratio, promotions and prewarms so far.
# Usage: [CACHE="32 MiB"] loadtest/popularity.sh [REQUESTS] [DELAY_S]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-1500}"
delay="${2:-0.2}"
cache="${CACHE:-8 MiB}"
items=60
files=8
bin=target/release/cidgate
[[ -x $bin ]] || cargo build --release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$work/src" "$items" "$files" <<'PY'
import os, sys, random
out, items, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
for i in range(items):
    d = os.path.join(out, f"item{i:03d}")
    os.makedirs(d)
    for f in range(files):
        with open(os.path.join(d, f"f{f}.bin"), "wb") as fh:
            fh.write(rng.randbytes(128 * 1024))
PY
: >"$work/roots"
for d in "$work"/src/item*; do
  $bin --data-dir "$work/provider" add "$d" >>"$work/roots"
done

source loadtest/lib/serve.sh

start_cidgate provider "$work/provider" CIDGATE_CACHE__MEMORY="8 MiB"
provider=$(cidgate_url provider public)
python3 loadtest/lib/delay_proxy.py --upstream "${provider#http://}" --delay "$delay" \
  --port-file "$work/proxy.port" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/proxy.port ]] && break; sleep 0.05; done
far="http://127.0.0.1:$(cat "$work/proxy.port")"

load() { python3 loadtest/lib/popularity_load.py --gateway "$1" --admin "$2" --roots "$work/roots" \
  --files "$files" --requests "$requests" "${@:3}"; }

common=(CIDGATE_COLD__PROVIDERS="$far" CIDGATE_CACHE__MEMORY="$cache" CIDGATE_POPULARITY__INTERVAL=1s
  CIDGATE_POPULARITY__PREWARM_THRESHOLD=3 CIDGATE_POPULARITY__PROMOTE_THRESHOLD=8)
results="$work/results.jsonl"
: >"$results"
scenario() {
  local name=$1
  shift
  rm -rf "$work/gw-$name"
  start_cidgate "gw-$name" "$work/gw-$name" "${common[@]}" "$@"
  local g a
  g=$(cidgate_url "gw-$name" public)
  a=$(cidgate_url "gw-$name" admin)
  local wait=0
  [[ $name == listed ]] && wait=5
  echo "{\"run\": \"$name, pass 1\", \"result\": $(load "$g" "$a" --wait $wait)}" >>"$results"
  # Let the last decision round finish its prewarms and promotions, then the same list again.
  echo "{\"run\": \"$name, pass 2\", \"result\": $(load "$g" "$a" --wait 3)}" >>"$results"
  stop_cidgate "gw-$name"
}
scenario off CIDGATE_POPULARITY__ENABLED=false
scenario prewarm CIDGATE_POPULARITY__PROMOTE_THRESHOLD=1000000000
scenario promote
head -10 "$work/roots" >"$work/popular.txt"
scenario listed CIDGATE_POPULARITY__PROMOTE_THRESHOLD=1000000000 \
  CIDGATE_POPULARITY__PREWARM_FILE="$work/popular.txt"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/results
python3 - "$results" "loadtest/results/popularity-$stamp" "$requests" "$delay" "$cache" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, requests, delay, cache = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
json.dump({"requests_per_pass": int(requests), "cold_delay_s": delay, "cache": cache, "runs": rows}, open(out + ".json", "w"), indent=2)
md = [f"# Popularity: cold tier {delay*1000:.0f} ms away, {requests} requests per pass, {cache} edge cache", "",
      "| run | popular p50 ms | popular p95 ms | all p50 ms | all p95 ms | cold MiB | cache hit ratio | promotions | prewarms | errors |",
      "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    x = r["result"]
    md.append(f"| {r['run']} | {x['popular_p50_ms']:.1f} | {x['popular_p95_ms']:.1f} | {x['all_p50_ms']:.1f} | {x['all_p95_ms']:.1f} | "
              f"{x['cold_bytes']/1048576:.1f} | {x['cache_hit_ratio']:.3f} | {x['promotions']:.0f} | {x['prewarms']:.0f} | {x['errors']} |")
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
