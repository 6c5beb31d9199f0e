# Shared set-up of loadtest/disk.sh and loadtest/disk_zipf.sh (sourced): NAME must be set.
# Gives log, free_port, wait_ready, NGINX, and WORK (a fresh directory under /var/tmp that
# nginx's unprivileged workers can reach), cleaned up at exit with every pid in PIDS and the
# nginx started under $WORK/nginx (KEEP=1 keeps the directory).
log() { printf '[%s %s] %s\n' "$NAME" "$(date +%H:%M:%S)" "$*" >&2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { log "nginx is needed"; exit 1; }
[ -x "$BIN" ] || { log "no $BIN: cargo build --release"; exit 1; }
umask 022
WORK=$(mktemp -d "/var/tmp/cidgate-$NAME.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for pid in "$WORK"/nginx/nginx.pid "$WORK"/*/nginx/nginx.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done; return 1; }

# nginx_head DIR: the start of an nginx.conf whose files live under DIR (pid, log, temp
# paths); the caller adds its server blocks and the closing brace of `http`.
nginx_head() {
  mkdir -p "$1/tmp"
  cat <<EOC
worker_processes 1;
worker_rlimit_nofile 65536;
daemon on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; server_tokens off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
EOC
}

# start_cidgate DATA_DIR PORT ADMIN_PORT [VAR=VALUE ...]: `cidgate serve` in the background
# (no sample, no access log, log in DATA_DIR.log), waited for until ready; its pid joins PIDS.
start_cidgate() {
  local dir=$1 port=$2 aport=$3
  shift 3
  env CIDGATE_SERVER__SAMPLE=false CIDGATE_TELEMETRY__ACCESS_LOG=false "$@" RUST_LOG=warn \
    "$BIN" --data-dir "$dir" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" \
    >"$dir.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$aport" || { log "cidgate did not start: $(tail -3 "$dir.log")"; exit 1; }
}
