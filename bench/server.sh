#!/bin/bash
# Backup of the bench dataset to a Tidemark server on loopback (HTTPS) versus
# to a local folder, cold page cache, medians of N rounds; and the server's
# chunk-query throughput (cargo bench). Usage: bench/server.sh [--scale S] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=1.0; ROUNDS=3; WORK=/tmp/tidemark-bench-server
while [ $# -gt 0 ]; do
  case $1 in
    --scale) SCALE=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;;
    --work) WORK=$2; shift 2;;
    *) echo "usage: $0 [--scale S] [--rounds N] [--work DIR]" >&2; exit 2;;
  esac
done
TM=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}/release/tidemark}
[ -x "$TM" ] || { echo "build the release binary first (make build)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
drop() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
secs() { /usr/bin/time -f %e -o "$WORK/t" "$@" >/dev/null 2>>"$WORK/log"; cat "$WORK/t"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

REAL_HOME=$HOME
python3 bench/gen_dataset.py --seed 1 --scale "$SCALE" --out "$WORK/ds" --quiet
export TIDEMARK_PASSWORD=bench HOME="$WORK/home" TIDEMARK_DEVICE_SECRET_FILE="$WORK/device.secret"
local_t=(); server_t=()
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK/local" "$WORK/cache" "$WORK/srv" "$WORK/home" "$WORK/device.secret"
  "$TM" --repo "$WORK/local" --cache-dir "$WORK/cache" init >/dev/null
  drop; local_t+=("$(secs "$TM" --repo "$WORK/local" --cache-dir "$WORK/cache/l" backup "$WORK/ds" --json)")
  "$TM" --json server --data "$WORK/srv" --listen 127.0.0.1:0 > "$WORK/server.out" 2>>"$WORK/log" &
  pid=$!
  for _ in $(seq 100); do [ -s "$WORK/server.out" ] && break; sleep 0.1; done
  url=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['listening'])")
  code=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['admin_code'])")
  "$TM" enroll "$url" "$code" >/dev/null
  drop; server_t+=("$(secs "$TM" --repo "$url" --cache-dir "$WORK/cache/s" backup "$WORK/ds" --json)")
  sent=$(curl -sk -H "Authorization: Bearer $(cat "$WORK/srv/metrics.token")" "$url/metrics" | awk '/^tidemark_pack_bytes_received_total/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "round $r: local ${local_t[-1]} s, server ${server_t[-1]} s, sent $sent B" >&2
done
lm=$(printf '%s\n' "${local_t[@]}" | median); sm=$(printf '%s\n' "${server_t[@]}" | median)
echo
echo "First backup of the bench set (scale $SCALE, $(du -sh "$WORK/ds" | cut -f1)), cold cache, median of $ROUNDS:"
echo
echo "| Destination | Time | Ratio to local |"
echo "| --- | ---: | ---: |"
echo "| Local folder | $lm s | 1.00 |"
echo "| Server on loopback (HTTPS) | $sm s | $(python3 -c "print(f'{$sm/$lm:.2f}')") |"
echo
HOME=$REAL_HOME cargo bench -q -p server --bench chunk_query
rm -rf "$WORK/ds" "$WORK/local" "$WORK/srv"
