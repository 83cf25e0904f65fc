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

# The user's own environment (a path under their home, checked by hpchub); after the prologue, which
# may set up conda.
hpchub_user_env=/home/alice/.venv
if [ -d "$hpchub_user_env/conda-meta" ]; then
    # A conda env: conda's own activation when this shell has conda, else its bin first on the PATH.
    if [ "$(type -t conda)" = file ]; then
        eval "$(conda shell.bash hook 2>/dev/null)" || true
    fi
    if [ "$(type -t conda)" = function ]; then
        conda activate "$hpchub_user_env" || hpchub_fail "cannot activate your conda environment "'~/.venv'
    else
        export CONDA_PREFIX="$hpchub_user_env" PATH="$hpchub_user_env/bin:$PATH"
    fi
elif [ -f "$hpchub_user_env/bin/activate" ]; then
    . "$hpchub_user_env/bin/activate" || hpchub_fail "cannot activate your environment "'~/.venv'
elif [ -d "$hpchub_user_env" ]; then
    hpchub_fail "your environment "'~/.venv'" is neither a venv (no bin/activate) nor a conda env (no conda-meta) on $(hostname)"
else
    hpchub_fail "your environment "'~/.venv'" does not exist on $(hostname) (or is not readable)"
fi
[ -x "$hpchub_user_env/bin/jupyterhub-singleuser" ] || hpchub_fail "your environment "'~/.venv'" has no jupyterhub-singleuser: install JupyterHub and JupyterLab into it (pip install jupyterhub jupyterlab, or conda install -c conda-forge jupyterhub jupyterlab)"

[ -r /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/env
set +a
export HPCHUB_ENGINE_PROFILE=cpu-small
export HPCHUB_ACCOUNT=default
export HPCHUB_USER_ENV=.venv
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-slurm-production.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-cpu-small/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-cpu-small/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5
