#!/bin/bash
# One real local Slurm cluster for the hpchub tests.
#
# Head node $(hostname -s) (slurmd in the host network namespace, partition
# "debug") plus HPCHUB_SLURM_NODES compute nodes node1..nodeN (default 3),
# each with its own network namespace, hostname and address on the bridge
# hpchub-br0 (10.77.0.1/24 = head node), partition "multi".
# State, logs and pid files live in /var/lib/hpchub-clusters/slurm; the
# config is /etc/slurm/slurm.conf so that plain `sudo -u alice sbatch` works.
#
# Accounting (the local cluster, not the container roles): slurmdbd with its own
# MariaDB (datadir under the state dir, listening on 127.0.0.1 only), enforced
# (AccountingStorageEnforce=associations,limits,qos: sbatch refuses an account,
# QoS or reservation the user may not use). Associations of cluster "hpchub":
#   chem   (QoS normal, high; default QoS normal): alice (her default account)
#   phys   (QoS normal): alice, bob (his default)
#   course (QoS normal): carol, dora, emil (their default; dora and emil are LDAP users)
#   bench  (QoS normal): hpcbench01..hpcbench62 (the benchmarks' users)
#   root: root
# Reservations, both for alice and carol:
#   course        active now for a year: a licence-only reservation (Flags=ANY_NODES,
#                 Licenses=course:1) that holds no node or core, so jobs that name it
#                 run on any node and nobody else's job waits for it
#   course-later  2 hours, about 30 days ahead (renewed by `up` when under 7 days away),
#                 on the multi nodes (debug's head node without them): a reservation not yet open
set -euo pipefail

PROG=slurm.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up                  start munge, MariaDB, slurmdbd, slurmctld, slurmd(s) and the node
                      namespaces; set up accounts, QoS and reservations; wait until every
                      node is idle (no-op when healthy)
  down                stop the Slurm daemons and MariaDB, remove namespaces and bridge
  status              print sinfo, squeue, associations and reservations; exit 1 if the
                      cluster is not up
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
# Accounting: MariaDB (own datadir and socket, TCP on loopback only) and slurmdbd.
DB_DIR=$STATE/mariadb
DB_RUN=$STATE/mariadb-run # socket, pid file and log (written by the mysql user)
DB_SOCKET=$DB_RUN/mariadb.sock
DB_PID=$DB_RUN/mariadbd.pid
DB_PORT=6830
DB_PASS_FILE=$STATE/mariadb.pass # slurmdbd's database password (root only)
DBD_CONF=/etc/slurm/slurmdbd.conf  # slurmdbd reads it next to slurm.conf (it has no -f)
DBD_DIR=$STATE/dbd # slurmdbd's log and pid file (it runs as the slurm user)
DBD_PID=$DBD_DIR/slurmdbd.pid
DBD_PORT=6819
CLUSTER=hpchub
BENCH_USERS=$(seq -f 'hpcbench%02g' 1 62 | paste -sd,)

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
ClusterName=$CLUSTER
SlurmctldHost=$1
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
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
    cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HEAD
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos
# Held by the reservation "course" only (no job asks for it): see the header.
Licenses=course:1
EOF
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
    echo "AccountingStorageType=accounting_storage/none"
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

# ------------------------------------------------------------ accounting

db_alive() { pidfile_alive "$DB_PID" mariadbd; }
db_sql() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCKET" -u root -N -B -e "$1"; }
db_answers() { db_sql 'SELECT 1' >/dev/null 2>&1; }
dbd_alive() { pidfile_alive "$DBD_PID" slurmdbd; }
dbd_answers() { timeout 10 sacctmgr -n show cluster format=cluster >/dev/null 2>&1; }

# MariaDB as the mysql user, on its own datadir and socket, TCP on loopback only;
# root logs in through the socket only (unix_socket authentication).
start_db() {
    local pass
    db_alive && db_answers && return 0
    install -d -o mysql -g mysql -m 0700 "$DB_DIR"
    install -d -o mysql -g mysql -m 0755 "$DB_RUN"
    if [ ! -d "$DB_DIR/mysql" ]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.out" 2>&1 ||
            fail "mariadb-install-db failed (see $STATE/log/mariadb-install.out)"
    fi
    if ! db_alive; then
        rm -f "$DB_PID"
        wait_until 30 port_free "$DB_PORT" || fail "port $DB_PORT (MariaDB) stays busy"
        # mariadbd does not fork: run it under setsid from a subshell that exits at once, so
        # that it is not this script's child (a later `wait` would wait for it); stopped by pid.
        (setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCKET" \
            --pid-file="$DB_PID" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --log-error="$DB_RUN/mariadb.log" --innodb-buffer-pool-size=128M \
            --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
            </dev/null >>"$STATE/log/mariadb.out" 2>&1 9>&- &)
    fi
    wait_until 30 db_answers || fail "MariaDB does not answer on $DB_SOCKET"
    if [ ! -s "$DB_PASS_FILE" ]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DB_PASS_FILE")
    fi
    pass=$(cat "$DB_PASS_FILE")
    # slurmdbd connects over TCP to 127.0.0.1 (with "localhost" its client would take the
    # default socket and ignore the port); skip-name-resolve: the host is the address.
    db_sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
        fail "cannot create MariaDB user slurm"
}

dbd_conf() {
    cat <<EOF
# Written by tests/clusters/slurm.sh -- test cluster for hpchub. Do not edit.
AuthType=auth/munge
DbdHost=$HEAD
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=$DBD_DIR/slurmdbd.log
PidFile=$DBD_PID
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DB_PASS_FILE")
StorageLoc=slurm_acct_db
EOF
}

start_dbd() {
    local text
    install -d -o slurm -g slurm -m 0755 "$DBD_DIR"
    text=$(dbd_conf)
    # slurmdbd refuses a config that is not its SlurmUser's and mode 600 (it holds the password).
    if [ ! -f "$DBD_CONF" ] || [ "$(cat "$DBD_CONF")" != "$text" ]; then
        (umask 077 && printf '%s\n' "$text" >"$DBD_CONF.tmp.$$")
        chown slurm:slurm "$DBD_CONF.tmp.$$"
        mv -f "$DBD_CONF.tmp.$$" "$DBD_CONF"
        stop_dbd
    fi
    chown slurm:slurm "$DBD_CONF"
    chmod 0600 "$DBD_CONF"
    if ! dbd_alive; then
        rm -f "$DBD_PID"
        wait_until 30 port_free "$DBD_PORT" || fail "port $DBD_PORT (slurmdbd) stays busy"
        slurmdbd >>"$STATE/log/slurmdbd.out" 2>&1 9>&- || fail "slurmdbd failed to start"
    fi
    wait_until 30 dbd_answers || fail "slurmdbd does not answer (sacctmgr show cluster)"
}

stop_dbd() { stop_pidfile "$DBD_PID" slurmdbd 10; }
stop_db() { stop_pidfile "$DB_PID" mariadbd 30; }

# The associations, default accounts and QoS the header lists, as sacctmgr prints them
# (one "account|user|qos|default qos" line per association, "user|default account"
# per user, "qos:NAME" per QoS); sorted.
accounting_wanted() {
    local u
    {
        echo "root||normal|"
        echo "root|root|normal|"
        echo "chem||high,normal|normal"
        echo "chem|alice|high,normal|normal"
        echo "phys||normal|"
        for u in alice bob; do echo "phys|$u|normal|"; done
        echo "course||normal|"
        for u in carol dora emil; do echo "course|$u|normal|"; done
        echo "bench||normal|"
        for u in ${BENCH_USERS//,/ }; do echo "bench|$u|normal|"; done
        echo "alice|chem"
        echo "bob|phys"
        for u in carol dora emil; do echo "$u|course"; done
        for u in ${BENCH_USERS//,/ }; do echo "$u|bench"; done
        echo "qos:normal"
        echo "qos:high"
    } | sort
}

accounting_now() {
    {
        timeout 10 sacctmgr -nP show assoc where cluster="$CLUSTER" format=account,user,qos,defaultqos
        timeout 10 sacctmgr -nP show user format=user,defaultaccount
        timeout 10 sacctmgr -nP show qos format=name | sed 's/^/qos:/'
    } 2>/dev/null | sort
}

# Everything wanted is there (more may be: other tests may add their own).
accounting_ok() {
    [ -z "$(comm -23 <(accounting_wanted) <(accounting_now))" ]
}

# sacctmgr -i add ... exits 1 with "Nothing new added" / "already exists" for what is
# there: that is fine; anything else fails `up`.
sam() {
    local out
    out=$(timeout 30 sacctmgr -i "$@" 2>&1) && return 0
    grep -qE 'Nothing new added|already exists|Nothing to add|Nothing modified' <<<"$out" && return 0
    fail "sacctmgr $* failed: $out"
}

ensure_accounting() {
    accounting_ok && return 0
    sam add cluster "$CLUSTER"
    sam add qos high
    sam add account chem,phys,course,bench cluster="$CLUSTER"
    sam modify account where name=chem cluster="$CLUSTER" set qos=normal,high defaultqos=normal
    sam add user alice account=chem,phys defaultaccount=chem cluster="$CLUSTER"
    sam add user bob account=phys defaultaccount=phys cluster="$CLUSTER"
    # dora and emil come from LDAP later: sacctmgr does not look users up.
    sam add user carol,dora,emil account=course defaultaccount=course cluster="$CLUSTER"
    sam add user "$BENCH_USERS" account=bench defaultaccount=bench cluster="$CLUSTER"
    accounting_ok || {
        comm -23 <(accounting_wanted) <(accounting_now) | head -n 20 >&2
        fail "associations still differ from what slurm.sh sets up (missing lines above)"
    }
}

# ---------------------------------------------------------- reservations

reservation_line() { scontrol show reservation "$1" -o 2>/dev/null | grep "^ReservationName=$1 "; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
epoch() { date -d "$1" +%s 2>/dev/null || echo 0; }

course_ok() {
    local line
    line=$(reservation_line course) || return 1
    [ "$(field Users <<<"$line")" = alice,carol ] && [ "$(field State <<<"$line")" = ACTIVE ] &&
        [ "$(field Flags <<<"$line")" = ANY_NODES ] &&
        [ "$(epoch "$(field EndTime <<<"$line")")" -gt $((EPOCHSECONDS + 7 * 86400)) ]
}

later_nodes() { [ "$NODES" -eq 0 ] && echo "$HEAD" || multi_range; }
later_partition() { [ "$NODES" -eq 0 ] && echo debug || echo multi; }

course_later_ok() {
    local line start
    line=$(reservation_line course-later) || return 1
    start=$(epoch "$(field StartTime <<<"$line")")
    [ "$(field Users <<<"$line")" = alice,carol ] && [ "$(field Nodes <<<"$line")" = "$(later_nodes)" ] &&
        [ "$(field PartitionName <<<"$line")" = "$(later_partition)" ] && [ "$start" -gt $((EPOCHSECONDS + 7 * 86400)) ] && [ "$start" -lt $((EPOCHSECONDS + 60 * 86400)) ]
}

reservations_ok() { course_ok && course_later_ok; }

ensure_reservations() {
    local out
    if ! course_ok; then
        scontrol delete reservation=course >/dev/null 2>&1 || true
        out=$(scontrol create reservation ReservationName=course StartTime=now Duration=UNLIMITED \
            Users=alice,carol Licenses=course:1 Flags=ANY_NODES 2>&1) ||
            fail "cannot create reservation course: $out"
    fi
    if ! course_later_ok; then
        scontrol delete reservation=course-later >/dev/null 2>&1 || true
        out=$(scontrol create reservation ReservationName=course-later \
            StartTime="$(date -d '+30 days' +%Y-%m-%dT%H:00:00)" Duration=02:00:00 \
            Users=alice,carol PartitionName="$(later_partition)" Nodes="$(later_nodes)" 2>&1) ||
            fail "cannot create reservation course-later: $out"
    fi
    reservations_ok || { scontrol show reservation >&2 || true; fail "reservations not as expected"; }
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
    echo "$DB_RUN/mariadb.log"
    echo "$DBD_DIR/slurmdbd.log"
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
    db_alive && dbd_alive && [ -f "$DBD_CONF" ] && [ "$(cat "$DBD_CONF")" = "$(dbd_conf)" ] || return 1
    nodes_ready && accounting_ok && reservations_ok
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
    need_cmds slurmctld slurmd sinfo scontrol munged munge unmunge ip nsenter unshare runuser \
        slurmdbd sacctmgr mariadbd mariadb mariadb-install-db
    # shellcheck disable=SC2046
    make_dirs "$HEAD" $(node_names)
    ensure_munge
    # sacctmgr reads the accounting settings from slurm.conf: write it first.
    install_conf "$(conf_local)" || true
    # Accounting before slurmctld: with an empty state dir it refuses to start without slurmdbd.
    start_db
    start_dbd
    ensure_accounting
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
    ensure_reservations
    summary
}

cmd_down() {
    stop_ctld &
    stop_all_slurmd &
    wait
    stop_dbd
    stop_db
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
    echo
    if db_alive && dbd_alive; then
        echo "accounting: slurmdbd (pid $(pidfile_pid "$DBD_PID")), MariaDB (pid $(pidfile_pid "$DB_PID")," \
            "127.0.0.1:$DB_PORT, $DB_SOCKET)"
        sacctmgr -P show assoc where cluster="$CLUSTER" format=account,user,qos,defaultqos 2>&1 |
            awk -F'|' '$2 !~ /^hpcbench/ {print} $2 ~ /^hpcbench/ {b++} END {if (b) print "(and " b " hpcbench users in bench)"}'
    else
        echo "accounting: NOT up (MariaDB $(db_alive && echo running || echo stopped)," \
            "slurmdbd $(dbd_alive && echo running || echo stopped))"
        rc=1
    fi
    echo
    scontrol show reservation 2>&1 || rc=1
    if [ "$rc" -ne 0 ]; then
        echo "slurm: NOT up (run: $0 up)" >&2
    fi
    return "$rc"
}

cmd_start_controller() {
    [ -f "$CONF" ] || die "no $CONF: run '$0 up' first"
    make_dirs
    ensure_munge
    start_db
    start_dbd
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
