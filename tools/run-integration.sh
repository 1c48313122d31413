#!/usr/bin/env bash
# run-integration.sh -- the integration tests against one private PostgreSQL.
#
# Starts ONE PostgreSQL 15 cluster (tools/pg.sh) in a fresh temp dir on a free
# port for the whole run, exports where it is, then runs
#   (a) every executable in $INKWIRE_PGTEST_DIR (default: <dir of INKWIRE_BIN>/pgtests,
#       i.e. build/pgtests or build/asan/pgtests): cmocka programs, each under timeout 600;
#   (b) every tests/integration/**/*.test.mjs (dir: $INKWIRE_INTEGRATION_DIR) with `node --test --test-reporter=tap`,
#       one file per node run (so files never overlap), each under timeout 900.
# Always stops the cluster by its data dir and removes the temp dir (trap EXIT),
# and always ends with `integration: P passed, F failed`; exits 1 if anything failed
# (a program or file that fails without reporting counts as 1 failed).
#
# Environment given to the tests:
#   INKWIRE_TEST_DATABASE_URL  postgresql://inkwire@127.0.0.1:PORT/inkwire (superuser;
#                              tests may CREATE DATABASE their own)
#   INKWIRE_TEST_PG_DIR        the cluster's data dir (tools/pg.sh stop/start it for outages)
#   INKWIRE_TEST_PG_PORT       its port
#   INKWIRE_PG_SH              absolute path of tools/pg.sh
#   INKWIRE_BIN                absolute path of the server under test (input, default build/inkwire)
#   INKWIRE_TOKEN_BIN          absolute path of inkwire-token (next to INKWIRE_BIN, else build/)
#   INKWIRE_TEST_TMPDIR        scratch dir for the run (removed at the end)
#   INKWIRE_ROOT               the repository root (also the cwd of every test)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

PASS=0
FAIL=0
DONE=0
TMP=""
PGDIR=""

say() { printf 'integration: %s\n' "$*" >&2; }

summary() {
    [ "$DONE" -eq 1 ] && return 0
    DONE=1
    printf 'integration: %d passed, %d failed\n' "$PASS" "$FAIL"
}

cleanup() {
    if [ -n "$PGDIR" ]; then
        bash "$ROOT/tools/pg.sh" stop "$PGDIR" || say "could not stop PostgreSQL in $PGDIR"
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        rm -rf "$TMP"
    fi
}
CHILD=""

# run_watched SECS OUT CMD... -- run CMD under `timeout SECS`, its output both on
# stdout and in OUT; returns CMD's status (124 on timeout). It runs as a
# background job we wait for, so a signal to this script is handled at once.
run_watched() {
    local secs=$1 out=$2 rc
    shift 2
    ( timeout -k 10 "$secs" "$@" </dev/null 2>&1 | tee "$out"; exit "${PIPESTATUS[0]}" ) &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    return "$rc"
}

# on_signal CODE -- stop the running test (timeout forwards the TERM to it),
# count the interruption as a failure, report, exit (the EXIT trap cleans up).
on_signal() {
    trap '' INT TERM
    say "interrupted by signal"
    if [ -n "$CHILD" ]; then
        pkill -TERM -x timeout -P "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    FAIL=$((FAIL + 1))
    summary
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

fatal() {
    say "error: $*"
    FAIL=$((FAIL + 1))
    summary
    exit 1
}

abs() { realpath -m -- "$1"; }

# ------------------------------------------------------------------ inputs
INKWIRE_BIN=$(abs "${INKWIRE_BIN:-build/inkwire}")
[ -x "$INKWIRE_BIN" ] || fatal "server binary $INKWIRE_BIN missing (build it first: make all)"
BINDIR=$(dirname "$INKWIRE_BIN")
if [ -z "${INKWIRE_TOKEN_BIN:-}" ]; then
    if [ -x "$BINDIR/inkwire-token" ]; then
        INKWIRE_TOKEN_BIN=$BINDIR/inkwire-token
    else
        INKWIRE_TOKEN_BIN=$ROOT/build/inkwire-token
    fi
fi
INKWIRE_TOKEN_BIN=$(abs "$INKWIRE_TOKEN_BIN")
PGTEST_DIR=$(abs "${INKWIRE_PGTEST_DIR:-$BINDIR/pgtests}")
say "server under test: $INKWIRE_BIN"

# ------------------------------------------------------------------ PostgreSQL

# free_port -- print a TCP port nobody listens on, probing up from a random start.
free_port() {
    local start p i
    start=$((15000 + RANDOM % 15000))
    for ((i = 0; i < 500; i++)); do
        p=$((start + i))
        if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/inkwire-it.XXXXXX") || fatal "mktemp failed"
chmod 755 "$TMP"            # as root, the postgres user must reach $TMP/pg
PGDIR=$TMP/pg
URL=""
for attempt in 1 2 3 4 5; do
    PORT=$(free_port) || fatal "no free TCP port found"
    URL=$(bash "$ROOT/tools/pg.sh" start "$PGDIR" "$PORT")
    rc=$?
    [ "$rc" -eq 0 ] && break
    URL=""
    [ "$rc" -eq 98 ] || fatal "PostgreSQL did not start (tools/pg.sh exit $rc)"
    say "port $PORT taken meanwhile (attempt $attempt); trying another"
done
[ -n "$URL" ] || fatal "PostgreSQL did not start"
say "PostgreSQL 15 at $URL (data $PGDIR)"

export INKWIRE_TEST_DATABASE_URL=$URL
export INKWIRE_TEST_PG_DIR=$PGDIR
export INKWIRE_TEST_PG_PORT=$PORT
export INKWIRE_PG_SH=$ROOT/tools/pg.sh
export INKWIRE_BIN INKWIRE_TOKEN_BIN
export INKWIRE_TEST_TMPDIR=$TMP
export INKWIRE_ROOT=$ROOT

# ------------------------------------------------------------------ (a) C programs

# run_cmocka BIN -- run one cmocka program, add its counts to PASS/FAIL.
run_cmocka() {
    local bin=$1 out rc p f
    out=$TMP/$(basename "$bin").out
    printf '\n--- %s\n' "$bin"
    CMOCKA_MESSAGE_OUTPUT=STDOUT run_watched 600 "$out" "$bin"
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        if [ "$rc" -eq 124 ]; then say "$bin timed out"; else say "$bin exited with status $rc"; fi
    fi
    PASS=$((PASS + p))
    FAIL=$((FAIL + f))
}

if [ -d "$PGTEST_DIR" ]; then
    n=0
    for bin in "$PGTEST_DIR"/*; do
        if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
        case $bin in *.d|*.o) continue ;; esac
        run_cmocka "$bin"
        n=$((n + 1))
    done
    say "$n C program(s) from $PGTEST_DIR"
else
    say "no $PGTEST_DIR (no C PostgreSQL tests built)"
fi

# ------------------------------------------------------------------ (b) node tests

# run_node FILE -- one test file under node's TAP reporter; add `# pass`/`# fail`
# (+ `# cancelled`) of its final summary to PASS/FAIL.
run_node() {
    local file=$1 out rc p f c
    out=$TMP/node-$(basename "$file").tap
    printf '\n--- %s\n' "$file"
    run_watched 900 "$out" node --test --test-reporter=tap "$file"
    rc=$?
    p=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
    f=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
    c=$(sed -n 's/^# cancelled \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
    p=${p:-0}; f=$(( ${f:-0} + ${c:-0} ))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        if [ "$rc" -eq 124 ]; then
            say "$file timed out after 900 s"
        else
            say "$file: node exited with status $rc"
        fi
    fi
    PASS=$((PASS + p))
    FAIL=$((FAIL + f))
}

ITDIR=${INKWIRE_INTEGRATION_DIR:-tests/integration}
if [ -d "$ITDIR" ]; then
    mapfile -t files < <(find "$ITDIR" -name '*.test.mjs' -type f | LC_ALL=C sort)
    if [ "${#files[@]}" -gt 0 ]; then
        command -v node >/dev/null 2>&1 || fatal "node not found (run tools/bootstrap.sh)"
        for file in "${files[@]}"; do
            run_node "$file"
        done
    fi
    say "${#files[@]} node test file(s) in $ITDIR"
else
    say "no $ITDIR directory"
fi

summary
[ "$FAIL" -eq 0 ]
