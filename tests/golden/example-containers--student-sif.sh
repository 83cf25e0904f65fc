#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-student-sif
#$ -q all.q
#$ -l h_rt=03:00:00
#$ -l h_vmem=4096M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-student-sif.course.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 10800 ))


[ -r /home/alice/.hpchub/jobs/hpchub-alice-student-sif/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-student-sif/env" (written at submit time)"
export HPCHUB_ENGINE_PROFILE=student-sif
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-containers.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-student-sif/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-student-sif/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
# The server runs in the container image docker://registry.example.org/course/lab:2026.
command -v singularity >/dev/null || hpchub_fail "singularity is not on the PATH on $(hostname) (load its module in environment.modules)"

exec singularity exec \
    docker://registry.example.org/course/lab:2026 \
    /bin/sh -c 'set -a && . "$1" && set +a && shift && exec "$@"' hpchub-secrets /home/alice/.hpchub/jobs/hpchub-alice-student-sif/env /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-student-sif/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5

