# Sourced by the load-test scripts: runs `cidgate serve` on free loopback ports. Needs $bin (the
# binary), $work (a scratch directory) and a $pids array that the caller's exit trap kills.

# start_cidgate NAME DIR [VAR=VALUE...]: starts a server in the background and waits until it
# has announced both listeners; its pid joins $pids and goes to $work/NAME.pid.
start_cidgate() {
  local name=$1 dir=$2
  shift 2
  env CIDGATE_SERVER__SAMPLE=false RUST_LOG=warn "$@" \
    "$bin" --data-dir "$dir" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  for _ in $(seq 200); do grep -q "cidgate: admin" "$work/$name.out" 2>/dev/null && return; sleep 0.05; done
  echo "cidgate $name did not start: $(cat "$work/$name.err")" >&2
  return 1
}

# cidgate_url NAME public|admin: the base URL that server announced.
cidgate_url() { sed -n "s/^cidgate: $2 //p" "$work/$1.out"; }

# stop_cidgate NAME: stops a server started by start_cidgate.
stop_cidgate() {
  local pid
  pid=$(cat "$work/$1.pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
