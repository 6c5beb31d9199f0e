#!/usr/bin/env bash
# cidgate fleet harness: HAProxy with CID affinity in front of 3 cidgates, one shared hot node and
# one storage provider, each a host of its own (network namespaces on one bridge, made here).
# See loadtest/README.md ("Fleet") and docs/deploy.md ("A fleet").
#
#   sudo loadtest/fleet.sh              full run: QUICK's workload at 3x scale (about 5 minutes on 2 cores)
#   sudo QUICK=1 loadtest/fleet.sh      the smaller workload (2-3 minutes on 2 cores)
#
# Environment (defaults in brackets; QUICK=1 values after the slash):
#   REQUESTS [36000 / 12000]     length of the request list (the same list for every run)
#   OBJECTS [1500 / 500]         Zipf catalogue (16-512 KiB objects); one-hit objects come on top
#   ONE_HIT_SHARE [0.2]          share of the requests for one-hit objects (each requested once)
#   ONE_HIT_KIB [2-16]           size range of the one-hit objects
#   EXPONENT [1.0]  CONNS [24]   Zipf exponent; keep-alive connections of the client
#   GW_CACHE [96MiB / 32MiB]     memory cache of each fleet gateway; the reference gets 3x
#   FAIL_SECONDS [60 / 24]       length of each failure run (steady load, the list looped):
#                                SIGTERM of a gateway, kill -9 of another, kill -9 of the hot node
#   DRAIN_DELAY []               CIDGATE_SERVER__DRAIN_DELAY of the gateways, if the build has it
#   KEYCHECK_ONLY [0]            1: stop after the balancer key check (its table on stdout)
#   CIDGATE_BIN [target/release/cidgate]  RESULTS_DIR [loadtest/results]  KEEP_WORK [0]
#
# Runs as root (namespaces). Addresses 10.231.0.0/24 exist only inside the namespaces cgf-*;
# nothing is configured in the root namespace and no traffic leaves the machine. The Markdown
# report goes to stdout, progress to stderr; the last line of stdout is
#   fleet: affinity_cold_bytes=A round_robin_cold_bytes=R single_3x_cold_bytes=S sigterm_failed=T kill9_failed=K
# Exit status 1 (after the report) when a failure run moved a key of a surviving gateway.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB=$HERE/lib
FLEET=$REPO/deploy/fleet
START_TS=$(date +%s)

# The workload, and what it should show (derived before running; `fleet.py model` replays the
# list through a model of the edge cache and the report prints its figures next to the measured
# ones). QUICK=1: 500 catalogue objects of 16-512 KiB (log-uniform, ~145 KiB on average), Zipf
# s = 1.0, 9 600 requests; 2 400 one-hit objects of 2-16 KiB (20 % of the requests). Let C be the
# catalogue's requested bytes (~74 MB = 2.2x one gateway's 32 MiB, 0.74x the reference's 96 MiB)
# and O the one-hit bytes (~15 MB, 2 400 x ~6 KiB: small, like the metadata, thumbnails and probes
# that make most one-hit traffic, so they do not drown the catalogue's bytes).
#  - reference, one gateway with 3x the cache: C fits (the hottest ~80 % of it in the hot ring,
#    the rest of the tail is read rarely), so it fetches every block once: S = C + O (~89 MB).
#  - affinity: each gateway owns ~1/3 of the keys, ~25 MB of catalogue against its 32 MiB, so it
#    fetches every block once too: A = C + O, A/S = 1.00 (a gateway with a larger key share could
#    spill a little; the goal allows 10 %).
#  - round robin: every gateway sees every popular key. A block read n times is fetched by
#    3 (1 - (2/3)^n) of the 3 gateways on average: 2.4 C on the first pass over this list (the
#    tail, read 2-5 times, is not seen by all three). And C is 2.2x one gateway's cache, so each
#    gateway also evicts and fetches again the middle of the distribution: about +1.1 C in 12 000
#    requests (the model). R = ~3.5 C + O, R/S = ~3.1; without the one-hit bytes ~3.5.
# The capacity misses grow with the length of the list while S stops at C + O: the same catalogue
# and caches with 36 000 requests would give R/S ~5.9. The full run is therefore the same workload
# at 3x scale (3x the objects, requests and caches): R/S ~2.7-2.8 (Zipf over 3x the objects puts
# a little more of the requests in the tail), A/S = 1.00.
# The gateways keep no fetched blocks on disk (store.keep_fetched = false): with the disk cache on
# (the default), a block evicted from memory comes back from the local disk, the cold tier sees
# only each gateway's first fetch and no configuration ever shows a capacity miss.
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  REQUESTS=${REQUESTS:-12000} FAIL_SECONDS=${FAIL_SECONDS:-24} OBJECTS=${OBJECTS:-500} GW_CACHE=${GW_CACHE:-32MiB}
else
  REQUESTS=${REQUESTS:-36000} FAIL_SECONDS=${FAIL_SECONDS:-60} OBJECTS=${OBJECTS:-1500} GW_CACHE=${GW_CACHE:-96MiB}
fi
ONE_HIT_SHARE=${ONE_HIT_SHARE:-0.2}
ONE_HIT_KIB=${ONE_HIT_KIB:-2-16}
EXPONENT=${EXPONENT:-1.0}
CONNS=${CONNS:-24}
DRAIN_DELAY=${DRAIN_DELAY:-}
CIDGATE_BIN=${CIDGATE_BIN:-$REPO/target/release/cidgate}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KEEP_WORK=${KEEP_WORK:-0}
KEYCHECK_ONLY=${KEYCHECK_ONLY:-0}
# The gateways' server.subdomain_hosts, and the balancer's (render.py --subdomain-host).
SUBDOMAIN_HOST=fleet.test

log() { printf '[fleet %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: the harness creates network namespaces (sudo $0)"
[[ $GW_CACHE =~ ^([0-9]+)MiB$ ]] || die "GW_CACHE must be whole MiB like 32MiB (got $GW_CACHE)"
GW_CACHE_MIB=${BASH_REMATCH[1]}
SINGLE_CACHE=$((GW_CACHE_MIB * 3))MiB
[[ $ONE_HIT_KIB =~ ^([0-9]+)-([0-9]+)$ ]] || die "ONE_HIT_KIB must be MIN-MAX in KiB like 2-16 (got $ONE_HIT_KIB)"
ONE_HIT_MIN_KIB=${BASH_REMATCH[1]} ONE_HIT_MAX_KIB=${BASH_REMATCH[2]}

# ------------------------------------------------------------------------------------ tools
ensure_tools() {
  local missing=()
  command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v flock >/dev/null 2>&1 || missing+=(util-linux)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  fi
  HAPROXY=$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)
  [[ -x $HAPROXY ]] || die "haproxy not found after install"
}

# ------------------------------------------------------------------------------------ topology
P=cgf                       # namespace prefix
NET=10.231.0                # /24, only inside the namespaces
HOSTS=(lb client gw1 gw2 gw3 gw4 hot prov)
declare -A IP=([lb]=$NET.2 [client]=$NET.100 [gw1]=$NET.11 [gw2]=$NET.12 [gw3]=$NET.13 [gw4]=$NET.14
  [hot]=$NET.20 [prov]=$NET.30)
PORT=8080 ADMIN_PORT=8081 LB_PORT=80

in_ns() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }

net_down() {
  local h
  for h in "${HOSTS[@]}" sw; do
    ip netns del "$P-$h" 2>/dev/null || true
  done
}

net_up() {
  net_down
  ip netns add "$P-sw"
  ip -n "$P-sw" link set lo up
  ip -n "$P-sw" link add name br0 type bridge
  ip -n "$P-sw" link set br0 up
  local h
  for h in "${HOSTS[@]}"; do
    ip netns add "$P-$h"
    ip -n "$P-$h" link set lo up
    # Both ends are made inside the namespaces: the root namespace never sees an interface.
    ip -n "$P-sw" link add "v-$h" type veth peer name eth0 netns "$P-$h"
    ip -n "$P-sw" link set "v-$h" master br0 up
    ip -n "$P-$h" addr add "${IP[$h]}/24" dev eth0
    ip -n "$P-$h" link set eth0 up
  done
}

# ------------------------------------------------------------------------------------ cleanup
WORK=""
declare -A PID=()
HAPROXY_PID=""
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local h
  [[ -n $HAPROXY_PID ]] && kill -TERM "$HAPROXY_PID" 2>/dev/null
  for h in "${!PID[@]}"; do kill -TERM "${PID[$h]}" 2>/dev/null; done
  for h in "${!PID[@]}"; do
    for _ in $(seq 100); do kill -0 "${PID[$h]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${PID[$h]}" 2>/dev/null
  done
  [[ -n $HAPROXY_PID ]] && kill -KILL "$HAPROXY_PID" 2>/dev/null
  wait 2>/dev/null
  net_down
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORK == 1 || $rc != 0 ]]; then
      log "work directory kept: $WORK (logs in $WORK/logs)"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}

# ------------------------------------------------------------------------------------ processes
TOKEN=fleet-harness-$RANDOM$RANDOM
GW_ENV=()

# start_cidgate HOST NAME DATA_DIR [VAR=VALUE...]: `cidgate serve` inside namespace cgf-HOST on
# its address; waits until /readyz answers 200.
start_cidgate() {
  local host=$1 name=$2 dir=$3 i
  shift 3
  local addr=${IP[$host]}
  # Not through in_ns: a function run in the background is a subshell, and $! would be its pid.
  ip netns exec "$P-$host" env CIDGATE_SERVER__SAMPLE=false CIDGATE_TELEMETRY__ACCESS_LOG=false \
    CIDGATE_ADMIN__TOKEN="$TOKEN" "$@" "$BIN" --data-dir "$dir" serve \
    --listen "$addr:$PORT" --admin-listen "$addr:$ADMIN_PORT" >>"$WORK/logs/$name.out" 2>>"$WORK/logs/$name.err" 9>&- &
  PID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      die "cidgate ($name) exited at start: $(grep -v '^\s*$' "$WORK/logs/$name.err" | tail -n 3 | tr '\n' ' ')"
    fi
    [[ $(in_ns client curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr:$ADMIN_PORT/readyz") == 200 ]] && return 0
    sleep 0.1
  done
  die "cidgate ($name) not ready within 30 s; see $WORK/logs/$name.err"
}

stop_proc() { # NAME [SIGNAL]: signal, wait until gone
  local name=$1 sig=${2:-TERM} pid=${PID[$1]:-} i
  [[ -n $pid ]] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$name]"
}

# start_gateways N CACHE: fresh (empty) data dirs for gw1..gwN
start_gateways() {
  local n=$1 cache=$2 i
  for ((i = 1; i <= n; i++)); do
    rm -rf "$WORK/data/gw$i"
    start_cidgate "gw$i" "gw$i" "$WORK/data/gw$i" "${GW_ENV[@]}" "CIDGATE_CACHE__MEMORY=$cache"
  done
}

stop_gateways() {
  local i
  for i in 1 2 3 4; do stop_proc "gw$i"; done
}

# lb_start BALANCE SERVER_SPEC...: render deploy/fleet/haproxy.cfg.in and run HAProxy in cgf-lb
lb_start() {
  local balance=$1
  shift
  local args=() s
  for s in "$@"; do args+=(--server "$s"); done
  python3 "$FLEET/render.py" --bind "${IP[lb]}:$LB_PORT" --stats-socket "$WORK/haproxy.sock" \
    --subdomain-host "$SUBDOMAIN_HOST" --balance "$balance" "${args[@]}" >"$WORK/haproxy.cfg" ||
    die "rendering haproxy.cfg failed"
  "$HAPROXY" -c -q -f "$WORK/haproxy.cfg" >>"$WORK/logs/haproxy.err" 2>&1 || die "haproxy -c failed: $(tail -n 3 "$WORK/logs/haproxy.err")"
  ip netns exec "$P-lb" "$HAPROXY" -db -f "$WORK/haproxy.cfg" >>"$WORK/logs/haproxy.out" 2>>"$WORK/logs/haproxy.err" 9>&- &
  HAPROXY_PID=$!
  local i up want=0
  for s in "$@"; do [[ $s == *,disabled ]] || want=$((want + 1)); done
  for ((i = 0; i < 200; i++)); do
    kill -0 "$HAPROXY_PID" 2>/dev/null || die "haproxy exited: $(tail -n 3 "$WORK/logs/haproxy.err")"
    up=$(lb_stat | awk -F, '$1=="gateways" && $18=="UP" {n++} END {print n+0}')
    ((up >= want)) && return 0
    sleep 0.1
  done
  die "haproxy: only $up of $want gateways came up within 20 s"
}

lb_stop() {
  [[ -n $HAPROXY_PID ]] || return 0
  kill -TERM "$HAPROXY_PID" 2>/dev/null || true
  wait "$HAPROXY_PID" 2>/dev/null || true
  HAPROXY_PID=""
}

lb_cmd() { python3 "$LIB/fleet.py" haproxy --socket "$WORK/haproxy.sock" "$@"; }
lb_stat() { lb_cmd show stat 2>/dev/null || true; } # CSV: $2 name, $5 scur, $18 status

scrape() { # OUT: metrics of every cidgate now running (+ hot and provider)
  local targets=() h
  for h in gw1 gw2 gw3 gw4 hot prov; do
    [[ -n ${PID[$h]:-} ]] && targets+=("$h=http://${IP[$h]}:$ADMIN_PORT")
  done
  in_ns client python3 "$LIB/fleet.py" scrape --token "$TOKEN" "${targets[@]}" >"$1"
}

drive() { # RUN [extra args]: the request list once through the balancer
  local run=$1
  shift
  in_ns client python3 "$LIB/fleet.py" drive --lb "${IP[lb]}:$LB_PORT" --conns "$CONNS" \
    --list "$WORK/lists/requests.txt" --out "$WORK/$run.drive.json" --records "$WORK/$run.records.txt" "$@"
}

measured_run() { # RUN: scrape, drive once, scrape
  scrape "$WORK/$1.before.json"
  drive "$1"
  scrape "$WORK/$1.after.json"
}

specs() { # N [disabled...]: server specs gw1..gwN (+ gw4 as a disabled spare when N=3)
  local n=$1 i out=()
  for ((i = 1; i <= n; i++)); do out+=("gw$i=${IP[gw$i]}:$PORT,$ADMIN_PORT"); done
  ((n == 3)) && out+=("gw4=${IP[gw4]}:$PORT,$ADMIN_PORT,disabled")
  printf '%s\n' "${out[@]}"
}

now() { python3 -c 'import time; print(f"{time.time():.4f}")'; }

# ==================================================================================== main
ensure_tools
# One run at a time: the namespace names are fixed.
# (servers are started with 9>&-: they do not hold the lock)
exec 9>/run/cidgate-fleet.lock
flock -n 9 || die "another fleet.sh is running (/run/cidgate-fleet.lock)"
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidgate-fleet.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/logs" "$WORK/data" "$WORK/bin"
if [[ ! -x $CIDGATE_BIN ]]; then
  log "no binary at $CIDGATE_BIN: building it (cargo build --release)"
  (cd "$REPO" && flock /tmp/cidgate-cargo.lock cargo build --release >&2) || die "cargo build --release failed"
fi
BIN=$WORK/bin/cidgate
cp "$CIDGATE_BIN" "$BIN" || die "cannot copy $CIDGATE_BIN"
"$BIN" --version >/dev/null || die "no working cidgate binary at $CIDGATE_BIN"
log "cidgate: $("$BIN" --version); $("$HAPROXY" -v | head -n 1); work dir $WORK"

NOTES=()
GW_ENV=(
  "CIDGATE_HOT__BACKEND=trustless" "CIDGATE_HOT__URL=http://${IP[hot]}:$PORT"
  "CIDGATE_COLD__PROVIDERS=http://${IP[prov]}:$PORT"
  "CIDGATE_CACHE__RESPONSES=0" "CIDGATE_POPULARITY__ENABLED=false"
  # Only the memory cache between a gateway and the cold tier (see the workload above).
  "CIDGATE_STORE__KEEP_FETCHED=false"
  "CIDGATE_SERVER__TRUSTED_PROXIES=${IP[lb]}/32" "CIDGATE_SERVER__SUBDOMAIN_HOSTS=$SUBDOMAIN_HOST"
  # No DNS lookups: the DNSLink sites of the key check come from dnslink.names (added below).
  "CIDGATE_DNSLINK__ALLOWED="
)
if [[ -n $DRAIN_DELAY ]]; then
  if env CIDGATE_SERVER__DRAIN_DELAY="$DRAIN_DELAY" "$BIN" --data-dir "$WORK/data/probe" config >/dev/null 2>&1; then
    GW_ENV+=("CIDGATE_SERVER__DRAIN_DELAY=$DRAIN_DELAY")
    NOTES+=("gateways ran with server.drain_delay = $DRAIN_DELAY")
  else
    log "this build has no server.drain_delay: DRAIN_DELAY=$DRAIN_DELAY ignored"
    NOTES+=("DRAIN_DELAY=$DRAIN_DELAY asked for, but this build has no server.drain_delay: not used")
  fi
fi
rm -rf "$WORK/data/probe"

log "network namespaces $P-{sw,${HOSTS[*]// /,}} on a bridge, ${NET}.0/24 inside them only"
net_up

# ------------------------------------------------------------------------------------ content
log "content: $OBJECTS catalogue objects + one-hit objects of $ONE_HIT_KIB KiB, $REQUESTS requests"
python3 "$LIB/fleet.py" gen --out "$WORK" --objects "$OBJECTS" --requests "$REQUESTS" \
  --one-hit-share "$ONE_HIT_SHARE" --one-hit-min-kib "$ONE_HIT_MIN_KIB" --one-hit-max-kib "$ONE_HIT_MAX_KIB" \
  --exponent "$EXPONENT" --subdomain-host "$SUBDOMAIN_HOST" >"$WORK/gen.json" ||
  die "content generation failed"
# What the runs should give, from a model of the edge cache (before any run).
python3 "$LIB/fleet.py" model --work "$WORK" --gw-cache-mib "$GW_CACHE_MIB" >"$WORK/model.json" || die "model failed"
log "expected (model): $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("catalogue {:.2f}x one gateway'"'"'s cache; affinity/single-3x {:.2f}, round robin/single-3x {:.2f}".format(m["catalogue_over_gw_cache"], m["affinity_over_single_3x"], m["round_robin_over_single_3x"]))' "$WORK/model.json")"
# DNSLink sites (directories of the content) for the key check, in every gateway's dnslink.names
SITES=$(python3 "$LIB/fleet.py" sites --work "$WORK" --count 16) || die "DNSLink sites failed"
GW_ENV+=("CIDGATE_DNSLINK__NAMES=$SITES")
for d in "$WORK"/files/part*; do
  "$BIN" --data-dir "$WORK/data/prov" add "$d" >/dev/null 2>>"$WORK/logs/add.err" || die "cidgate add $d failed: $(tail -n 3 "$WORK/logs/add.err")"
done
rm -rf "$WORK/files"
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("{objects} objects, {content_bytes} bytes; {distinct_requested} distinct requested ({distinct_requested_bytes} bytes)".format(**m))' "$WORK/gen.json" >"$WORK/gen.txt"
log "content: $(cat "$WORK/gen.txt")"

start_cidgate prov prov "$WORK/data/prov"
start_cidgate hot hot "$WORK/data/hot"

# Every CID (the dag-pb ones are computed by fleet.py) answered by the provider, bytes checked.
in_ns client python3 "$LIB/fleet.py" drive --lb "${IP[prov]}:$PORT" --conns 8 --list "$WORK/lists/all.txt" \
  --out "$WORK/check.drive.json" 2>>"$WORK/logs/check.err" || die "provider check failed"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["failed"] == 0 else 1)' "$WORK/check.drive.json" ||
  die "the provider did not serve every object with the right length: $(cat "$WORK/check.drive.json")"

# ------------------------------------------------------------------------------------ key check
# Every form of request the balancer keys, against the expected key (X-Fleet-Key) and the
# gateway that answered (X-Fleet-Gateway): /ipfs/{cid}[/file] and {cid}.ipfs.fleet.test on the
# CID, also on a path gateway host with .ipfs. in its name (gw.ipfs.example) and on fleet.test
# itself; /ipns/{name} and {name}.ipns.fleet.test on the name; a DNSLink site's Host (also
# docs.ipfs.tech), /ipns/{site} and {site-label}.ipns.fleet.test on the site.
log "balancer key: every request form of a CID, IPNS name or DNSLink site goes to its key's gateway"
start_gateways 3 "$GW_CACHE"
mapfile -t S3 < <(specs 3)
lb_start affinity "${S3[@]}"
in_ns client python3 "$LIB/fleet.py" keycheck --lb "${IP[lb]}:$LB_PORT" --work "$WORK" \
  --subdomain-host "$SUBDOMAIN_HOST" --out "$WORK/keycheck.json" >"$WORK/keycheck.txt" ||
  die "key check failed:
$(cat "$WORK/keycheck.txt")"
while IFS= read -r line; do log "key check: $line"; done <"$WORK/keycheck.txt"
lb_stop
stop_gateways
if [[ $KEYCHECK_ONLY == 1 ]]; then
  cat "$WORK/keycheck.txt"
  log "KEYCHECK_ONLY=1: done"
  exit 0
fi

# ------------------------------------------------------------------------------------ runs
log "run 1/3: affinity (consistent hash on the key), 3 gateways of $GW_CACHE"
start_gateways 3 "$GW_CACHE"
lb_start affinity "${S3[@]}"
measured_run affinity

# The warm fleet: replay as it is, then with gw4 joined (sibling-tier upper bound).
log "join: replay on the warm fleet (3 gateways)"
measured_run replay3
log "join: which keys each owner holds now (HEAD only-if-cached)"
in_ns client python3 "$LIB/fleet.py" holding --records "$WORK/replay3.records.txt" \
  --gateway "gw1=${IP[gw1]}:$PORT" --gateway "gw2=${IP[gw2]}:$PORT" --gateway "gw3=${IP[gw3]}:$PORT" \
  >"$WORK/holding.json" || die "holding probe failed"
rm -rf "$WORK/data/gw4"
start_cidgate gw4 gw4 "$WORK/data/gw4" "${GW_ENV[@]}" "CIDGATE_CACHE__MEMORY=$GW_CACHE"
lb_cmd set server gateways/gw4 state ready >/dev/null
for ((i = 0; i < 100; i++)); do
  [[ $(lb_stat | awk -F, '$1=="gateways" && $2=="gw4" {print $18}') == UP ]] && break
  sleep 0.1
done
[[ $(lb_stat | awk -F, '$1=="gateways" && $2=="gw4" {print $18}') == UP ]] || die "gw4 did not come up in the balancer"
log "join: gw4 is in the ring; replay"
measured_run replay4
python3 "$LIB/fleet.py" sibling --work "$WORK" --before "$WORK/replay3.records.txt" --after "$WORK/replay4.records.txt" \
  --holding "$WORK/holding.json" >"$WORK/sibling.json" || die "sibling figures failed"
lb_stop
stop_gateways

log "run 2/3: round robin, 3 gateways of $GW_CACHE"
start_gateways 3 "$GW_CACHE"
lb_start roundrobin "${S3[@]}"
measured_run roundrobin
lb_stop
stop_gateways

log "run 3/3: one gateway with $SINGLE_CACHE (in $P-gw1) behind the same balancer"
start_gateways 1 "$SINGLE_CACHE"
lb_start affinity "gw1=${IP[gw1]}:$PORT,$ADMIN_PORT"
measured_run single
lb_stop
stop_gateways

# ------------------------------------------------------------------------------------ failures
# failure_run RUN VICTIM SIGNAL: steady load (the list looped for FAIL_SECONDS) on a fresh fleet;
# the victim gets SIGNAL at 1/3, is started again (empty) at 1/2, the load ends at FAIL_SECONDS.
failure_run() {
  local run=$1 victim=$2 sig=$3 scur t_sig t_gone t_back third half
  start_gateways 3 "$GW_CACHE"
  lb_start affinity "${S3[@]}"
  third=$(python3 -c "print($FAIL_SECONDS / 3)")
  half=$(python3 -c "print($FAIL_SECONDS / 2)")
  drive "$run" --seconds "$FAIL_SECONDS" &
  local dpid=$!
  sleep "$third"
  scur=$(lb_stat | awk -F, -v s="$victim" '$1=="gateways" && $2==s {print $5}')
  t_sig=$(now)
  log "$run: SIG$sig to $victim (HAProxy: $scur connections open to it)"
  stop_proc "$victim" "$sig"
  t_gone=$(now)
  sleep "$(python3 -c "print(max(0.0, $half - $third - ($t_gone - $t_sig)))")"
  t_back=$(now)
  start_cidgate "$victim" "$victim" "$WORK/data/$victim" "${GW_ENV[@]}" "CIDGATE_CACHE__MEMORY=$GW_CACHE"
  log "$run: $victim started again"
  wait "$dpid" || die "driver failed in $run"
  python3 -c 'import json,sys; a=sys.argv; json.dump({"victim": a[1], "signal": a[2], "signal_at": float(a[3]), "exited_at": float(a[4]), "restarted_at": float(a[5]), "open_connections_at_kill": int(a[6] or -1), "load_seconds": float(a[7])}, open(a[8], "w"))' \
    "$victim" "$sig" "$t_sig" "$t_gone" "$t_back" "$scur" "$FAIL_SECONDS" "$WORK/$run.events.json"
  lb_stop
  stop_gateways
}
# key_moves RUN: each key's gateway before the signal, while the victim was away and after it
# rejoined, against the affinity run's (the same ring): the survivors' keys must not move.
MOVED=()
key_moves() {
  python3 "$LIB/fleet.py" moves --work "$WORK" --run "$1" >"$WORK/$1.moves.json" 2>"$WORK/$1.moves.txt" ||
    die "key moves of $1 failed: $(cat "$WORK/$1.moves.txt")"
  log "$(cat "$WORK/$1.moves.txt")"
  python3 -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1]))["survivor_keys_moved"] else 0)' \
    "$WORK/$1.moves.json" || { MOVED+=("$1"); log "WARNING: $1 moved keys of the surviving gateways"; }
}
log "failure 1/2: SIGTERM to gw2 under steady load, then gw2 back"
failure_run sigterm gw2 TERM
key_moves sigterm
log "failure 2/2: kill -9 of gw3 under steady load, then gw3 back"
failure_run kill9 gw3 KILL
key_moves kill9

# The shared hot node dies under steady load: every gateway's hot-node circuit opens and every
# /readyz answers 503; the balancer's liveness fallback (backend gateways_alive) keeps serving.
hotdown_run() {
  local t_sig t_back third two_thirds down_seen=0 i alive
  start_gateways 3 "$GW_CACHE"
  lb_start affinity "${S3[@]}"
  third=$(python3 -c "print($FAIL_SECONDS / 3)")
  two_thirds=$(python3 -c "print(2 * $FAIL_SECONDS / 3)")
  drive hotdown --seconds "$FAIL_SECONDS" &
  local dpid=$!
  sleep "$third"
  t_sig=$(now)
  log "hotdown: SIGKILL to the hot node"
  stop_proc hot KILL
  # watch the readiness-checked backend until two thirds of the load
  while python3 -c "import sys,time; sys.exit(0 if time.time() < $t_sig + $two_thirds - $third else 1)"; do
    if [[ $(lb_stat | awk -F, '$1=="gateways" && $2!="BACKEND" && $2!="FRONTEND" && $18=="UP" {n++} END {print n+0}') == 0 ]]; then
      down_seen=1
    fi
    sleep 0.5
  done
  t_back=$(now)
  start_cidgate hot hot "$WORK/data/hot"
  log "hotdown: hot node started again (every gateway marked not ready meanwhile: $down_seen)"
  wait "$dpid" || die "driver failed in hotdown"
  alive=$(lb_stat | awk -F, '$1=="gateways_alive" && $2=="BACKEND" {print $8}')
  python3 -c 'import json,sys; a=sys.argv; json.dump({"victim": "hot", "signal": "KILL", "signal_at": float(a[1]), "hot_restarted_at": float(a[2]), "all_gateways_not_ready_seen": a[3] == "1", "fallback_requests": int(a[4] or 0), "load_seconds": float(a[5])}, open(a[6], "w"))' \
    "$t_sig" "$t_back" "$down_seen" "$alive" "$FAIL_SECONDS" "$WORK/hotdown.events.json"
  lb_stop
  stop_gateways
}
log "failure 3/3: the shared hot node killed under steady load"
hotdown_run

# ------------------------------------------------------------------------------------ report
mkdir -p "$RESULTS_DIR"
TS=$(date -u +%Y%m%dT%H%M%SZ)
NOTES+=("provider and hot node are cidgates on the same 2-core machine with no link delay (no netem in this kernel): latencies are CPU-bound, not network-bound")
printf '%s\n' "${NOTES[@]}" >"$WORK/notes.txt"
python3 - "$WORK/meta.json" "$WORK/notes.txt" "$BIN" "$HAPROXY" "$QUICK" "$CONNS" "$GW_CACHE" "$SINGLE_CACHE" "$FAIL_SECONDS" "$START_TS" <<'PY'
import json, os, subprocess, sys, time
out, notes, bin_, haproxy, quick, conns, gw_cache, single_cache, fail_s, start = sys.argv[1:]
json.dump({
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "command": ("QUICK=1 " if quick == "1" else "") + "loadtest/fleet.sh",
    "version": subprocess.run([bin_, "--version"], capture_output=True, text=True).stdout.strip(),
    "haproxy": subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0],
    "cpus": os.cpu_count(), "quick": int(quick), "conns": int(conns),
    "gw_cache": gw_cache, "single_cache": single_cache, "fail_seconds": float(fail_s),
    "wall_s": int(time.time()) - int(start),
    "notes": [n for n in open(notes).read().split("\n") if n],
}, open(out, "w"), indent=2)
PY
python3 "$LIB/fleet.py" report --work "$WORK" --meta "$WORK/meta.json" --prefix "$RESULTS_DIR/fleet-$TS" ||
  die "report failed"
log "results: $RESULTS_DIR/fleet-$TS.md, fleet-$TS.json"
if ((${#MOVED[@]})); then
  log "FAILED: keys of surviving gateways moved in ${MOVED[*]} (see $WORK/*.moves.json)"
  exit 1
fi
