#!/bin/sh
# shellcheck disable=SC3013 # test -nt: supported by dash, bash and busybox sh
# bootstrap.sh -- make a fresh Debian 12 machine able to build, run and test inkwire.
#
# Contract: idempotent and fast (one dpkg-query call, well under a second) when
# nothing is missing. When Debian packages are missing it runs `apt-get update`
# once and installs only the missing ones (as root, or through sudo; it fails
# with a clear message when neither is possible). nodejs/npm are taken from
# apt only when no node >= 18 with npm is already on PATH (a NodeSource or
# /usr/local node must not be fought with Debian's npm). When protocol/js has a
# package.json and its node_modules is missing or older than the lock file, it
# runs `npm ci` there. Exits non-zero, with the reason on stderr, on any failure.
set -eu

cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config libwebsockets-dev libwebsockets-evlib-uv libpq-dev
libmsgpack-dev libhiredis-dev libssl-dev libjwt-dev libsrtp2-dev libcmocka-dev
libuv1-dev libjansson-dev uuid-dev postgresql-15 postgresql-client-15 redis-server
clang-14 libclang-rt-14-dev gnuplot-nox curl ca-certificates procps iproute2
util-linux openssl
chromium coturn"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# node_ok -- true when `node` >= 18 and `npm` are both on PATH.
node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
    v=$(node --version 2>/dev/null) || return 1   # e.g. v20.20.2
    v=${v#v}; major=${v%%.*}
    case $major in ''|*[!0-9]*) return 1 ;; esac
    [ "$major" -ge 18 ]
}

if ! node_ok; then
    PKGS="$PKGS nodejs npm"
fi

# missing_pkgs -- print the packages of $PKGS dpkg does not report as installed
# (unknown names print nothing on stdout, so they count as missing too).
missing_pkgs() {
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    installed=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' $PKGS 2>/dev/null |
                awk '$1 == "installed" { sub(/:.*/, "", $2); printf " %s", $2 }') || true
    for p in $PKGS; do
        case "$installed " in
            *" $p "*) ;;
            *) printf '%s ' "$p" ;;
        esac
    done
}

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian 12 (bookworm) only"

missing=$(missing_pkgs)
if [ -n "$missing" ]; then
    say "missing Debian packages: $missing"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        die "need root or sudo to install: $missing (run: apt-get install -y --no-install-recommends $missing)"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update ||
        die "apt-get update failed"
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing ||
        die "apt-get install failed for: $missing"
    still=$(missing_pkgs)
    [ -z "$still" ] || die "still missing after apt-get install: $still"
    say "installed: $missing"
fi

node_ok || die "node >= 18 and npm are required on PATH (found: $(node --version 2>/dev/null || echo none))"

# protocol/js dependencies (the SDK and the integration tests use them).
JS=protocol/js
if [ -f "$JS/package.json" ]; then
    ref="$JS/node_modules/.package-lock.json"   # npm rewrites it on every install
    [ -e "$ref" ] || ref="$JS/node_modules"
    need=0
    if [ ! -d "$JS/node_modules" ]; then
        need=1
    elif [ -f "$JS/package-lock.json" ] && [ "$JS/package-lock.json" -nt "$ref" ]; then
        need=1
    elif [ ! -f "$JS/package-lock.json" ] && [ "$JS/package.json" -nt "$ref" ]; then
        need=1
    fi
    if [ "$need" -eq 1 ]; then
        if [ -f "$JS/package-lock.json" ]; then
            say "npm ci in $JS"
            (cd "$JS" && npm ci --no-audit --no-fund) >&2 || die "npm ci failed in $JS"
        else
            say "npm install in $JS (no package-lock.json)"
            (cd "$JS" && npm install --no-audit --no-fund --no-package-lock) >&2 ||
                die "npm install failed in $JS"
        fi
        mkdir -p "$JS/node_modules" && touch "$JS/node_modules"
    fi
fi
exit 0
