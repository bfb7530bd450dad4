#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (the PostgreSQL store, issue #9).
#
#   scripts/postgres.sh [start]   install Debian's postgresql if missing, initialise a cluster in
#                                 .cache/pg/data, start it on 127.0.0.1 (a free port) and a unix
#                                 socket in .cache/pg/run, write .cache/pg/env; idempotent, and
#                                 fast when already running
#   scripts/postgres.sh stop      stop it (the data stays; `start` reuses it)
#   scripts/postgres.sh status    exit 0 if it is running
#
# .cache/pg/env (shell-sourceable, 0600) sets HOMEOSTAT_TEST_PG_URL, a postgres:// URL with a
# random password for the superuser `homeostat` (SCRAM over TCP, so the tests exercise real
# authentication). The tests create their own database per test and drop it. The cluster trades
# durability for speed (fsync off): it is for tests only.
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (created
# by the package) and runs under runuser. If the repository is not reachable by that user, the
# data directory goes to /var/tmp/homeostat-pg-<hash> instead (the env file stays in .cache/pg).
#
# When the package cannot be installed because Debian's package servers are unreachable, the
# script writes .cache/pg/UNAVAILABLE with the reason and exits 0: the tests then skip, printing
# it (unless HOMEOSTAT_REQUIRE_REAL=1, when they fail). Any other failure exits non-zero.
#
# Environment: HOMEOSTAT_PG_DIR (default <repo>/.cache/pg).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
dir=${HOMEOSTAT_PG_DIR:-$root/.cache/pg}
cmd=${1:-start}

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] && printf '%s\n' "$d"
}

# Runs a command as the cluster's owner.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

data_dir() {
    if [[ -f $dir/datadir ]]; then
        cat "$dir/datadir"
    else
        printf '%s\n' "$dir/data"
    fi
}

is_running() {
    local bin data
    bin=$(pg_bin) || return 1
    data=$(data_dir)
    [[ -f $data/PG_VERSION ]] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

install_postgres() {
    pg_bin >/dev/null && return 0
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and this is not root: apt-get install postgresql"
    say "installing Debian's postgresql package"
    local log=$dir/apt.log
    if ! DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1 ||
        ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
            >>"$log" 2>&1; then
        if grep -Eq 'Could not resolve|Failed to fetch|Temporary failure|Unable to connect|Network is unreachable|Connection (refused|timed out)' "$log"; then
            printf 'Debian package servers unreachable, cannot install postgresql (see %s)\n' "$log" \
                >"$dir/UNAVAILABLE"
            say "$(<"$dir/UNAVAILABLE")"
            exit 0
        fi
        cat "$log" >&2
        die "apt-get install postgresql failed"
    fi
    pg_bin >/dev/null || die "postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

init_cluster() {
    local bin=$1 data=$2 pwfile
    say "initialising a test cluster in $data"
    rm -rf "$data"
    mkdir -p "$data"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$data"
    chmod 0700 "$data"
    # The password file must be readable by the cluster's owner during initdb only.
    pwfile=$(mktemp)
    cat "$dir/password" >"$pwfile"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$pwfile"
    as_owner "$bin/initdb" -D "$data" -U homeostat --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
}

start() {
    mkdir -p "$dir"
    # As root the cluster's owner must reach run/ (the socket) and data/; nothing else in here
    # is readable by others (password and env are 0600).
    if [[ $(id -u) -eq 0 ]]; then chmod 0711 "$dir"; else chmod 0700 "$dir"; fi
    rm -f "$dir/UNAVAILABLE"
    install_postgres
    local bin data port run
    bin=$(pg_bin)
    if [[ ! -f $dir/datadir ]] && [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$dir"; then
        printf '/var/tmp/homeostat-pg-%s/data\n' "$(printf '%s' "$root" | cksum | cut -d' ' -f1)" \
            >"$dir/datadir"
    fi
    data=$(data_dir)
    run=$dir/run
    mkdir -p "$run" "$(dirname "$data")"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$run"
    if [[ ! -s $dir/password ]]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(16))' >"$dir/password")
        rm -rf "$data"
    fi
    if [[ ! -f $data/PG_VERSION ]]; then
        init_cluster "$bin" "$data"
        rm -f "$dir/port"
    fi
    if ! is_running; then
        [[ -s $dir/port ]] || free_port >"$dir/port"
        port=$(<"$dir/port")
        say "starting PostgreSQL ($("$bin/postgres" --version)) on 127.0.0.1:$port"
        if ! as_owner "$bin/pg_ctl" start -D "$data" -w -t 60 -l "$data/server.log" -o \
            "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$run \
             -c fsync=off -c full_page_writes=off -c synchronous_commit=on \
             -c max_connections=200 -c shared_buffers=32MB" >/dev/null; then
            # The port may have been taken since it was chosen: pick another next time.
            rm -f "$dir/port"
            as_owner cat "$data/server.log" >&2 || true
            die "PostgreSQL did not start"
        fi
    fi
    port=$(<"$dir/port")
    (
        umask 077
        printf 'export HOMEOSTAT_TEST_PG_URL=postgres://homeostat:%s@127.0.0.1:%s/postgres\n' \
            "$(<"$dir/password")" "$port" >"$dir/env"
    )
    say "running on 127.0.0.1:$port (URL in $dir/env)"
}

stop() {
    local bin data
    if is_running; then
        bin=$(pg_bin)
        data=$(data_dir)
        as_owner "$bin/pg_ctl" stop -D "$data" -m fast -w >/dev/null
        say "stopped"
    else
        say "not running"
    fi
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) is_running ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
