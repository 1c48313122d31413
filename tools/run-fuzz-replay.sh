#!/bin/sh
# run-fuzz-replay.sh -- replay every seed of each fuzz target's corpus once.
#
#   sh tools/run-fuzz-replay.sh build/fuzz/fuzz_<name> [...]
#
# For build/fuzz/fuzz_<name> the inputs are tests/fuzz/corpus/<name>/*. Each
# input runs in its own libFuzzer process (the binary given the file path), so
# one crashing input cannot hide the others and the count is exact. A crash,
# sanitizer report, abort or hang (-timeout) is a failure; its output is shown.
# A target without a corpus directory is reported on stderr and counts nothing.
#
# Last line, always: "fuzz-replay: N passed, M failed". Exit 1 if M > 0.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
timeout_s=${FUZZ_REPLAY_TIMEOUT:-25}
passed=0
failed=0
log=$(mktemp "${TMPDIR:-/tmp}/fuzz-replay.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT
trap 'exit 130' INT TERM

for bin in "$@"; do
    name=$(basename "$bin")
    name=${name#fuzz_}
    dir=$root/tests/fuzz/corpus/$name
    if [ ! -x "$bin" ]; then
        echo "run-fuzz-replay: $bin is not an executable" >&2
        failed=$((failed + 1))
        continue
    fi
    if [ ! -d "$dir" ]; then
        echo "run-fuzz-replay: $bin: no corpus directory $dir" >&2
        continue
    fi
    n=0
    for f in "$dir"/* "$dir"/.[!.]*; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        if "$bin" -timeout="$timeout_s" -rss_limit_mb=2048 "$f" >"$log" 2>&1; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL: $(basename "$bin") $f" >&2
            tail -n 40 "$log" >&2
        fi
    done
    echo "$(basename "$bin"): $n inputs replayed from tests/fuzz/corpus/$name" >&2
done

echo "fuzz-replay: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
