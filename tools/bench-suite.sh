#!/usr/bin/env bash
# bench-suite.sh -- the benchmark suite of `make bench` (tools/bench.sh calls it;
# it also runs alone). Everything on loopback, every run bounded in count and time.
#
# Starts a private PostgreSQL 15 (tools/pg.sh, temp dir, free port) and one
# inkwire server, then drives it with build/inkwire-bot:
#   idle      N idle authenticated sockets (each subscribed to its conversation)
#             held by one node of BENCH_IDLE_WORKERS worker processes (a process
#             holds at most ~19,900: the fd limit is 20,000); server RSS per
#             socket (user space: growth of the workers' summed PSS, so that pages
#             shared between workers count once; VmRSS with one process)
#   fanout    one conversation, N owner sockets subscribed, its client publishes
#             100-byte texts as fast as deliveries keep up: deliveries/s; then
#             the same with INKWIRE_WORKERS=2 (the scaling from 1 to 2 workers)
#   latency   chat: max msgs/s, then the same studios at 50% of it: e2e p99
#   storm     N sockets subscribed, chat running, everyone drops and comes back
#             with `since`: all recovered, gaps, dups, time to recover (a node
#             of BENCH_STORM_WORKERS workers)
#   mix       every scenario the server serves at once (chat, presence churn,
#             inquiries, AR telemetry; staff watch presence): errors must be 0
#   peer      the same fan-out against nats-server's WebSocket listener (installed
#             on demand from Debian: apt-get install nats-server), same bot, same
#             payload size on the wire; prints the ratio inkwire/peer
#   chat, ingest: tools/bench-chat.sh / tools/bench-ingest.sh when present (their
#             output is appended to the log; their figures are theirs)
# Results: $BENCH_OUT (default <build dir>/bench): results.md, results.json,
# fanout.png (gnuplot: deliveries/s per fan-out size, inkwire and peer), the
# raw bot reports (*.json, *.log). The table prints target / measured / PASS|MISS.
# A MISS is reported, not a failure: the script fails (exit 1) only when a run breaks.
#
# Environment:
#   INKWIRE_BIN        server (default build/inkwire; the bot is taken beside it)
#   BENCH_OUT          results directory
#   BENCH_ONLY         subset, e.g. "idle fanout" (default: all)
#   BENCH_QUICK=1      small, fast sizes (2,000 sockets, 5 s) to check the tooling
#   BENCH_SECONDS      measured seconds per run (default 10; quick 5)
#   BENCH_IDLE         idle sockets (default 100,000)
#   BENCH_IDLE_WORKERS INKWIRE_WORKERS of the idle run (default 8: 12,500 sockets each
#                      even if SO_REUSEPORT spreads them unevenly)
#   BENCH_FANOUT       fan-out subscribers (default 10,000)
#   BENCH_FANOUT_SIZES sizes for the chart (default "1000 2500 5000 10000")
#   BENCH_STORM        storm sockets (default 20,000)
#   BENCH_STORM_WORKERS INKWIRE_WORKERS of the storm run (default 2)
# A run with more than one worker starts a private redis-server (workers share
# presence through Redis, as nodes do).
#   BENCH_DB_POOL      INKWIRE_DB_POOL of the server (default 4)
#   BENCH_DWINDOW      fan-out: messages in flight to all subscribers (default 16)
#   BENCH_PEER_SIZE    NATS payload bytes (default: the bytes per delivery of the
#                      inkwire fan-out run, so both put the same bytes on the wire)
#   BENCH_BOT_ARGS     extra inkwire-bot options for every run (e.g. --procs 3)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

BIN=$(realpath -m "${INKWIRE_BIN:-build/inkwire}")
BDIR=$(dirname "$BIN")
BOT=$BDIR/inkwire-bot
[ -x "$BIN" ] || die "$BIN missing (make all)"
[ -x "$BOT" ] || die "$BOT missing (make all)"
command -v curl >/dev/null 2>&1 || die "curl not found"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SECS=${BENCH_SECONDS:-5}; IDLE=${BENCH_IDLE:-2000}; FANOUT=${BENCH_FANOUT:-2000}
    STORM=${BENCH_STORM:-2000}; SIZES=${BENCH_FANOUT_SIZES:-"500 1000 2000"}
    IDLE_W=${BENCH_IDLE_WORKERS:-2}; STORM_W=${BENCH_STORM_WORKERS:-2}
else
    SECS=${BENCH_SECONDS:-10}; IDLE=${BENCH_IDLE:-100000}; FANOUT=${BENCH_FANOUT:-10000}
    STORM=${BENCH_STORM:-20000}; SIZES=${BENCH_FANOUT_SIZES:-"1000 2500 5000 10000"}
    IDLE_W=${BENCH_IDLE_WORKERS:-8}; STORM_W=${BENCH_STORM_WORKERS:-2}
fi
ONLY=${BENCH_ONLY:-"idle fanout latency storm mix peer chat ingest"}
POOL=${BENCH_DB_POOL:-4}
OUT=$(realpath -m "${BENCH_OUT:-$BDIR/bench}")
mkdir -p "$OUT"
want() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

TMP=""; PGDIR=""; SRV_PID=""; NATS_PID=""; REDIS_PID=""; REDIS_URL=""
stop_pid() { # stop_pid PID -- TERM, then KILL after 10 s
    local p=$1
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
    stop_pid "$SRV_PID"; SRV_PID=""
    stop_pid "$NATS_PID"; NATS_PID=""
    stop_pid "$REDIS_PID"; REDIS_PID=""
    [ -n "$PGDIR" ] && bash "$ROOT/tools/pg.sh" stop "$PGDIR" >/dev/null 2>&1
    [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 20000))
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return 0; }
    done
    return 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/inkwire-bench.XXXXXX")
chmod 755 "$TMP"
PGDIR=$TMP/pg
DBURL=$(bash tools/pg.sh start "$PGDIR" "$(free_port)") || die "PostgreSQL did not start"
JWT_KEY=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
API_KEY=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
export INKWIRE_JWT_KEY=$JWT_KEY INKWIRE_API_KEY=$API_KEY INKWIRE_JWT_ALG=HS256

# ensure_redis -- a private redis-server on a free port (for runs with workers)
ensure_redis() {
    [ -n "$REDIS_URL" ] && return 0
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (tools/bootstrap.sh installs it)"
    local rp
    rp=$(free_port) || die "no free port"
    redis-server --bind 127.0.0.1 --port "$rp" --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        [ -n "$(ss -Hltn "sport = :$rp" 2>/dev/null)" ] && { REDIS_URL=redis://127.0.0.1:$rp; return 0; }
        sleep 0.1
    done
    die "redis-server did not start"
}

# start_server [WORKERS] -- a fresh inkwire on a free port (fd limit raised to
# the hard limit), one worker unless told; the database keeps its data between
# runs (every run uses new studios).
start_server() {
    stop_pid "$SRV_PID"
    WORKERS=${1:-1}
    local rurl=""
    if [ "$WORKERS" -gt 1 ]; then ensure_redis; rurl=$REDIS_URL; fi
    PORT=$(free_port) || die "no free port"
    (
        ulimit -n "$(ulimit -Hn)"
        INKWIRE_WORKERS=$WORKERS INKWIRE_REDIS_URL=$rurl \
        INKWIRE_LISTEN=127.0.0.1:$PORT INKWIRE_DATABASE_URL=$DBURL INKWIRE_DB_POOL=$POOL \
        INKWIRE_LOG_LEVEL=warn INKWIRE_DRAIN_S=1 INKWIRE_RATE_PER_MIN=10000000 INKWIRE_RATE_BURST=1000000 \
        INKWIRE_RATE_CLOSE_AFTER=0 exec "$BIN"
    ) >>"$OUT/server.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 150); do
        curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && return 0
        kill -0 "$SRV_PID" 2>/dev/null || { tail -20 "$OUT/server.log" >&2; die "server exited"; }
        sleep 0.1
    done
    die "server did not answer /healthz"
}

# bot NAME ARGS... -- run the bot against the current server; JSON to $OUT/NAME.json,
# progress and report to $OUT/NAME.log (and stderr). Fails the suite if the bot fails.
bot() {
    local name=$1; shift
    say "run $name: inkwire-bot $*"
    # shellcheck disable=SC2086 # BENCH_BOT_ARGS is a list of words
    "$BOT" --label "$name" --json "$@" ${BENCH_BOT_ARGS:-} >"$OUT/$name.json" 2> >(tee "$OUT/$name.log" >&2)
    local rc=$?
    [ "$rc" -eq 0 ] || die "bot run $name failed (exit $rc); see $OUT/$name.log"
}
jget() { # jget FILE KEY -- a number from the bot's flat JSON (nested: e2e.p99_ms)
    python3 - "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'):
    d = d[k]
print(d)
EOF
}

ROWS=()     # "name|target|measured|verdict|note"
row() { ROWS+=("$1|$2|$3|$4|$5"); }
verdict() { # verdict VALUE OP LIMIT
    python3 -c "import sys; v=float(sys.argv[1]); l=float(sys.argv[3]); ok = v>=l if sys.argv[2]=='>=' else v<=l; print('PASS' if ok else 'MISS')" "$1" "$2" "$3"
}
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
say "machine: $(nproc) cores, load $LOAD; results in $OUT"

# ------------------------------------------------------------------ idle
if want idle; then
    start_server "$IDLE_W"
    # T studios of 1 owner + 99 clients; every socket authenticated and
    # subscribed (a client to its conversation, the owner to all 99).
    tn=$(( (IDLE + 99) / 100 ))
    bot idle --port "$PORT" --server-pid "$SRV_PID" --tenants "$tn" --staff 1 --clients 99 \
        --no-studio --duration "$SECS" --warmup 1 --ramp-timeout 300
    n=$(jget "$OUT/idle.json" ready)
    per=$(jget "$OUT/idle.json" rss_bytes_per_socket)
    kib=$(python3 -c "print(round($per/1024, 2))")
    row "idle connections, one node ($IDLE_W workers)" ">= 100,000" "$n" "$(verdict "$n" '>=' 100000)" \
        "ramp $(jget "$OUT/idle.json" ramp_seconds) s; one process holds <= ~19,900 (fd limit 20,000)"
    row "user-space RSS per idle connection" "<= 6 KiB" "$kib KiB" "$(verdict "$kib" '<=' 6)" \
        "growth of the summed PSS of the workers / sockets (shared pages counted once)"
fi
start_server

# ------------------------------------------------------------------ fan-out
FAN_DAT=$OUT/fanout.dat
: >"$FAN_DAT"
fanout_run() { # fanout_run N NAME
    bot "$2" --port "$PORT" --server-pid "$SRV_PID" --fanout "$1" --chat-rate max --dwindow "${BENCH_DWINDOW:-16}" \
        --size 100 --duration "$SECS" --warmup 1 --sample 10 --ramp-timeout 120
}
if want fanout; then
    for n in $SIZES; do
        [ "$n" -le "$FANOUT" ] || continue
        fanout_run "$n" "fanout-$n"
        printf '%s %s inkwire\n' "$n" "$(jget "$OUT/fanout-$n.json" deliveries_per_s)" >>"$FAN_DAT"
    done
    [ -f "$OUT/fanout-$FANOUT.json" ] || { fanout_run "$FANOUT" "fanout-$FANOUT"
        printf '%s %s inkwire\n' "$FANOUT" "$(jget "$OUT/fanout-$FANOUT.json" deliveries_per_s)" >>"$FAN_DAT"; }
    d=$(jget "$OUT/fanout-$FANOUT.json" deliveries_per_s)
    d1=$d
    row "fan-out deliveries/s, $FANOUT subscribers, 1 worker" ">= 500,000/s" "$(printf '%.0f' "$d")" \
        "$(verdict "$d" '>=' 500000)" "bot cpu $(jget "$OUT/fanout-$FANOUT.json" bot_cpu_pct)%, server cpu $(jget "$OUT/fanout-$FANOUT.json" server_cpu_pct)%"
    # the same on 2 workers: subscribers spread over both by SO_REUSEPORT, the
    # publisher's events reach the other worker over the shared-memory bus
    start_server 2
    fanout_run "$FANOUT" "fanout2w-$FANOUT"
    d2=$(jget "$OUT/fanout2w-$FANOUT.json" deliveries_per_s)
    row "fan-out scaling, 1 -> 2 workers ($FANOUT subscribers)" "(reported)" \
        "$(printf '%.0f' "$d1") -> $(printf '%.0f' "$d2")/s (x$(python3 -c "print(round($d2 / max(1, $d1), 2))"))" "-" \
        "2 workers: bot cpu $(jget "$OUT/fanout2w-$FANOUT.json" bot_cpu_pct)%, server cpu $(jget "$OUT/fanout2w-$FANOUT.json" server_cpu_pct)% (both workers); 2 cores shared with the bot"
    start_server
fi

# ------------------------------------------------------------------ latency at 50% load
if want latency; then
    # 20 studios x (2 staff + 10 clients): 200 senders, 240 sockets.
    bot chat-max --port "$PORT" --server-pid "$SRV_PID" --tenants 20 --staff 2 --clients 10 \
        --chat-rate max --window 8 --duration "$SECS" --warmup 1
    max=$(jget "$OUT/chat-max.json" acks_per_s)
    half=$(python3 -c "print(max(1, round($max / 2)))")
    bot chat-half --port "$PORT" --server-pid "$SRV_PID" --tenants 20 --staff 2 --clients 10 \
        --chat-rate "$half" --window 8 --duration "$SECS" --warmup 1
    p99=$(jget "$OUT/chat-half.json" e2e.p99_ms)
    row "chat max (acked msgs/s, e2e)" "(reference)" "$(printf '%.0f' "$max")" "-" "240 sockets, 200 senders"
    row "chat e2e p99 at 50% ($half msgs/s)" "<= 10 ms" "$p99 ms" "$(verdict "$p99" '<=' 10)" \
        "p50 $(jget "$OUT/chat-half.json" e2e.p50_ms) ms, p99.9 $(jget "$OUT/chat-half.json" e2e.p999_ms) ms"
    start_server
fi

# ------------------------------------------------------------------ reconnect storm
if want storm; then
    start_server "$STORM_W"
    # studios of 1 owner + 99 clients; clients chat at 200 msgs/s in total
    # so events are missed during the drop and replayed with `since`.
    tn=$(( (STORM + 99) / 100 ))
    bot storm --port "$PORT" --server-pid "$SRV_PID" --tenants "$tn" --staff 1 --clients 99 \
        --no-studio --chat-rate 200 --duration "$SECS" --warmup 1 --storm-at 1 --ramp-timeout 180
    n=$(jget "$OUT/storm.json" sockets)
    t=$(jget "$OUT/storm.json" storm_seconds)
    done_=$(jget "$OUT/storm.json" storm_complete)
    gaps=$(( $(jget "$OUT/storm.json" gaps) + $(jget "$OUT/storm.json" dups) + $(jget "$OUT/storm.json" behind) ))
    nr=$(jget "$OUT/storm.json" not_recovered)
    ok=MISS
    [ "$done_" = True ] && [ "$gaps" -eq 0 ] && [ "$nr" -eq 0 ] && [ "$n" -ge 20000 ] && ok=PASS
    row "reconnect storm, $n clients ($STORM_W workers)" "20,000, all recovered, 0 gaps" \
        "back in ${t} s, gaps+dups+behind $gaps, unrecovered $nr" "$ok" \
        "recovered subscriptions $(jget "$OUT/storm.json" recovered)"
    start_server
fi

# ------------------------------------------------------------------ studio mix
if want mix; then
    # Every scenario the server serves, at once: 10 studios x (3 staff + 20
    # clients) x 2 devices; chat, presence churn (staff watch presence),
    # inquiries, AR telemetry.
    bot mix --port "$PORT" --server-pid "$SRV_PID" --tenants 10 --staff 3 --clients 20 --devices 2 \
        --presence-sub --chat-rate 200 --presence-rate 20 --inquiry-rate 20 --ar-rate 5000 --consult-rate 5 \
        --duration "$SECS" --warmup 1
    e=$(python3 -c "import json;d=json.load(open('$OUT/mix.json'));print(d['connect_errors']+d['handshake_errors']+d['auth_errors']+d['subscribe_errors']+d['unexpected_closes']+d['gaps']+d['dups']+d['behind']+sum(x['n'] for x in d['reply_errors']))")
    row "studio mix (chat, presence, inquiries, AR)" "(no errors)" \
        "$(printf '%.0f' "$(jget "$OUT/mix.json" acks_per_s)") acks/s, $(printf '%.0f' "$(jget "$OUT/mix.json" ar_events_per_s)") AR ev/s, errors $e" \
        "$([ "$e" -eq 0 ] && echo PASS || echo MISS)" "ack p99 $(jget "$OUT/mix.json" ack.p99_ms) ms, e2e p99 $(jget "$OUT/mix.json" e2e.p99_ms) ms; consults $(jget "$OUT/mix.json" consults_completed_per_s)/s, signal p99 $(jget "$OUT/mix.json" signal.p99_ms) ms"
    start_server
fi

# ------------------------------------------------------------------ peer (nats-server)
ensure_nats() {
    command -v nats-server >/dev/null 2>&1 && return 0
    say "installing nats-server from Debian (apt-get install nats-server)"
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >/dev/null 2>&1; }
    fi
    command -v nats-server >/dev/null 2>&1
}
if want peer; then
    if ensure_nats; then
        NPORT=$(free_port); NWS=$(free_port)
        cat >"$TMP/nats.conf" <<EOF
listen: 127.0.0.1:$NPORT
max_payload: 65536
websocket { listen: "127.0.0.1:$NWS", no_tls: true, compression: false }
EOF
        (ulimit -n "$(ulimit -Hn)"; exec nats-server -c "$TMP/nats.conf") >"$OUT/nats.log" 2>&1 &
        NATS_PID=$!
        for _ in $(seq 100); do
            [ -n "$(ss -Hltn "sport = :$NWS" 2>/dev/null)" ] && break
            sleep 0.1
        done
        # same bytes on the wire per delivery: the inkwire event frame of a
        # 100-byte text is larger than 100 bytes; the NATS payload is padded
        # to that frame's size (measured from the inkwire run when there is one).
        psize=${BENCH_PEER_SIZE:-0}
        if [ "$psize" = 0 ] && [ -f "$OUT/fanout-$FANOUT.json" ]; then
            psize=$(python3 -c "import json;d=json.load(open('$OUT/fanout-$FANOUT.json'));print(int(d.get('bytes_per_delivery') or 100))")
        fi
        [ "$psize" -gt 0 ] 2>/dev/null || psize=100
        for n in $SIZES; do
            [ "$n" -le "$FANOUT" ] || continue
            bot "nats-$n" --peer nats --port "$NWS" --server-pid "$NATS_PID" --fanout "$n" \
                --chat-rate max --dwindow "${BENCH_DWINDOW:-16}" --size "$psize" --duration "$SECS" --warmup 1 --sample 10
            printf '%s %s nats\n' "$n" "$(jget "$OUT/nats-$n.json" deliveries_per_s)" >>"$FAN_DAT"
        done
        if [ -f "$OUT/nats-$FANOUT.json" ] && [ -f "$OUT/fanout-$FANOUT.json" ]; then
            a=$(jget "$OUT/fanout-$FANOUT.json" deliveries_per_s); b=$(jget "$OUT/nats-$FANOUT.json" deliveries_per_s)
            r=$(python3 -c "print(round($a / $b, 3) if $b > 0 else 0)")
            row "fan-out ratio inkwire/nats-server ($FANOUT subs)" "(reported)" "$r" "-" \
                "per server core-second: inkwire $(python3 -c "print(round($a*100/max(1,$(jget "$OUT/fanout-$FANOUT.json" server_cpu_pct))))")/s, nats $(python3 -c "print(round($b*100/max(1,$(jget "$OUT/nats-$FANOUT.json" server_cpu_pct))))")/s; nats $(printf %.0f "$b")/s, bot cpu $(jget "$OUT/nats-$FANOUT.json" bot_cpu_pct)%, nats cpu $(jget "$OUT/nats-$FANOUT.json" server_cpu_pct)%; payload $psize B"
        fi
        stop_pid "$NATS_PID"; NATS_PID=""
    else
        say "nats-server not available: peer comparison skipped"
        row "fan-out ratio inkwire/peer" "(reported)" "skipped" "-" "nats-server could not be installed"
    fi
fi

stop_pid "$SRV_PID"; SRV_PID=""

# ------------------------------------------------------------------ the other benches
if want chat && [ -f tools/bench-chat.sh ]; then
    say "running tools/bench-chat.sh"
    INKWIRE_BIN=$BIN bash tools/bench-chat.sh 2>&1 | tee "$OUT/chat.log" || say "bench-chat.sh failed"
    v=$(grep -E 'PASS|MISS' "$OUT/chat.log" | tail -n 1 | tr -s ' |' ' ' | cut -c1-160)
    row "persisted chat messages/s" ">= 20,000/s" "${v:-see chat.log}" "-" "tools/bench-chat.sh (its own server; chat.log)"
fi
if want ingest && [ -f tools/bench-ingest.sh ]; then
    say "running tools/bench-ingest.sh"
    INKWIRE_BIN=$BIN bash tools/bench-ingest.sh 2>&1 | tee "$OUT/ingest.log" || say "bench-ingest.sh failed"
    v=$(grep -E 'PASS|MISS' "$OUT/ingest.log" | tail -n 1 | tr -s ' |' ' ' | cut -c1-160)
    row "AR telemetry events/s stored" ">= 100,000/s" "${v:-see ingest.log}" "-" "tools/bench-ingest.sh (its own server; ingest.log)"
fi

# ------------------------------------------------------------------ results
{
    printf '# inkwire benchmark results\n\n'
    printf -- '- date: %s\n- machine: %s cores, %s GiB; load average at start %s\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$LOAD"
    printf -- '- server: %s (INKWIRE_DB_POOL=%s per worker; one worker unless the row says); bot and server on the same cores\n' "$BIN" "$POOL"
    printf -- '- measured window %s s per run; raw reports: *.json, *.log beside this file\n\n' "$SECS"
    printf '| benchmark | target | measured | verdict | note |\n|---|---|---|---|---|\n'
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d e <<<"$r"
        printf '| %s | %s | %s | %s | %s |\n' "$a" "$b" "$c" "$d" "$e"
    done
} >"$OUT/results.md"
python3 - "$OUT" "${ROWS[@]}" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = [dict(zip(["benchmark", "target", "measured", "verdict", "note"], r.split("|"))) for r in sys.argv[2:]]
runs = {}
for f in sorted(os.listdir(out)):
    if f.endswith(".json") and f != "results.json":
        try:
            runs[f[:-5]] = json.load(open(os.path.join(out, f)))
        except Exception:
            pass
json.dump({"rows": rows, "runs": runs}, open(os.path.join(out, "results.json"), "w"), indent=1)
EOF
if [ -s "$FAN_DAT" ] && command -v gnuplot >/dev/null 2>&1; then
    awk '$3 == "inkwire"' "$FAN_DAT" >"$OUT/fanout-inkwire.dat"
    awk '$3 == "nats"' "$FAN_DAT" >"$OUT/fanout-nats.dat"
    plots="'$OUT/fanout-inkwire.dat' using 1:2 with linespoints lw 2 pt 7 title 'inkwire (1 worker, persisted)'"
    [ -s "$OUT/fanout-nats.dat" ] && plots="$plots, '$OUT/fanout-nats.dat' using 1:2 with linespoints lw 2 pt 5 title 'nats-server (WebSocket)'"
    ymax=$(awk 'BEGIN {m = 500000} $2 > m {m = $2} END {printf "%.0f", m * 1.15}' "$FAN_DAT")
    gnuplot <<EOF || say "gnuplot failed"
set terminal pngcairo size 900,540 font ",11"
set output '$OUT/fanout.png'
set title "Broadcast fan-out on one channel (loopback, bot and server share $(nproc) cores)"
set xlabel "subscribers"
set ylabel "deliveries per second"
set grid
set key top right box opaque
set yrange [0:$ymax]
set format y "%.0f"
plot $plots, 500000 with lines dt 2 lc rgb "gray" title 'target 500,000/s'
EOF
    printf '\n![fan-out](fanout.png)\n' >>"$OUT/results.md"
fi
printf '\n'
cat "$OUT/results.md"
say "results: $OUT/results.md, $OUT/results.json${FAN_DAT:+, $OUT/fanout.png}"
