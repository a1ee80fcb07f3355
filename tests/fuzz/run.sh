#!/usr/bin/env bash
# Bounded fuzzing of edgefront's untrusted-input parsers (issue 7). Not part of tests/run: it
# needs nightly and takes SECONDS_PER_TARGET × 6 plus a first sanitizer build (~10 min cold).
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      # default: 60 s, every target
#
# Each target runs once under libFuzzer with -max_total_time, seeded from tests/fuzz/seeds/<t>/
# (committed, read only) and growing tests/fuzz/corpus/<t>/ (ignored, kept between runs).
# Prints one line per target — seconds, executions, exec/s, corpus size, crashes — and exits
# non-zero if any target crashed. A crash leaves its input in tests/fuzz/artifacts/<t>/;
# replay it with
#   cargo +nightly fuzz run --fuzz-dir tests/fuzz <t> tests/fuzz/artifacts/<t>/crash-…
# then turn it into a regression test in the owning crate (e.g. shared/tests/).
#
# Builds go to $EDGEFRONT_FUZZ_TARGET_DIR (default ~/.cache/edgefront/fuzz-target), never the
# main target dir: sanitizer builds share nothing with it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUZZ_DIR=tests/fuzz
SECONDS_PER_TARGET="${1:-60}"
shift $(($# > 0 ? 1 : 0))
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(events tokens cart_ops sketch_decode csv_rows checkout_body)
if (($# > 0)); then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi

cd "$ROOT"
export CARGO_TARGET_DIR="${EDGEFRONT_FUZZ_TARGET_DIR:-$HOME/.cache/edgefront/fuzz-target}"

# Tools: nightly (sanitizer flags) and cargo-fuzz, each installed once.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# Build every target once up front, so build time is not charged to any target's budget.
cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR"

# Longest input per target: structured inputs stay small; a dense uniques sketch is ~13 KB.
max_len() {
    case "$1" in
        sketch_decode) echo 32768 ;;
        events | csv_rows) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

count_artifacts() {
    find "$FUZZ_DIR/artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) \
        2>/dev/null | wc -l
}

LOG_DIR="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOG_DIR"
failed=0
summary=()
for target in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    seeds="$FUZZ_DIR/seeds/$target"
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$target"
    inputs=("$corpus")
    [[ -d "$seeds" ]] && inputs+=("$seeds")
    extra=()
    [[ -f "$FUZZ_DIR/dicts/$target.dict" ]] && extra+=("-dict=$FUZZ_DIR/dicts/$target.dict")
    before=$(count_artifacts "$target")
    log="$LOG_DIR/$target.log"
    start=$SECONDS
    status=0
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$target" "${inputs[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$target")" -print_final_stats=1 "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    elapsed=$((SECONDS - start))
    crashes=$(($(count_artifacts "$target") - before))
    # A failed run without an artifact (build error, sanitizer abort) still counts as a crash.
    if ((status != 0 && crashes == 0)); then crashes=1; fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corpus_size=$(find "$corpus" -type f | wc -l)
    line=$(printf '%-14s %5ss %12s execs %8s exec/s  corpus %6s  crashes %s' \
        "$target" "$elapsed" "${execs:-?}" "${speed:-?}" "$corpus_size" "$crashes")
    summary+=("$line")
    echo "$line"
    if ((crashes > 0)); then
        failed=1
        echo "  $target crashed: see $log and $FUZZ_DIR/artifacts/$target/" >&2
    fi
done

echo
echo "fuzz summary (${SECONDS_PER_TARGET}s per target):"
printf '%s\n' "${summary[@]}"
exit "$failed"
