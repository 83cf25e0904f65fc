#!/bin/bash
#SBATCH --job-name=hpchub-alice-cpu-small
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8192M
#SBATCH --time=04:00:00
#SBATCH --account=default
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-cpu-small.hpc.%j.log
#SBATCH --chdir=/home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 14400 ))

# Batch shells are not login shells: make sure the module command exists.
type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true
type module >/dev/null 2>&1 || hpchub_fail "the 'module' command is not available on $(hostname)"
module load python/3.11 || hpchub_fail "module load python/3.11 failed"
module load jupyterlab/4 || hpchub_fail "module load jupyterlab/4 failed"
. /sw/jupyter/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/sw/jupyter/venv
export HTTPS_PROXY=http://proxy.example.edu:3128
export JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
# Site prologue (from the site config)
# Keep numerical libraries to the cores Slurm gave us.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}


[ -r /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env
set +a
export HPCHUB_ENGINE_PROFILE=cpu-small
export HPCHUB_ACCOUNT=default
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-slurm-production.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5
