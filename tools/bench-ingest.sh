#!/usr/bin/env bash
# bench-ingest.sh -- the AR telemetry ingest benchmark (part of `make bench`;
# tools/bench.sh calls it, it also runs alone).
#
# Starts a private PostgreSQL 15 (tools/pg.sh, fresh temp dir, free port) and
# one inkwire server on it, provisions a studio and a client through the admin
# API, mints a token, and runs build/inkwire-bench-ingest: S sockets each
# keeping W batches of B events in flight for D seconds. Prints events/s
# acknowledged and stored (verified by count in PostgreSQL), 202 latency
# p50/p99, server RSS before/middle/end, and PASS/MISS against >= 100,000
# events/s. A MISS is reported, not a failure; the script fails only when the
# run breaks. Everything it started is stopped by pid / data dir on exit.
# The per-member rate limit is lifted (INKWIRE_RATE_*): the one bench member
# sends what a whole studio's devices would, and this measures storage, not
# the limiter (with the plan's limit it got 429 and was closed with 4029).
#
# Environment: INKWIRE_BIN (default build/inkwire; the bench client is taken
# from the same directory), BENCH_INGEST_SECONDS (10), BENCH_INGEST_SOCKETS (8),
# BENCH_INGEST_WINDOW (4), BENCH_INGEST_BATCH (250), BENCH_INGEST_DB_POOL (4).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
say() { printf 'bench-ingest: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

BIN=$(realpath -m "${INKWIRE_BIN:-build/inkwire}")
BDIR=$(dirname "$BIN")
CLIENT=$BDIR/inkwire-bench-ingest
TOKEN_BIN=$BDIR/inkwire-token
[ -x "$BIN" ] || die "$BIN missing (make all)"
[ -x "$CLIENT" ] || die "$CLIENT missing (make all)"
[ -x "$TOKEN_BIN" ] || die "$TOKEN_BIN missing (make all)"
command -v curl >/dev/null 2>&1 || die "curl not found"

SECONDS_RUN=${BENCH_INGEST_SECONDS:-10}
SOCKETS=${BENCH_INGEST_SOCKETS:-8}
WINDOW=${BENCH_INGEST_WINDOW:-4}
BATCH=${BENCH_INGEST_BATCH:-250}
POOL=${BENCH_INGEST_DB_POOL:-4}

TMP=""
PGDIR=""
SRV_PID=""
cleanup() {
    if [ -n "$SRV_PID" ]; then
        kill -TERM "$SRV_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SRV_PID" 2>/dev/null || true
    fi
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

TMP=$(mktemp -d "${TMPDIR:-/tmp}/inkwire-bench-ingest.XXXXXX")
chmod 755 "$TMP"
PGDIR=$TMP/pg
DBURL=$(bash tools/pg.sh start "$PGDIR" "$(free_port)") || die "PostgreSQL did not start"

PORT=$(free_port) || die "no free port"
JWT_KEY=$(head -c 36 /dev/urandom | base64 | tr -d '\n/+=' | head -c 48)
API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
INKWIRE_LISTEN=127.0.0.1:$PORT INKWIRE_DATABASE_URL=$DBURL INKWIRE_JWT_KEY=$JWT_KEY \
INKWIRE_API_KEY=$API_KEY INKWIRE_DB_POOL=$POOL INKWIRE_LOG_LEVEL=warn \
INKWIRE_RATE_PER_MIN=10000000 INKWIRE_RATE_BURST=1000000 INKWIRE_RATE_CLOSE_AFTER=0 \
    "$BIN" >"$TMP/server.log" 2>&1 &
SRV_PID=$!
for _ in $(seq 150); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; die "server exited"; }
    sleep 0.1
done

printf 'Authorization: Bearer %s\n' "$API_KEY" >"$TMP/hdr"
put() {
    local code
    code=$(curl -sS --max-time 10 -o "$TMP/resp" -w '%{http_code}' -H @"$TMP/hdr" \
        -H 'content-type: application/json' -X PUT --data "$2" "http://127.0.0.1:$PORT$1")
    case $code in 200|201) ;; *) cat "$TMP/resp" >&2; die "PUT $1 -> $code" ;; esac
}
TID=$(cat /proc/sys/kernel/random/uuid)
CID=$(cat /proc/sys/kernel/random/uuid)
put "/v1/admin/tenants/$TID" '{"name":"Bench Studio","plan":"studio"}'
put "/v1/admin/tenants/$TID/members/$CID" '{"kind":"client","role":"client","name":"Bench Client","email":"bench@example.test"}'
TOKEN=$(INKWIRE_JWT_KEY=$JWT_KEY INKWIRE_JWT_ALG=HS256 "$TOKEN_BIN" --tid "$TID" --sub "$CID" --role client --ttl 3600)

say "server pid $SRV_PID on :$PORT, PostgreSQL $DBURL, pool $POOL"
"$CLIENT" --host 127.0.0.1 --port "$PORT" --token "$TOKEN" --sockets "$SOCKETS" --window "$WINDOW" \
    --batch "$BATCH" --seconds "$SECONDS_RUN" --db "$DBURL" --pid "$SRV_PID"
