#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-small
#$ -q long.q
#$ -pe smp 4
#$ -l h_rt=01:00:00
#$ -l h_vmem=1024M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-small.sge.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 3600 ))

. /opt/hpchub/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/opt/hpchub/venv
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-small/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-small/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-small/env
set +a
export HPCHUB_ENGINE_PROFILE=small
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/local-sge.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-small/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-small/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-small/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5
