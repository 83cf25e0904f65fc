#!/bin/bash
# Smoke test of the local test clusters: bring Slurm and Grid Engine up (if
# needed), submit tiny jobs as alice to each, wait for them (with timeouts),
# print and check their output. Exits non-zero on any failure.
#
# usage: smoke.sh
set -euo pipefail

PROG=smoke.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

if [ $# -ne 0 ]; then
    echo "usage: $PROG" >&2
    echo "  Starts both test clusters and runs a tiny job on each as alice." >&2
    exit 2
fi
need_root

NODES=${HPCHUB_SLURM_NODES:-3}
JOB_TIMEOUT=${HPCHUB_SMOKE_TIMEOUT:-60}
export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine} SGE_CELL=${SGE_CELL:-default}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

bash "$HERE/install-packages.sh"
bash "$HERE/users.sh"
t=$(now)
bash "$HERE/slurm.sh" up
echo "  (slurm up took $(since "$t") s)"
t=$(now)
bash "$HERE/sge.sh" up
echo "  (sge up took $(since "$t") s)"

work=$(sudo -u alice mktemp -d /home/alice/hpchub-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT
as_alice() { sudo -u alice -- "$@"; }

failures=0
fail_check() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# wait_slurm ID: wait until the job completed; false on failure or timeout.
wait_slurm() {
    local id=$1 deadline=$((SECONDS + JOB_TIMEOUT)) st
    while [ "$SECONDS" -lt "$deadline" ]; do
        st=$(scontrol show job -o "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case "$st" in
            COMPLETED) return 0 ;;
            PENDING | CONFIGURING | RUNNING | COMPLETING | "") ;;
            *)
                echo "slurm job $id ended in state $st" >&2
                return 1
                ;;
        esac
        sleep 0.1
    done
    echo "slurm job $id not done after ${JOB_TIMEOUT}s (state $st)" >&2
    scancel "$id" 2>/dev/null || true
    return 1
}

# wait_sge ID: wait until the job left qstat; false on error state or timeout.
# (Never `qsub -sync y` without a timeout: it blocks forever on Eqw.)
wait_sge() {
    local id=$1 deadline=$((SECONDS + JOB_TIMEOUT)) st
    while [ "$SECONDS" -lt "$deadline" ]; do
        st=$(qstat -u alice 2>/dev/null | awk -v id="$id" '$1 == id {print $5}')
        case "$st" in
            "") return 0 ;;
            *E*)
                echo "sge job $id is in error state $st:" >&2
                qstat -j "$id" 2>/dev/null | grep -i 'error reason' >&2 || true
                qdel "$id" >/dev/null 2>&1 || true
                return 1
                ;;
        esac
        sleep 0.1
    done
    echo "sge job $id not done after ${JOB_TIMEOUT}s (state $st)" >&2
    qdel "$id" >/dev/null 2>&1 || true
    return 1
}

show() { # show TITLE FILE
    echo "--- $1"
    if [ -r "$2" ]; then sed 's/^/    /' "$2"; else echo "    (no output file $2)"; fi
}

# --- submit everything first, then wait (the jobs run concurrently)
t=$(now)
s1=$(as_alice sbatch --parsable -p debug -J smoke-debug -o "$work/debug.out" \
    --wrap 'echo "host=$(hostname) user=$(id -un)"; echo done') ||
    fail_check "sbatch to debug failed"
if [ "$NODES" -gt 0 ]; then
    s2=$(as_alice sbatch --parsable -p multi -N "$NODES" -J smoke-multi -o "$work/multi.out" \
        --wrap 'srun hostname | sort -V; echo done') ||
        fail_check "sbatch -N$NODES to multi failed"
fi
g1=$(as_alice qsub -terse -pe smp 2 -q short.q -N smoke-sge -j y -o "$work/sge.out" -S /bin/bash <<'EOF'
echo "host=$(hostname) user=$(id -un) slots=$NSLOTS queue=$QUEUE pe=$PE"
echo done
EOF
) || fail_check "qsub failed"

if [ -n "${s1:-}" ]; then
    if wait_slurm "$s1"; then
        show "slurm debug job $s1 ($(since "$t") s)" "$work/debug.out"
        grep -qx "host=$(hostname -s) user=alice" "$work/debug.out" && grep -qx 'done' "$work/debug.out" ||
            fail_check "slurm debug job output is wrong"
    else
        show "slurm debug job $s1" "$work/debug.out"
        fail_check "slurm debug job $s1"
    fi
fi
if [ -n "${s2:-}" ]; then
    want=$(for ((k = 1; k <= NODES; k++)); do echo "node$k"; done; echo 'done')
    if wait_slurm "$s2"; then
        show "slurm multi job $s2 ($(since "$t") s)" "$work/multi.out"
        [ "$(cat "$work/multi.out")" = "$want" ] ||
            fail_check "slurm multi job output is not node1..node$NODES"
    else
        show "slurm multi job $s2" "$work/multi.out"
        fail_check "slurm multi job $s2"
    fi
fi
if [ -n "${g1:-}" ]; then
    if wait_sge "$g1"; then
        show "sge job $g1 ($(since "$t") s)" "$work/sge.out"
        grep -qx "host=$(hostname) user=alice slots=2 queue=short.q pe=smp" "$work/sge.out" &&
            grep -qx 'done' "$work/sge.out" || fail_check "sge job output is wrong"
    else
        show "sge job $g1" "$work/sge.out"
        fail_check "sge job $g1"
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "smoke: FAILED ($failures problem(s))" >&2
    exit 1
fi
echo "smoke: OK"
