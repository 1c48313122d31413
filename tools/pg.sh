#!/usr/bin/env bash
# pg.sh -- a private PostgreSQL 15 cluster for development and tests.
#
#   tools/pg.sh start  DIR PORT   initdb once, start on 127.0.0.1:PORT, create db "inkwire";
#                                 prints postgresql://inkwire@127.0.0.1:PORT/inkwire on stdout
#   tools/pg.sh stop   DIR        fast shutdown; succeeds when nothing runs
#   tools/pg.sh url    DIR PORT   prints the URL (no I/O)
#   tools/pg.sh status DIR        exit 0 and print "PID PORT" when running, else exit 3
#
# The cluster: superuser "inkwire", trust auth, UTF8, locale C, listening on
# 127.0.0.1 only (plus a unix socket in DIR), fsync on. The server log is
# DIR.log (e.g. var/pg -> var/pg.log); initdb output goes there too.
# PostgreSQL refuses to run as root: as root DIR is owned by, and every
# server program runs as, the "postgres" user. As anyone else it runs as you.
# Nothing but the URL (start, url) or "PID PORT" (status) is written on stdout;
# diagnostics go to stderr. Any failure exits non-zero with a reason; start
# exits 98 when PORT is taken (callers may pick another port and retry).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

PROG="pg.sh"
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

usage() {
    sed -n '3,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ------------------------------------------------------------------ binaries

# find_bindir -- set PGBIN to the PostgreSQL 15 server binaries, or die.
find_bindir() {
    if [ -n "${INKWIRE_PG_BINDIR:-}" ]; then
        PGBIN=$INKWIRE_PG_BINDIR
    elif [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        PGBIN=/usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1 &&
         pg_config --version 2>/dev/null | grep -q ' 15\.'; then
        PGBIN=$(pg_config --bindir)
    else
        die "PostgreSQL 15 binaries not found (install postgresql-15, or run tools/bootstrap.sh)"
    fi
    if [ ! -x "$PGBIN/pg_ctl" ] || [ ! -x "$PGBIN/initdb" ]; then
        die "no pg_ctl/initdb in $PGBIN"
    fi
}

# ------------------------------------------------------------------ users

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# as_owner CMD... -- run CMD as the cluster owner: postgres when we are root, else us.
# Runs from / so an unreadable current directory never bothers the server programs.
as_owner() {
    if [ "$IS_ROOT" -eq 1 ]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            local q
            q=$(printf '%q ' "$@")
            (cd / && su postgres -s /bin/sh -c "$q")
        fi
    else
        "$@"
    fi
}

# own_path PATH -- as root, give PATH to postgres (not recursive).
own_path() {
    [ "$IS_ROOT" -eq 1 ] && chown postgres:postgres "$1"
    return 0
}

# ------------------------------------------------------------------ liveness

# pidfile_pid DIR -- print the postmaster pid recorded in DIR/postmaster.pid, or fail.
pidfile_pid() {
    local pid
    [ -f "$1/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# pidfile_port DIR -- print the port recorded in DIR/postmaster.pid (line 4).
pidfile_port() {
    sed -n 4p "$1/postmaster.pid" 2>/dev/null
}

# pg_live DIR -- true when the postmaster recorded in DIR/postmaster.pid is
# alive AND is really the server of DIR (its cwd is DIR), so a pid reused by
# another process after a crash does not count, nor does a zombie. When the
# process's cwd is not readable (another user's process, we are not root) it is
# presumed live.
pg_live() {
    local pid cwd stat
    pid=$(pidfile_pid "$1") || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }                  # after "pid (comm) ": state first
    case ${stat:0:1} in Z|X|x) return 1 ;; esac   # a zombie is a dead postmaster
    if cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null); then
        [ "$cwd" = "$1" ]
    else
        # unreadable: as root that means gone; otherwise another user's process
        [ "$IS_ROOT" -eq 0 ] && [ -d "/proc/$pid" ]
    fi
}

# dir_procs DIR -- print the pids of processes whose cwd is DIR (server processes
# of that cluster, including orphans of a postmaster killed with -9).
dir_procs() {
    local link
    for link in /proc/[0-9]*/cwd; do
        [ "$(readlink "$link" 2>/dev/null)" = "$1" ] || continue
        link=${link#/proc/}
        printf '%s\n' "${link%/cwd}"
    done
}

# clear_stale DIR -- after a crash (postmaster gone, postmaster.pid left),
# wait for orphaned server processes of DIR to exit (they notice the postmaster's
# death within moments; SIGKILL after 15 s), then remove the stale pid file and
# socket lock files so a reused pid or an unreaped zombie cannot block the next
# start. No-op when the server is live.
clear_stale() {
    local dir=$1 i left
    [ -f "$dir/postmaster.pid" ] || return 0
    pg_live "$dir" && return 0
    for ((i = 0; i < 75; i++)); do
        left=$(dir_procs "$dir")
        [ -z "$left" ] && break
        sleep 0.2
    done
    if [ -n "$left" ]; then
        note "killing orphaned server processes of $dir: ${left//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        for ((i = 0; i < 25; i++)); do
            [ -z "$(dir_procs "$dir")" ] && break
            sleep 0.2
        done
    fi
    note "removing stale $dir/postmaster.pid"
    # The socket lock files in DIR (our private socket directory) name the dead
    # postmaster too; postgres would refuse to start while that pid is a zombie.
    rm -f "$dir/postmaster.pid" "$dir"/.s.PGSQL.*.lock "$dir"/.s.PGSQL.[0-9]*
}

# ------------------------------------------------------------------ helpers

abs_dir() {
    local d=$1
    [ -n "$d" ] || die "empty DIR"
    realpath -m -- "$d"
}

check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "bad port: $1"
    fi
}

url_of() {
    printf 'postgresql://inkwire@127.0.0.1:%s/inkwire\n' "$1"
}

psql_q() {  # psql_q PORT DB SQL -- one query as the inkwire superuser over TCP
    PGCONNECT_TIMEOUT=10 "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" \
        -U inkwire -d "$2" -tA -c "$3"
}

# write_conf DIR -- append the dev settings to postgresql.conf once.
write_conf() {
    local dir=$1 conf=$1/postgresql.conf sockdir
    grep -q '^# inkwire-dev-settings' "$conf" 2>/dev/null && return 0
    sockdir=$dir
    # A unix socket path is limited to ~107 bytes; fall back to TCP only.
    [ "${#dir}" -gt 90 ] && sockdir=""
    {
        printf '\n# inkwire-dev-settings (tools/pg.sh)\n'
        printf "listen_addresses = '127.0.0.1'\n"
        printf "unix_socket_directories = '%s'\n" "${sockdir//\'/\'\'}"
        printf 'max_connections = 200\n'
        printf 'shared_buffers = 256MB\n'
        printf 'fsync = on\n'
        printf 'synchronous_commit = on\n'
        printf "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n"
        printf "log_min_messages = warning\n"
    } >>"$conf"
}

# ------------------------------------------------------------------ commands

# cmd_start DIR PORT -- see the header. Idempotent: a cluster already running on
# PORT is left as is; one running on another port is an error.
cmd_start() {
    local dir port parent log created_parent=0 attempt ok=0 running_port logsz
    [ $# -eq 2 ] || usage
    dir=$(abs_dir "$1"); port=$2
    check_port "$port"
    find_bindir
    parent=$(dirname "$dir")
    log="$dir.log"

    if [ "$IS_ROOT" -eq 1 ]; then
        id -u postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (install postgresql-15)"
    fi
    if [ ! -d "$parent" ]; then
        mkdir -p "$parent"
        created_parent=1
    fi
    if [ ! -e "$log" ]; then
        : >"$log"
    fi
    own_path "$log"

    if [ ! -f "$dir/PG_VERSION" ]; then
        if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
            die "$dir exists, is not empty and holds no PostgreSQL cluster; refusing to touch it"
        fi
        mkdir -p "$dir"
        chmod 700 "$dir"
        own_path "$dir"
        [ "$created_parent" -eq 1 ] && own_path "$parent"
        if [ "$IS_ROOT" -eq 1 ] && ! as_owner test -w "$dir"; then
            die "user postgres cannot write $dir (a parent directory is not traversable by it?)"
        fi
        note "initdb $dir (log: $log)"
        if ! as_owner "$PGBIN/initdb" -D "$dir" -U inkwire --auth=trust -E UTF8 --locale=C \
                >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            die "initdb failed for $dir"
        fi
    elif [ "$IS_ROOT" -eq 1 ] && [ "$(stat -c %U "$dir")" != postgres ]; then
        chown -R postgres:postgres "$dir"
    fi
    write_conf "$dir"

    if pg_live "$dir"; then
        running_port=$(pidfile_port "$dir")
        [ "$running_port" = "$port" ] ||
            die "the cluster in $dir already runs on port $running_port, not $port (stop it first)"
    else
        clear_stale "$dir"
        for attempt in 1 2 3 4 5; do
            logsz=$(stat -c %s "$log")
            if as_owner "$PGBIN/pg_ctl" start -D "$dir" -l "$log" -w -t 60 -s \
                    -o "-p $port" >&2; then
                ok=1
                break
            fi
            if tail -c +"$((logsz + 1))" "$log" |
                    grep -q -e 'Address already in use' -e 'could not create any TCP/IP sockets'; then
                tail -n 5 "$log" >&2
                note "port $port is in use"
                exit 98
            fi
            # A start can fail while orphans of a killed postmaster still hold
            # its shared memory: wait and retry.
            note "start attempt $attempt failed; retrying"
            clear_stale "$dir"
            sleep 1
        done
        if [ "$ok" -ne 1 ]; then
            tail -n 20 "$log" >&2
            die "could not start PostgreSQL in $dir on port $port (log: $log)"
        fi
    fi

    local have
    have=$(psql_q "$port" postgres "SELECT 1 FROM pg_database WHERE datname = 'inkwire'") ||
        die "cannot connect to the cluster on 127.0.0.1:$port"
    if [ "$have" != 1 ]; then
        psql_q "$port" postgres "CREATE DATABASE inkwire" >/dev/null ||
            die "CREATE DATABASE inkwire failed"
    fi
    url_of "$port"
}

# cmd_stop DIR -- fast shutdown; returns 0 when nothing was running, and cleans
# up after a crashed postmaster (waits for its orphans, removes the pid file).
cmd_stop() {
    local dir
    [ $# -eq 1 ] || usage
    dir=$(abs_dir "$1")
    [ -f "$dir/postmaster.pid" ] || return 0
    if ! pg_live "$dir"; then
        clear_stale "$dir"
        return 0
    fi
    find_bindir
    if ! as_owner "$PGBIN/pg_ctl" stop -D "$dir" -m fast -w -t 60 -s >&2; then
        pg_live "$dir" && die "could not stop PostgreSQL in $dir"
    fi
    return 0
}

cmd_status() {
    local dir
    [ $# -eq 1 ] || usage
    dir=$(abs_dir "$1")
    if pg_live "$dir"; then
        printf '%s %s\n' "$(pidfile_pid "$dir")" "$(pidfile_port "$dir")"
        return 0
    fi
    return 3
}

cmd_url() {
    [ $# -eq 2 ] || usage
    check_port "$2"
    url_of "$2"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case $cmd in
    start)  cmd_start "$@" ;;
    stop)   cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    url)    cmd_url "$@" ;;
    *)      usage ;;
esac
