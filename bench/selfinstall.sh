#!/bin/bash
# From download to the first committed backup, on loopback: a Tidemark server
# with the release build in its downloads folder, an admin's single-use
# link, and a fresh account whose Documents are the bench dataset's
# Documents folder. Timed: fetching the page and the installer, installing,
# and the installed agent's first start (zero-touch enrolment, the
# organisation's policy, the first backup) until that backup is committed.
# Usage: bench/selfinstall.sh [--scale S] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=1.0; WORK=/tmp/tidemark-bench-selfinstall
while [ $# -gt 0 ]; do
  case $1 in
    --scale) SCALE=$2; shift 2;;
    --work) WORK=$2; shift 2;;
    *) echo "usage: $0 [--scale S] [--work DIR]" >&2; exit 2;;
  esac
done
TM=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}/release/tidemark}
[ -x "$TM" ] || { echo "build the release binary first (make build)" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK/downloads" "$WORK/admin"
python3 bench/gen_dataset.py --seed 1 --scale "$SCALE" --out "$WORK/ds" --quiet
cp "$TM" "$WORK/downloads/tidemark"; cp icons/128x128.png "$WORK/downloads/tidemark.png"
"$TM" --json server --data "$WORK/srv" --listen 127.0.0.1:0 --downloads "$WORK/downloads" > "$WORK/server.out" 2>"$WORK/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/server.out" ] && break; sleep 0.1; done
url=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['listening'])")
code=$(python3 -c "import json;print(json.load(open('$WORK/server.out'))['admin_code'])")
admin() { HOME="$WORK/admin" TIDEMARK_DEVICE_SECRET_FILE="$WORK/admin/secret" "$TM" --repo "$url" "$@"; }
admin enroll "$url" "$code" >/dev/null
admin admin add-user ann >/dev/null
echo '{"folders": ["~/Documents"], "continuous": true}' > "$WORK/policy.json"
admin admin policy "$WORK/policy.json" >/dev/null
link=$(admin --json admin code ann --uses 1 | python3 -c "import json,sys;print(json.load(sys.stdin)['code'])")
ANN=$WORK/ann; mkdir -p "$ANN"; mv "$WORK/ds/Documents" "$ANN/Documents"; rm -rf "$WORK/ds"
size=$(du -sb "$ANN/Documents" | cut -f1); files=$(find "$ANN/Documents" -type f | wc -l)
t0=$(date +%s.%N)
curl -fsSk "$url/download/$link" >/dev/null
curl -fsSk "$url/download/$link/install.sh" -o "$WORK/install.sh"
t1=$(date +%s.%N)
env -i HOME="$ANN" PATH="$PATH" sh "$WORK/install.sh" >/dev/null
t2=$(date +%s.%N)
env -i HOME="$ANN" PATH="$PATH" TIDEMARK_DEVICE_SECRET_FILE="$ANN/.secret" "$ANN/.local/bin/tidemark" agent --once >/dev/null
t3=$(date +%s.%N)
snaps=$(HOME="$ANN" TIDEMARK_DEVICE_SECRET_FILE="$ANN/.secret" "$ANN/.local/bin/tidemark" --repo "$url" --json snapshots | python3 -c "import json,sys;print(len(json.load(sys.stdin)))")
[ "$snaps" = 1 ] || { echo "expected one committed snapshot, found $snaps" >&2; exit 1; }
python3 - "$t0" "$t1" "$t2" "$t3" "$size" "$files" <<'PY'
import sys
t0, t1, t2, t3, size, files = map(float, sys.argv[1:])
print(f"\nDownload to first committed backup, loopback HTTPS, Documents of the bench set ({int(files):,} files, {size/1e6:.0f} MB):\n")
print("| Step | Time |\n| --- | ---: |")
print(f"| Download page and installer | {t1-t0:.2f} s |")
print(f"| Install (programs checked against their SHA-256) | {t2-t1:.2f} s |")
print(f"| First start: enrol, policy, first backup committed | {t3-t2:.2f} s |")
print(f"| **Total** | **{t3-t0:.1f} s** |")
PY
rm -rf "$WORK"
