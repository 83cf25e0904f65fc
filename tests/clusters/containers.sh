#!/bin/bash
# Rootless podman for the jobs of the hpchub tests, configured as a cluster's admin would: once,
# in /etc/containers, so that a user's plain `podman run` works in a batch job on every node
# (no systemd, no login session). Debian 12's podman 4.3.1 (tests/clusters/install-packages.sh).
#
#   /etc/containers/containers.conf   runtime runc, cgroup manager cgroupfs, logs and events to
#                                     files (why: see the file's comments, written below)
#   /etc/containers/storage.conf      each user's image store on the node's local disk,
#                                     /var/tmp/containers-$UID, not in the (shared) home
#   /etc/subuid, /etc/subgid          ranges of the test users (tests/clusters/users.sh and
#                                     ldap.sh give them; `status` checks them)
#
# The test image itself is tests/clusters/image.sh.
set -euo pipefail

PROG=containers.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up      write /etc/containers/containers.conf and storage.conf (no-op when they are current)
  down    remove those two files if this script wrote them
  status  print the two files' state and the test users' subordinate ids; exit 1 if not set up
EOF
    exit 2
}

ETC=/etc/containers
CONTAINERS_CONF=$ETC/containers.conf
STORAGE_CONF=$ETC/storage.conf
HEADER="# Written by tests/clusters/containers.sh -- podman for the hpchub test clusters."
# Local users (users.sh) and LDAP users (ldap.sh) whose jobs run containers.
JOB_USERS=(alice bob carol dora emil)

containers_conf() {
    cat <<EOF
$HEADER
# As a cluster's admin sets it once for every user, instead of flags on every podman command.

[containers]
# No journald without systemd: a container's output goes to a file, as podman does elsewhere.
log_driver = "k8s-file"

[engine]
# Debian 12's default OCI runtime, crun, refuses these machines' hybrid cgroup hierarchy (v1
# controllers plus an empty cgroup2 at /sys/fs/cgroup/unified): "cgroups in hybrid mode not
# supported"; runc runs there.
runtime = "runc"
# A batch job has no systemd user session to ask for a cgroup: podman writes cgroupfs itself.
cgroup_manager = "cgroupfs"
# No journald (see log_driver).
events_logger = "file"
EOF
}

storage_conf() {
    cat <<EOF
$HEADER

[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
# A user's images and containers on the node's own disk, not in the home: homes are shared
# between nodes (NFS on a real cluster, where the subordinate ids of a user namespace cannot own
# files and overlay does not work), and a job must not fill the user's home quota. Each node keeps
# its own copy per user; the first container of a user on a node loads the image there.
rootless_storage_path = "/var/tmp/containers-\$UID/storage"
EOF
}

# write_if_changed FILE TEXT: keep the file (and its mtime) when it already says TEXT.
write_if_changed() {
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && return 0
    if [ -f "$1" ] && ! head -n 1 "$1" | grep -qxF "$HEADER"; then
        cp -p "$1" "$1.before-hpchub-tests"
        warn "$1 was not ours: kept as $1.before-hpchub-tests"
    fi
    printf '%s\n' "$2" >"$1.tmp.$$"
    chmod 0644 "$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
}

current() {
    [ "$(cat "$CONTAINERS_CONF" 2>/dev/null)" = "$(containers_conf)" ] &&
        [ "$(cat "$STORAGE_CONF" 2>/dev/null)" = "$(storage_conf)" ]
}

subids_ok() {
    local u
    for u in "${JOB_USERS[@]}"; do
        grep -q "^$u:" /etc/subuid && grep -q "^$u:" /etc/subgid || return 1
    done
}

cmd_up() {
    need_cmds podman runc newuidmap newgidmap
    install -d -m 0755 "$ETC"
    write_if_changed "$CONTAINERS_CONF" "$(containers_conf)"
    write_if_changed "$STORAGE_CONF" "$(storage_conf)"
    # users.sh and ldap.sh give their users ranges; this covers an LDAP that is not up yet.
    ensure_subids "${JOB_USERS[@]}"
    echo "containers: podman $(podman --version | awk '{print $3}') with runc, cgroupfs; user storage /var/tmp/containers-UID"
}

cmd_down() {
    local f
    for f in "$CONTAINERS_CONF" "$STORAGE_CONF"; do
        if [ -f "$f" ] && head -n 1 "$f" | grep -qxF "$HEADER"; then
            rm -f "$f"
            [ ! -f "$f.before-hpchub-tests" ] || mv -f "$f.before-hpchub-tests" "$f"
        fi
    done
}

cmd_status() {
    local rc=0 u
    if current; then
        echo "containers: $CONTAINERS_CONF and $STORAGE_CONF are current"
    else
        echo "containers: $CONTAINERS_CONF or $STORAGE_CONF missing or changed (run: $0 up)" >&2
        rc=1
    fi
    for u in "${JOB_USERS[@]}"; do
        echo "$u: subuid $(grep "^$u:" /etc/subuid | cut -d: -f2,3 || echo none)," \
            "subgid $(grep "^$u:" /etc/subgid | cut -d: -f2,3 || echo none)"
    done
    subids_ok || rc=1
    return "$rc"
}

[ $# -eq 1 ] || usage
case "$1" in
    up | down | status) ;;
    *) usage ;;
esac

need_root
case "$1" in
    up) take_lock containers && cmd_up ;;
    down) take_lock containers && cmd_down ;;
    status) cmd_status ;;
esac
