#!/usr/bin/env bash
# Tidemark vs restic vs borg: the same scenarios on the same generated dataset, side by side,
# alternating the tools' order per round. See bench/README.md and docs/benchmarks-method.md.
#
#   bench/run.sh [--scale 1.0] [--rounds 3] [--work /tmp/tidemark-bench] [--seed 1]
#                [--tools tidemark,restic,borg] [--out FILE] [--warm] [--no-machine]
#                [--no-disk-restore] [--keep]
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GEN="$HERE/gen_dataset.py"
REPORT="$HERE/report.py"

SCALE=1.0
ROUNDS=3
WORK=/tmp/tidemark-bench
SEED=1
TOOLS=tidemark,restic,borg
OUT=""
COLD=1
MACHINE=1
DISK_RESTORE=1
KEEP=0

usage() { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --scale) SCALE=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;;
    --work) WORK=$2; shift 2;;
    --seed) SEED=$2; shift 2;;
    --tools) TOOLS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --warm) COLD=0; shift;;
    --no-machine) MACHINE=0; shift;;
    --no-disk-restore) DISK_RESTORE=0; shift;;
    --keep) KEEP=1; shift;;
    -h|--help) usage 0;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2;;
  esac
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ -n $WORK && $WORK != / ]] || die "--work must name a directory"
mkdir -p "$WORK" || die "cannot create $WORK"
WORK=$(cd "$WORK" && pwd -P)
REPO_ROOT=$(cd "$HERE/.." && pwd -P)
case "$WORK/" in "$REPO_ROOT"/*) die "--work must be outside the repository ($REPO_ROOT)";; esac
[[ $WORK == / || $WORK == /tmp || $WORK == "$HOME" ]] && die "--work $WORK is too broad: use a dedicated directory"

IFS=, read -r -a TOOL_LIST <<< "$TOOLS"
for t in "${TOOL_LIST[@]}"; do
  case $t in tidemark|restic|borg) ;; *) die "unknown tool '$t' (tidemark, restic, borg)";; esac
done
has_tool() { [[ ",$TOOLS," == *",$1,"* ]]; }

# ---- dependencies (idempotent) -------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  [[ $(id -u) == 0 ]] || { log "not root: cannot apt-get install $*"; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  if [[ $APT_UPDATED == 0 ]]; then
    APT_UPDATED=1
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  fi
  return 1
}
need() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  apt_install "$2" && command -v "$1" >/dev/null 2>&1
}
[[ -x /usr/bin/time ]] || apt_install time || die "GNU time (/usr/bin/time) is needed: apt-get install time"
need python3 python3 || die "python3 is needed"
need zstd zstd || log "zstd missing: the zstd baseline is skipped"
has_tool restic && { need restic restic || die "could not install restic"; }
has_tool borg && { need borg borgbackup || die "could not install borgbackup"; }
if [[ $MACHINE == 1 ]] && ! command -v b3sum >/dev/null 2>&1; then
  need b3sum b3sum || log "b3sum not available: its baseline is skipped"
fi

TM=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}/release/tidemark}
if has_tool tidemark; then
  [[ -x $TM ]] || die "tidemark binary not found at $TM (set TIDEMARK_BIN, build it, or use --tools restic,borg)"
fi

# ---- work layout ------------------------------------------------------------------------------
SRC="$WORK/data/home"
REPOS="$WORK/repos"
CACHES="$WORK/cache"
STATE="$WORK/state"
LOGS="$WORK/logs"
RAW="$WORK/raw.tsv"
META="$WORK/meta.tsv"
JOURNAL="Documents/Notes/journal.md"   # gen_dataset.JOURNAL: the edit always changes it
VM_IMAGE="VMs/debian-dev.img"          # gen_dataset.VM_IMAGE: sparse

export RESTIC_PASSWORD=tidemark-bench-password
export BORG_PASSPHRASE=tidemark-bench-password
export TIDEMARK_PASSWORD=tidemark-bench-password
export RESTIC_CACHE_DIR="$CACHES/restic"
export TIDEMARK_CACHE_DIR="$CACHES/tidemark"
export BORG_BASE_DIR="$STATE/borg"
export BORG_CACHE_DIR="$CACHES/borg"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

rm -rf "$LOGS" "$RAW" "$META" "$WORK/restore-disk"
mkdir -p "$LOGS" "$REPOS" "$CACHES" "$STATE" "$WORK/data"
: > "$RAW"
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }

# restores go to tmpfs: a fresh mount if we may, else /dev/shm
TMPFS="$WORK/tmpfs"
TMPFS_KIND=""
MOUNTED=0
mkdir -p "$TMPFS"
if mountpoint -q "$TMPFS"; then
  TMPFS_KIND="tmpfs (already mounted at $TMPFS)"
elif mount -t tmpfs -o size=16g,mode=0755 tidemark-bench "$TMPFS" 2>/dev/null; then
  MOUNTED=1
  TMPFS_KIND="tmpfs mounted at $TMPFS"
else
  rmdir "$TMPFS" 2>/dev/null
  TMPFS="/dev/shm/tidemark-bench.$$"
  mkdir -p "$TMPFS" || die "no tmpfs available"
  TMPFS_KIND="/dev/shm ($TMPFS)"
fi
cleanup() {
  if [[ $MOUNTED == 1 ]]; then
    umount "$TMPFS" 2>/dev/null && rmdir "$TMPFS" 2>/dev/null
  else
    [[ $TMPFS == /dev/shm/tidemark-bench.* ]] && rm -rf "$TMPFS"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CACHE_NOTE="cold cache (page cache dropped before every measured command)"
drop_caches() {
  sync
  if [[ $COLD == 1 ]]; then
    if ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
      COLD=0
      CACHE_NOTE="warm cache (dropping the page cache failed here)"
      log "cannot drop page caches: results are warm-cache"
    fi
  fi
}
[[ $COLD == 0 ]] && CACHE_NOTE="warm cache (--warm: page cache not dropped)"

# measure ROUND TOOL METRIC SYNCDIR CMD...: time CMD (plus `sync -f SYNCDIR` when given, so data
# written to disk counts for every tool alike), record seconds, peak RSS and exit code.
measure() {
  local r=$1 t=$2 m=$3 sdir=$4; shift 4
  local base="$LOGS/r$r-$t-$m" rc secs rss
  printf '%q ' "$@" > "$base.cmd"; echo >> "$base.cmd"
  drop_caches
  if [[ -n $sdir ]]; then
    /usr/bin/time -f '%e %M' -o "$base.time" bash -c '"${@:2}"; rc=$?; sync -f "$1"; exit $rc' _ "$sdir" "$@" \
      > "$base.out" 2> "$base.err" < /dev/null
  else
    /usr/bin/time -f '%e %M' -o "$base.time" "$@" > "$base.out" 2> "$base.err" < /dev/null
  fi
  rc=$?
  read -r secs rss < <(tail -n 1 "$base.time")
  [[ $secs =~ ^[0-9.]+$ ]] || { secs=NaN; rss=NaN; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$m" "$secs" "$rss" "$rc" >> "$RAW"
  if [[ $rc != 0 ]]; then
    log "  $t $m exited $rc (see $base.err)"
  else
    log "  $t $m: ${secs}s, $((rss / 1024)) MiB peak"
  fi
  return $rc
}
record() { printf '%s\t%s\t%s\t%s\t-\t0\n' "$1" "$2" "$3" "$4" >> "$RAW"; }  # round tool metric value

set_cmd() { # tool action [arg]: sets CMD
  local t=$1 a=$2 arg=${3:-} R="$REPOS/$1"
  case $t:$a in
    tidemark:init)   CMD=("$TM" --repo "$R" init);;
    restic:init)     CMD=(restic -r "$R" init --repository-version 2);;
    borg:init)       CMD=(borg init -e repokey-blake2 "$R");;
    tidemark:backup) CMD=("$TM" --repo "$R" backup "$SRC" --json);;
    restic:backup)   CMD=(restic -r "$R" backup --compression auto --json --quiet "$SRC");;
    borg:backup)     CMD=(borg create --compression zstd,3 "$R::$arg" "$SRC");;
    tidemark:restore) CMD=("$TM" --repo "$R" restore latest --target "$arg");;
    restic:restore)   CMD=(restic -r "$R" restore latest --target "$arg");;
    borg:restore)     CMD=(env -C "$arg" borg extract --sparse "$R::edit");;
    tidemark:restore-file) CMD=("$TM" --repo "$R" restore "${FIRST_ID[$t]}:$SRC/$JOURNAL" --target "$arg");;
    restic:restore-file)   CMD=(restic -r "$R" restore "${FIRST_ID[$t]}" --target "$arg" --include "$SRC/$JOURNAL");;
    borg:restore-file)     CMD=(env -C "$arg" borg extract "$R::first" "${SRC#/}/$JOURNAL");;
    *) die "no command for $t $a";;
  esac
}

first_snapshot_id() { # tool -> id of the oldest snapshot (called when the repository holds only one)
  case $1 in
    borg) echo first;;
    tidemark) "$TM" --repo "$REPOS/tidemark" snapshots --json;;
    restic) restic -r "$REPOS/restic" snapshots --json;;
  esac | if [[ $1 == borg ]]; then cat; else python3 -c '
import json, sys
snaps = json.load(sys.stdin)
print(sorted(snaps, key=lambda s: s["time"])[0]["id"])'; fi
}

order_for_round() { # round -> tools rotated by (round-1)
  local r=$1 n=${#TOOL_LIST[@]} i
  ORDER=()
  for ((i = 0; i < n; i++)); do ORDER+=("${TOOL_LIST[$(((i + r - 1) % n))]}"); done
}

verify_tree() { # round tool where dir -> records verify-<where>
  local r=$1 t=$2 w=$3 dir=$4 got
  got=$(python3 "$GEN" --manifest --restore-check "$dir" 2>/dev/null | cut -d' ' -f1)
  if [[ -n $got && $got == "$SRC_MANIFEST" ]]; then
    record "$r" "$t" "verify-$w" ok
  else
    record "$r" "$t" "verify-$w" FAIL
    python3 "$GEN" --manifest --restore-check --list "$dir" 2>/dev/null | diff "$WORK/src-manifest.txt" - \
      > "$LOGS/r$r-$t-verify-$w.diff"
    log "  $t restore to $w does not match the source: $LOGS/r$r-$t-verify-$w.diff"
  fi
  record "$r" "$t" "alloc-$w" "$(du -sk "$dir" 2>/dev/null | cut -f1)"
  record "$r" "$t" "vm-alloc-$w" "$(du -k "$dir/$VM_IMAGE" 2>/dev/null | cut -f1)"
}

# ---- facts ------------------------------------------------------------------------------------
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta kernel "$(uname -srm)"
meta memory "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
meta os "$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
meta workfs "$(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}')"
meta tools "$TOOLS"
meta rounds "$ROUNDS"
meta scale "$SCALE"
meta seed "$SEED"
meta tmpfs "$TMPFS_KIND"
meta work "$WORK"
has_tool restic && meta version:restic "$(restic version | head -n1)"
has_tool borg && meta version:borg "$(borg --version)"
has_tool tidemark && meta version:tidemark "$("$TM" --version 2>/dev/null | head -n1 || echo "unknown ($TM)")"
command -v zstd >/dev/null && meta version:zstd "$(zstd --version | head -n1 | tr -d '*' | sed 's/^ *//; s/ *$//')"
command -v b3sum >/dev/null && meta version:b3sum "$(b3sum --version)"

declare -A FIRST_ID
log "work dir $WORK, tools $TOOLS, scale $SCALE, $ROUNDS round(s)"

for ((r = 1; r <= ROUNDS; r++)); do
  order_for_round "$r"
  log "round $r/$ROUNDS, order: ${ORDER[*]}"

  # a fresh base dataset, fresh repos and caches
  rm -rf "$SRC" "$WORK/restore-disk"
  for t in "${TOOL_LIST[@]}"; do rm -rf "${REPOS:?}/$t" "${CACHES:?}/$t"; done
  rm -rf "${STATE:?}/borg"
  gen_start=$EPOCHREALTIME
  python3 "$GEN" --seed "$SEED" --scale "$SCALE" --out "$SRC" --quiet || die "dataset generation failed"
  gen_secs=$(awk -v a="$gen_start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
  if [[ $r == 1 ]]; then
    meta dataset_bytes "$(du -sb "$SRC" | cut -f1)"
    meta dataset_alloc_kib "$(du -sk "$SRC" | cut -f1)"
    meta dataset_files "$(find "$SRC" -type f | wc -l)"
    meta dataset_gen_seconds "$gen_secs"
  fi
  journal_old=$(sha256sum "$SRC/$JOURNAL" | cut -d' ' -f1)

  # the machine's own limits on the same (base) dataset
  if [[ $MACHINE == 1 ]]; then
    measure "$r" machine read "" bash -c 'tar cf - -C "$1" . | cat > /dev/null' _ "$SRC"
    measure "$r" machine cp-tmpfs "" cp -a "$SRC" "$TMPFS/cp-baseline"
    rm -rf "$TMPFS/cp-baseline"
    if command -v b3sum >/dev/null; then
      measure "$r" machine b3sum "" bash -c 'cd "$1" && find . -type f -print0 | xargs -0 -r b3sum > /dev/null' _ "$SRC"
    fi
    if command -v zstd >/dev/null; then
      measure "$r" machine zstd "" bash -c 'tar cf - -C "$1" . | zstd -3 -T0 -q -c | wc -c > "$2"' _ "$SRC" \
        "$LOGS/r$r-zstd.size"
      record "$r" machine zstd-bytes "$(cat "$LOGS/r$r-zstd.size")"
    fi
  fi

  # first backup
  for t in "${ORDER[@]}"; do
    mkdir -p "$CACHES/$t"
    set_cmd "$t" init
    measure "$r" "$t" init "$REPOS" "${CMD[@]}" || die "$t init failed: $(tail -n 3 "$LOGS/r$r-$t-init.err")"
    set_cmd "$t" backup first
    measure "$r" "$t" backup-first "$REPOS" "${CMD[@]}"
    record "$r" "$t" stored-first "$(du -sb "$REPOS/$t" | cut -f1)"
    FIRST_ID[$t]=$(first_snapshot_id "$t" 2>> "$LOGS/r$r-$t-snapshots.err")
    [[ -n ${FIRST_ID[$t]} ]] || log "  $t: could not read the first snapshot's id"
  done
  # no-change backup
  for t in "${ORDER[@]}"; do
    set_cmd "$t" backup nochange
    measure "$r" "$t" backup-nochange "$REPOS" "${CMD[@]}"
  done

  # the day of work, then a backup
  python3 "$GEN" --edit --seed "$SEED" --scale "$SCALE" "$SRC" > "$LOGS/r$r-edit.txt" || die "edit failed"
  [[ $r == 1 ]] && meta edit "$(cat "$LOGS/r$r-edit.txt" | sed 's/^edited [^:]*: //')"
  for t in "${ORDER[@]}"; do
    set_cmd "$t" backup edit
    measure "$r" "$t" backup-edit "$REPOS" "${CMD[@]}"
    record "$r" "$t" stored-edit "$(du -sb "$REPOS/$t" | cut -f1)"
  done
  python3 "$GEN" --manifest --restore-check --list "$SRC" > "$WORK/src-manifest.txt"
  SRC_MANIFEST=$(tail -n 1 "$WORK/src-manifest.txt" | cut -d' ' -f1)
  record "$r" source alloc "$(du -sk "$SRC" | cut -f1)"
  record "$r" source vm-alloc "$(du -k "$SRC/$VM_IMAGE" | cut -f1)"

  # full restore of the latest snapshot into tmpfs, then to disk
  for t in "${ORDER[@]}"; do
    dst="$TMPFS/restore-$t"
    rm -rf "$dst"; mkdir -p "$dst"
    set_cmd "$t" restore "$dst"
    measure "$r" "$t" restore-tmpfs "" "${CMD[@]}"
    verify_tree "$r" "$t" tmpfs "$dst$SRC"
    rm -rf "$dst"
  done
  if [[ $DISK_RESTORE == 1 ]]; then
    for t in "${ORDER[@]}"; do
      dst="$WORK/restore-disk/$t"
      rm -rf "$dst"; mkdir -p "$dst"
      set_cmd "$t" restore "$dst"
      measure "$r" "$t" restore-disk "$dst" "${CMD[@]}"
      verify_tree "$r" "$t" disk "$dst$SRC"
      rm -rf "$dst"
    done
  fi

  # one file from the first (older) snapshot, after the edit changed it
  for t in "${ORDER[@]}"; do
    dst="$TMPFS/single-$t"
    rm -rf "$dst"; mkdir -p "$dst"
    if [[ -z ${FIRST_ID[$t]:-} ]]; then
      record "$r" "$t" verify-single FAIL
      continue
    fi
    set_cmd "$t" restore-file "$dst"
    measure "$r" "$t" restore-single "" "${CMD[@]}"
    got=$(sha256sum "$dst$SRC/$JOURNAL" 2>/dev/null | cut -d' ' -f1)
    if [[ $got == "$journal_old" ]]; then
      n_restored=$(find "$dst" -type f | wc -l)
      if [[ $n_restored == 1 ]]; then record "$r" "$t" verify-single ok
      else record "$r" "$t" verify-single "FAIL($n_restored files)"; fi
    else
      record "$r" "$t" verify-single FAIL
    fi
    rm -rf "$dst"
  done
done

# ---- report -------------------------------------------------------------------------------
meta cache "$CACHE_NOTE"
if [[ -z $OUT ]]; then
  mkdir -p "$HERE/results"
  OUT="$HERE/results/$(date +%F).md"
  i=2
  while [[ -e $OUT ]]; do OUT="$HERE/results/$(date +%F)-$i.md"; i=$((i + 1)); done
fi
python3 "$REPORT" "$RAW" "$META" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT" || die "report failed"
cat "$OUT"
log "report written to $OUT (raw data: $RAW, logs: $LOGS)"

if [[ $KEEP == 0 ]]; then
  rm -rf "$SRC" "$REPOS" "$CACHES" "$STATE" "$WORK/restore-disk"
  log "removed the dataset, repositories and caches (use --keep to keep them)"
fi
