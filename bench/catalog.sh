#!/usr/bin/env bash
# The version catalog benchmark (crates/catalog/benches/versions.rs): a
# synthetic home folder backed up N times, catalogued snapshot by snapshot
# into an on-disk catalog, then searched. Prints Markdown tables for
# docs/benchmarks.md on stdout (progress on stderr).
#
# Environment (all optional, passed through to the benchmark):
#   CATALOG_BENCH_PATHS      files in the home folder          (default 1000000)
#   CATALOG_BENCH_SNAPSHOTS  snapshots                          (default 100)
#   CATALOG_BENCH_REPS       timed repetitions of each query    (default 20)
#   CATALOG_BENCH_SEED       seed of the synthetic data set     (default 1)
#   CATALOG_BENCH_BUDGET     seconds the incremental syncs may take in all (default 300);
#                            when spent the rest are left out and the report says so
#   CARGO_TARGET_DIR         cargo's target folder   (default ~/.cache/tidemark/target)
#
# The full size takes minutes and ~1-2 GiB of RAM; a quick check:
#   CATALOG_BENCH_PATHS=20000 CATALOG_BENCH_SNAPSHOTS=10 bench/catalog.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}"
for v in CATALOG_BENCH_PATHS CATALOG_BENCH_SNAPSHOTS CATALOG_BENCH_REPS CATALOG_BENCH_SEED CATALOG_BENCH_BUDGET; do
    if [[ -n "${!v:-}" ]]; then
        export "$v"
        echo "$v=${!v}" >&2
    fi
done

exec cargo bench -p catalog --bench versions "$@"
