# shellcheck shell=bash
# Helpers shared by the test-cluster scripts in this directory.
# Sourced, not executed. Expects the caller to set PROG (used in messages).

HPCHUB_CLUSTERS_STATE=${HPCHUB_CLUSTERS_STATE:-/var/lib/hpchub-clusters}

die() {
    echo "${PROG:-cluster}: error: $*" >&2
    exit 1
}

warn() {
    echo "${PROG:-cluster}: warning: $*" >&2
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
}

need_cmds() {
    local c missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] ||
        die "missing command(s): ${missing[*]} (run tests/clusters/install-packages.sh first)"
}

# Print the last lines of each given log file to stderr.
tail_logs() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || continue
        echo "----- last lines of $f -----" >&2
        tail -n "${TAIL_LINES:-25}" "$f" >&2 || true
    done
}

# pid_alive PID [COMM]: true if PID runs (not a zombie) and, when COMM is
# given, /proc/PID/comm equals COMM (protects against recycled pids).
pid_alive() {
    local pid=$1 comm=${2:-} stat state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    # Field 3 (after the parenthesised command name) is the state.
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ] || return 1
    if [ -n "$comm" ]; then
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    fi
    return 0
}

# pidfile_pid FILE: print the pid stored in FILE (empty if none).
pidfile_pid() {
    local pid=""
    [ -r "$1" ] && read -r pid <"$1" 2>/dev/null || true
    [[ "$pid" =~ ^[0-9]+$ ]] && echo "$pid" || true
}

# pidfile_alive FILE COMM: true if the pid in FILE is alive and named COMM.
pidfile_alive() {
    local pid
    pid=$(pidfile_pid "$1")
    [ -n "$pid" ] && pid_alive "$pid" "$2"
}

# wait_until TIMEOUT_SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_until() {
    local timeout=$1 start now
    shift
    start=$(date +%s%N)
    while :; do
        "$@" && return 0
        now=$(date +%s%N)
        [ $(((now - start) / 1000000)) -lt $((timeout * 1000)) ] || return 1
        sleep 0.1
    done
}

# stop_pid PID COMM [TIMEOUT]: SIGTERM the process (only if it is alive and
# named COMM), wait up to TIMEOUT seconds (default 10), then SIGKILL.
stop_pid() {
    local pid=$1 comm=$2 timeout=${3:-10}
    pid_alive "$pid" "$comm" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$timeout" not_alive "$pid" "$comm"; then
        warn "$comm (pid $pid) did not exit after ${timeout}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 not_alive "$pid" "$comm" || die "$comm (pid $pid) survived SIGKILL"
    fi
}

not_alive() { ! pid_alive "$@"; }

# stop_pidfile FILE COMM [TIMEOUT]: stop_pid on the pid in FILE, remove FILE.
stop_pidfile() {
    local pid
    pid=$(pidfile_pid "$1")
    [ -n "$pid" ] && stop_pid "$pid" "$2" "${3:-10}"
    rm -f "$1"
}

# port_listening PORT: true if something listens on TCP PORT (this netns).
port_listening() {
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

port_free() { ! port_listening "$1"; }

# take_lock NAME: serialise concurrent runs of the same script.
take_lock() {
    mkdir -p "$HPCHUB_CLUSTERS_STATE"
    exec 9>"$HPCHUB_CLUSTERS_STATE/$1.lock"
    flock -w 300 9 || die "could not get lock $HPCHUB_CLUSTERS_STATE/$1.lock"
}

# ensure_subids NAME...: give each user a range of 65536 subordinate uids and gids in /etc/subuid
# and /etc/subgid (rootless podman maps the container's users onto them), after the highest range
# in use. useradd does it by itself once uidmap is installed, but not for users made before that
# nor for users from LDAP; the files name users, so a range may be given before NSS knows them.
ensure_subids() {
    local u f start
    for f in /etc/subuid /etc/subgid; do
        [ -e "$f" ] || install -m 0644 /dev/null "$f"
        for u in "$@"; do
            grep -q "^$u:" "$f" && continue
            start=$(awk -F: 'BEGIN {m = 100000} $2 + $3 > m {m = $2 + $3} END {print m}' "$f")
            echo "$u:$start:65536" >>"$f"
        done
    done
}
