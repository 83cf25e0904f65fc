#!/bin/bash
#SBATCH --job-name=hpchub-alice-lab
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8192M
#SBATCH --time=04:00:00
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-lab.hpc.%j.log
#SBATCH --chdir=/home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 14400 ))

# Batch shells are not login shells: make sure the module command exists.
type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true
type module >/dev/null 2>&1 || hpchub_fail "the 'module' command is not available on $(hostname)"
module load apptainer || hpchub_fail "module load apptainer failed"

[ -r /home/alice/.hpchub/jobs/hpchub-alice-lab/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-lab/env" (written at submit time)"
export HPCHUB_ENGINE_PROFILE=lab
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-containers.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-lab/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-lab/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
# The server runs in the container image /srv/images/jupyterlab.sif.
command -v apptainer >/dev/null || hpchub_fail "apptainer is not on the PATH on $(hostname) (load its module in environment.modules)"
[ -r /srv/images/jupyterlab.sif ] || hpchub_fail "container image" /srv/images/jupyterlab.sif "is not readable on $(hostname)"

exec apptainer exec --bind /scratch \
    /srv/images/jupyterlab.sif \
    /bin/sh -c 'set -a && . "$1" && set +a && shift && exec "$@"' hpchub-secrets /home/alice/.hpchub/jobs/hpchub-alice-lab/env /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-lab/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5

