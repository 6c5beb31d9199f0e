#!/usr/bin/env bash
# Disk use and import throughput of the store, for block sizes 4 KiB, 256 KiB, 1 MiB and a
# mix (100 B … 2 MiB), each a CAR of TOTAL bytes of random raw blocks, imported by
# `cidgate import` into a fresh data directory. With BASELINE=path/to/older/cidgate, the same
# CARs are imported by it too, alternating, as the ratio's baseline.
#
#   loadtest/store.sh                      # TOTAL=256 MiB, target/release/cidgate
#   BASELINE=/tmp/cidgate-old TOTAL=$((512<<20)) loadtest/store.sh
#
# Prints one line per (binary, size): content bytes, segment bytes, index bytes, disk bytes
# (du), the ratio disk/content, and import seconds and MB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/cidgate}
TOTAL=${TOTAL:-$((256 << 20))}
WORK=$(mktemp -d /var/tmp/cidgate-store.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
[ -x "$BIN" ] || cargo build --release
for size in 4096 262144 1048576 mix; do
  python3 loadtest/lib/makecar.py "$WORK/$size.car" "$TOTAL" "$size" >/dev/null
  content=$(python3 - "$WORK/$size.car" <<'PY'
import sys
f = open(sys.argv[1], "rb").read()
def varint(b, i):
    n = s = 0
    while True:
        x = b[i]; i += 1; n |= (x & 0x7f) << s; s += 7
        if x < 0x80: return n, i
n, i = varint(f, 0); i += n; total = 0
while i < len(f):
    n, i = varint(f, i); total += n - 36; i += n
print(total)
PY
)
  for which in ${BASELINE:+baseline} new; do
    bin=$BIN; [ "$which" = baseline ] && bin=$BASELINE
    dir="$WORK/data-$which-$size"
    rm -rf "$dir"
    sync
    start=$(date +%s.%N)
    "$bin" --data-dir "$dir" import "$WORK/$size.car" >/dev/null 2>&1
    end=$(date +%s.%N)
    segs=$( (du -sb "$dir/blocks" 2>/dev/null || echo 0) | awk '{print $1}')
    index=$(stat -c %s "$dir/cidgate.redb")
    disk=$(du -sB1 "$dir" | awk '{print $1}')
    python3 - "$which" "$size" "$content" "$segs" "$index" "$disk" "$start" "$end" <<'PY'
import sys
which, size, content, segs, index, disk, start, end = sys.argv[1:]
content, segs, index, disk = int(content), int(segs), int(index), int(disk)
secs = float(end) - float(start)
print(f"store: bin={which} blocks={size} content={content} segments={segs} index={index} "
      f"disk={disk} disk/content={disk / content:.3f} "
      f"(segments+index)/content={(segs + index) / content:.3f} "
      f"import_s={secs:.2f} MB/s={content / secs / 1e6:.0f}")
PY
    rm -rf "$dir"
  done
  rm -f "$WORK/$size.car"
done
