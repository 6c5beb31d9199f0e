#!/usr/bin/env bash
# Cold-tier measurement (not a timed test): a cidgate in provider role holds ROUNDS (default 5)
# generated files of SIZE MiB (default 512), all different; a second cidgate with an empty store
# and that provider as its only `cold.providers` entry retrieves them. Each round, `curl` fetches
# one file's trustless CAR straight from the provider and through the gateway (content it has
# never seen, so nothing comes from its cache; who goes first alternates), recording throughput
# and time to first byte.
# Medians, ratios and every sample go to loadtest/results/cold-<time>.{json,md}.
# Usage: loadtest/cold.sh [SIZE_MIB] [ROUNDS]   (builds the release binary when missing)
#
# Both processes share this machine's cores, so unshaped the figures measure CPU (each side
# hashes every block). LINK=1gbit (root and tc needed) shapes only what the provider sends, with
# an htb class on the loopback device — a storage provider across a network link; the shaping
# is removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
size_mib="${1:-512}"
rounds="${2:-5}"
bin=target/release/cidgate
[[ -x $bin ]] || cargo build --release
work=$(mktemp -d)
pids=()
link="${LINK:-}"
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
  if [[ -n $link ]]; then tc qdisc del dev lo root 2>/dev/null || true; fi
}
trap cleanup EXIT
roots=()
for r in $(seq "$rounds"); do
  python3 - "$work/big.bin" "$size_mib" "$r" <<'PY'
import hashlib, sys
path, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = b"".join(hashlib.sha256(seed.to_bytes(4, "little") + i.to_bytes(4, "little")).digest() for i in range(32768))  # 1 MiB
with open(path, "wb") as f:
    for i in range(mib):
        f.write(block[i % 997:] + block[: i % 997])
PY
  roots+=("$($bin --data-dir "$work/provider" add "$work/big.bin")")
  rm "$work/big.bin"
done

source loadtest/lib/serve.sh

# The provider's own edge cache is kept at its minimum: a block it serves twice in a row would
# skip its store read and re-verification, favouring whichever client asks second.
start_cidgate provider "$work/provider" CIDGATE_CACHE__MEMORY="8 MiB"
provider=$(cidgate_url provider public)
if [[ -n $link ]]; then
  port=${provider##*:}
  tc qdisc add dev lo root handle 1: htb default 10 r2q 100000
  tc class add dev lo parent 1: classid 1:10 htb rate 100gbit burst 4mb
  tc class add dev lo parent 1: classid 1:20 htb rate "$link" ceil "$link" burst 1mb
  tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$port" 0xffff flowid 1:20
  echo "provider link shaped: $link"
fi
query="format=car&dag-scope=all"
accept="Accept: application/vnd.ipld.car;version=1;order=dfs;dups=y"
fetch() { curl -s -o /dev/null -H "$accept" -w '%{time_starttransfer} %{speed_download} %{size_download}\n' "$1"; }
# Warm the provider's page cache so both paths read the same way.
for root in "${roots[@]}"; do fetch "$provider/ipfs/$root?$query" >/dev/null; done
start_cidgate gw "$work/gw" CIDGATE_COLD__PROVIDERS="$provider" CIDGATE_CACHE__MEMORY="64 MiB"
gw=$(cidgate_url gw public)
# One unmeasured request first, as a running gateway has its connections and threads up.
curl -s -o /dev/null "$gw/ipfs/bafkqaaa" || true

samples="$work/samples"
: >"$samples"
i=0
for root in "${roots[@]}"; do
  i=$((i + 1))
  # Alternate who goes first, so that neither side profits from what the other warmed.
  order=(direct cidgate)
  ((i % 2 == 0)) && order=(cidgate direct)
  for who in "${order[@]}"; do
    base=$provider
    [[ $who == cidgate ]] && base=$gw
    read -r ttfb speed size < <(fetch "$base/ipfs/$root?$query")
    echo "$who $i $ttfb $speed $size" >>"$samples"
  done
done
root=${roots[0]}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/results
python3 - "$samples" "$size_mib" "$root" "loadtest/results/cold-$stamp" "${link:-loopback}" <<'PY'
import json, statistics, sys, platform, os
path, mib, root, out, link = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [l.split() for l in open(path) if l.strip()]
by = {}
for kind, i, ttfb, speed, size in rows:
    by.setdefault(kind, []).append({"ttfb_ms": float(ttfb) * 1000, "mib_s": float(speed) / 1048576, "bytes": int(size)})
med = {k: {"ttfb_ms": statistics.median(s["ttfb_ms"] for s in v), "mib_s": statistics.median(s["mib_s"] for s in v)} for k, v in by.items()}
d, c = med["direct"], med["cidgate"]
result = {
    "file_mib": mib, "root": root, "rounds": len(by["direct"]), "link": link,
    "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    "median": med,
    "throughput_ratio": c["mib_s"] / d["mib_s"],
    "ttfb_delta_ms": c["ttfb_ms"] - d["ttfb_ms"],
    "samples": by,
}
json.dump(result, open(out + ".json", "w"), indent=2)
sizes = {s["bytes"] for v in by.values() for s in v}
md = [f"# Cold tier: CAR of a {mib} MiB file, curl direct vs through cidgate ({len(by['direct'])} rounds, medians; provider link: {link})", "",
      "| path | throughput MiB/s | TTFB ms |", "|---|---|---|",
      f"| provider direct | {d['mib_s']:.0f} | {d['ttfb_ms']:.2f} |",
      f"| through cidgate (cold tier) | {c['mib_s']:.0f} | {c['ttfb_ms']:.2f} |", "",
      f"throughput ratio {result['throughput_ratio']:.3f} (goal >= 0.95), TTFB delta {result['ttfb_delta_ms']:.2f} ms (goal <= 5 ms); CAR sizes seen: {sorted(sizes)}"]
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
