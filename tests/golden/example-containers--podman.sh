#!/bin/bash
#SBATCH --job-name=hpchub-alice-podman
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16384M
#SBATCH --time=04:00:00
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-podman.hpc.%j.log
#SBATCH --chdir=/home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 14400 ))

# Batch shells are not login shells: make sure the module command exists.
type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true
type module >/dev/null 2>&1 || hpchub_fail "the 'module' command is not available on $(hostname)"
module load apptainer || hpchub_fail "module load apptainer failed"

[ -r /home/alice/.hpchub/jobs/hpchub-alice-podman/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-podman/env" (written at submit time)"
export HPCHUB_ENGINE_PROFILE=podman
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-containers.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-podman/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-podman/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
# The server runs in the container image 'Python 3.11, JupyterLab 4'.
command -v podman >/dev/null || hpchub_fail "podman is not on the PATH on $(hostname)"
[ -r /srv/images/lab4.tar ] || hpchub_fail "container image" /srv/images/lab4.tar "is not readable on $(hostname)"
# Rootless podman keeps its state in XDG_RUNTIME_DIR: a batch job often has none, or one of the
# login node (absent here). Then a directory of this user on this node, the same for every job.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ] || [ ! -O "$XDG_RUNTIME_DIR" ]; then
    XDG_RUNTIME_DIR="/tmp/podman-run-$(id -u)"
    mkdir -m 700 "$XDG_RUNTIME_DIR" 2>/dev/null
    { [ -d "$XDG_RUNTIME_DIR" ] && [ ! -L "$XDG_RUNTIME_DIR" ] && [ -O "$XDG_RUNTIME_DIR" ]; } \
        || hpchub_fail "no runtime directory for podman on $(hostname): $XDG_RUNTIME_DIR belongs to another user"
    export XDG_RUNTIME_DIR
fi

hpchub_container="hpchub-${SLURM_JOB_ID:-${JOB_ID:-0}}-$(hostname -s)-$$"
# The container runs under podman's conmon, which leaves the job's process tree: the scheduler
# cannot end it. So the job stops it when told to end (Slurm: TERM; Grid Engine: USR2, see
# -notify), and a watcher outside the job stops it once the job is gone, however it ended.
( setsid /bin/sh -c 'trap "" TERM INT HUP USR2; while kill -0 "$1" 2>/dev/null; do sleep 2; done
    podman stop --time 10 --ignore "$2"' hpchub-container-watch $$ "$hpchub_container" </dev/null >/dev/null 2>&1 & )
podman run --rm --userns keep-id --network host --name "$hpchub_container" \
    --volume /home/alice:/home/alice --workdir /home/alice \
    --volume /scratch:/scratch \
    --env 'HPCHUB_*' --env LANG --env TZ --env 'SLURM*' --env PYTHONPATH --env JUPYTER_PATH \
    oci-archive:/srv/images/lab4.tar \
    /bin/sh -c 'set -a && . "$1" && set +a && shift && exec "$@"' hpchub-secrets /home/alice/.hpchub/jobs/hpchub-alice-podman/env /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-podman/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5 &
hpchub_podman=$!
# Stopped, then removed: Grid Engine's USR2 also reaches conmon (it keeps the job's group id) and ends it,
# and without conmon no one records the container's exit: `podman run` would wait 20 s, not removing it.
trap 'podman stop --time 10 --ignore "$hpchub_container" >/dev/null
    podman rm --force --ignore "$hpchub_container" >/dev/null' TERM INT HUP USR2
# A trapped signal ends the wait early: wait until podman is done.
while wait "$hpchub_podman"; hpchub_status=$?; kill -0 "$hpchub_podman" 2>/dev/null; do :; done
exit "$hpchub_status"

