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
# toolchain
# --------------------------------------------------------------------------

# The oldest Rust the workspace builds with (`rust-version` in Cargo.toml).
RTM_RUST_MIN=1.85

# check_toolchain: cargo, rustc $RTM_RUST_MIN or newer, rustfmt and clippy.
# The scripts call it before anything else, so a missing piece is named
# with the command that gets it, not found minutes later by a failed build.
check_toolchain() {
    local rustup_hint="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component rustfmt,clippy && . \"\$HOME/.cargo/env\""
    if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
        _rtm_err "no Rust toolchain: cargo and rustc are not on PATH. Rust $RTM_RUST_MIN or newer with rustfmt and clippy is needed;"
        _rtm_err "install it with rustup (Debian 12's rustc package is 1.63, too old):"
        _rtm_err "    $rustup_hint"
        return 1
    fi
    local version
    if ! version="$(rustc --version 2>/dev/null)"; then
        _rtm_err "rustc does not run (rustup without a default toolchain?): rustup default stable"
        return 1
    fi
    version="$(printf '%s\n' "$version" | awk '{print $2}')"
    version="${version%%-*}"
    if [[ "$(printf '%s\n%s\n' "$RTM_RUST_MIN" "$version" | sort -V | head -n1)" != "$RTM_RUST_MIN" ]]; then
        _rtm_err "rustc $version is older than $RTM_RUST_MIN, the oldest this workspace builds with."
        if command -v rustup >/dev/null 2>&1; then
            _rtm_err "update it with: rustup update stable && rustup default stable"
        else
            _rtm_err "install a newer one with rustup: $rustup_hint"
        fi
        return 1
    fi
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if ((${#missing[@]} > 0)); then
        _rtm_err "rustc $version is there, but not ${missing[*]} (cargo ${missing[*]/rustfmt/fmt} fails)."
        if command -v rustup >/dev/null 2>&1; then
            _rtm_err "add it with: rustup component add ${missing[*]}"
        else
            _rtm_err "this toolchain is not rustup's; install one that has them: $rustup_hint"
        fi
        return 1
    fi
    _rtm_log "toolchain: rustc $version, $(cargo fmt --version 2>/dev/null | awk '{print $1, $2}'), $(cargo clippy --version 2>/dev/null | awk '{print $1, $2}')"
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
    local state="" log="" started=""
    if pgrep -x dockerd >/dev/null 2>&1; then
        _rtm_log "docker: dockerd is running, waiting for it to answer"
    else
        state="${RTM_STATE:-$(rtm_root)/.local}"
        mkdir -p "$state" || return 1
        log="$state/dockerd.log"
        _rtm_log "docker: starting dockerd in the background (log: $log)"
        # own session so it outlives this shell and its job control
        setsid nohup dockerd </dev/null >>"$log" 2>&1 &
        disown 2>/dev/null || true
        started=1
    fi
    if ! _rtm_wait_docker 60; then
        _rtm_err "docker daemon did not come up within 60s; see ${log:-dockerd log}"
        return 1
    fi
    if [[ -n "$started" ]]; then
        # For scripts/down, which stops this daemon (and no other). setsid
        # may fork, so the pid is the daemon's own, not $!.
        pgrep -nx dockerd >"$state/dockerd.pid" || true
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

# --------------------------------------------------------------------------
# test leftovers
# --------------------------------------------------------------------------

# _rtm_lib_pg_path TEXT: TEXT names the data dir rtm_env_defaults puts under
# /tmp (rtm-pg-<port>), which is this script's PostgreSQL, not a test's
# (a test's private cluster is rtm-pg-<letters>).
_rtm_lib_pg_path() {
    [[ "$1" =~ /rtm-pg-[0-9]+(/|[[:space:]]|$) ]]
}

# check_test_leftovers LEDGER [--remove]: what the test envs listed in LEDGER
# (one `id` or `id instance` per line, appended by each TestEnv when
# RTM_TEST_LEDGER names the file) left behind: containers (named after the
# env's game ids, which end in `-<id>`, or on its network), images tagged
# `…-<id>`, networks `rtm-test-<id>`, schemas `t_<id>`, Redis keys (the env's
# streams `t<id>:…`, its schema's instance, its games' leases and streaks);
# and what the tests' own servers left: processes whose command line or
# directory is under $TMPDIR/rtm-*, job processes on a test network, mounts
# and files there made since LEDGER.started was touched (the private PostgreSQL data
# dirs of lib.sh excepted). Only this run's things are named, never the
# demo's or anyone else's. Prints each one and returns 1 if any is left.
# With --remove it removes the containers, images, networks, schemas and
# keys instead (the leftovers of an earlier run that was cut short).
check_test_leftovers() {
    local ledger="${1:?check_test_leftovers LEDGER [--remove]}" remove="${2:-}"
    rtm_env_defaults || return 1
    [[ -s "$ledger" ]] || { _rtm_log "leftovers: no test env in $ledger"; return 0; }
    local ids instances tmp found=0 line
    ids="$(awk '{print $1}' "$ledger" | sort -u)"
    instances="$(awk 'NF > 1 {print $2}' "$ledger" | sort -u)"
    tmp="${TMPDIR:-/tmp}"
    tmp="${tmp%/}"
    local reported="" warned=0
    _rtm_left_report() {
        found=1
        reported+=" $*"
        printf '[rtm] left behind: %s\n' "$*" >&2
    }
    # _rtm_left_id_of NAME: the env id NAME ends in (`…-<id>`), if it is one of ours.
    local idset
    idset="$(printf '%s\n' "$ids" | tr '\n' ' ')"
    _rtm_left_id_of() {
        local tail="${1##*-}"
        [[ "$tail" =~ ^[a-z]{8}$ && " $idset " == *" $tail "* ]] && printf '%s' "$tail"
    }

    local cid name networks net
    while read -r cid name networks; do
        [[ -n "$cid" ]] || continue
        local ours=""
        [[ -n "$(_rtm_left_id_of "$name")" ]] && ours=1
        for net in ${networks//,/ }; do
            [[ "$net" == rtm-test-* && -n "$(_rtm_left_id_of "${net#rtm-test-}")" ]] && ours=1
        done
        [[ -n "$ours" ]] || continue
        if [[ "$remove" == --remove ]]; then
            docker rm -f "$cid" >/dev/null && _rtm_log "removed container $name"
        else
            _rtm_left_report "container $name ($cid, networks $networks)"
        fi
    done < <(docker ps -a --format '{{.ID}} {{.Names}} {{.Networks}}')

    local image
    while read -r image; do
        [[ -n "$(_rtm_left_id_of "${image%:*}")" ]] || continue
        if [[ "$remove" == --remove ]]; then
            docker rmi --no-prune "$image" >/dev/null && _rtm_log "removed image tag $image"
        else
            _rtm_left_report "image $image"
        fi
    done < <(docker images --format '{{.Repository}}:{{.Tag}}')

    while read -r net; do
        [[ "$net" == rtm-test-* && -n "$(_rtm_left_id_of "${net#rtm-test-}")" ]] || continue
        if [[ "$remove" == --remove ]]; then
            docker network rm "$net" >/dev/null && _rtm_log "removed network $net"
        elif [[ "$(docker network inspect --format '{{len .Containers}}' "$net" 2>/dev/null)" == 0 ]]; then
            # A network with no container: a warning, not a failure. Two runs
            # in a row left one, the env's schema and keys gone; Docker then
            # refused its removal with "has active endpoints" while listing
            # none, a stale endpoint of the daemon's own (a daemon restart
            # clears it). The test that made it and the cleanup's error are
            # printed below (README "Tests").
            warned=1
            reported+=" $net"
            if docker network rm "$net" >/dev/null 2>&1; then
                printf '[rtm] WARNING: left behind an empty network %s (removed now)\n' "$net" >&2
            else
                printf '[rtm] WARNING: left behind an empty network %s that Docker will not remove (a stale endpoint; a daemon restart clears it)\n' "$net" >&2
            fi
        else
            _rtm_left_report "network $net"
        fi
    done < <(docker network ls --format '{{.Name}}')

    local schema
    while read -r schema; do
        [[ "$schema" == t_* && " $idset " == *" ${schema#t_} "* ]] || continue
        if [[ "$remove" == --remove ]]; then
            _rtm_psql "$RTM_PG_PORT" rtmanager -c 'set client_min_messages = warning' \
                -c "drop schema if exists $schema cascade" && _rtm_log "dropped schema $schema"
        else
            _rtm_left_report "schema $schema (database rtmanager on :$RTM_PG_PORT)"
        fi
    done < <(_rtm_psql "$RTM_PG_PORT" rtmanager -tAc "select nspname from pg_namespace where nspname like 't\_%'")

    # Keys split at `:`, `{` and `}`: a part `t<id>` is a stream of ours (or
    # a delivery mark naming one), a part equal to an instance is its
    # schema's; a lease or streak names its game base64url-encoded.
    local kind key segment game
    while IFS=$'\t' read -r kind key segment; do
        if [[ "$kind" == lease ]]; then
            segment="$(printf '%s' "$segment" | tr -- '-_' '+/')"
            while ((${#segment} % 4)); do segment+='='; done
            game="$(printf '%s' "$segment" | base64 -d 2>/dev/null || true)"
            [[ -n "$(_rtm_left_id_of "$game")" ]] || continue
        fi
        if [[ "$remove" == --remove ]]; then
            redis-cli -h 127.0.0.1 -p "$RTM_REDIS_PORT" del "$key" >/dev/null && _rtm_log "deleted Redis key $key"
        else
            _rtm_left_report "Redis key $key (127.0.0.1:$RTM_REDIS_PORT)"
        fi
    done < <(redis-cli -h 127.0.0.1 -p "$RTM_REDIS_PORT" --scan |
        awk -v ids="$idset" -v instances="$(printf '%s\n' "$instances" | tr '\n' ' ')" '
            BEGIN {
                n = split(ids, a, " "); for (i = 1; i <= n; i++) id[a[i]] = 1
                n = split(instances, a, " "); for (i = 1; i <= n; i++) inst[a[i]] = 1
            }
            {
                n = split($0, part, /[:{}]/)
                for (i = 1; i <= n; i++) {
                    if ((part[i] in inst) || (part[i] ~ /^t[a-z][a-z][a-z][a-z][a-z][a-z][a-z][a-z]$/ && (substr(part[i], 2) in id))) {
                        printf "ours\t%s\t\n", $0; next
                    }
                }
                for (i = 1; i < n; i++) {
                    if (part[i] == "game_lease" && part[i - 1] == "rtmanager") {
                        printf "lease\t%s\t%s\n", $0, part[i + 1]; next
                    }
                }
            }')

    [[ "$remove" == --remove ]] && return 0

    # The tests' own servers (tests/src/services.rs, redis_topologies.rs),
    # Prometheus and job processes: by their directories under $tmp, or
    # (a job binary) by the test network in their environment.
    local proc pid cmdline cwd
    for proc in /proc/[0-9]*; do
        pid="${proc#/proc/}"
        [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
        cmdline="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
        [[ -n "$cmdline" ]] || continue
        cwd="$(readlink "$proc/cwd" 2>/dev/null || true)"
        if { [[ "$cmdline" == *"$tmp/rtm-"* ]] && ! _rtm_lib_pg_path "$cmdline"; } ||
            { [[ "$cwd" == "$tmp"/rtm-* ]] && ! _rtm_lib_pg_path "$cwd"; } ||
            tr '\0' '\n' 2>/dev/null <"$proc/environ" | grep -q '^RTMANAGER_DOCKER_NETWORK=rtm-test-'; then
            _rtm_left_report "process $pid: ${cmdline:0:160} (cwd $cwd)"
        fi
    done
    while read -r _ line _; do
        [[ "$line" == "$tmp"/rtm-* ]] && ! _rtm_lib_pg_path "$line" && _rtm_left_report "mount $line"
    done </proc/mounts
    if [[ -e "$ledger.started" ]]; then
        while IFS= read -r line; do
            _rtm_lib_pg_path "$line" || _rtm_left_report "file $line"
        done < <(find "$tmp" -mindepth 1 -maxdepth 1 \( -name 'rtm-*' -o -name 'file-sd-unit-*' \) \
            -newer "$ledger.started")
    fi

    if ((found || warned)); then
        # Which test made what was left, and what its cleanup said
        # (tests/src/lib.rs writes both; a passing test's output is not shown).
        local made_id made_by
        while read -r made_id made_by; do
            [[ -n "$made_id" && "$reported" == *"$made_id"* ]] &&
                printf '[rtm]   env %s was made by %s\n' "$made_id" "$made_by" >&2
        done < <(cat "$ledger.names" 2>/dev/null)
        [[ -s "$ledger.errors" ]] && sed 's/^/[rtm]   cleanup error: /' "$ledger.errors" >&2
    fi
    if ((found)); then
        _rtm_err "the tests left the above behind (test envs: $ledger)"
        return 1
    fi
    if ((warned)); then
        _rtm_log "leftovers: only the empty network(s) above ($(printf '%s\n' "$ids" | wc -l) test envs checked)"
    else
        _rtm_log "leftovers: none ($(printf '%s\n' "$ids" | wc -l) test envs checked)"
    fi
}
