#!/usr/bin/env bash
# Memory-cache hits over TLS: cidgate (rustls) against nginx (OpenSSL) serving the same bytes as
# static files, with the same self-signed P-256 certificate, over HTTP/1.1 (wrk) and HTTP/2
# (h2load), at 4 KiB and 1 MiB. ROUNDS alternating rounds per case, median, ratio.
#
#   cargo build --release && loadtest/tls.sh
#
# Environment: DURATION [8] seconds  ROUNDS [3]  CONNECTIONS [64]  STREAMS [10] (h2 per connection)
#   BIN [target/release/cidgate]
# Needs wrk, h2load (Debian: nghttp2-client), nginx, openssl.
# Last lines:  tls: proto=P size=S cidgate_rps=C nginx_rps=N ratio=R
# Only 127.0.0.1 is used.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB=$HERE/lib
BIN=${BIN:-$REPO/target/release/cidgate}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
STREAMS=${STREAMS:-10}
NAME=tls
# shellcheck source=lib/nginx_work.sh
. "$LIB/nginx_work.sh"
for tool in wrk h2load openssl; do
  command -v "$tool" >/dev/null || { log "$tool is needed (Debian: wrk, nghttp2-client, openssl)"; exit 1; }
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/files" "$WORK/docroot/ipfs" "$WORK/nginx"
declare -A CID
for size in 4096 1048576; do
  head -c "$size" /dev/urandom >"$WORK/files/$size.bin"
  CID[$size]=$("$BIN" --data-dir "$WORK/store" add "$WORK/files/$size.bin" 2>/dev/null)
  ln "$WORK/files/$size.bin" "$WORK/docroot/ipfs/${CID[$size]}"
done

port=$(free_port); aport=$(free_port); nport=$(free_port)
start_cidgate "$WORK/store" "$port" "$aport" \
  CIDGATE_SERVER__TLS_CERT="$WORK/cert.pem" CIDGATE_SERVER__TLS_KEY="$WORK/key.pem"
{ nginx_head "$WORK/nginx"; cat <<EOF; } >"$WORK/nginx/nginx.conf"
  open_file_cache max=1000 inactive=60s;
  ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
  ssl_protocols TLSv1.3; ssl_session_cache shared:tls:10m;
  server {
    listen 127.0.0.1:$nport ssl http2 backlog=4096;
    root $WORK/docroot;
    location /ipfs/ { add_header Cache-Control "public, max-age=29030400, immutable"; }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
# Warm: cidgate's memory cache (and its zero-copy arena, unused over TLS) holds both blocks.
for size in 4096 1048576; do
  for base in "https://127.0.0.1:$port" "https://127.0.0.1:$nport"; do
    for _ in 1 2 3; do curl -skf -o /dev/null "$base/ipfs/${CID[$size]}"; done
  done
done

measure() { # PROTO URL -> req/s (only 2xx answers count: anything else fails the run)
  local out
  if [ "$1" = h1 ]; then
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s "$2")
    ! grep -q "Non-2xx" <<<"$out" || { log "non-2xx answers: $out"; exit 1; }
    awk '/^Requests\/sec/ {print int($2)}' <<<"$out"
  else
    out=$(h2load -t2 -c"$CONNECTIONS" -m"$STREAMS" -D"$DURATION" "$2" 2>/dev/null)
    grep -Eq "status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out" || { log "non-2xx answers: $out"; exit 1; }
    awk '/^finished in/ {gsub(",", "", $4); print int($4)}' <<<"$out"
  fi
}

for proto in h1 h2; do
  for size in 4096 1048576; do
    c_all=(); n_all=()
    for r in $(seq "$ROUNDS"); do
      order="cidgate nginx"; ((r % 2 == 0)) && order="nginx cidgate"
      for who in $order; do
        p=$port; [ "$who" = nginx ] && p=$nport
        rps=$(measure "$proto" "https://127.0.0.1:$p/ipfs/${CID[$size]}")
        log "$proto $size round $r $who: $rps req/s"
        if [ "$who" = cidgate ]; then c_all+=("$rps"); else n_all+=("$rps"); fi
      done
    done
    python3 - "$proto" "$size" "${c_all[*]}" "${n_all[*]}" <<'PY'
import statistics, sys
proto, size = sys.argv[1], sys.argv[2]
c, n = [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
cm, nm = statistics.median(c), statistics.median(n)
print(f"tls: proto={proto} size={size} cidgate_rps={cm:.0f} nginx_rps={nm:.0f} ratio={cm / nm:.2f} "
      f"rounds_cidgate={'/'.join('%.0f' % x for x in c)} rounds_nginx={'/'.join('%.0f' % x for x in n)}")
PY
  done
done
