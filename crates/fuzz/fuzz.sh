#!/bin/bash
# `make fuzz`: every target of tidemark-fuzz under libFuzzer (cargo-fuzz)
# for SECONDS each, with the nightly toolchain the machine image ships.
# It never installs a toolchain: without nightly (or when cargo-fuzz cannot
# be installed from crates.io) the stable driver runs as long instead, and
# says why. Findings land in OUT/artifacts/<target>/ (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
OUT=${2:-${CARGO_TARGET_DIR:-../../target}/fuzz}
TARGETS="pack blob tree snapshot index_file enrolment update_offer api"

stable() {
    echo "fuzz: $1; running the stable driver for ${SECONDS_PER_TARGET} s per target instead"
    TIDEMARK_FUZZ_SECONDS=$SECONDS_PER_TARGET cargo test --release -p tidemark-fuzz --test drive -- --nocapture
    exit $?
}

rustup toolchain list 2>/dev/null | grep -q '^nightly' || stable "no nightly toolchain (rustup toolchain list)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked || stable "cargo-fuzz could not be installed"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Seeds: real objects from the project's own writers, one folder per target.
cargo run -q -p tidemark-fuzz --bin tidemark-fuzz-seeds -- "$OUT/corpus"
for t in $TARGETS; do
    mkdir -p "$OUT/artifacts/$t"
    echo "fuzz: $t for ${SECONDS_PER_TARGET} s (libFuzzer)"
    # A single allocation past 512 MiB is a finding: the largest object
    # cap is 256 MiB (format::limits).
    cargo +nightly fuzz run "$t" "$OUT/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -artifact_prefix="$OUT/artifacts/$t/" -print_final_stats=1
done
echo "fuzz: no findings; corpora in $OUT/corpus"
