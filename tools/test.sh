#!/usr/bin/env bash
# test.sh -- every test stage of `make test` (run after tools/bootstrap.sh).
#
# Stages (each with a banner, its output tee'd to build/test-logs/NN-name.log):
#   build          make -j2 all unit [pgtests]
#   unit           make unit-run                          -> "unit: P passed, F failed"
#   asan-build     make -j2 O=build/asan SAN=1 all unit [pgtests]
#   asan-unit      make O=build/asan SAN=1 unit-run       -> "unit: ..."
#   fuzz-replay    make fuzz-replay                       -> "fuzz-replay: ..."
#   integration    tools/run-integration.sh, INKWIRE_BIN=build/inkwire       -> "integration: ..."
#   asan-integration  the same with INKWIRE_BIN=build/asan/inkwire (ASan server, real traffic)
#   browser        tools/run-browser-tests.sh (Chromium + the console, loopback-only netns) -> "browser: ..."
# ([pgtests] only when the Makefile has that target.) Sanitizer stages run with
# ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 and UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1.
#
# Counting: a test stage contributes the numbers of its LAST "<label>: P passed,
# F failed" line; a stage that exits non-zero counts at least 1 failed (so one
# that dies without reporting counts 1); a build stage contributes 0 passed, or 1
# failed when it fails; a stage skipped because its build failed counts 1 failed.
# Always ends with exactly one line `tests: P passed, F failed` (also when
# interrupted) and exits 1 when anything failed.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

MAKE_CMD=${MAKE:-make}
LOGDIR=build/test-logs
mkdir -p "$LOGDIR"
rm -f "$LOGDIR"/*.log

SAN_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
         UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

TOTAL_P=0
TOTAL_F=0
NSTAGE=0
DONE=0
RESULTS=()
declare -A STAGE_OK=()

# final_summary -- print the per-stage table and the one `tests:` line, once.
final_summary() {
    [ "$DONE" -eq 1 ] && return 0
    DONE=1
    printf '\n==================== summary ====================\n'
    local r
    for r in "${RESULTS[@]}"; do
        printf '  %s\n' "$r"
    done
    printf 'logs: %s/\n' "$LOGDIR"
    printf 'tests: %d passed, %d failed\n' "$TOTAL_P" "$TOTAL_F"
}

CHILD=""

# stop_child -- TERM the running stage's command (make forwards TERM to its
# children; run-integration.sh stops its PostgreSQL), keep tee to drain the
# output, and wait for the stage to end.
stop_child() {
    local pid
    [ -n "$CHILD" ] || return 0
    for pid in $(pgrep -P "$CHILD"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tee ] || kill -TERM "$pid" 2>/dev/null
    done
    wait "$CHILD" 2>/dev/null
    CHILD=""
}

on_signal() {
    trap '' INT TERM
    stop_child
    RESULTS+=("interrupted by a signal (counted 1 failed)")
    TOTAL_F=$((TOTAL_F + 1))
    final_summary
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# record NAME P F RC SECS NOTE -- add a stage's result to the totals.
record() {
    local name=$1 p=$2 f=$3 rc=$4 secs=$5 note=$6
    TOTAL_P=$((TOTAL_P + p))
    TOTAL_F=$((TOTAL_F + f))
    if [ "$f" -eq 0 ]; then STAGE_OK[$name]=1; else STAGE_OK[$name]=0; fi
    RESULTS+=("$(printf '%-17s %4d passed, %3d failed  (exit %d, %ds)%s' \
        "$name" "$p" "$f" "$rc" "$secs" "${note:+  $note}")")
}

# stage NAME LABEL DEPENDS CMD... -- run one stage. LABEL is the count line's
# prefix ("" for a build stage); DEPENDS names a stage that must have passed
# ("" for none), else this one is skipped and counted 1 failed.
stage() {
    local name=$1 label=$2 dep=$3
    shift 3
    local log t0 rc line p f note=""
    NSTAGE=$((NSTAGE + 1))
    log=$(printf '%s/%02d-%s.log' "$LOGDIR" "$NSTAGE" "$name")
    printf '\n==================== [%d] %s ====================\n' "$NSTAGE" "$name"
    printf '$ %s\n' "$*"
    if [ -n "$dep" ] && [ "${STAGE_OK[$dep]:-0}" != 1 ]; then
        printf 'skipped: stage %s failed\n' "$dep" | tee "$log"
        record "$name" 0 1 0 0 "skipped: $dep failed"
        return 0
    fi
    t0=$(date +%s)
    # A background job we wait for, so a signal is handled at once (see on_signal).
    ( "$@" 2>&1 | tee "$log"; exit "${PIPESTATUS[0]}" ) &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    p=0
    f=0
    if [ -n "$label" ]; then
        line=$(tr -d '\r' <"$log" | grep -E "^${label}: [0-9]+ passed, [0-9]+ failed" | tail -n 1)
        if [ -n "$line" ]; then
            p=$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
            f=$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
        else
            note="no '$label:' count line"
        fi
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        note="${note:+$note; }failed with exit $rc"
    fi
    record "$name" "$p" "$f" "$rc" "$(($(date +%s) - t0))" "$note"
    return 0
}

M=("$MAKE_CMD" --no-print-directory)
EXTRA=()
if grep -q '^pgtests:' Makefile 2>/dev/null; then
    EXTRA=(pgtests)
fi

stage build            ""            ""         "${M[@]}" -j2 all unit "${EXTRA[@]}"
stage unit             unit          build      "${M[@]}" unit-run
stage asan-build       ""            ""         "${M[@]}" -j2 O=build/asan SAN=1 all unit "${EXTRA[@]}"
stage asan-unit        unit          asan-build env "${SAN_ENV[@]}" "${M[@]}" O=build/asan SAN=1 unit-run
stage fuzz-replay      fuzz-replay   ""         "${M[@]}" fuzz-replay
stage integration      integration   build      env INKWIRE_BIN="$ROOT/build/inkwire" \
                                                bash tools/run-integration.sh
stage asan-integration integration   asan-build env "${SAN_ENV[@]}" INKWIRE_BIN="$ROOT/build/asan/inkwire" \
                                                bash tools/run-integration.sh
stage browser          browser       build      env INKWIRE_BIN="$ROOT/build/inkwire" \
                                                bash tools/run-browser-tests.sh

final_summary
[ "$TOTAL_F" -eq 0 ]
