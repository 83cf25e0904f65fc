#!/bin/bash
#SBATCH --job-name=hpchub-alice-small
#SBATCH --partition=debug
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=01:00:00
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-small.slurm.%j.log
#SBATCH --chdir=/home/alice

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
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/local-slurm.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-small/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-small/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-small/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5
