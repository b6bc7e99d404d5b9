#!/usr/bin/env bash
# A/B of two tidemark builds on the no-change backup of the bench set, cold page cache,
# alternating per round, with restic on the same data for the ratio.
#
#   bench/nochange.sh OLD_BIN NEW_BIN [ROUNDS=5] [WORK=/tmp/tidemark-nochange]
#
# Needs root (drops the page cache), python3, bc and restic (apt install restic).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OLD=$1; NEW=$2; ROUNDS=${3:-5}; W=${4:-/tmp/tidemark-nochange}
for t in python3 bc restic; do
  command -v $t >/dev/null || { echo "nochange.sh: $t is missing" >&2; exit 2; }
done
export TIDEMARK_PASSWORD=bench RESTIC_PASSWORD=bench
if [[ ! -d $W/data ]]; then
  mkdir -p "$W"
  python3 "$HERE/gen_dataset.py" --seed 1 --out "$W/data" >/dev/null
  "$NEW" --repo "$W/repo" init >/dev/null
  "$NEW" --repo "$W/repo" --cache-dir "$W/cache" backup "$W/data" --json >/dev/null
  restic -r "$W/restic" init >/dev/null
  restic -r "$W/restic" --cache-dir "$W/rcache" backup "$W/data" >/dev/null
fi
cold() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  local s; s=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  echo "$(date +%s.%N) - $s" | bc
}
for r in $(seq 1 "$ROUNDS"); do
  o=$(cold "$OLD" --repo "$W/repo" --cache-dir "$W/cache" backup "$W/data" --json)
  n=$(cold "$NEW" --repo "$W/repo" --cache-dir "$W/cache" backup "$W/data" --json)
  q=$(cold restic -r "$W/restic" --cache-dir "$W/rcache" backup "$W/data")
  echo "round $r old $o new $n restic $q"
done
