#!/usr/bin/env bash
# A/B of two cidgate builds or configurations on one URL, in alternating rounds.
#
# Two `cidgate serve` run side by side on copies of one store holding one generated file; wrk
# measures A and B in turn (who goes first alternates), and the median of each side is
# compared. Used for the figures "X costs nothing on the hit path" in docs/benchmarks.md, where
# a difference of a few percent must be told from a shared machine's drift: run-to-run drift
# hits both sides of a round alike.
#
#   loadtest/ab.sh
#   B_ENV="CIDGATE_DENYLIST__FILES=/tmp/1m.deny" loadtest/ab.sh
#   A_BIN=/tmp/cidgate-old B_BIN=target/release/cidgate loadtest/ab.sh
#
# Environment (defaults in brackets):
#   A_BIN, B_BIN [target/release/cidgate]   the two binaries (copied before use)
#   A_ENV, B_ENV [""]     space-separated VAR=value settings of each server
#   COMMON_ENV ["CIDGATE_TELEMETRY__ACCESS_LOG=false"]   settings of both
#   SIZE [4096]           bytes of the file served
#   FORMAT [raw]          raw: /ipfs/{cid}?format=raw of its single block; file: the file
#   ROUNDS [4]  DURATION [6s]  CONNECTIONS [64]  THREADS [2]
#   PROTO [h1]            h1: wrk over HTTP/1.1; h2c: h2load over HTTP/2 (prior knowledge),
#                         STREAMS [10] concurrent streams per connection
#   MISS_EVERY [0]        >0 (h1): every n-th request asks for `Range: bytes=0-`, which the
#                         response cache does not answer (the handler works it out); 1: all
#   DENYLIST_RULES [0]    >0: writes a list of that many double-hashed rules (none matching)
#                         to the work dir and sets it on B (CIDGATE_DENYLIST__FILES)
#   KEEP_WORK [0]         1 keeps the work dir (logs)
#
# Only 127.0.0.1 is used. Progress on stderr; one Markdown table row and a summary on stdout,
# with each server's CPU time per request (user + system, from /proc; median of the rounds).
# Exits 1 when any answer was not a 2xx (wrk's "Non-2xx" count), so a broken B cannot look fast.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

A_BIN=${A_BIN:-$REPO/target/release/cidgate}
B_BIN=${B_BIN:-$REPO/target/release/cidgate}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
COMMON_ENV=${COMMON_ENV:-CIDGATE_TELEMETRY__ACCESS_LOG=false}
SIZE=${SIZE:-4096}
FORMAT=${FORMAT:-raw}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-6s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
DENYLIST_RULES=${DENYLIST_RULES:-0}
KEEP_WORK=${KEEP_WORK:-0}
PROTO=${PROTO:-h1}
STREAMS=${STREAMS:-10}
MISS_EVERY=${MISS_EVERY:-0}

log() { echo "ab: $*" >&2; }
die() {
  log "error: $*"
  exit 2
}

command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"
case $PROTO in
h1) ;;
h2c) command -v h2load >/dev/null || die "h2load is not installed (apt-get install -y nghttp2-client)" ;;
*) die "PROTO is h1 or h2c, not $PROTO" ;;
esac
for b in "$A_BIN" "$B_BIN"; do
  [[ -x $b ]] || die "no cidgate binary at $b (cargo build --release)"
done

WORK=$(mktemp -d /tmp/cidgate-ab.XXXXXX)
PIDS=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $KEEP_WORK == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Copies, so a rebuild cannot swap a binary in the middle of a run.
cp "$A_BIN" "$WORK/a.bin"
cp "$B_BIN" "$WORK/b.bin"

head -c "$SIZE" /dev/urandom >"$WORK/content.bin"
mkdir -p "$WORK/store-a"
CID=$("$WORK/a.bin" --data-dir "$WORK/store-a" add "$WORK/content.bin" 2>"$WORK/add.err" |
  tail -n 1 | tr -d '[:space:]')
[[ -n $CID ]] || die "cidgate add printed no CID; see $WORK/add.err"
cp -a "$WORK/store-a" "$WORK/store-b"
case $FORMAT in
raw) TARGET="/ipfs/$CID?format=raw" ;;
file) TARGET="/ipfs/$CID" ;;
*) die "FORMAT is raw or file, not $FORMAT" ;;
esac

if ((DENYLIST_RULES > 0)); then
  python3 "$HERE/lib/gen_denylist.py" "$DENYLIST_RULES" "$WORK/list.deny"
  B_ENV="$B_ENV CIDGATE_DENYLIST__FILES=$WORK/list.deny"
fi

# start NAME BIN STORE ENV -> sets URL_NAME
start() {
  local name=$1 bin=$2 store=$3 envs=$4 out=$WORK/$1.out i
  # shellcheck disable=SC2086 # ENV lists are word-split on purpose
  env CIDGATE_SERVER__SAMPLE=false $COMMON_ENV $envs "$bin" --data-dir "$store" serve \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for ((i = 0; i < 600; i++)); do
    grep -q '^cidgate: admin ' "$out" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "cidgate ($name) exited at start; see $WORK/$name.err"
    sleep 0.1
  done
  printf -v "URL_$name" '%s' "$(sed -n 's/^cidgate: public //p' "$out" | head -n 1)"
}

start a "$WORK/a.bin" "$WORK/store-a" "$A_ENV"
start b "$WORK/b.bin" "$WORK/store-b" "$B_ENV"
for side in a b; do
  url_var=URL_$side
  code=$(curl -s -o /dev/null -w '%{http_code}' "${!url_var}$TARGET")
  [[ $code == 200 ]] || die "$side answered $code for $TARGET; see $WORK/$side.err"
done
log "A: $A_BIN ${A_ENV:-(defaults)}"
log "B: $B_BIN ${B_ENV:-(defaults)}"
log "$TARGET ($SIZE bytes), $PROTO, -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds"
WRK_ARGS=()
if ((MISS_EVERY > 0)); then
  cat >"$WORK/miss.lua" <<EOF
n = 0
request = function()
  n = n + 1
  if n % $MISS_EVERY == 0 then
    return wrk.format("GET", nil, {["Range"] = "bytes=0-"})
  end
  return wrk.format("GET", nil)
end
EOF
  WRK_ARGS=(-s "$WORK/miss.lua")
  log "every ${MISS_EVERY}th request with Range: bytes=0- (worked out by the handler)"
fi

# cpu_ticks PID -> "user system" clock ticks the process has used so far (/proc/PID/stat).
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# rate SIDE -> "req/s cpu-us-per-request user-us-per-request" of one wrk run: the server's CPU
# time (user + system, from /proc) over the requests wrk completed. It runs in a command
# substitution (a subshell), so a non-2xx answer is noted in a file, not in a variable.
BAD_FILE=$WORK/non-2xx
rate() {
  local url_var=URL_$1 pid out before after
  pid=${PIDS[0]}
  [[ $1 == b ]] && pid=${PIDS[1]}
  before=$(cpu_ticks "$pid")
  if [[ $PROTO == h2c ]]; then
    out=$(h2load -t"$THREADS" -c"$CONNECTIONS" -m"$STREAMS" -D"${DURATION%s}" "${!url_var}$TARGET" 2>/dev/null)
    after=$(cpu_ticks "$pid")
    if ! grep -Eq "status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out"; then
      log "$1: $(grep 'status codes' <<<"$out")"
      echo "$1" >>"$BAD_FILE"
    fi
    # As wrk prints them: the rate and the count of answers.
    out=$(awk '/^finished in/ {gsub(",", "", $4); print "Requests/sec: " $4}
               /^requests:/ {print $8 " requests in (h2load)"}' <<<"$out")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${WRK_ARGS[@]}" "${!url_var}$TARGET")
    after=$(cpu_ticks "$pid")
    if grep -q 'Non-2xx' <<<"$out"; then
      log "$1: $(grep 'Non-2xx' <<<"$out")"
      echo "$1" >>"$BAD_FILE"
    fi
  fi
  awk -v before="$before" -v after="$after" -v tick="$TICK" '
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    END {
      split(before, b, " "); split(after, a, " ")
      total = (a[1] + a[2] - b[1] - b[2]) / tick * 1e6; user = (a[1] - b[1]) / tick * 1e6
      printf "%s %.2f %.2f\n", rps, (n ? total / n : 0), (n ? user / n : 0)
    }' <<<"$out"
}

A_RATES=()
B_RATES=()
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then
    a=$(rate a)
    b=$(rate b)
  else
    b=$(rate b)
    a=$(rate a)
  fi
  A_RATES+=("${a// /,}")
  B_RATES+=("${b// /,}")
  log "round $r: A ${a%% *} req/s, B ${b%% *} req/s (server CPU us/request, user: A ${a#* }, B ${b#* })"
done

python3 - "${A_RATES[*]}" "${B_RATES[*]}" <<'PY'
import statistics, sys
rows = lambda arg: [[float(v) for v in x.split(",")] for x in arg.split()]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
med = lambda xs, i: statistics.median(x[i] for x in xs)
ma, mb = med(a, 0), med(b, 0)
each = lambda xs: ", ".join(f"{x[0] / 1000:.1f}k" for x in xs)
print(f"| {len(a)} | {each(a)} | {each(b)} | {ma / 1000:.1f}k | {mb / 1000:.1f}k | {mb / ma:.2f} |")
print(f"ab: A median {ma:.0f} req/s, B median {mb:.0f} req/s, B/A {mb / ma:.3f}")
print(f"ab: server CPU per request (median): A {med(a, 1):.2f} us (user {med(a, 2):.2f}), "
      f"B {med(b, 1):.2f} us (user {med(b, 2):.2f})")
PY
if [[ -s $BAD_FILE ]]; then
  log "some answers were not 2xx: the figures above do not count"
  exit 1
fi
