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
