#!/bin/bash
# One real local Son of Grid Engine 8.1.9 cluster for the hpchub tests:
# qmaster and execd on this host, queues short.q and long.q, PEs smp and mpi,
# h_vmem consumable. Jobs must come from users with uid >= 1000.
#
# Projects (qsub -P), as the Slurm cluster's accounts (tests/clusters/slurm.sh):
#   chem   access list chem_users:   alice (her default project)
#   phys   access list phys_users:   alice, bob (his default)
#   course access list course_users: carol, dora, emil (carol's default)
# enforce_project stays false: a job that names no project still runs (with the
# user's default project, if any); naming a project outside one's lists is refused.
# Advance reservation "course" (qrsub, root's): 1 slot of long.q for alice and carol,
# 2 hours about 30 days ahead (renewed by `up` when under 7 days away), so that it
# holds no slot now; Grid Engine's ARs are numbered, qrstat lists them by name.
set -euo pipefail

PROG=sge.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up          start sge_qmaster and sge_execd, configure queues, projects and the
              advance reservation (no-op when healthy)
  down        stop sge_execd and sge_qmaster, wait until port 6444 is free
  status      print qstat -g c and qhost; exit 1 if the cluster is not up
  foreground  container role: up, then stay in the foreground while qmaster runs
environment:
  HPCHUB_SGE_UP_TIMEOUT=S   seconds to wait for the daemons (default 60)
  HPCHUB_HEAD_SLOTS=N       slots of short.q and of long.q (default 8; bench/storm.py --users 60
                            wants 60), applied at `up`
EOF
    exit 2
}

export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine}
export SGE_CELL=${SGE_CELL:-default}
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QMASTER_SPOOL=$SPOOL/qmaster
QMASTER_PID=$QMASTER_SPOOL/qmaster.pid
QMASTER_LOG=$QMASTER_SPOOL/messages
STATE=$HPCHUB_CLUSTERS_STATE/sge
STAMP=$STATE/config.sha256
HOST=$(hostname)
UP_TIMEOUT=${HPCHUB_SGE_UP_TIMEOUT:-60}
QMASTER_PORT=6444
EXECD_PORT=6445

# ---------------------------------------------------------------- helpers

execd_pidfiles() {
    local f
    for f in "$SPOOL"/execd/*/execd.pid; do [ -e "$f" ] && echo "$f"; done
    return 0
}

logs() {
    local f
    echo "$QMASTER_LOG"
    for f in "$SPOOL"/execd/*/messages; do [ -e "$f" ] && echo "$f"; done
    for f in "$STATE"/*.out; do [ -s "$f" ] && echo "$f"; done
    return 0
}

fail() {
    echo "$PROG: error: $*" >&2
    # shellcheck disable=SC2046
    tail_logs $(logs)
    exit 1
}

# q ARGS...: run qconf quietly; on failure show its output and stop.
q() {
    local out
    out=$(qconf "$@" 2>&1) || fail "qconf $* failed: $out"
}

qmaster_alive() { pidfile_alive "$QMASTER_PID" sge_qmaster; }

execd_alive() {
    local f
    for f in $(execd_pidfiles); do
        pidfile_alive "$f" sge_execd && return 0
    done
    return 1
}

qmaster_answers() { qconf -sss >/dev/null 2>&1; }

# The exec host has reported its load (qhost shows a number, not "-").
host_reports_load() {
    qhost -h "$HOST" 2>/dev/null |
        awk -v h="$HOST" '$1 == h && $7 ~ /^[0-9.]+$/ {ok = 1} END {exit !ok}'
}

in_list() { # in_list NAME CMD...: NAME is a whole line of CMD's output
    local name=$1
    shift
    "$@" 2>/dev/null | grep -xF -- "$name" >/dev/null
}

# ------------------------------------------------------------- host names

# vm resolves to 127.0.0.1, but 127.0.0.1 resolves back to "localhost":
# without an alias qmaster refuses every client ("client IP resolved to host
# name localhost. This is not identical to clients host name vm").
host_aliases_text() {
    local addr names
    addr=$(getent ahostsv4 "$HOST" 2>/dev/null | awk 'NR == 1 {print $1}')
    [ -n "$addr" ] || die "cannot resolve own hostname $HOST"
    names=$(getent hosts "$addr" 2>/dev/null |
        awk -v h="$HOST" '{for (i = 2; i <= NF; i++) if ($i != h) print $i}' | sort -u | paste -sd' ')
    [ -z "$names" ] || echo "$HOST $names"
}

# Write host_aliases and act_qmaster; true if either changed.
ensure_host_files() {
    local want changed=1
    want=$(host_aliases_text)
    if [ -n "$want" ] && [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$COMMON/host_aliases"
        changed=0
    fi
    if [ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" != "$HOST" ]; then
        echo "$HOST" >"$COMMON/act_qmaster"
        chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
        changed=0
    fi
    return "$changed"
}

# The cell is normally created by gridengine-master's postinst (debconf
# shared/gridengineconfig=true); create it here if that was skipped.
ensure_cell() {
    if [ ! -e "$SPOOL/spooldb/sge" ]; then
        [ -x /usr/share/gridengine/scripts/init_cluster ] ||
            die "gridengine-master is not installed (run install-packages.sh)"
        install -d -m 0755 "$SPOOL"
        install -d -o sgeadmin -g sgeadmin -m 0755 "$QMASTER_SPOOL" \
            "$QMASTER_SPOOL/job_scripts" "$SPOOL/spooldb" "$SPOOL/execd" "$COMMON"
        runuser -u sgeadmin -- /usr/share/gridengine/scripts/init_cluster \
            "$SGE_ROOT" "$SGE_CELL" "$SPOOL/spooldb" sgeadmin >"$STATE/init_cluster.out" 2>&1 ||
            fail "init_cluster failed"
    fi
    install -d -o sgeadmin -g sgeadmin -m 0755 "$SPOOL/execd"
}

# --------------------------------------------------------------- config

write_configs() {
    local d=$1 qname rt pe rule control first
    cat >"$d/allhosts" <<EOF
group_name @allhosts
hostlist $HOST
EOF
    for pe in smp mpi; do
        # shellcheck disable=SC2016 # literal $pe_slots / $round_robin
        if [ "$pe" = smp ]; then
            rule='$pe_slots' control=FALSE first=TRUE
        else
            rule='$round_robin' control=TRUE first=FALSE
        fi
        cat >"$d/pe-$pe" <<EOF
pe_name            $pe
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $rule
control_slaves     $control
job_is_first_task  $first
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    done
    local slots=${HPCHUB_HEAD_SLOTS:-8} vmem
    vmem=$((4 * slots > 64 ? 4 * slots : 64))  # the storm's servers ask 2G each
    for qname in short.q long.q; do
        [ "$qname" = short.q ] && rt=04:00:00 || rt=168:00:00
        cat >"$d/queue-$qname" <<EOF
qname                 $qname
hostlist              @allhosts
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp mpi
rerun                 FALSE
slots                 $slots
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  $rt
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
    done
    cat >"$d/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        h_vmem=${vmem}G,slots=$((2 * slots))
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
    # Settings merged into the current scheduler and global configurations.
    cat >"$d/sched-settings" <<EOF
schedule_interval 0:0:1
flush_submit_sec 1
flush_finish_sec 1
schedd_job_info true
EOF
    cat >"$d/global-settings" <<EOF
mailer /bin/true
EOF
    # Projects and their access lists; each user's default project.
    local project members user
    for project in chem phys course; do
        case $project in
            chem) members=alice ;;
            phys) members=alice,bob ;;
            course) members=carol,dora,emil ;;
        esac
        cat >"$d/userset-${project}_users" <<EOF
name    ${project}_users
type    ACL
fshare  0
oticket 0
entries $members
EOF
        cat >"$d/project-$project" <<EOF
name $project
oticket 0
fshare 0
acl ${project}_users
xacl NONE
EOF
    done
    for user in alice:chem bob:phys carol:course; do
        cat >"$d/user-${user%%:*}" <<EOF
name ${user%%:*}
oticket 0
fshare 0
delete_time 0
default_project ${user#*:}
EOF
    done
    # A consumable's default is what a job that does not ask for h_vmem gets,
    # and h_vmem is also enforced as a limit: a default of 0 kills every job.
    echo "h_vmem h_vmem MEMORY <= YES YES 4G 0" >"$d/complex-h_vmem"
}

# merge_settings CURRENT_FILE SETTINGS_FILE: print CURRENT with the keys of
# SETTINGS replaced (continuation lines of a replaced key are dropped).
merge_settings() {
    awk 'NR == FNR {v[$1] = $0; next}
         /^#/ {next}
         /^[^ \t]/ {skip = ($1 in v); if (skip) {print v[$1]; done[$1] = 1; next}}
         skip {next}
         {print}
         END {for (k in v) if (!(k in done)) print v[k]}' "$2" "$1"
}

# settings_match CURRENT_FILE SETTINGS_FILE: every key already has the value.
settings_match() {
    awk 'NR == FNR {v[$1] = $2; want++; next} ($1 in v) && v[$1] == $2 {n++}
         END {exit !(n == want)}' "$2" "$1"
}

configure() {
    local d=$1 qname pe
    in_list "$HOST" qconf -sh || q -ah "$HOST"
    in_list "$HOST" qconf -ss || q -as "$HOST"
    if in_list "$HOST" qconf -sel; then q -Me "$d/exechost"; else q -Ae "$d/exechost"; fi
    if in_list @allhosts qconf -shgrpl; then q -Mhgrp "$d/allhosts"; else q -Ahgrp "$d/allhosts"; fi
    for pe in smp mpi; do
        if in_list "$pe" qconf -spl; then q -Mp "$d/pe-$pe"; else q -Ap "$d/pe-$pe"; fi
    done
    # h_vmem: requestable and consumable.
    qconf -sc >"$d/complex.cur" 2>/dev/null || fail "qconf -sc failed"
    if ! awk -v want="$(cat "$d/complex-h_vmem")" '{$1 = $1} $0 == want {ok = 1}
            END {exit !ok}' "$d/complex.cur"; then
        awk -v line="$(cat "$d/complex-h_vmem")" '$1 == "h_vmem" {print line; next} {print}' \
            "$d/complex.cur" >"$d/complex.new"
        q -Mc "$d/complex.new"
    fi
    for qname in short.q long.q; do
        if in_list "$qname" qconf -sql; then q -Mq "$d/queue-$qname"; else q -Aq "$d/queue-$qname"; fi
    done
    if in_list all.q qconf -sql; then q -dq all.q; fi
    qconf -ssconf >"$d/sched.cur" 2>/dev/null || fail "qconf -ssconf failed"
    if ! settings_match "$d/sched.cur" "$d/sched-settings"; then
        merge_settings "$d/sched.cur" "$d/sched-settings" >"$d/sched.new"
        q -Msconf "$d/sched.new"
    fi
    # qconf -Mconf takes the configuration's name from the file name.
    qconf -sconf global >"$d/global.cur" 2>/dev/null || fail "qconf -sconf global failed"
    if ! settings_match "$d/global.cur" "$d/global-settings"; then
        mkdir -p "$d/conf"
        merge_settings "$d/global.cur" "$d/global-settings" >"$d/conf/global"
        q -Mconf "$d/conf/global"
    fi
    local f name
    for f in "$d"/userset-*; do
        name=${f##*/userset-}
        if in_list "$name" qconf -sul; then q -Mu "$f"; else q -Au "$f"; fi
    done
    for f in "$d"/project-*; do
        name=${f##*/project-}
        if in_list "$name" qconf -sprjl; then q -Mprj "$f"; else q -Aprj "$f"; fi
    done
    for f in "$d"/user-*; do
        name=${f##*/user-}
        if in_list "$name" qconf -suserl; then q -Muser "$f"; else q -Auser "$f"; fi
    done
    # Clear error states left by an earlier crash (quietly; nothing to clear is fine).
    qmod -cq short.q,long.q >/dev/null 2>&1 || true
}

config_hash() {
    local d
    d=$(mktemp -d)
    write_configs "$d"
    (cd "$d" && cat -- * | sha256sum | awk '{print $1}')
    rm -rf "$d"
}

# ------------------------------------------------------ advance reservation

# The ids of the advance reservations named "course" (qrstat -xml: one <ar_summary> each).
course_ar_ids() {
    qrstat -xml -u '*' 2>/dev/null |
        awk -F'[<>]' '$2 == "id" {id = $3} $2 == "name" && $3 == "course" {print id}'
}

# One AR "course": waiting, for alice and carol, starting 7 to 60 days from now.
course_ar_ok() {
    local ids start
    ids=$(course_ar_ids)
    [ -n "$ids" ] && [ "$(wc -l <<<"$ids")" -eq 1 ] || return 1
    qrstat -xml -ar "$ids" 2>/dev/null >"$STATE/course-ar.xml" || return 1
    start=$(awk -F'[<>]' '$2 == "start_time" {print $3}' "$STATE/course-ar.xml")
    start=$(date -d "$start" +%s 2>/dev/null) || return 1
    [ "$start" -gt $((EPOCHSECONDS + 7 * 86400)) ] && [ "$start" -lt $((EPOCHSECONDS + 60 * 86400)) ] &&
        grep -q '<acl  *user="alice"/>' "$STATE/course-ar.xml" &&
        grep -q '<acl  *user="carol"/>' "$STATE/course-ar.xml" &&
        grep -q 'queue_instance="long.q@' "$STATE/course-ar.xml"
}

ensure_course_ar() {
    local id out
    course_ar_ok && return 0
    for id in $(course_ar_ids); do qrdel "$id" >/dev/null 2>&1 || true; done
    out=$(qrsub -N course -a "$(date -d '+30 days' +%Y%m%d%H00)" -d 2:00:00 -q long.q -u alice,carol 2>&1) ||
        fail "qrsub (advance reservation course) failed: $out"
    course_ar_ok || fail "advance reservation course not as expected: $(qrstat -u '*' 2>&1)"
}

# ---------------------------------------------------------------- daemons

start_qmaster() {
    qmaster_alive && return 0
    wait_until 30 port_free "$QMASTER_PORT" || fail "port $QMASTER_PORT stays busy"
    setsid /usr/sbin/sge_qmaster >>"$STATE/sge_qmaster.out" 2>&1 9>&- || fail "sge_qmaster failed to start"
    wait_until "$UP_TIMEOUT" qmaster_answers || fail "sge_qmaster does not answer"
}

start_execd() {
    execd_alive && return 0
    wait_until 30 port_free "$EXECD_PORT" || fail "port $EXECD_PORT stays busy"
    setsid /usr/sbin/sge_execd >>"$STATE/sge_execd.out" 2>&1 9>&- || fail "sge_execd failed to start"
    wait_until 10 execd_alive || fail "sge_execd is not running"
}

stop_daemons() {
    local f
    # In parallel: qmaster takes about 5 s to exit on SIGTERM.
    for f in $(execd_pidfiles); do
        stop_pidfile "$f" sge_execd 15 &
    done
    stop_pidfile "$QMASTER_PID" sge_qmaster 30 &
    wait
    # A killed daemon lingers as a zombie for a moment, holding no port; wait
    # for the ports so that a following `up` can bind them.
    wait_until 30 port_free "$QMASTER_PORT" || fail "port $QMASTER_PORT still in use"
    wait_until 30 port_free "$EXECD_PORT" || fail "port $EXECD_PORT still in use"
}

healthy() {
    qmaster_alive && execd_alive || return 1
    [ "$(cat "$STAMP" 2>/dev/null)" = "$(config_hash)" ] || return 1
    [ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" = "$HOST" ] || return 1
    local ql
    ql=$(qconf -sql 2>/dev/null) || return 1
    grep -qx short.q <<<"$ql" && grep -qx long.q <<<"$ql" || return 1
    host_reports_load && course_ar_ok
}

summary() { echo "sge: up (short.q, long.q on $HOST)"; }

# ---------------------------------------------------------------- commands

cmd_up() {
    local d
    if healthy; then
        summary
        return 0
    fi
    need_cmds qconf qstat qhost qmod runuser ss getent
    [ -x /usr/sbin/sge_qmaster ] && [ -x /usr/sbin/sge_execd ] ||
        die "gridengine-master/-exec not installed (run install-packages.sh)"
    install -d -m 0755 "$STATE"
    ensure_cell
    if ensure_host_files && qmaster_alive; then
        stop_daemons # qmaster reads host_aliases and act_qmaster at start
    fi
    start_qmaster
    d=$(mktemp -d)
    write_configs "$d"
    configure "$d"
    rm -rf "$d"
    start_execd
    wait_until "$UP_TIMEOUT" host_reports_load ||
        { qhost >&2 || true; fail "exec host $HOST reports no load after ${UP_TIMEOUT}s"; }
    ensure_course_ar
    config_hash >"$STAMP"
    summary
}

cmd_down() {
    stop_daemons
    rm -f "$STAMP"
}

cmd_status() {
    local rc=0
    healthy || rc=1
    qstat -g c 2>&1 || rc=1
    echo
    qhost 2>&1 || rc=1
    echo
    local project
    for project in $(qconf -sprjl 2>/dev/null); do
        echo "project $project: $(qconf -sprj "$project" | awk '$1 == "acl" {print $2}')" \
            "= $(qconf -su "$(qconf -sprj "$project" | awk '$1 == "acl" {print $2}')" 2>/dev/null |
                awk '$1 == "entries" {print $2}')"
    done
    echo
    qrstat -u '*' 2>&1 || rc=1
    [ "$rc" -eq 0 ] || echo "sge: NOT up (run: $0 up)" >&2
    return "$rc"
}

cmd_foreground() {
    take_lock sge
    cmd_up
    exec 9>&-
    while qmaster_alive; do sleep 5; done
    fail "sge_qmaster exited"
}

[ $# -eq 1 ] || usage
case "$1" in
    up | down | status | foreground) ;;
    *) usage ;;
esac

need_root
case "$1" in
    up) take_lock sge && cmd_up ;;
    down) take_lock sge && cmd_down ;;
    status) cmd_status ;;
    foreground) cmd_foreground ;;
esac
