#!/usr/bin/env bash
# A Zipf workload whose working set is 8x the memory cache and fits the disk budget, through
# three fronts of the same origin (a cidgate holding the content, the hot node):
#   cidgate, memory cache only (store.keep_fetched = false)
#   cidgate, memory cache + disk cache (store.max_size = DISK)
#   nginx proxy_cache on disk with max_size = DISK
# Each front starts cold and sees the same request list once (16 connections). Reported per
# front: requests that reached the origin, origin bytes, hit ratio (1 - origin requests /
# requests), against the list's ideal (every distinct object fetched once).
#
#   cargo build --release && loadtest/disk_zipf.sh
#
# Environment: MEMORY [32 MiB]  OBJECTS [1024 x 256 KiB = 256 MiB, 8x MEMORY]  DISK [384 MiB]
#   REQUESTS [20000]  EXPONENT [0.9]  BIN [target/release/cidgate]
# Last line:  disk_zipf: memory_only_hit=A memory_disk_hit=B nginx_hit=C ideal=D
# Only 127.0.0.1 is used.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export LIB=$HERE/lib
BIN=${BIN:-$REPO/target/release/cidgate}
MEMORY=${MEMORY:-32 MiB}
OBJECTS=${OBJECTS:-1024}
SIZE=${SIZE:-262144}
DISK=${DISK:-384 MiB}
REQUESTS=${REQUESTS:-20000}
EXPONENT=${EXPONENT:-0.9}
NAME=disk_zipf
# shellcheck source=lib/nginx_work.sh
. "$LIB/nginx_work.sh"

# Content and the request list.
python3 "$LIB/makecar.py" "$WORK/content.car" $((OBJECTS * SIZE)) "$SIZE" 11 "$WORK/cids.txt" >&2
python3 - "$WORK/cids.txt" "$REQUESTS" "$EXPONENT" "$WORK/list.txt" <<'PY' >&2
import json, os, random, sys
sys.path.insert(0, os.path.join(os.environ.get("LIB", "loadtest/lib")))
from content import zipf_list
cids = [l.strip() for l in open(sys.argv[1]) if l.strip()]
seq, stats = zipf_list(random.Random(7), len(cids), int(sys.argv[2]), float(sys.argv[3]))
open(sys.argv[4], "w").writelines(f"/ipfs/{cids[i]}\n" for i in seq)
json.dump(stats, open(sys.argv[4] + ".json", "w"))
print(f"list: {stats['requests']} requests, {stats['distinct_requested']} distinct, ideal hit ratio {stats['ideal_hit_ratio']}")
PY

# The origin: every object pinned in its store.
"$BIN" --data-dir "$WORK/origin" import "$WORK/content.car" >/dev/null 2>&1
OPORT=$(free_port); OAPORT=$(free_port)
start_cidgate "$WORK/origin" "$OPORT" "$OAPORT" CIDGATE_POPULARITY__ENABLED=false

origin_counts() { # -> "requests bytes"
  curl -s "http://127.0.0.1:$OAPORT/metrics" | python3 -c '
import sys
req = byt = 0.0
for l in sys.stdin:
    if l.startswith("cidgate_requests_total"): req += float(l.split()[-1])
    if l.startswith("cidgate_served_bytes_total"): byt += float(l.split()[-1])
print(int(req), int(byt))'
}

drive() { # BASE_URL -> statuses
  python3 - "$1" "$WORK/list.txt" <<'PY'
import http.client, sys, threading, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); paths = [l.strip() for l in open(sys.argv[2]) if l.strip()]
lock = threading.Lock(); it = iter(paths); status = {}
def worker():
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    while True:
        with lock:
            p = next(it, None)
        if p is None: return
        c.putrequest("GET", p, skip_accept_encoding=True); c.endheaders()
        r = c.getresponse(); r.read()
        with lock: status[r.status] = status.get(r.status, 0) + 1
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print(status)
PY
}

declare -A HIT
run_front() { # NAME URL
  read -r r0 b0 < <(origin_counts)
  local t0 st; t0=$(date +%s.%N)
  st=$(drive "$2")
  read -r r1 b1 < <(origin_counts)
  HIT[$1]=$(python3 -c "print(round(1 - ($r1 - $r0) / $REQUESTS, 4))")
  log "$1: statuses $st; origin requests $((r1 - r0)), origin bytes $((b1 - b0)); hit ratio ${HIT[$1]}; $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
}

for front in memory_only memory_disk; do
  port=$(free_port); aport=$(free_port)
  keep=false; [ "$front" = memory_disk ] && keep=true
  start_cidgate "$WORK/edge-$front" "$port" "$aport" CIDGATE_POPULARITY__ENABLED=false \
    CIDGATE_HOT__BACKEND=trustless CIDGATE_HOT__URL="http://127.0.0.1:$OPORT" \
    CIDGATE_CACHE__MEMORY="$MEMORY" CIDGATE_CACHE__RESPONSES=0 \
    CIDGATE_STORE__KEEP_FETCHED=$keep CIDGATE_STORE__MAX_SIZE="$DISK" CIDGATE_STORE__SEGMENT_SIZE="16 MiB"
  run_front "$front" "http://127.0.0.1:$port"
  log "$front store: $(curl -s "http://127.0.0.1:$aport/admin/store" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d[k] for k in ("cache_bytes", "evicted_bytes", "cache_skipped_bytes")})')"
  kill "${PIDS[-1]}"
done

NPORT=$(free_port)
mkdir -p "$WORK/nginx/cache"
nginx_max=$(python3 -c "import sys; v=sys.argv[1].split(); print(int(float(v[0]) * {'KiB':1,'MiB':1024,'GiB':1<<20}[v[1]]))" "$DISK")k
{ nginx_head "$WORK/nginx"; cat <<EOF; } >"$WORK/nginx/nginx.conf"
  proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=l1:64m max_size=$nginx_max inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$OPORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NPORT;
    location /ipfs/ {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache l1; proxy_cache_key \$uri; proxy_cache_valid 200 1h; proxy_cache_lock on;
    }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
run_front nginx "http://127.0.0.1:$NPORT"
log "nginx cache on disk at the end: $(du -sb "$WORK/nginx/cache" | awk '{print $1}') bytes (max_size $nginx_max; its cache manager enforces it periodically)"
ideal=$(python3 -c "import json; print(json.load(open('$WORK/list.txt.json'))['ideal_hit_ratio'])")
echo "disk_zipf: memory_only_hit=${HIT[memory_only]} memory_disk_hit=${HIT[memory_disk]} nginx_hit=${HIT[nginx]} ideal=$ideal"
