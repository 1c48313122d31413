#!/usr/bin/env bash
# bench-chat.sh -- the chat benchmark (part of `make bench`; tools/bench.sh
# calls it, it also runs alone).
#
# Starts a private PostgreSQL 15 (tools/pg.sh, fresh temp dir, free port;
# fsync and synchronous_commit on), then for each group-commit cap in
# BENCH_CHAT_CAPS starts one inkwire on it with INKWIRE_DB_BATCH_MAX=<cap> and
# runs build/inkwire-bench-chat against it (127.0.0.1 only): T tenants,
# C conversations, each with N senders keeping W sends in flight and M
# subscribers, for D seconds. Per cap it prints persisted messages/s (counted
# in PostgreSQL), PostgreSQL commits/s, ack latency p50/p99 (send -> 201),
# delivery latency p50/p99 (send -> message.created at a subscriber) and
# PASS/MISS against >= 20,000 persisted messages/s with p99 ack <= 50 ms; then
# a table of all caps. A MISS is printed loudly but is not a failure; the
# script fails only when a run breaks (errors, lost or misordered messages).
# Results also go to <dir of INKWIRE_BIN>/bench/chat.txt (build/bench/chat.txt).
# Everything it started is stopped by pid / data dir on exit.
#
# Environment: INKWIRE_BIN (default build/inkwire; the client is taken from
# the same directory), BENCH_CHAT_CAPS ("1 16 64 128"), BENCH_CHAT_SECONDS (10),
# BENCH_CHAT_TENANTS (2), BENCH_CHAT_CONVS (16), BENCH_CHAT_SENDERS (4),
# BENCH_CHAT_SUBS (2), BENCH_CHAT_WINDOW (8), BENCH_CHAT_DB_POOL (4).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
say() { printf 'bench-chat: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

BIN=$(realpath -m "${INKWIRE_BIN:-build/inkwire}")
BDIR=$(dirname "$BIN")
CLIENT=$BDIR/inkwire-bench-chat
[ -x "$BIN" ] || die "$BIN missing (make all)"
[ -x "$CLIENT" ] || die "$CLIENT missing (make all)"
command -v curl >/dev/null 2>&1 || die "curl not found"

CAPS=${BENCH_CHAT_CAPS:-1 16 64 128}
SECS=${BENCH_CHAT_SECONDS:-10}
TENANTS=${BENCH_CHAT_TENANTS:-2}
CONVS=${BENCH_CHAT_CONVS:-16}
SENDERS=${BENCH_CHAT_SENDERS:-4}
SUBS=${BENCH_CHAT_SUBS:-2}
WINDOW=${BENCH_CHAT_WINDOW:-8}
POOL=${BENCH_CHAT_DB_POOL:-4}
OUTDIR=$BDIR/bench
OUT=$OUTDIR/chat.txt
mkdir -p "$OUTDIR"

TMP=""
PGDIR=""
SRV_PID=""
stop_server() {
    if [ -n "$SRV_PID" ]; then
        kill -TERM "$SRV_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
        SRV_PID=""
    fi
}
cleanup() {
    stop_server
    [ -n "$PGDIR" ] && bash "$ROOT/tools/pg.sh" stop "$PGDIR" >/dev/null 2>&1 || true
    [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 20000))
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return 0; }
    done
    return 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/inkwire-bench-chat.XXXXXX")
chmod 755 "$TMP"
PGDIR=$TMP/pg
DBURL=$(bash tools/pg.sh start "$PGDIR" "$(free_port)") || die "PostgreSQL did not start"
JWT_KEY=$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=' | head -c 48)
API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

{
    printf '# inkwire chat benchmark, %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf '# %s tenants, %s conversations x (%s senders x %s in flight + %s subscribers), %s s per cap, DB pool %s\n' \
        "$TENANTS" "$CONVS" "$SENDERS" "$WINDOW" "$SUBS" "$SECS" "$POOL"
    printf '# %s cores, PostgreSQL 15 (fsync on, synchronous_commit on), server+PostgreSQL+client on one box\n' "$(nproc)"
} >"$OUT"

BROKE=0
RESULTS=()
for CAP in $CAPS; do
    PORT=$(free_port) || die "no free port"
    INKWIRE_LISTEN=127.0.0.1:$PORT INKWIRE_DATABASE_URL=$DBURL INKWIRE_JWT_KEY=$JWT_KEY \
    INKWIRE_API_KEY=$API_KEY INKWIRE_DB_POOL=$POOL INKWIRE_DB_BATCH_MAX=$CAP \
    INKWIRE_RATE_PER_MIN=10000000 INKWIRE_RATE_BURST=10000000 INKWIRE_LOG_LEVEL=warn \
        "$BIN" >"$TMP/server-$CAP.log" 2>&1 &
    SRV_PID=$!
    up=0
    for _ in $(seq 150); do
        if curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then up=1; break; fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$up" -ne 1 ]; then
        cat "$TMP/server-$CAP.log" >&2
        die "server (cap $CAP) did not come up"
    fi
    say "cap $CAP: server pid $SRV_PID on :$PORT, PostgreSQL $DBURL"
    set +e
    "$CLIENT" --host 127.0.0.1 --port "$PORT" --api-key "$API_KEY" --jwt-key "$JWT_KEY" --db "$DBURL" \
        --tenants "$TENANTS" --convs "$CONVS" --senders "$SENDERS" --subs "$SUBS" --window "$WINDOW" \
        --seconds "$SECS" --label "cap=$CAP" --pid "$SRV_PID" \
        --pg-pid "$(head -n 1 "$PGDIR/postmaster.pid" 2>/dev/null || echo 0)" >"$TMP/run-$CAP.txt"
    rc=$?
    set -e
    grep -v '^RESULT ' "$TMP/run-$CAP.txt" | tee -a "$OUT"
    if [ "$rc" -ne 0 ]; then
        say "cap $CAP: the run BROKE (exit $rc); server log tail:"
        tail -n 20 "$TMP/server-$CAP.log" >&2
        BROKE=1
    fi
    r=$(grep '^RESULT ' "$TMP/run-$CAP.txt" || true)
    [ -n "$r" ] && RESULTS+=("$r")
    stop_server
done

# field NAME LINE -- value of NAME=... in a RESULT line
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
{
    printf '\nchat summary (targets: >= 20000 persisted msgs/s, p99 ack <= 50 ms)\n'
    printf '%-10s %12s %10s %10s %10s %10s %10s  %s\n' cap msgs/s tx/s ack_p50 ack_p99 e2e_p50 e2e_p99 verdict
    for r in "${RESULTS[@]}"; do
        printf '%-10s %12s %10s %10s %10s %10s %10s  rate %s, p99 ack %s\n' "$(field label "$r")" \
            "$(field msgs_s "$r")" "$(field tx_s "$r")" "$(field ack_p50 "$r")ms" "$(field ack_p99 "$r")ms" \
            "$(field e2e_p50 "$r")ms" "$(field e2e_p99 "$r")ms" "$(field rate "$r")" "$(field ack "$r")"
    done
    if printf '%s\n' "${RESULTS[@]}" | grep -q 'MISS'; then
        printf '\n!!!!! MISS: at least one cap misses a target (see the verdict column) !!!!!\n'
    fi
} | tee -a "$OUT"
say "results saved to $OUT"
exit "$BROKE"
