#!/usr/bin/env bash
# run-browser-tests.sh -- the end-to-end browser tests (tests/browser/*.test.mjs):
# Debian's Chromium driven headless by playwright-core against the console.
#
# Runs inside a private network namespace (`unshare -n`, only `lo` up), so the
# browsers can probe no interface but loopback, and starts PostgreSQL and
# inkwire INSIDE it: it simply runs tools/run-integration.sh there with
#   INKWIRE_INTEGRATION_DIR=tests/browser   (the browser test files)
#   INKWIRE_PGTEST_DIR=<none>               (no C programs)
# and turns its `integration: P passed, F failed` line into the last line
#   browser: P passed, F failed
# Exits 1 when anything failed. Needs root for unshare -n (as in CI and the
# dev container); without it the tests run in the normal namespace (with a
# note), which still works because the call uses loopback candidates only.
# Screenshots: tests/artifacts/*.png. INKWIRE_BIN as for run-integration.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

if [ "${INKWIRE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 &&
        unshare -n true 2>/dev/null; then
        out=$(mktemp "${TMPDIR:-/tmp}/inkwire-browser.XXXXXX")
        INKWIRE_IN_NETNS=1 unshare -n bash "$0" "$@" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        line=$(grep -E '^integration: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
        rm -f "$out"
        if [ -n "$line" ]; then
            p=$(sed -E 's/^integration: ([0-9]+) passed.*/\1/' <<<"$line")
            f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
        else
            p=0 f=1
        fi
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
        printf 'browser: %d passed, %d failed\n' "$p" "$f"
        [ "$f" -eq 0 ]
        exit
    fi
    echo "run-browser-tests: no network namespace (needs root and unshare); running in the current one" >&2
    INKWIRE_IN_NETNS=1 bash "$0" "$@" 2>&1 | tee /dev/stderr | grep -E '^integration: ' | tail -n 1 |
        sed -E 's/^integration:/browser:/'
    exit "${PIPESTATUS[0]}"
fi

# ---- inside the namespace
ip link set lo up 2>/dev/null || true
export INKWIRE_INTEGRATION_DIR=tests/browser
export INKWIRE_PGTEST_DIR=/nonexistent-no-c-programs
exec bash tools/run-integration.sh
