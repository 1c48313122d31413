#!/bin/sh
# run-unit.sh -- run cmocka unit-test binaries and total their results.
#
#   sh tools/run-unit.sh build/tests/test_jwt build/tests/test_config ...
#
# Each binary's output (stdout and stderr: cmocka 1.1 prints its summary on
# stderr) is passed through as it runs. The cmocka summary lines
#   [  PASSED  ] N test(s).
#   [  FAILED  ] N test(s), listed below:
# are added up over all binaries. A binary that exits non-zero without
# reporting a failure (crash, abort, sanitizer report, group setup failure,
# missing file), that dies from a signal, or that starts a test group and never
# finishes it, counts as one more failed test.
#
# The last line is always "unit: P passed, F failed"; exit status 1 when F > 0,
# 2 for a usage error, else 0.

unset CMOCKA_MESSAGE_OUTPUT CMOCKA_XML_FILE

if [ "$#" -eq 0 ]; then
    echo "usage: $0 TEST_BINARY..." >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/run-unit.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'rm -rf "$tmp"; exit 130' INT TERM

# sum_lines PATTERN FILE -- sum of the first number on each line matching
# the extended regex PATTERN (0 when none match).
sum_lines() {
    grep -E "$1" "$2" 2>/dev/null | sed 's/^[^0-9]*\([0-9][0-9]*\).*/\1/' |
        awk '{ s += $1 } END { print s + 0 }'
}

passed=0
failed=0
notes=""

for bin in "$@"; do
    case "$bin" in
        */*) cmd=$bin ;;
        *) cmd=./$bin ;;
    esac
    echo "== $bin"
    rm -f "$tmp/rc"
    { "$cmd" 2>&1; echo "$?" >"$tmp/rc"; } | tee "$tmp/out"
    rc=$(cat "$tmp/rc" 2>/dev/null)
    [ -n "$rc" ] || rc=1

    p=$(sum_lines '^\[  PASSED  \] [0-9]+ test\(s\)' "$tmp/out")
    f=$(sum_lines '^\[  FAILED  \] [0-9]+ test\(s\)' "$tmp/out")
    started=$(grep -cE '^\[==========\] Running [0-9]+ test\(s\)' "$tmp/out")
    finished=$(grep -cE '^\[==========\] [0-9]+ test\(s\) run\.' "$tmp/out")

    extra=0
    why=""
    if [ "$rc" -gt 128 ]; then
        extra=1
        why="killed by signal $((rc - 128))"
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        extra=1
        why="exited with status $rc without reporting a failed test"
    elif [ "$started" -gt "$finished" ]; then
        extra=1
        why="stopped before finishing its tests"
    elif [ "$started" -eq 0 ]; then
        extra=1
        why="ran no cmocka test group"
    fi
    if [ "$extra" -ne 0 ]; then
        notes="${notes}unit: $bin $why (counted as 1 failed)
"
    fi
    passed=$((passed + p))
    failed=$((failed + f + extra))
done

[ -z "$notes" ] || printf '%s' "$notes"
echo "unit: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    exit 1
fi
exit 0
