# shellcheck shell=bash
# scripts/lib.sh -- helpers to bring up the services rtmanager-rs needs
# (Docker, Redis, PostgreSQL) on a bare Debian 12 box running as root.
#
# Source it, don't execute it:
#
#     source scripts/lib.sh
#     start_services          # exports TEST_DATABASE_URL / TEST_REDIS_ADDR
#
# Every function is idempotent, logs what it does to stderr and returns
# non-zero on failure (nothing here calls `exit` or sets shell options).
#
# Our Redis/PostgreSQL instances always run on private ports with private
# data dirs; whatever default instances the Debian packages start (or other
# programs already listening on 6379/5432) are never used.

if [[ -n "${_RTM_LIB_SOURCED:-}" ]]; then
    return 0
fi
_RTM_LIB_SOURCED=1
_RTM_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_RTM_APT_UPDATED=""

_rtm_log() { printf '[rtm] %s\n' "$*" >&2; }
_rtm_err() { printf '[rtm] ERROR: %s\n' "$*" >&2; }

# Repo root: parent of the directory that holds this file.
rtm_root() {
    (cd "$_RTM_LIB_DIR/.." && pwd)
}

# --------------------------------------------------------------------------
# packages
# --------------------------------------------------------------------------

# _rtm_apt_install PKG... : apt-get install, running `apt-get update` first
# (once per shell) since we only get here when something is missing.
_rtm_apt_install() {
    if [[ "$(id -u)" != 0 ]]; then
        _rtm_err "need root to apt-get install $*"
        return 1
    fi
    if [[ -z "$_RTM_APT_UPDATED" ]]; then
        _rtm_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        _RTM_APT_UPDATED=1
    fi
    _rtm_log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" >&2
}

# Directory with the newest installed PostgreSQL server binaries
# (/usr/lib/postgresql/<ver>/bin), or non-zero if there is none.
rtm_pg_bindir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" ]] || continue
        if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1)" == "$d" ]]; then
            best="$d"
        fi
    done
    [[ -n "$best" ]] || return 1
    printf '%s\n' "$best"
}

ensure_packages() {
    local pkgs=()
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        pkgs+=(redis-server)
    fi
    # The Sentinel tests run their own sentinels (tests/src/redis_topologies.rs).
    if ! command -v redis-sentinel >/dev/null 2>&1; then
        pkgs+=(redis-sentinel)
    fi
    if ! rtm_pg_bindir >/dev/null; then
        pkgs+=(postgresql)
    fi
    if ((${#pkgs[@]} == 0)); then
        _rtm_log "packages: redis-server, redis-sentinel and postgresql ($(rtm_pg_bindir)) already installed"
        return 0
    fi
    _rtm_apt_install "${pkgs[@]}" || return 1
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1 || ! rtm_pg_bindir >/dev/null; then
        _rtm_err "packages installed but redis-server/redis-sentinel/initdb still missing"
        return 1
    fi
}

# --------------------------------------------------------------------------
# docker
# --------------------------------------------------------------------------

_rtm_wait_docker() {
    local i
    for ((i = 0; i < ${1:-60}; i++)); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

ensure_docker() {
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        _rtm_log "docker: daemon already answering"
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        _rtm_apt_install docker.io || return 1
        # the package's init script may have started a daemon by itself
        if _rtm_wait_docker 5; then
            _rtm_log "docker: daemon started by package install"
            return 0
        fi
    fi
    if pgrep -x dockerd >/dev/null 2>&1; then
        _rtm_log "docker: dockerd is running, waiting for it to answer"
    else
        local state log
        state="${RTM_STATE:-$(rtm_root)/.local}"
        mkdir -p "$state" || return 1
        log="$state/dockerd.log"
        _rtm_log "docker: starting dockerd in the background (log: $log)"
        # own session so it outlives this shell and its job control
        setsid nohup dockerd </dev/null >>"$log" 2>&1 &
        disown 2>/dev/null || true
    fi
    if ! _rtm_wait_docker 60; then
        _rtm_err "docker daemon did not come up within 60s; see ${log:-dockerd log}"
        return 1
    fi
    _rtm_log "docker: ready"
}

# --------------------------------------------------------------------------
# redis
# --------------------------------------------------------------------------

_rtm_redis_up() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
}

# start_redis PORT DIR
start_redis() {
    local port="${1:?start_redis PORT DIR}" dir="${2:?start_redis PORT DIR}"
    if _rtm_redis_up "$port"; then
        _rtm_log "redis: already answering on 127.0.0.1:$port, reusing it"
        return 0
    fi
    mkdir -p "$dir" || return 1
    dir="$(cd "$dir" && pwd)"
    _rtm_log "redis: starting on 127.0.0.1:$port (dir $dir)"
    redis-server --bind 127.0.0.1 --port "$port" \
        --dir "$dir" --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        </dev/null >&2 || { _rtm_err "redis-server failed; see $dir/redis.log"; return 1; }
    local i
    for ((i = 0; i < 100; i++)); do
        if _rtm_redis_up "$port"; then
            _rtm_log "redis: ready on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    _rtm_err "redis did not answer PING on port $port; see $dir/redis.log"
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null
    return 1
}

# stop_redis PORT
stop_redis() {
    local port="${1:?stop_redis PORT}"
    if ! _rtm_redis_up "$port"; then
        _rtm_log "redis: nothing answering on port $port"
        return 0
    fi
    _rtm_log "redis: shutting down 127.0.0.1:$port"
    # `shutdown` closes the connection, so redis-cli may report an error
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do
        _rtm_redis_up "$port" || return 0
        sleep 0.2
    done
    _rtm_err "redis on port $port still answering after shutdown"
    return 1
}

# --------------------------------------------------------------------------
# postgres
# --------------------------------------------------------------------------

# run a command as the postgres user, from a directory it can enter
_rtm_as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

_rtm_pg_ready() {
    local bin
    bin="$(rtm_pg_bindir)" || return 1
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$1" >/dev/null 2>&1
}

_rtm_psql() {
    local port="$1" db="$2"
    shift 2
    "$(rtm_pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# start_postgres PORT DIR
start_postgres() {
    local port="${1:?start_postgres PORT DIR}" dir="${2:?start_postgres PORT DIR}"
    local bin
    bin="$(rtm_pg_bindir)" || { _rtm_err "no PostgreSQL under /usr/lib/postgresql/*/bin (run ensure_packages)"; return 1; }
    if ! id postgres >/dev/null 2>&1; then
        _rtm_err "user 'postgres' does not exist (normally created by the postgresql package)"
        return 1
    fi

    if _rtm_pg_ready "$port"; then
        _rtm_log "postgres: already accepting connections on 127.0.0.1:$port, reusing it"
    else
        mkdir -p "$dir" || return 1
        dir="$(cd "$dir" && pwd)"
        if [[ "$(stat -c %U "$dir")" != postgres ]]; then
            _rtm_log "postgres: chown -R postgres:postgres $dir"
            chown -R postgres:postgres "$dir" || return 1
        fi
        chmod 700 "$dir" || return 1
        if ! _rtm_as_postgres test -x "$dir"; then
            _rtm_err "user postgres cannot enter $dir (a parent dir is not traversable)"
            return 1
        fi
        if [[ ! -s "$dir/PG_VERSION" ]]; then
            _rtm_log "postgres: initdb $dir"
            _rtm_as_postgres "$bin/initdb" -D "$dir" -A trust -U postgres \
                -E UTF8 --locale=C >"$dir.initdb.log" 2>&1 || {
                cat "$dir.initdb.log" >&2
                _rtm_err "initdb failed"
                return 1
            }
            rm -f "$dir.initdb.log"
        fi
        if _rtm_as_postgres "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
            _rtm_err "a postgres is running from $dir but not accepting connections on port $port;" \
                "stop it with: stop_postgres $dir"
            return 1
        fi
        _rtm_log "postgres: starting on 127.0.0.1:$port (data $dir, log $dir/postgres.log)"
        _rtm_as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >&2 || {
            tail -n 30 "$dir/postgres.log" >&2 2>/dev/null
            _rtm_err "pg_ctl start failed; see $dir/postgres.log"
            return 1
        }
        local i
        for ((i = 0; i < 50; i++)); do
            _rtm_pg_ready "$port" && break
            sleep 0.2
        done
    fi

    if [[ "$(_rtm_psql "$port" postgres -tAc "select 1 from pg_database where datname = 'rtmanager'")" != 1 ]]; then
        _rtm_log "postgres: creating database rtmanager"
        _rtm_psql "$port" postgres -c 'create database rtmanager' || return 1
    fi
    _rtm_psql "$port" rtmanager -c 'set client_min_messages = warning' \
        -c 'create schema if not exists rtmanager' || return 1
    _rtm_log "postgres: ready on 127.0.0.1:$port (database rtmanager, schema rtmanager)"
}

# stop_postgres DIR
stop_postgres() {
    local dir="${1:?stop_postgres DIR}" bin
    bin="$(rtm_pg_bindir)" || return 1
    if [[ ! -f "$dir/postmaster.pid" ]] || ! _rtm_as_postgres "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        _rtm_log "postgres: not running from $dir"
        return 0
    fi
    _rtm_log "postgres: stopping (data $dir)"
    _rtm_as_postgres "$bin/pg_ctl" -D "$dir" -m fast -w -t 60 stop >&2
}

# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------

# _rtm_postgres_can_traverse DIR: can user postgres reach DIR? Asks the
# kernel when the user exists; otherwise (package not installed yet) requires
# the world-x bit on DIR and every ancestor.
_rtm_postgres_can_traverse() {
    local d
    d="$(cd "$1" && pwd)" || return 1
    if id postgres >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- test -x "$d") 2>/dev/null
        return
    fi
    while :; do
        (( 8#$(stat -c %a "$d") & 1 )) || return 1
        [[ "$d" == / ]] && return 0
        d="$(dirname "$d")"
    done
}

rtm_env_defaults() {
    export RTM_REDIS_PORT="${RTM_REDIS_PORT:-56379}"
    export RTM_PG_PORT="${RTM_PG_PORT:-55432}"
    export RTM_STATE="${RTM_STATE:-$(rtm_root)/.local}"
    mkdir -p "$RTM_STATE" || return 1
    export RTM_REDIS_DIR="${RTM_REDIS_DIR:-$RTM_STATE/redis}"
    if [[ -z "${RTM_PG_DIR:-}" ]]; then
        # PostgreSQL runs as user postgres and must be able to reach its
        # data dir; the repo may sit below a root-only (0700) directory.
        local cand="$RTM_STATE/pg"
        local sock="$cand/.s.PGSQL.$RTM_PG_PORT"
        if ! _rtm_postgres_can_traverse "$RTM_STATE"; then
            _rtm_log "env: user postgres cannot traverse $RTM_STATE, using /tmp for the pg data dir"
            cand="/tmp/rtm-pg-$RTM_PG_PORT"
        elif ((${#sock} > 100)); then
            _rtm_log "env: $sock too long for a unix socket path, using /tmp for the pg data dir"
            cand="/tmp/rtm-pg-$RTM_PG_PORT"
        fi
        export RTM_PG_DIR="$cand"
    fi
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$RTM_PG_PORT/rtmanager"
    export TEST_REDIS_ADDR="127.0.0.1:$RTM_REDIS_PORT"
}

start_services() {
    rtm_env_defaults || return 1
    ensure_docker || return 1
    ensure_packages || return 1
    start_redis "$RTM_REDIS_PORT" "$RTM_REDIS_DIR" || return 1
    start_postgres "$RTM_PG_PORT" "$RTM_PG_DIR" || return 1
    _rtm_log "services up: TEST_DATABASE_URL=$TEST_DATABASE_URL TEST_REDIS_ADDR=$TEST_REDIS_ADDR"
}

stop_services() {
    rtm_env_defaults || return 1
    stop_redis "$RTM_REDIS_PORT"
    stop_postgres "$RTM_PG_DIR"
}
