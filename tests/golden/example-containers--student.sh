#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-student
#$ -q all.q
#$ -l h_rt=03:00:00
#$ -l h_vmem=4096M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-student.course.$JOB_ID.log
#$ -j y
#$ -wd /home/alice
#$ -notify

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 10800 ))


[ -r /home/alice/.hpchub/jobs/hpchub-alice-student/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-student/env" (written at submit time)"
export HPCHUB_ENGINE_PROFILE=student
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-containers.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-student/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-student/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
# The server runs in the container image /srv/images/course.tar.
command -v podman >/dev/null || hpchub_fail "podman is not on the PATH on $(hostname)"
[ -r /srv/images/course.tar ] || hpchub_fail "container image" /srv/images/course.tar "is not readable on $(hostname)"
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
    --env 'HPCHUB_*' --env LANG --env TZ --env JOB_ID --env JOB_NAME --env NSLOTS --env PE_HOSTFILE --env 'SGE_*' --env PYTHONPATH --env JUPYTER_PATH \
    oci-archive:/srv/images/course.tar \
    /bin/sh -c 'set -a && . "$1" && set +a && shift && exec "$@"' hpchub-secrets /home/alice/.hpchub/jobs/hpchub-alice-student/env /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-student/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5 &
hpchub_podman=$!
# Stopped, then removed: Grid Engine's USR2 also reaches conmon (it keeps the job's group id) and ends it,
# and without conmon no one records the container's exit: `podman run` would wait 20 s, not removing it.
trap 'podman stop --time 10 --ignore "$hpchub_container" >/dev/null
    podman rm --force --ignore "$hpchub_container" >/dev/null' TERM INT HUP USR2
# A trapped signal ends the wait early: wait until podman is done.
while wait "$hpchub_podman"; hpchub_status=$?; kill -0 "$hpchub_podman" 2>/dev/null; do :; done
exit "$hpchub_status"

