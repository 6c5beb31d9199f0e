#!/usr/bin/env bash
# cidgate load test with its nginx baselines, in one run. See loadtest/README.md.
#
#   loadtest/run.sh                 full run (DURATION=10s per run, 64 connections, 2 wrk threads)
#   QUICK=1 loadtest/run.sh         2-second smoke run
#
# Environment (defaults in brackets):
#   DURATION [10s, QUICK: 2s]   wrk -d for the hit runs; the Zipf runs are one pass over the list
#   ROUNDS [3, QUICK: 1]        hit runs per target, alternating which target goes first; the
#                               median round is reported (a shared machine drifts over a run)
#   CONNECTIONS [64]  THREADS [2]   wrk -c / -t
#   TTFB_SAMPLES [200, QUICK: 50]   sequential curl requests per target for TTFB
#   ZIPF_OBJECTS [2000]  ZIPF_EXPONENT [1.0]
#   ZIPF_REQUESTS [20000 per second of DURATION]   length of the Zipf request list
#   ZIPF_CAP [4 x DURATION]     upper bound of one Zipf run (wrk -d)
#   CACHE_MEMORY ["256 MiB"]    CIDGATE_CACHE__MEMORY for the cidgate caches (when the build has it)
#   NGINX_CACHE_LOCK [on]       proxy_cache_lock of the nginx proxy_cache baseline (on|off)
#   CIDGATE_BIN [target/release/cidgate]   BIN_WAIT [300] seconds to wait for it to appear
#   RESULTS_DIR [loadtest/results]   KEEP_WORK [0]: 1 keeps the temp dir (logs, lists, raw output)
#   ACCESS_LOG [0]   1: cidgate writes its access log (the nginx baselines never do)
#
# Only 127.0.0.1 is used. Progress goes to stderr; the Markdown summary to stdout.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB=$HERE/lib

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-2s}
  TTFB_SAMPLES=${TTFB_SAMPLES:-50}
  ROUNDS=${ROUNDS:-1}
else
  DURATION=${DURATION:-10s}
  TTFB_SAMPLES=${TTFB_SAMPLES:-200}
fi
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ZIPF_OBJECTS=${ZIPF_OBJECTS:-2000}
ZIPF_EXPONENT=${ZIPF_EXPONENT:-1.0}
CACHE_MEMORY=${CACHE_MEMORY:-256 MiB}
NGINX_CACHE_LOCK=${NGINX_CACHE_LOCK:-on}
CIDGATE_BIN=${CIDGATE_BIN:-$REPO/target/release/cidgate}
BIN_WAIT=${BIN_WAIT:-300}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KEEP_WORK=${KEEP_WORK:-0}
ACCESS_LOG=${ACCESS_LOG:-0}

log() { printf '[loadtest %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# "10s" / "2m" / "10" -> seconds
seconds() {
  local d=$1
  case $d in
    *ms) die "DURATION must be at least 1s (got $d)" ;;
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
  esac
}
DURATION_S=$(seconds "$DURATION")
[[ $DURATION_S =~ ^[0-9]+$ && $DURATION_S -ge 1 ]] || die "DURATION must be whole seconds like 10s (got $DURATION)"
[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ && $CONNECTIONS -ge $THREADS && $THREADS -ge 1 ]] ||
  die "CONNECTIONS ($CONNECTIONS) must be a number >= THREADS ($THREADS) >= 1"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "ROUNDS must be a whole number >= 1 (got $ROUNDS)"
[[ $NGINX_CACHE_LOCK == on || $NGINX_CACHE_LOCK == off ]] || die "NGINX_CACHE_LOCK must be on or off"
ZIPF_REQUESTS=${ZIPF_REQUESTS:-$((20000 * DURATION_S))}
ZIPF_CAP=${ZIPF_CAP:-$((4 * DURATION_S))s}

# ------------------------------------------------------------------------------------ tools
ensure_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  fi
  NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
  [[ -x $NGINX ]] || die "nginx not found after install"
  command -v wrk >/dev/null 2>&1 || die "wrk not found after install"
}

# ------------------------------------------------------------------------------------ cleanup
WORK=""
PIDS=()
NGINX_PID_FILE=""
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $NGINX_PID_FILE && -s $NGINX_PID_FILE ]]; then
    local npid
    npid=$(cat "$NGINX_PID_FILE")
    kill -QUIT "$npid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$npid" 2>/dev/null
  fi
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORK == 1 || $rc != 0 ]]; then
      log "work directory kept: $WORK (logs in $WORK/logs, raw run output in $WORK/raw)"
      [[ $KEEP_WORK == 1 ]] || log "(kept because the run failed; delete it when done)"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# ------------------------------------------------------------------------------------ helpers
# GET URL; print "STATUS BYTES"
probe() { curl -s -o /dev/null --max-time 30 -w '%{http_code} %{size_download}' "$1" || echo "000 0"; }

wait_http() { # URL [seconds]
  local url=$1 t=${2:-30} i
  for ((i = 0; i < t * 10; i++)); do
    [[ $(probe "$url") == 200\ * ]] && return 0
    sleep 0.1
  done
  return 1
}

free_ports() { # N -> N free 127.0.0.1 ports, one a line
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1]); s.close()
PY
}

# start_cidgate NAME DATA_DIR [VAR=VALUE...]: starts `cidgate serve` on 127.0.0.1 port 0 and sets
# URL_NAME / ADMIN_NAME / PID_NAME. Returns 1 (stderr in $WORK/logs/NAME.err) if it exits at start.
start_cidgate() {
  local name=$1 dir=$2
  shift 2
  local out=$WORK/logs/$name.out err=$WORK/logs/$name.err pid i rc=0
  env CIDGATE_SERVER__SAMPLE=false "${ACCESS_ENV[@]}" "$@" "$BIN" --data-dir "$dir" serve \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>"$err" &
  pid=$!
  PIDS+=("$pid")
  for ((i = 0; i < 600; i++)); do
    grep -q '^cidgate: admin ' "$out" 2>/dev/null && break
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || rc=$?
      forget_pid "$pid"
      log "cidgate ($name) exited at start (status $rc): $(grep -v '^\s*$' "$err" | tail -n 3 | tr '\n' ' ')"
      return 1
    fi
    sleep 0.1
  done
  grep -q '^cidgate: admin ' "$out" || die "cidgate ($name) printed no listen addresses within 60 s; see $err"
  local public admin
  public=$(sed -n 's/^cidgate: public //p' "$out" | head -n 1)
  admin=$(sed -n 's/^cidgate: admin //p' "$out" | head -n 1)
  wait_http "$admin/healthz" 30 || die "cidgate ($name) admin $admin/healthz did not answer 200"
  printf -v "URL_$name" '%s' "$public"
  printf -v "ADMIN_$name" '%s' "$admin"
  printf -v "PID_$name" '%s' "$pid"
  log "cidgate ($name) up: public $public, admin $admin"
}

scrape() { python3 "$LIB/results.py" scrape "$1"; } # ADMIN_URL -> JSON

# run_wrk SCENARIO TARGET BASE_URL LIST MODE COUNT -> $RAW/SCENARIO.TARGET.wrk.json
run_wrk() {
  local scen=$1 target=$2 base=$3 list=$4 mode=$5 count=$6
  local out=$RAW/$scen.$target.wrk.txt dur=$DURATION wpid rc=0 threads
  [[ $mode == once ]] && dur=$ZIPF_CAP
  stdbuf -oL wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --timeout 10s --latency \
    -s "$LIB/walk.lua" "$base" -- "$list" "$mode" "$count" "$THREADS" >"$out" 2>&1 &
  wpid=$!
  PIDS+=("$wpid")
  if [[ $mode == once ]]; then
    # wrk sleeps for all of -d even when every thread has sent its share of the list; once the
    # worker threads are gone (only the main thread left), SIGINT makes it report at once.
    while kill -0 "$wpid" 2>/dev/null; do
      if grep -q '^Running' "$out" 2>/dev/null; then
        threads=$(awk '/^Threads:/ {print $2}' "/proc/$wpid/status" 2>/dev/null || echo 0)
        if [[ $threads == 1 ]]; then
          kill -INT "$wpid" 2>/dev/null || true
          break
        fi
      fi
      sleep 0.2
    done
  fi
  wait "$wpid" || rc=$?
  forget_pid "$wpid"
  [[ $rc == 0 ]] || die "wrk failed for $scen/$target (status $rc): $(tail -n 5 "$out")"
  grep '^LOADTEST_JSON ' "$out" | sed 's/^LOADTEST_JSON //' >"$RAW/$scen.$target.wrk.json"
  [[ -s $RAW/$scen.$target.wrk.json ]] || die "wrk printed no result for $scen/$target: $(tail -n 5 "$out")"
  python3 - "$RAW/$scen.$target.wrk.json" "$scen/$target" <<'PY' >&2
import json, sys
w = json.load(open(sys.argv[1]))
e = sum(w["errors"].values())
extra = "" if w.get("list_finished") is not False else " (cap reached before the end of the list)"
print(f"    {sys.argv[2]}: {w['rps']:,.0f} req/s, p99 {w['latency_us']['p99'] / 1000:.2f} ms, "
      f"{w['requests']:,} requests in {w['elapsed_s']:.2f} s, errors {e}{extra}")
PY
}

# run_ttfb SCENARIO TARGET BASE_URL URL_PATHS_FILE -> $RAW/SCENARIO.TARGET.ttfb.txt
run_ttfb() {
  local scen=$1 target=$2 base=$3 paths=$4 cfg=$RAW/$1.$2.curl.cfg p
  : >"$cfg"
  while IFS= read -r p; do
    [[ -n $p ]] || continue
    printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$p" >>"$cfg"
  done <"$paths"
  curl -s --max-time 60 -K "$cfg" -w '%{time_starttransfer} %{http_code} %{size_download}\n' \
    >"$RAW/$scen.$target.ttfb.txt" || log "curl TTFB sampling for $scen/$target ended with an error"
}

# ttfb_paths LIST N [START] -> file with N paths (the list's only path repeated, or a window)
ttfb_paths() {
  local list=$1 n=$2 start=${3:-1} out
  out=$RAW/ttfb.$(basename "$list" .txt).paths
  if [[ $(grep -c . "$list") == 1 ]]; then
    for ((i = 0; i < n; i++)); do head -n 1 "$list"; done >"$out"
  else
    sed -n "${start},$((start + n - 1))p" "$list" >"$out"
  fi
  echo "$out"
}

warm() { # URL N: N sequential GETs, must all be 200
  local i s
  for ((i = 0; i < $2; i++)); do
    s=$(probe "$1")
    [[ $s == 200\ * ]] || die "warm-up GET $1 answered '$s'"
  done
}

# ==================================================================================== main
ensure_tools

# The binary may be mid-rebuild: wait for it, and run a private copy so a rebuild during the
# run cannot swap it.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidgate-loadtest.XXXXXX")
chmod 755 "$WORK" # nginx workers (nobody) read the docroot below it
mkdir -p "$WORK/logs" "$WORK/raw" "$WORK/bin"
RAW=$WORK/raw
BIN=$WORK/bin/cidgate
for ((i = 0; ; i++)); do
  if [[ -x $CIDGATE_BIN ]] && cp "$CIDGATE_BIN" "$BIN" 2>/dev/null && "$BIN" --version >/dev/null 2>&1; then
    break
  fi
  ((i < BIN_WAIT)) || die "no working cidgate binary at $CIDGATE_BIN after ${BIN_WAIT}s (build it: cargo build --release)"
  ((i % 15 == 0)) && log "waiting for $CIDGATE_BIN (being rebuilt?)"
  sleep 1
done
log "cidgate: $("$BIN" --version) ($CIDGATE_BIN); wrk -t$THREADS -c$CONNECTIONS -d$DURATION; work dir $WORK"

# ------------------------------------------------------------------------------------ content
log "generating content: 4 KiB, 1 MiB, $ZIPF_OBJECTS Zipf objects, $ZIPF_REQUESTS-request list"
python3 "$LIB/content.py" --out "$WORK/content" --objects "$ZIPF_OBJECTS" --requests "$ZIPF_REQUESTS" \
  --exponent "$ZIPF_EXPONENT" >"$RAW/zipf-list.json" || die "content generation failed"
M=$WORK/content/manifest.json
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval("d"+sys.argv[2]))' "$M" "$1"; }
CID_4K=$(jget '["hit"]["4k"]["cid"]')
CID_1M=$(jget '["hit"]["1m"]["cid"]')
LISTS=$WORK/content/lists
ZIPF_LIST=$LISTS/zipf.txt
ZIPF_LEN=$(grep -c . "$ZIPF_LIST")
log "zipf list: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("{} requests, {} distinct objects, {:.0%} of them requested once".format(d["requests"], d["distinct_requested"], d["requested_once_share_of_distinct"]))' "$RAW/zipf-list.json")"

try_add() { # DATA_DIR PATH -> root CID; status 1 (message in $WORK/logs/add.err) on failure
  local cid
  cid=$("$BIN" --data-dir "$1" add "$2" 2>"$WORK/logs/add.err") || return 1
  echo "$cid" | tail -n 1
}
add() { try_add "$@" || die "cidgate add $2 failed: $(tail -n 3 "$WORK/logs/add.err")"; }
# add_zipf DATA_DIR -> root CID of the Zipf directory. Builds whose `add` cannot write a HAMT
# directory (over 1000 entries) get the same files as directories of 1000 (requests name each
# object by its own CID, so the directory layout does not change any request).
add_zipf() {
  local root d
  if root=$(try_add "$1" "$WORK/content/files/zipf"); then
    echo "$root"
    return
  fi
  grep -qi 'HAMT\|more than' "$WORK/logs/add.err" || die "cidgate add of the Zipf directory failed: $(tail -n 3 "$WORK/logs/add.err")"
  if [[ ! -d $WORK/content/files/zipf-split ]]; then
    log "this build's add cannot build a directory of $ZIPF_OBJECTS entries ($(tail -n 1 "$WORK/logs/add.err" | sed 's/^cidgate: //')); adding the Zipf objects as directories of 1000 instead"
    python3 - "$WORK/content/files/zipf" "$WORK/content/files/zipf-split" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
for i, name in enumerate(sorted(os.listdir(src))):
    d = os.path.join(dst, f"part{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    os.link(os.path.join(src, name), os.path.join(d, name))
PY
  fi
  root=""
  for d in "$WORK/content/files/zipf-split"/part*; do
    root+="$(add "$1" "$d") "
  done
  echo "${root% }"
}
log "adding content to the cidgate stores"
MAIN_STORE=$WORK/store-main     # hit path + embedded Zipf reference
ORIGIN_STORE=$WORK/store-origin # hot origin
EMPTY_STORE=$WORK/store-edge    # cache tier in front of the hot origin: starts empty
for f in 4k 1m; do
  want=$(jget "[\"hit\"][\"$f\"][\"cid\"]")
  got=$(add "$MAIN_STORE" "$WORK/content/files/hit/obj-$f.bin")
  [[ $got == "$want" ]] || die "cidgate add gave $got for obj-$f.bin, expected the raw-leaf CID $want"
done
ZIPF_ROOT=$(add_zipf "$MAIN_STORE")
[[ $(add_zipf "$ORIGIN_STORE") == "$ZIPF_ROOT" ]] || die "origin store got a different Zipf root"
[[ $(add "$ORIGIN_STORE" "$WORK/content/files/hit/obj-4k.bin") == "$CID_4K" ]] || die "origin store: 4 KiB CID differs"
mkdir -p "$EMPTY_STORE"
log "zipf directory root(s): $ZIPF_ROOT"

# ------------------------------------------------------------------------------------ servers
NOTES=()
# No access log, as the nginx baselines have none (access_log off); ACCESS_LOG=1 turns it on.
# Builds from before the access log (no `cidgate config`) have no such key, and no log to turn off.
ACCESS_ENV=()
if "$BIN" --help 2>/dev/null | grep -qE '^ +config '; then
  ACCESS_ENV=("CIDGATE_TELEMETRY__ACCESS_LOG=$([[ $ACCESS_LOG == 1 ]] && echo true || echo false)")
fi
FEAT_MEMORY=0 FEAT_HOT=0 FEAT_METRICS=0 FEAT_TIER=0
HOT_REASON=""

# (a) cidgate with the content in its own store (+ the memory cache when the build has it)
if start_cidgate main "$MAIN_STORE" "CIDGATE_CACHE__MEMORY=$CACHE_MEMORY"; then
  FEAT_MEMORY=1
else
  log "memory cache: not available in this build; the cidgate hit path is served from the embedded store"
  NOTES+=("memory cache (CIDGATE_CACHE__MEMORY) not available in this build: the cidgate hit path was served from the embedded store")
  start_cidgate main "$MAIN_STORE" || die "cidgate serve failed; see $WORK/logs/main.err"
fi
[[ $(scrape "$ADMIN_main") == *'"available": true'* ]] && FEAT_METRICS=1
curl -s -o /dev/null -D - "$URL_main/ipfs/$CID_4K" | grep -qi '^x-cidgate-tier:' && FEAT_TIER=1
((FEAT_METRICS)) || NOTES+=("cidgate /metrics (cidgate_cache_hits_total, cidgate_cache_misses_total, cidgate_requests_total) not available in this build")
((FEAT_TIER)) || NOTES+=("X-Cidgate-Tier response header not available in this build")

# (c) hot origin: a second cidgate holding the Zipf content in its own store
start_cidgate origin "$ORIGIN_STORE" || die "cidgate serve (hot origin) failed; see $WORK/logs/origin.err"
ORIGIN_PORT=${URL_origin##*:}

# (d) cidgate with an empty store and the hot origin as its hot tier
HOT_ENV=("CIDGATE_HOT__BACKEND=trustless" "CIDGATE_HOT__URL=$URL_origin")
((FEAT_MEMORY)) && HOT_ENV+=("CIDGATE_CACHE__MEMORY=$CACHE_MEMORY")
if start_cidgate edge "$EMPTY_STORE" "${HOT_ENV[@]}"; then
  s=$(probe "$URL_edge/ipfs/$CID_4K")
  if [[ $s == "200 4096" ]]; then
    FEAT_HOT=1
  else
    HOT_REASON="cidgate started with ${HOT_ENV[*]} but GET /ipfs/<cid held only by the origin> answered '$s' (want '200 4096')"
    kill -TERM "$PID_edge" 2>/dev/null || true
  fi
else
  HOT_REASON="cidgate rejected the hot-tier configuration: $(grep -v '^\s*$' "$WORK/logs/edge.err" | tail -n 1)"
fi
((FEAT_HOT)) || log "zipf / cidgate-hot: not available in this build ($HOT_REASON)"

# (b) + (e) nginx: static files and proxy_cache in front of the hot origin, own prefix and config
NGX=$WORK/nginx
mkdir -p "$NGX/tmp"
mapfile -t NPORTS < <(free_ports 2)
STATIC_PORT=${NPORTS[0]} PROXY_PORT=${NPORTS[1]}
sed -e "s#@PREFIX@#$NGX#g" -e "s#@DOCROOT@#$WORK/content/docroot#g" -e "s#@STATIC_PORT@#$STATIC_PORT#g" \
  -e "s#@PROXY_PORT@#$PROXY_PORT#g" -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" -e "s#@WORKERS@#auto#g" -e "s#@CACHE_LOCK@#$NGINX_CACHE_LOCK#g" \
  "$LIB/nginx.conf.in" >"$NGX/nginx.conf"
"$NGINX" -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" 2>>"$WORK/logs/nginx.err" ||
  die "nginx -t failed: $(tail -n 3 "$WORK/logs/nginx.err")"
NGINX_PID_FILE=$NGX/nginx.pid
"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" 2>>"$WORK/logs/nginx.err" ||
  die "nginx failed to start: $(tail -n 3 "$WORK/logs/nginx.err")"
URL_static=http://127.0.0.1:$STATIC_PORT
URL_proxy=http://127.0.0.1:$PROXY_PORT
wait_http "$URL_static/ipfs/$CID_4K" 30 || die "nginx-static did not serve /ipfs/$CID_4K; see $NGX/error.log"
log "nginx up: static $URL_static, proxy_cache $URL_proxy -> origin $URL_origin"

# ------------------------------------------------------------------------------------ checks
log "checking every target serves the right bytes"
for t in "main $URL_main" "static $URL_static"; do
  set -- $t
  [[ $(probe "$2/ipfs/$CID_4K") == "200 4096" ]] || die "$1: GET /ipfs/$CID_4K did not return 4096 bytes"
  [[ $(probe "$2/ipfs/$CID_1M") == "200 1048576" ]] || die "$1: GET /ipfs/$CID_1M did not return 1 MiB"
done
[[ $(probe "$URL_proxy/ipfs/$CID_4K") == "200 4096" ]] || die "nginx-proxy_cache: GET /ipfs/$CID_4K via the origin failed"
cs=$(curl -s -o /dev/null -D - "$URL_proxy/ipfs/$CID_4K" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status" {print $2}')
[[ $cs == HIT ]] || log "warning: nginx proxy_cache answered X-Cache-Status '$cs' on a repeated request (expected HIT)"
# Every Zipf object through the origin, once: checks the CIDs and warms the origin's store for
# both cache tiers alike (the caches themselves start cold).
log "origin warm-up: every Zipf object once"
run_wrk warmup origin "$URL_origin" "$LISTS/zipf-all.txt" once 1
# (in "once" mode the last in-flight request of each connection is abandoned: < CONNECTIONS)
python3 - "$RAW/warmup.origin.wrk.json" "$ZIPF_OBJECTS" "$CONNECTIONS" <<'PY' ||
import json, sys
w = json.load(open(sys.argv[1]))
ok = w["status"].get("200", 0)
assert ok >= int(sys.argv[2]) - int(sys.argv[3]) and ok == sum(w["status"].values()), w["status"]
assert sum(w["errors"].values()) == 0, w["errors"]
PY
  die "origin warm-up failed: not every Zipf object was served with 200 (see $RAW/warmup.origin.wrk.txt)"

# ------------------------------------------------------------------------------------ runs
RUNS=$RAW/runs.jsonl
: >"$RUNS"
record() { python3 "$LIB/results.py" record --runs "$RUNS" "$@"; }

# measure SCENARIO TARGET KIND BASE_URL LIST MODE COUNT TTFB_PATHS ADMIN ORIGIN_ADMIN DESCRIPTION
# (round $ROUND of the scenario; raw files of later rounds are named SCENARIO.rN.TARGET.*)
ROUND=1
measure() {
  local scen=$1 target=$2 kind=$3 base=$4 list=$5 mode=$6 count=$7 tpaths=$8 admin=$9 oadmin=${10} desc=${11}
  local tag=$scen args=()
  ((ROUND > 1)) && tag=$scen.r$ROUND
  local p=$RAW/$tag.$target
  log "$scen / $target: wrk ($mode over $(grep -c . "$list") URL(s))$( ((ROUNDS > 1)) && [[ $mode == loop ]] && echo ", round $ROUND of $ROUNDS")"
  if [[ -n $admin ]]; then scrape "$admin" >"$p.metrics-before.json"; fi
  if [[ -n $oadmin ]]; then scrape "$oadmin" >"$p.origin-before.json"; fi
  run_wrk "$tag" "$target" "$base" "$list" "$mode" "$count"
  if [[ -n $admin ]]; then scrape "$admin" >"$p.metrics-after.json"; fi
  if [[ -n $oadmin ]]; then scrape "$oadmin" >"$p.origin-after.json"; fi
  run_ttfb "$tag" "$target" "$base" "$tpaths"
  [[ -n $admin ]] && args+=(--metrics-before "$p.metrics-before.json" --metrics-after "$p.metrics-after.json")
  [[ -n $oadmin ]] && args+=(--origin-before "$p.origin-before.json" --origin-after "$p.origin-after.json")
  [[ $mode == once ]] && args+=(--list-entries "$(grep -c . "$list")")
  record --scenario "$scen" --target "$target" --kind "$kind" --description "$desc" --round "$ROUND" \
    --wrk "$p.wrk.json" --ttfb "$p.ttfb.txt" "${args[@]}"
}

for size in 4k 1m; do
  cid_var=CID_${size^^}
  cid=${!cid_var}
  list=$LISTS/hit-$size.txt
  tp=$(ttfb_paths "$list" "$TTFB_SAMPLES")
  warm "$URL_main/ipfs/$cid" 20
  warm "$URL_static/ipfs/$cid" 20
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    # Odd rounds start with cidgate, even ones with nginx: drift on a shared machine then
    # favours neither side.
    order="cidgate nginx"
    ((ROUND % 2)) || order="nginx cidgate"
    for who in $order; do
      if [[ $who == cidgate ]]; then
        measure "hit-$size" cidgate cidgate "$URL_main" "$list" loop 0 "$tp" "$ADMIN_main" "" \
          "one $size object requested repeatedly from cidgate (memory cache when built in, else embedded store)"
      else
        measure "hit-$size" nginx-static nginx "$URL_static" "$list" loop 0 "$tp" "" "" \
          "the same bytes as a static file from nginx (sendfile, open_file_cache)"
      fi
    done
  done
  ROUND=1
done

ZT=$(ttfb_paths "$ZIPF_LIST" "$TTFB_SAMPLES" $((ZIPF_LEN / 2)))
if ((FEAT_HOT)); then
  measure zipf cidgate-hot cidgate "$URL_edge" "$ZIPF_LIST" once 1 "$ZT" "$ADMIN_edge" "$ADMIN_origin" \
    "cidgate cache tier, empty store, hot tier = origin cidgate; cold at start"
else
  record_skip_reason=${HOT_REASON:-not available in this build}
  python3 "$LIB/results.py" skip --runs "$RUNS" --scenario zipf --target cidgate-hot --kind cidgate \
    --description "cidgate cache tier, empty store, hot tier = origin cidgate" --reason "$record_skip_reason"
fi
measure zipf nginx-proxy_cache nginx "$URL_proxy" "$ZIPF_LIST" once 1 "$ZT" "" "$ADMIN_origin" \
  "nginx proxy_cache (disk) in front of the origin cidgate; cold at start"
measure zipf cidgate-embedded cidgate "$URL_main" "$ZIPF_LIST" once 1 "$ZT" "$ADMIN_main" "" \
  "reference: cidgate with the content in its own store"

# ------------------------------------------------------------------------------------ report
CONFIG_JSON=$(python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"duration": a[1], "connections": int(a[2]), "threads": int(a[3]), "ttfb_samples": int(a[4]), "zipf_objects": int(a[5]), "zipf_exponent": float(a[6]), "zipf_requests": int(a[7]), "once_cap": a[8], "cache_memory": a[9], "quick": a[10] == "1", "nginx_cache_lock": a[11], "wrk_timeout": "10s", "rounds": int(a[12])}))' \
  "$DURATION" "$CONNECTIONS" "$THREADS" "$TTFB_SAMPLES" "$ZIPF_OBJECTS" "$ZIPF_EXPONENT" "$ZIPF_REQUESTS" "$ZIPF_CAP" "$CACHE_MEMORY" "$QUICK" "$NGINX_CACHE_LOCK" "$ROUNDS")
FEATURES_JSON=$(printf '{"memory_cache": %s, "hot_tier": %s, "metrics": %s, "tier_header": %s}' \
  "$([[ $FEAT_MEMORY == 1 ]] && echo true || echo false)" "$([[ $FEAT_HOT == 1 ]] && echo true || echo false)" \
  "$([[ $FEAT_METRICS == 1 ]] && echo true || echo false)" "$([[ $FEAT_TIER == 1 ]] && echo true || echo false)")
note_args=()
for n in "${NOTES[@]+"${NOTES[@]}"}"; do note_args+=(--note "$n"); done
python3 "$LIB/results.py" meta --bin "$BIN" --repo "$REPO" --nginx "$NGINX" --config "$CONFIG_JSON" \
  --features "$FEATURES_JSON" --manifest "$M" "${note_args[@]+"${note_args[@]}"}" >"$RAW/meta.json"
mkdir -p "$RESULTS_DIR"
TS=$(date -u +%Y%m%dT%H%M%SZ)
python3 "$LIB/results.py" report --runs "$RUNS" --meta "$RAW/meta.json" --prefix "$RESULTS_DIR/$TS"
log "results: $RESULTS_DIR/$TS.json, $TS.md, $TS.svg"
