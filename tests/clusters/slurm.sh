#!/bin/bash
# One real local Slurm cluster for the hpchub tests.
#
# Head node $(hostname -s) (slurmd in the host network namespace, partition
# "debug") plus HPCHUB_SLURM_NODES compute nodes node1..nodeN (default 3),
# each with its own network namespace, hostname and address on the bridge
# hpchub-br0 (10.77.0.1/24 = head node), partition "multi".
# State, logs and pid files live in /var/lib/hpchub-clusters/slurm; the
# config is /etc/slurm/slurm.conf so that plain `sudo -u alice sbatch` works.
set -euo pipefail

PROG=slurm.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up                  start munge, slurmctld, slurmd(s) and the node namespaces;
                      wait until every node is idle (no-op when healthy)
  down                stop the Slurm daemons, remove namespaces and bridge
  status              print sinfo and squeue; exit 1 if the cluster is not up
  restart-controller  stop and start slurmctld only
  stop-controller     stop slurmctld only
  start-controller    start slurmctld only (and wait for the nodes)
  controller          container role: munge + slurmctld in the foreground
  node NAME           container role: munge + slurmd -N NAME in the foreground
  client              container role: munge (background) + slurm.conf only, for a
                      submit host such as the login node (login.sh serve)
environment:
  HPCHUB_SLURM_NODES=N              compute nodes node1..nodeN (default 3, 0 = head only)
  HPCHUB_SLURM_UP_TIMEOUT=S         seconds to wait for the nodes (default 60)
  HPCHUB_HEAD_SLOTS=N               CPUs the head node declares to partition debug (default 8;
                                    bench/storm.py --users 60 wants 60), applied at `up`
  roles: HPCHUB_SLURM_CONTROLLER=HOST, HPCHUB_SLURM_COMPUTE_NODES=n1,n2,...,
         HPCHUB_MUNGE_KEY=FILE (munge key shared between containers)
EOF
    exit 2
}

STATE=$HPCHUB_CLUSTERS_STATE/slurm
CONF=/etc/slurm/slurm.conf
HEAD=$(hostname -s)
NODES=${HPCHUB_SLURM_NODES:-3}
UP_TIMEOUT=${HPCHUB_SLURM_UP_TIMEOUT:-60}
BRIDGE=hpchub-br0
NET_PREFIX=10.77.0
HEAD_ADDR=$NET_PREFIX.1
CTLD_PID=$STATE/run/slurmctld.pid
MUNGE_PID=$STATE/run/munged.pid
STARTED_CONF=$STATE/run/slurmctld.conf # the config slurmctld was started with

if ! [[ "$NODES" =~ ^[0-9]+$ ]] || [ "$NODES" -gt 89 ]; then
    die "HPCHUB_SLURM_NODES must be a number from 0 to 89 (got '$NODES')"
fi

node_names() {
    local k
    for ((k = 1; k <= NODES; k++)); do echo "node$k"; done
}
node_addr() { echo "$NET_PREFIX.$((10 + ${1#node}))"; }
node_ns() { echo "hpchub-$1"; }
node_veth() { echo "hpchub-v${1#node}"; }
slurmd_pidfile() { echo "$STATE/run/slurmd-$1.pid"; }
multi_range() { [ "$NODES" -eq 1 ] && echo node1 || echo "node[1-$NODES]"; }

# ---------------------------------------------------------------- config

# conf_common CONTROLLER: the settings shared by the local and container setups.
conf_common() {
    cat <<EOF
# Written by tests/clusters/slurm.sh -- test cluster for hpchub. Do not edit.
ClusterName=hpchub
SlurmctldHost=$1
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=5
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=300
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
EOF
}

# The local cluster: head node + namespaced compute nodes.
conf_local() {
    local n
    conf_common "$HEAD"
    local cpus=${HPCHUB_HEAD_SLOTS:-8}
    # Declared, not real: jobs share the machine's cores; 300 MB per declared CPU, at least 16 GB.
    echo "NodeName=$HEAD NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((cpus * 300 > 16000 ? cpus * 300 : 16000)) State=UNKNOWN"
    for n in $(node_names); do
        echo "NodeName=$n NodeAddr=$(node_addr "$n") NodeHostname=$n CPUs=4 RealMemory=8000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$HEAD Default=YES MaxTime=04:00:00 State=UP"
    [ "$NODES" -eq 0 ] ||
        echo "PartitionName=multi Nodes=$(multi_range) MaxTime=1-00:00:00 State=UP"
}

# The container setup: a controller host and compute hosts found by DNS.
conf_roles() {
    local ctl=${HPCHUB_SLURM_CONTROLLER:-} nodes=${HPCHUB_SLURM_COMPUTE_NODES:-} n list
    [ -n "$ctl" ] || die "set HPCHUB_SLURM_CONTROLLER (the controller's hostname)"
    [ -n "$nodes" ] || die "set HPCHUB_SLURM_COMPUTE_NODES (comma-separated node hostnames)"
    list=$(echo "$nodes" | tr -s ', ' '\n' | grep -v '^$' | paste -sd,)
    conf_common "$ctl"
    for n in ${list//,/ }; do
        echo "NodeName=$n CPUs=4 RealMemory=8000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$list Default=YES MaxTime=04:00:00 State=UP"
    echo "PartitionName=multi Nodes=$list MaxTime=1-00:00:00 State=UP"
}

make_dirs() {
    local n
    install -d -m 0755 "$STATE" "$STATE/run" "$STATE/log" "$STATE/ctld" \
        "$STATE/spool" "$STATE/hosts" /etc/slurm
    for n in "$@"; do install -d -m 0755 "$STATE/spool/$n"; done
}

# install_conf TEXT: write TEXT to $CONF if different; true if it changed.
install_conf() {
    if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$1" ]; then
        return 1
    fi
    printf '%s\n' "$1" >"$CONF.tmp.$$"
    chmod 0644 "$CONF.tmp.$$"
    mv -f "$CONF.tmp.$$" "$CONF"
    return 0
}

# ----------------------------------------------------------------- munge

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge_key() {
    local key=/etc/munge/munge.key shared=${HPCHUB_MUNGE_KEY:-} role=${1:-}
    install -d -o munge -g munge -m 0700 /etc/munge
    if [ -n "$shared" ]; then
        # Containers share one key through a volume: the controller makes it.
        if [ ! -s "$shared" ] && [ "$role" = controller ]; then
            install -d "$(dirname "$shared")"
            dd if=/dev/urandom of="$shared.tmp" bs=1024 count=1 status=none
            mv -f "$shared.tmp" "$shared"
        fi
        wait_until 300 test -s "$shared" || die "munge key $shared did not appear"
        cmp -s "$shared" "$key" || install -o munge -g munge -m 0400 "$shared" "$key"
    fi
    if [ ! -s "$key" ]; then
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile="$key" >/dev/null ||
                die "mungekey failed"
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
        chown munge:munge "$key"
        chmod 0400 "$key"
    fi
}

ensure_munge() {
    local pid
    if [ -n "${HPCHUB_MUNGE_KEY:-}" ] || [ ! -s /etc/munge/munge.key ]; then
        ensure_munge_key "${1:-}"
    fi
    munge_ok && return 0
    ensure_munge_key "${1:-}"
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --force >/dev/null 2>&1 9>&- ||
        { tail_logs /var/log/munge/munged.log; die "munged failed to start"; }
    wait_until 10 munge_ok ||
        { tail_logs /var/log/munge/munged.log; die "munged does not answer"; }
    # Remember that we started it, so that `down` stops only our munged.
    pid=$(pidfile_pid /run/munge/munged.pid)
    if [ -n "$pid" ] && [ -d "$STATE/run" ]; then echo "$pid" >"$MUNGE_PID"; fi
}

# --------------------------------------------------------------- network

hosts_file() {
    local n
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$HEAD_ADDR $HEAD"
    for n in $(node_names); do echo "$(node_addr "$n") $n"; done
}

net_up() {
    local n ns veth addr hosts
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
    fi
    ip addr show dev "$BRIDGE" | grep -F "inet $HEAD_ADDR/24" >/dev/null ||
        ip addr add "$HEAD_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    hosts=$(hosts_file)
    for n in $(node_names); do
        ns=$(node_ns "$n")
        veth=$(node_veth "$n")
        addr=$(node_addr "$n")
        [ -e "/run/netns/$ns" ] || ip netns add "$ns" || die "cannot create netns $ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip -n "$ns" link del eth0 >/dev/null 2>&1 || true
            ip link add "$veth" type veth peer name eth0 netns "$ns" ||
                die "cannot create veth $veth"
        fi
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr replace "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        # No default route: a node reaches only the bridge network.
        [ "$(cat "$STATE/hosts/$n" 2>/dev/null)" = "$hosts" ] ||
            printf '%s\n' "$hosts" >"$STATE/hosts/$n"
    done
}

# Remove node namespaces that are not part of the current node set (all if "all").
net_down() {
    local ns n keep=" "
    [ "${1:-}" = all ] || keep=" $(node_names | tr '\n' ' ')"
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^hpchub-node[0-9]*$' || true); do
        n=${ns#hpchub-}
        [[ "$keep" == *" $n "* ]] && continue
        ip link del "$(node_veth "$n")" >/dev/null 2>&1 || true
        ip netns del "$ns" >/dev/null 2>&1 || true
        rm -f "$STATE/hosts/$n"
    done
    if [ "${1:-}" = all ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
}

# --------------------------------------------------------------- daemons

ctld_alive() { pidfile_alive "$CTLD_PID" slurmctld; }
slurmd_alive() { pidfile_alive "$(slurmd_pidfile "$1")" slurmd; }
ctld_answers() { scontrol ping 2>/dev/null | grep -F "is UP" >/dev/null; }

all_logs() {
    local f
    echo "$STATE/log/slurmctld.log"
    for f in "$STATE"/log/slurmd-*.log; do [ -e "$f" ] && echo "$f"; done
    # What the daemons printed while starting (usually empty).
    for f in "$STATE"/log/*.out; do [ -s "$f" ] && echo "$f"; done
    return 0
}

fail() {
    echo "$PROG: error: $*" >&2
    # shellcheck disable=SC2046
    tail_logs $(all_logs)
    exit 1
}

any_slurmd_alive() {
    local f
    for f in "$STATE"/run/slurmd-*.pid; do
        [ -e "$f" ] && pidfile_alive "$f" slurmd && return 0
    done
    return 1
}

start_ctld() {
    local had_nodes=
    ctld_alive && return 0
    any_slurmd_alive && had_nodes=1
    rm -f "$CTLD_PID"
    cp -f "$CONF" "$STARTED_CONF"
    slurmctld -f "$CONF" >>"$STATE/log/slurmctld.out" 2>&1 9>&- ||
        fail "slurmctld failed to start"
    wait_until "$UP_TIMEOUT" ctld_answers || fail "slurmctld does not answer (scontrol ping)"
    if [ -n "$had_nodes" ]; then
        # A restarted slurmctld shows running slurmds as "unknown" until its
        # next ping (~4 s); reconfigure makes them register at once.
        scontrol reconfigure >/dev/null 2>&1 || true
    fi
}

stop_ctld() { stop_pidfile "$CTLD_PID" slurmctld 10; }

start_slurmd() {
    local n=$1 ns
    slurmd_alive "$n" && return 0
    rm -f "$(slurmd_pidfile "$n")"
    if [ "$n" = "$HEAD" ]; then
        slurmd -f "$CONF" -N "$n" >>"$STATE/log/slurmd-$n.out" 2>&1 9>&- ||
            fail "slurmd $n failed to start"
    else
        ns=$(node_ns "$n")
        # nsenter, not `ip netns exec` (that remounts /sys and slurmd dies).
        # The node's /etc/hosts is a bind mount in its own mount namespace.
        nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation private \
            sh -c "mount --bind '$STATE/hosts/$n' /etc/hosts && hostname '$n' &&
                   exec slurmd -f '$CONF' -N '$n'" >>"$STATE/log/slurmd-$n.out" 2>&1 9>&- ||
            fail "slurmd $n failed to start"
    fi
}

# Stop every slurmd this script started (pid files), whatever the node set.
stop_all_slurmd() {
    local f
    for f in "$STATE"/run/slurmd-*.pid; do
        [ -e "$f" ] || continue
        stop_pidfile "$f" slurmd 10 &
    done
    wait
}

stop_stale_slurmd() {
    local f n keep
    keep=" $HEAD $(node_names | tr '\n' ' ')"
    for f in "$STATE"/run/slurmd-*.pid; do
        [ -e "$f" ] || continue
        n=${f##*/slurmd-}
        n=${n%.pid}
        [[ "$keep" == *" $n "* ]] || stop_pidfile "$f" slurmd 10
    done
}

# Node states: print "NAME STATE" lines (long state names, e.g. idle, mixed,
# allocated, down*, drained); one per node.
node_states() { sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }

# All expected nodes respond and are usable (idle, or busy with jobs).
nodes_ready() {
    local states n st
    states=$(node_states) || return 1
    for n in "$HEAD" $(node_names); do
        st=$(awk -v n="$n" '$1 == n {print $2}' <<<"$states")
        case "$st" in
            idle | mixed | allocated | completing) ;;
            *) return 1 ;;
        esac
    done
}

# Nodes whose slurmd runs but that Slurm keeps down or drained (e.g. after a
# crash or a config change): resume them once.
resume_stuck_nodes() {
    local stuck
    stuck=$(node_states | awk '$2 ~ /^(down|drain|drained|draining|fail)$/ {print $1}' | paste -sd,)
    [ -z "$stuck" ] || scontrol update NodeName="$stuck" State=RESUME >/dev/null 2>&1 || true
}

wait_nodes() {
    local deadline=$((SECONDS + UP_TIMEOUT)) resumed=
    while ! nodes_ready; do
        if [ -z "$resumed" ] && [ $((SECONDS + UP_TIMEOUT - deadline)) -ge 3 ]; then
            resume_stuck_nodes
            resumed=1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            sinfo -N -l >&2 2>/dev/null || true
            fail "nodes not idle after ${UP_TIMEOUT}s"
        fi
        sleep 0.1
    done
}

healthy() {
    local n
    [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$(conf_local)" ] || return 1
    munge_ok || return 1
    ctld_alive || return 1
    for n in "$HEAD" $(node_names); do
        slurmd_alive "$n" || return 1
    done
    for n in $(node_names); do
        [ -e "/run/netns/$(node_ns "$n")" ] || return 1
    done
    nodes_ready
}

summary() {
    if [ "$NODES" -eq 0 ]; then
        echo "slurm: up (debug: $HEAD)"
    else
        echo "slurm: up (debug: $HEAD; multi: $(multi_range))"
    fi
}

# ---------------------------------------------------------------- commands

cmd_up() {
    local n
    if healthy; then
        summary
        return 0
    fi
    need_cmds slurmctld slurmd sinfo scontrol munged munge unmunge ip nsenter unshare runuser
    # shellcheck disable=SC2046
    make_dirs "$HEAD" $(node_names)
    ensure_munge
    install_conf "$(conf_local)" || true
    if ! cmp -s "$CONF" "$STARTED_CONF"; then
        # A new node set needs fresh daemons (scontrol reconfigure cannot).
        stop_ctld
        stop_all_slurmd
    fi
    stop_stale_slurmd
    net_down stale
    net_up
    start_ctld
    for n in "$HEAD" $(node_names); do start_slurmd "$n"; done
    for n in "$HEAD" $(node_names); do
        wait_until 10 slurmd_alive "$n" || fail "slurmd $n is not running"
    done
    wait_nodes
    summary
}

cmd_down() {
    stop_ctld &
    stop_all_slurmd &
    wait
    net_down all
    if [ -f "$MUNGE_PID" ]; then
        stop_pidfile "$MUNGE_PID" munged 10
    fi
}

cmd_status() {
    local rc=0
    healthy || rc=1
    sinfo 2>&1 || rc=1
    echo
    squeue 2>&1 || rc=1
    if [ "$rc" -ne 0 ]; then
        echo "slurm: NOT up (run: $0 up)" >&2
    fi
    return "$rc"
}

cmd_start_controller() {
    [ -f "$CONF" ] || die "no $CONF: run '$0 up' first"
    make_dirs
    ensure_munge
    start_ctld
    wait_nodes
}

cmd_controller() {
    need_cmds slurmctld munged
    make_dirs
    ensure_munge controller
    install_conf "$(conf_roles)" || true
    exec slurmctld -D -f "$CONF"
}

cmd_node() {
    local name=$1
    need_cmds slurmd munged
    make_dirs "$name"
    ensure_munge node
    install_conf "$(conf_roles)" || true
    exec slurmd -D -f "$CONF" -N "$name"
}

cmd_client() {
    need_cmds munged munge sinfo
    make_dirs
    ensure_munge node
    install_conf "$(conf_roles)" || true
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    up | down | status | restart-controller | stop-controller | start-controller | controller | client)
        [ $# -eq 0 ] || usage
        ;;
    node) [ $# -eq 1 ] || usage ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac

need_root
case "$cmd" in
    up) take_lock slurm && cmd_up ;;
    down) take_lock slurm && cmd_down ;;
    status) cmd_status ;;
    stop-controller) take_lock slurm && stop_ctld ;;
    start-controller) take_lock slurm && cmd_start_controller ;;
    restart-controller) take_lock slurm && stop_ctld && cmd_start_controller ;;
    controller) cmd_controller ;;
    node) cmd_node "$1" ;;
    client) cmd_client ;;
esac
