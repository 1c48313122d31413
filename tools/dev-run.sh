#!/usr/bin/env bash
# dev-run.sh -- `make run`: a private PostgreSQL, the demo studio, inkwire in the foreground.
#
# Defaults, each only when the variable is unset:
#   INKWIRE_DATABASE_URL  a private cluster under var/pg started with tools/pg.sh on
#                         port $INKWIRE_DEV_PG_PORT (default 5544)
#   INKWIRE_LISTEN        127.0.0.1:8080
#   INKWIRE_JWT_ALG       HS256
#   INKWIRE_JWT_KEY       random 48-char secret, generated once into var/dev-secret (0600)
#   INKWIRE_API_KEY       random, generated once into var/dev-api-key (0600)
#   INKWIRE_CONSOLE       1 (the studio console under /console/)
# Starts build/inkwire (override: INKWIRE_BIN) in the background, waits (30 s at
# most) for GET /healthz, provisions the demo studio and its four members through
# the admin API (idempotent PUTs; anything but 200/201 is fatal, body printed),
# mints a 24 h token per member with build/inkwire-token and prints how to connect.
# Then it lives as long as the server: Ctrl-C (SIGINT/SIGTERM) stops inkwire by
# its pid and the cluster it started (a cluster that was already running is left).
# Exits with the server's status, or 1 on a start-up failure.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

say() { printf 'dev-run: %s\n' "$*" >&2; }

# Fixed demo identities (UUID v4 shape), stable across runs.
DEMO_TID=00000000-0000-4000-8000-00000000d001
OWNER_ID=00000000-0000-4000-8000-00000000d101
ARTIST_ID=00000000-0000-4000-8000-00000000d102
CASEY_ID=00000000-0000-4000-8000-00000000d201
JORDAN_ID=00000000-0000-4000-8000-00000000d202

BIN=${INKWIRE_BIN:-build/inkwire}
TOKEN_BIN=${INKWIRE_TOKEN_BIN:-build/inkwire-token}
PGDIR=var/pg
PG_PORT=${INKWIRE_DEV_PG_PORT:-5544}

SERVER_PID=""
STARTED_PG=0
TMPD=""

# cleanup -- stop what we started: the server (TERM, KILL after 10 s) and the
# cluster if we started it; remove the temp dir. Safe to call twice.
cleanup() {
    local i
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        say "stopping inkwire (pid $SERVER_PID)"
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            say "inkwire did not stop in 10 s; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [ "$STARTED_PG" -eq 1 ]; then
        say "stopping PostgreSQL ($PGDIR)"
        bash tools/pg.sh stop "$PGDIR" || say "could not stop PostgreSQL in $PGDIR"
        STARTED_PG=0
    fi
    if [ -n "$TMPD" ]; then
        rm -rf "$TMPD"
        TMPD=""
    fi
}

die() {
    printf 'dev-run: error: %s\n' "$*" >&2
    cleanup
    exit 1
}

trap cleanup EXIT
trap 'printf "\n" >&2; cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

[ -x "$BIN" ] || die "$BIN not found: run 'make' first"
[ -x "$TOKEN_BIN" ] || die "$TOKEN_BIN not found: run 'make' first"
command -v curl >/dev/null 2>&1 || die "curl not found (run tools/bootstrap.sh)"

mkdir -p var
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/inkwire-dev.XXXXXX")

# random_secret -- 48 random hex characters on stdout.
random_secret() {
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex 24
    else
        od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
        printf '\n'
    fi
}

# stored_secret FILE -- the secret in FILE, generated (mode 0600) on first use.
stored_secret() {
    local f=$1
    if [ ! -s "$f" ]; then
        (umask 077 && random_secret >"$f.tmp" && mv "$f.tmp" "$f")
    fi
    chmod 600 "$f"
    head -n 1 "$f"
}

# ------------------------------------------------------------------ configuration
export INKWIRE_LISTEN=${INKWIRE_LISTEN:-127.0.0.1:8080}
export INKWIRE_CONSOLE=${INKWIRE_CONSOLE:-1}   # the studio console at /console/ (off by default in the binary)
export INKWIRE_JWT_ALG=${INKWIRE_JWT_ALG:-HS256}
if [ -z "${INKWIRE_JWT_KEY:-}" ]; then
    case $INKWIRE_JWT_ALG in
        HS*) INKWIRE_JWT_KEY=$(stored_secret var/dev-secret) ;;
        *)   die "INKWIRE_JWT_ALG=$INKWIRE_JWT_ALG needs INKWIRE_JWT_KEY (the key file)" ;;
    esac
fi
export INKWIRE_JWT_KEY
if [ -z "${INKWIRE_API_KEY:-}" ]; then
    INKWIRE_API_KEY=$(stored_secret var/dev-api-key)
fi
export INKWIRE_API_KEY

# Where to reach the server: host:port, [v6]:port or :port; a wildcard bind is
# reached over loopback.
HOSTPORT=$INKWIRE_LISTEN
case $HOSTPORT in
    \[*\]:*) HOST=${HOSTPORT%]:*}; HOST="${HOST#[}"; PORT=${HOSTPORT##*]:} ;;
    *:*)     HOST=${HOSTPORT%:*}; PORT=${HOSTPORT##*:} ;;
    *)       HOST=$HOSTPORT; PORT=8080 ;;
esac
case $HOST in
    ""|0.0.0.0|"*") HOST=127.0.0.1 ;;
    ::)             HOST=::1 ;;
esac
case $HOST in *:*) HOST="[$HOST]" ;; esac
SCHEME=http; WSSCHEME=ws; CURL_TLS=()
if [ -n "${INKWIRE_TLS_CERT:-}" ]; then
    SCHEME=https; WSSCHEME=wss; CURL_TLS=(-k)
fi
BASE="$SCHEME://$HOST:$PORT"
WSURL="$WSSCHEME://$HOST:$PORT/v1/ws"

# ------------------------------------------------------------------ PostgreSQL
if [ -z "${INKWIRE_DATABASE_URL:-}" ]; then
    if bash tools/pg.sh status "$PGDIR" >/dev/null 2>&1; then
        say "PostgreSQL in $PGDIR is already running; using it (it will be left running)"
    else
        STARTED_PG=1
    fi
    INKWIRE_DATABASE_URL=$(bash tools/pg.sh start "$PGDIR" "$PG_PORT") ||
        die "could not start PostgreSQL in $PGDIR on port $PG_PORT (set INKWIRE_DEV_PG_PORT to use another port)"
    say "PostgreSQL: $INKWIRE_DATABASE_URL (data in $PGDIR, log in $PGDIR.log)"
fi
export INKWIRE_DATABASE_URL

# ------------------------------------------------------------------ server
say "starting $BIN on $INKWIRE_LISTEN"
"$BIN" &
SERVER_PID=$!

# server_gone -- if the server has exited, report its status and fail.
server_gone() {
    local rc=0
    kill -0 "$SERVER_PID" 2>/dev/null && return 1
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=""
    die "inkwire exited during start-up with status $rc"
}

ready=0
for ((i = 0; i < 120; i++)); do
    server_gone || true
    if curl -fsS "${CURL_TLS[@]}" --max-time 2 -o /dev/null "$BASE/healthz" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.25
done
[ "$ready" -eq 1 ] || die "inkwire did not answer $BASE/healthz within 30 s"

# ------------------------------------------------------------------ demo studio
# The API key goes in a header file, not on curl's command line (ps would show it).
(umask 077 && printf 'Authorization: Bearer %s\n' "$INKWIRE_API_KEY" >"$TMPD/auth")

# api_put PATH JSON -- PUT JSON to the admin API; anything but 200/201 is fatal.
api_put() {
    local path=$1 body=$2 code
    code=$(curl -sS "${CURL_TLS[@]}" --max-time 10 -o "$TMPD/resp" -w '%{http_code}' \
        -X PUT -H @"$TMPD/auth" -H 'Content-Type: application/json' \
        --data-binary "$body" "$BASE$path") || die "PUT $path: request failed"
    case $code in
        200|201) ;;
        *)
            printf 'dev-run: PUT %s answered %s:\n' "$path" "$code" >&2
            cat "$TMPD/resp" >&2 2>/dev/null
            printf '\n' >&2
            die "provisioning the demo studio failed"
            ;;
    esac
}

T=/v1/admin/tenants/$DEMO_TID
api_put "$T" '{"name":"Demo Ink Studio","subdomain":"demo","plan":"studio","status":"active","allowed_origins":[]}'
api_put "$T/members/$OWNER_ID"  '{"kind":"user","role":"owner","name":"Olivia Owner","email":"owner@demo.ink"}'
api_put "$T/members/$ARTIST_ID" '{"kind":"user","role":"artist","name":"Ari Artist","email":"ari@demo.ink"}'
api_put "$T/members/$CASEY_ID"  '{"kind":"client","role":"client","name":"Casey Client","email":"casey@example.com"}'
api_put "$T/members/$JORDAN_ID" '{"kind":"client","role":"client","name":"Jordan Client","email":"jordan@example.com"}'
say "demo studio provisioned (tenant $DEMO_TID)"

# mint SUB ROLE NAME -- a 24 h token for a demo member (key and algorithm from the env).
# Runs inside $(...): it reports and returns 1, the caller dies.
mint() {
    local out
    if ! out=$("$TOKEN_BIN" --tid "$DEMO_TID" --sub "$1" --role "$2" --name "$3" --ttl 86400); then
        say "$TOKEN_BIN failed for $3"
        return 1
    fi
    out=$(printf '%s\n' "$out" | awk 'NF { last = $0 } END { print last }')
    if [ -z "$out" ]; then
        say "$TOKEN_BIN printed no token for $3"
        return 1
    fi
    printf '%s\n' "$out"
}
TOK_OWNER=$(mint "$OWNER_ID" owner "Olivia Owner") || die "token minting failed"
TOK_ARTIST=$(mint "$ARTIST_ID" artist "Ari Artist") || die "token minting failed"
TOK_CASEY=$(mint "$CASEY_ID" client "Casey Client") || die "token minting failed"
TOK_JORDAN=$(mint "$JORDAN_ID" client "Jordan Client") || die "token minting failed"

# A conversation to chat in, created by Ari with Casey (once; found again on later runs).
CONV_ID=$(node tools/dev-seed.mjs --url "$WSURL" --token "$TOK_ARTIST" --client "$CASEY_ID") ||
    die "creating the demo conversation failed"
say "demo conversation $CONV_ID (Ari Artist with Casey Client)"

cat <<EOF

================================================================================
 inkwire is running (pid $SERVER_PID)

 WebSocket  $WSURL   (subprotocol inkwire.v1)
 Health     $BASE/healthz
 Console    $BASE/console/   (paste a token below; operator page: $BASE/console/operator.html)
 Studio     Demo Ink Studio  tenant $DEMO_TID
 Admin API  Authorization: Bearer <key in var/dev-api-key>

 Tokens (valid 24 h):
   Olivia Owner   (owner)   $TOK_OWNER

   Ari Artist     (artist)  $TOK_ARTIST

   Casey Client   (client)  $TOK_CASEY

   Jordan Client  (client)  $TOK_JORDAN

 Connect, e.g. as Casey (and as Ari in another terminal):
   node protocol/js/examples/chat.mjs --url $WSURL --token $TOK_CASEY

   node protocol/js/examples/chat.mjs --url $WSURL --token $TOK_ARTIST

 Ctrl-C stops inkwire$( [ "$STARTED_PG" -eq 1 ] && printf ' and the PostgreSQL it runs on').
================================================================================

EOF

# Live as long as the server; a signal interrupts wait and runs the trap.
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=""
say "inkwire exited with status $rc"
cleanup
exit "$rc"
