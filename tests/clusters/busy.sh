#!/bin/bash
# A busy test cluster: fills the local Slurm (tests/clusters/slurm.sh) and Grid Engine
# (tests/clusters/sge.sh) with other accounts' batch jobs (`sleep`s) of various sizes and
# walltimes, so that a job submitted now meets a real queue: some of the fillers run, others wait
# ("Resources" for the first in line, "Priority" behind it; "qw" in Grid Engine), and each
# partition or queue keeps a few CPUs free that a short small job may take at once (Slurm's
# backfill: the free CPUs are idle until the first waiting job's start).
#
# The fillers belong to three accounts of their own, called busy1, busy2 and busy3 below:
# hpcbench07, hpcbench08 and hpcbench09 (HPCHUB_BUSY_USERS=A,B,C names others), unix accounts made
# here as users.sh makes alice's when missing. They are of slurm.sh's Slurm account "bench" because
# this slurmctld knows only the associations made before it started (it refuses the ones slurmdbd
# pushes later: slurmdbd runs as the user slurm, SlurmUser is root; and for users made after it
# started it knows no default account, so the jobs name it); of hpcbench01..10, which no
# benchmark takes by default apart from bench/storm.py's storm of 60 (run that on an idle cluster).
# The jobs are named busy-TAG, one TAG per
# planned job: `fill` submits only what is not already queued, `drain` cancels exactly the jobs
# of those accounts with those names and waits until they are gone. Idempotent.
#
# The plan (CPUs x walltime; "runs" once submitted in this order on an otherwise idle cluster):
#   debug (vm, 8 CPUs)       d1 busy1 6 CPUs 30 min runs; d2 busy2 8 CPUs 20 min waits (Resources);
#                            d3 busy3 4 CPUs 60 min waits (Priority); 2 CPUs free until d1 ends
#   multi (node[1-3], 4 each) m1 busy1 2 nodes 45 min runs; m2 busy2 1 node 2 CPUs 15 min runs;
#                            m3 busy3 3 nodes 30 min waits (Resources); m4 busy2 1 node 4 CPUs
#                            2 h waits (Priority); 2 CPUs of one node free until m2 ends
#   short.q (8 slots)        s1 busy1 6 slots 30 min runs; s2 busy2 8 slots 20 min waits
#   long.q (8 slots)         l1 busy3 8 slots 2 h runs; l2 busy1 4 slots 1 h waits
# (Grid Engine's jobs ask h_vmem=1G per slot, so they leave the host's memory to the others.)
#
# The other tests share these clusters: fill them only for a check of your own, and drain after
# (`trap '... drain' EXIT`). tests/test_busy_cluster.py fills only what it checks, for seconds.
#
# usage: busy.sh fill|drain|status [TARGET...]   TARGET: debug multi short.q long.q slurm sge (default all)
set -euo pipefail

PROG=busy.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine}
export SGE_CELL=${SGE_CELL:-default}
# The fillers' accounts, three (the plan's busy1, busy2, busy3 in this order).
USER_LIST=${HPCHUB_BUSY_USERS:-hpcbench07,hpcbench08,hpcbench09}
IFS=, read -r -a USERS <<<"$USER_LIST"
[ "${#USERS[@]}" -eq 3 ] || die "HPCHUB_BUSY_USERS must name three accounts (got '$USER_LIST')"
PREFIX=busy-

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND [TARGET...]
  fill     make the accounts $USER_LIST where missing and submit the planned jobs of TARGETs that
           are not queued yet; returns once the ones that run are running
  drain    cancel the planned jobs (accounts $USER_LIST, names $PREFIX*) of TARGETs and wait
           until they are gone
  status   print the planned jobs that are queued, with their state and reason
TARGET: debug multi short.q long.q, or slurm (debug multi), sge (short.q long.q); default all
EOF
    exit 2
}

# TAG WHERE USER SECONDS SIZE: one line per planned job, in submission order. SIZE is Slurm's
# "NODES:CPUS_PER_NODE" or Grid Engine's slot count.
plan() {
    cat <<EOF
d1 debug busy1 1800 1:6
d2 debug busy2 1200 1:8
d3 debug busy3 3600 1:4
m1 multi busy1 2700 2:4
m2 multi busy2 900 1:2
m3 multi busy3 1800 3:4
m4 multi busy2 7200 1:4
s1 short.q busy1 1800 6
s2 short.q busy2 1200 8
l1 long.q busy3 7200 8
l2 long.q busy1 3600 4
EOF
}

account_of() { echo "${USERS[${1#busy} - 1]}"; }  # busy1 -> the first account
scheduler_of() { case $1 in debug | multi) echo slurm ;; *) echo sge ;; esac; }

# The targets named on the command line, as partition and queue names.
TARGETS=()
expand_targets() {
    local t
    [ $# -gt 0 ] || set -- all
    for t in "$@"; do
        case $t in
            all) TARGETS+=(debug multi short.q long.q) ;;
            slurm) TARGETS+=(debug multi) ;;
            sge) TARGETS+=(short.q long.q) ;;
            debug | multi | short.q | long.q) TARGETS+=("$t") ;;
            *) usage ;;
        esac
    done
}
targeted() {
    local t
    for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}
targets_slurm() { targeted debug || targeted multi; }
targets_sge() { targeted short.q || targeted long.q; }

ensure_users() {
    local u uid
    for u in "${USERS[@]}"; do
        if ! getent passwd "$u" >/dev/null; then
            useradd --create-home --home-dir "/home/$u" --shell /bin/bash \
                --user-group -K UID_MIN=1000 -K UID_MAX=59999 "$u" || die "useradd $u failed"
        fi
        IFS=: read -r _ _ uid _ < <(getent passwd "$u")
        [ "$uid" -ge 1000 ] || die "user $u exists with uid $uid < 1000 (batch systems refuse it)"
    done
}

slurmctld_knows() {
    local known
    known=$(scontrol show assoc_mgr users="$1" flags=assoc 2>/dev/null) || return 1
    [[ "$known" == *"UserName=$1("* ]]
}

uid_known() { [[ "$(scontrol show assoc_mgr users="$1" flags=assoc 2>/dev/null)" == *"UserName=$1("[0-9]* ]] && \
    [[ "$(scontrol show assoc_mgr users="$1" flags=assoc 2>/dev/null)" != *"UserName=$1(4294967294)"* ]]; }

# Their Slurm associations must be in slurmctld's memory (see the header): those of slurm.sh are.
# A unix account made after slurmctld started is one it has no uid for (NO_VAL, so sbatch refuses
# the user's association) until `scontrol reconfigure`, as slurm.sh runs it after a restart.
check_slurm_accounts() {
    local u
    for u in "${USERS[@]}"; do
        if slurmctld_knows "$u" && ! uid_known "$u"; then
            scontrol reconfigure >/dev/null
            wait_until 30 uid_known "$u" || die "slurmctld has no uid for $u after scontrol reconfigure"
        fi
        slurmctld_knows "$u" || die "slurmctld has no association for $u (scontrol show assoc_mgr):" \
            "HPCHUB_BUSY_USERS must name accounts that tests/clusters/slurm.sh makes"
    done
}

# Job id and state of the queued planned job TAG (nothing when it is not queued).
slurm_queued() { squeue -h -u "$USER_LIST" -n "$PREFIX$1" -t PD,R,CF,CG,S -o '%i %T %r' 2>/dev/null | head -n 1; }
sge_queued() {
    qstat -u "$USER_LIST" 2>/dev/null | awk -v name="$PREFIX$1" 'NR > 2 && $3 == name {print $1, $5; exit}'
}

submit() {
    local tag=$1 where=$2 user seconds=$4 size=$5 nodes cpus
    user=$(account_of "$3")
    if [ "$(scheduler_of "$where")" = slurm ]; then
        [ -z "$(slurm_queued "$tag")" ] || return 0
        nodes=${size%:*} cpus=${size#*:}
        sudo -n -u "$user" sbatch --parsable --account=bench --job-name="$PREFIX$tag" --partition="$where" \
            --nodes="$nodes" --ntasks-per-node=1 --cpus-per-task="$cpus" --time=$((seconds / 60)) \
            --output=/dev/null --chdir=/tmp --wrap="sleep $seconds" >/dev/null ||
            die "sbatch of $tag as $user failed"
    else
        [ -z "$(sge_queued "$tag")" ] || return 0
        sudo -n -u "$user" env SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL" qsub -terse -N "$PREFIX$tag" \
            -q "$where" -pe smp "$size" -l h_rt="$seconds",h_vmem=1G -b y -o /dev/null -j y -wd /tmp \
            sleep "$seconds" >/dev/null || die "qsub of $tag as $user failed"
    fi
}

# Runs: each planned job that should run has started, and every job of the plan is queued.
settled() {
    local tag where user seconds size state
    while read -r tag where user seconds size; do
        targeted "$where" || continue
        if [ "$(scheduler_of "$where")" = slurm ]; then
            state=$(slurm_queued "$tag" | awk '{print $2}')
        else
            state=$(sge_queued "$tag" | awk '{print $2}')
        fi
        [ -n "$state" ] || return 1
        case $tag in d1 | m1 | m2 | s1 | l1) [[ "$state" =~ ^(RUNNING|r|t)$ ]] || return 1 ;; esac
    done < <(plan)
}

cmd_fill() {
    need_root
    ensure_users
    if targets_slurm; then
        need_cmds sbatch squeue sacctmgr
        check_slurm_accounts
    fi
    targets_sge && need_cmds qsub qstat
    local tag where user seconds size
    while read -r tag where user seconds size; do
        targeted "$where" || continue
        # in the plan's order: both schedulers start the earlier submitted first (equal priorities)
        submit "$tag" "$where" "$user" "$seconds" "$size"
    done < <(plan)
    wait_until 60 settled || {
        cmd_status >&2
        die "the planned jobs did not settle within 60 s (other jobs on the cluster?)"
    }
    echo "$PROG: filled ${TARGETS[*]}"
}

queued_ids() {
    local tag where user seconds size line
    while read -r tag where user seconds size; do
        targeted "$where" || continue
        if [ "$(scheduler_of "$where")" = "$1" ]; then
            if [ "$1" = slurm ]; then line=$(slurm_queued "$tag"); else line=$(sge_queued "$tag"); fi
            [ -z "$line" ] || echo "${line%% *}"
        fi
    done < <(plan)
}
drained() { [ -z "$(queued_ids slurm)$(queued_ids sge)" ]; }

cmd_drain() {
    need_root
    local ids
    ids=$(queued_ids slurm)
    # shellcheck disable=SC2086 # job ids
    [ -z "$ids" ] || scancel $ids
    ids=$(queued_ids sge)
    # shellcheck disable=SC2086 # job ids
    [ -z "$ids" ] || qdel -f $ids >/dev/null 2>&1 || qdel $ids >/dev/null
    wait_until 60 drained || die "planned jobs still queued 60 s after they were cancelled: $(queued_ids slurm) $(queued_ids sge)"
    echo "$PROG: drained ${TARGETS[*]}"
}

cmd_status() {
    local tag where user seconds size line
    printf '%-4s %-8s %-10s %-8s %-6s %s\n' TAG WHERE USER WALLTIME SIZE 'JOB STATE REASON'
    while read -r tag where user seconds size; do
        targeted "$where" || continue
        if [ "$(scheduler_of "$where")" = slurm ]; then line=$(slurm_queued "$tag"); else line=$(sge_queued "$tag"); fi
        printf '%-4s %-8s %-10s %-8s %-6s %s\n' "$tag" "$where" "$(account_of "$user")" "$((seconds / 60))m" "$size" "${line:--}"
    done < <(plan)
}

[ $# -ge 1 ] || usage
command=$1
shift
expand_targets "$@"
case $command in
    fill) take_lock busy && cmd_fill ;;
    drain) take_lock busy && cmd_drain ;;
    status) cmd_status ;;
    *) usage ;;
esac
