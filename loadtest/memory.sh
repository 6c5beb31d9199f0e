#!/usr/bin/env bash
# Memory measurement (not a timed test): streams a generated file of SIZE (default 2 GiB) through
# `cidgate serve` and reports the server's resident memory before, and its peak (VmHWM) after.
# Usage: loadtest/memory.sh [SIZE_MIB]   (needs a release build: cargo build --release)
# CACHE_MEMORY ["8 MiB"]: the edge cache's bound (cache.memory). The cache keeps blocks it has
# read, up to that bound, so it is set to its minimum to measure what streaming itself holds; the
# cache's own bytes at the end are printed too (with the default 256 MiB it fills).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
size_mib="${1:-2048}"
cache_memory="${CACHE_MEMORY:-8 MiB}"
bin=target/release/cidgate
[[ -x $bin ]] || cargo build --release
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
# Deterministic, incompressible-enough content; never committed.
python3 - "$work/big.bin" "$size_mib" <<'PY'
import hashlib, sys
path, mib = sys.argv[1], int(sys.argv[2])
block = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(32768))  # 1 MiB
with open(path, "wb") as f:
    for i in range(mib):
        f.write(block[i % 997:] + block[: i % 997])
PY
start=$(date +%s.%N)
root=$($bin --data-dir "$work/store" add "$work/big.bin")
add_s=$(echo "$(date +%s.%N) - $start" | bc)
rm "$work/big.bin"
CIDGATE_SERVER__SAMPLE=false CIDGATE_CACHE__MEMORY="$cache_memory" $bin --data-dir "$work/store" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q "cidgate: public" "$work/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^cidgate: public //p' "$work/out")
admin=$(sed -n 's/^cidgate: admin //p' "$work/out")
rss() { awk -v k="$1" '$1==k":" {print $2}' /proc/$pid/status; }
before=$(rss VmRSS)
start=$(date +%s.%N)
bytes=$(curl -s -o /dev/null -w '%{size_download}' "$url/ipfs/$root")
stream_s=$(echo "$(date +%s.%N) - $start" | bc)
peak=$(rss VmHWM)
range_start=$(( size_mib * 1024 * 1024 / 2 ))
range_bytes=$(curl -s -o /dev/null -w '%{size_download}' -H "Range: bytes=$range_start-$((range_start + 1048575))" "$url/ipfs/$root")
echo "file: ${size_mib} MiB, root $root"
echo "add: ${add_s}s"
echo "streamed: $bytes bytes in ${stream_s}s ($(echo "$bytes / $stream_s / 1048576" | bc) MiB/s)"
echo "server RSS before: $((before / 1024)) MiB, peak after streaming: $((peak / 1024)) MiB, growth: $(((peak - before) / 1024)) MiB"
echo "1 MiB range from the middle: $range_bytes bytes"
cached=$(curl -s "$admin/metrics" | awk '$1=="cidgate_cache_bytes" {print $2}')
echo "edge cache (cache.memory = $cache_memory) holds $((${cached:-0} / 1048576)) MiB at the end"
curl -s "$admin/metrics" | grep -E "^cidgate_(cache_arena_bytes|cache_hits_total|cache_misses_total|zero_copy)" >&2
