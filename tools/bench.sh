#!/usr/bin/env bash
# bench.sh -- `make bench`: every benchmark, one after the other.
#
#   tools/bench-suite.sh   the suite (idle, fan-out, latency, storm, mix, peer);
#                          it runs the two below itself when present
#   tools/bench-chat.sh    chat: persisted messages/s, ack and delivery latency,
#                          per group-commit cap (INKWIRE_DB_BATCH_MAX); targets
#                          >= 20,000 messages/s, p99 ack <= 50 ms
#   tools/bench-ingest.sh  AR telemetry ingest
# Without bench-suite.sh, bench-chat.sh and bench-ingest.sh run directly.
#
# Each prints its figures and PASS/MISS against its targets; a MISS is printed
# loudly but does not fail `make bench`. The exit status is non-zero only when
# a benchmark run itself broke (errors, lost or misordered data). Results are
# also saved under <dir of INKWIRE_BIN>/bench/ (build/bench/ by default).
# Environment: see each script (INKWIRE_BIN, BENCH_CHAT_*, BENCH_INGEST_*).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
rc=0
if [ -f tools/bench-suite.sh ]; then
    set -- tools/bench-suite.sh
else
    set -- tools/bench-chat.sh tools/bench-ingest.sh
fi
for b in "$@"; do
    [ -f "$b" ] || continue
    printf '\n=== %s\n' "$b"
    if ! bash "$b"; then
        printf 'bench: %s: the run broke\n' "$b" >&2
        rc=1
    fi
done
exit "$rc"
