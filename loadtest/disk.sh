#!/usr/bin/env bash
# Disk-tier hits: cidgate serving blocks from its store's segment files (not from its memory
# cache: 8 MiB for a working set of 128–256 MiB, the response cache off) against nginx serving
# the same bytes from its proxy_cache on disk, both with their files in the page cache. The
# same shuffled list of /ipfs/<cid> URLs, wrk in loop mode, ROUNDS alternating rounds, median.
# Popularity tracking is off for cidgate: promotions would pin the hot part of the list (moving
# it between segments) while nginx does nothing of the kind.
#
#   cargo build --release && loadtest/disk.sh
#   ROUNDS=5 DURATION=10s SIZES="4096 1048576" loadtest/disk.sh
#
# Environment: KEEP [0] (1: keep the work directory)  DURATION [8s]  ROUNDS [3]  CONNECTIONS [64]  THREADS [2]
#   SIZES ["4096 1048576"]  TOTAL [128 MiB at 4 KiB, 256 MiB at 1 MiB]  BIN [target/release/cidgate]
# Last line per size:  disk: size=S cidgate_rps=C nginx_rps=N ratio=R
# Only 127.0.0.1 is used.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB=$HERE/lib
BIN=${BIN:-$REPO/target/release/cidgate}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SIZES=${SIZES:-"4096 1048576"}
NAME=disk
# shellcheck source=lib/nginx_work.sh
. "$LIB/nginx_work.sh"
command -v wrk >/dev/null || { log "wrk is needed (apt-get install wrk)"; exit 1; }

rps_of() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("LOADTEST_JSON "):
        d = json.loads(l[14:]); e = sum(d["errors"].values())
        print("%.0f %.2f %.2f %d %s" % (d["rps"], d["latency_us"]["p50"]/1000, d["latency_us"]["p99"]/1000, e, json.dumps(d["status"]).replace(" ", "")))' "$1"; }

wrk_run() { # URL LIST OUT
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s -s "$LIB/walk.lua" "$1" -- "$2" loop 0 "$THREADS" >"$3" 2>&1
}

for size in $SIZES; do
  total=${TOTAL:-$([ "$size" -ge 65536 ] && echo $((256 << 20)) || echo $((128 << 20)))}
  d=$WORK/$size
  mkdir -p "$d/nginx/cache" "$d/nginx/tmp"
  python3 "$LIB/makecar.py" "$d/content.car" "$total" "$size" 7 "$d/cids.txt" >&2
  "$BIN" --data-dir "$d/store" import "$d/content.car" >/dev/null 2>&1
  rm -f "$d/content.car"
  sed 's|^|/ipfs/|' "$d/cids.txt" | shuf --random-source=<(yes) >"$d/list.txt"
  port=$(free_port); aport=$(free_port); nport=$(free_port)
  start_cidgate "$d/store" "$port" "$aport" CIDGATE_POPULARITY__ENABLED=false \
    CIDGATE_CACHE__MEMORY="8 MiB" CIDGATE_CACHE__RESPONSES=0 CIDGATE_STORE__MAX_SIZE=0
  { nginx_head "$d/nginx"; cat <<EOF; } >"$d/nginx/nginx.conf"
  open_file_cache max=10000 inactive=60s;
  proxy_cache_path $d/nginx/cache levels=1:2 keys_zone=l1:64m max_size=4g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$port; keepalive 64; }
  server {
    listen 127.0.0.1:$nport backlog=4096;
    location /ipfs/ {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache l1; proxy_cache_key \$uri; proxy_cache_valid 200 1h;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
}
EOF
  "$NGINX" -p "$d/nginx" -c "$d/nginx/nginx.conf"
  # nginx's cache is filled by one pass over the list (each object once, through the origin).
  log "size $size: $(wc -l <"$d/list.txt") objects; filling nginx's proxy_cache"
  python3 - "http://127.0.0.1:$nport" "$d/list.txt" <<'PY'
import sys, http.client, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
# The same request headers as wrk's (none): nginx keys its entries on cidgate's
# `Vary: Accept, Accept-Encoding` too.
for path in open(sys.argv[2]):
    c.putrequest("GET", path.strip(), skip_accept_encoding=True); c.endheaders()
    r = c.getresponse(); r.read()
    assert r.status == 200, (path, r.status)
PY
  [ $? -eq 0 ] || { tail -5 "$d/nginx/error.log" >&2; exit 1; }
  hit=$(curl -s -H "Accept:" -o /dev/null -D - "http://127.0.0.1:$nport$(head -1 "$d/list.txt")" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
  tier=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port$(sed -n 2p "$d/list.txt")" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cidgate-tier"{print $2}')
  log "nginx X-Cache-Status: $hit; cidgate X-Cidgate-Tier: $tier"
  # The CAR pins only its first block: the others are cache entries once garbage collection
  # has run. Run it now, so that no rewrite happens during the rounds.
  curl -sf -X POST "http://127.0.0.1:$aport/admin/store/maintain" >/dev/null
  # Both sides' files in the page cache. cidgate's are there already, read (and hashed) by
  # cidgate itself in the pass that filled nginx's cache: a server trusts no page another
  # process brought in before it started, and pages read by another process while it runs
  # would be trusted without a hash, so they are not read here.
  find "$d/nginx/cache" -type f -exec cat {} + >/dev/null
  store_du=$(du -sb "$d/store/blocks" | awk '{print $1}'); nginx_du=$(du -sb "$d/nginx/cache" | awk '{print $1}')
  log "on disk: cidgate segments $store_du bytes, nginx cache $nginx_du bytes"
  c_all=(); n_all=()
  for r in $(seq "$ROUNDS"); do
    order="cidgate nginx"; ((r % 2 == 0)) && order="nginx cidgate"
    for who in $order; do
      url="http://127.0.0.1:$port"; [ "$who" = nginx ] && url="http://127.0.0.1:$nport"
      wrk_run "$url" "$d/list.txt" "$d/$who.$r.txt"
      read -r rps p50 p99 errs status < <(rps_of "$d/$who.$r.txt")
      log "round $r $who: $rps req/s p50 $p50 ms p99 $p99 ms errors $errs status $status"
      [ "$errs" = 0 ] || tail -3 "$d/nginx/error.log" >&2
      if [ "$who" = cidgate ]; then c_all+=("$rps"); else n_all+=("$rps"); fi
    done
  done
  served=$(curl -s "http://127.0.0.1:$aport/metrics" | awk '/^cidgate_(served_bytes|zero_copy_store_response_bytes)_total/ {print}' | tr '\n' ' ')
  log "cidgate served bytes by tier: $served"
  python3 - "$size" "${c_all[*]}" "${n_all[*]}" <<'PY'
import statistics, sys
size, c, n = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
cm, nm = statistics.median(c), statistics.median(n)
print(f"disk: size={size} cidgate_rps={cm:.0f} nginx_rps={nm:.0f} ratio={cm / nm:.2f} "
      f"rounds_cidgate={'/'.join('%.0f' % x for x in c)} rounds_nginx={'/'.join('%.0f' % x for x in n)}")
PY
  kill "$(cat "$d/nginx/nginx.pid")"; kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
done
