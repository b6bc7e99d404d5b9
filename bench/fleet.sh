#!/bin/bash
# A fleet of laptops of different users backing up in turn to one Tidemark
# server on loopback: what crosses the network against what the server
# stores. Each laptop holds the same "company" part (the bench home folder of
# one seed: source trees, office files, mail, media, thousands of small
# files) copied anew, so with fresh inodes and times, plus a smaller part of
# its own. Bytes only, so a debug build does as well as a release one.
# Usage: bench/fleet.sh [--laptops N] [--scale S] [--own S] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
LAPTOPS=5; SCALE=0.1; OWN=0.02; WORK=/tmp/tidemark-bench-fleet
while [ $# -gt 0 ]; do
  case $1 in
    --laptops) LAPTOPS=$2; shift 2;;
    --scale) SCALE=$2; shift 2;;
    --own) OWN=$2; shift 2;;
    --work) WORK=$2; shift 2;;
    *) echo "usage: $0 [--laptops N] [--scale S] [--own S] [--work DIR]" >&2; exit 2;;
  esac
done
TM=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}/release/tidemark}
[ -x "$TM" ] || { echo "build the binary first (make build), or set TIDEMARK_BIN" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
python3 bench/gen_dataset.py --seed 1 --scale "$SCALE" --out "$WORK/common" --quiet

"$TM" --json server --data "$WORK/srv" --listen 127.0.0.1:0 > "$WORK/server.out" 2>>"$WORK/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/server.out" ] && break; sleep 0.1; done
url=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['listening'])")
code=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['admin_code'])")
as() { # as NAME CMD...: the tidemark of one laptop (its own home and device secret)
  local n=$1; shift
  mkdir -p "$WORK/$n/home"
  HOME="$WORK/$n/home" TIDEMARK_DEVICE_SECRET_FILE="$WORK/$n/device.secret" "$TM" "$@"
}
counter() {
  curl -sk -H "Authorization: Bearer $(cat "$WORK/srv/metrics.token")" "$url/metrics" |
    awk -v n="$1" '$1 == n {print $2}'
}
as admin enroll "$url" "$code" >/dev/null
printf '| Laptop | Files | Logical | Sent |\n| --- | ---: | ---: | ---: |\n' > "$WORK/table"
before=$(counter tidemark_pack_bytes_received_total)
logical=0
for n in $(seq "$LAPTOPS"); do
  as admin --repo "$url" admin add-user "user$n" >/dev/null
  c=$(as admin --repo "$url" --json admin code "user$n" --uses 1 | python3 -c "import json,sys;print(json.load(sys.stdin)['code'])")
  as "laptop$n" enroll "$url" "$c" --device-name "laptop$n" >/dev/null
  mkdir -p "$WORK/laptop$n/files"
  cp -r "$WORK/common" "$WORK/laptop$n/files/company"
  python3 bench/gen_dataset.py --seed $((100 + n)) --scale "$OWN" --out "$WORK/laptop$n/files/own" --quiet
  as "laptop$n" --repo "$url" --cache-dir "$WORK/laptop$n/cache" backup "$WORK/laptop$n/files" --json > "$WORK/laptop$n/backup.json"
  now=$(counter tidemark_pack_bytes_received_total)
  read -r files bytes < <(python3 -c "import json;s=json.load(open('$WORK/laptop$n/backup.json'))['summary'];print(s['total_files'], s['total_bytes'])")
  logical=$((logical + bytes))
  printf '| %s | %s | %s | %s |\n' "$n" "$files" "$bytes" "$((now - before))" >> "$WORK/table"
  before=$now
done
sent=$(counter tidemark_pack_bytes_received_total)
stored=$(as admin --repo "$url" --json admin usage | python3 -c "import json,sys;print(json.load(sys.stdin)['stored_bytes'])")
cat "$WORK/table"
echo
python3 -c "print(f'logical {$logical:,} B, sent {$sent:,} B, stored {$stored:,} B: sent/stored {$sent/$stored:.3f}x, logical/stored {$logical/$stored:.2f}x')"
