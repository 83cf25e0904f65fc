#!/bin/bash
#SBATCH --job-name=hpchub-alice-multi
#SBATCH --partition=multi
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --time=01:00:00
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-multi.slurm.%j.log
#SBATCH --chdir=/home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 3600 ))

. /opt/hpchub/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/opt/hpchub/venv
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-multi/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-multi/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-multi/env
set +a
export HPCHUB_ENGINE_PROFILE=multi
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/local-slurm.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-multi/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-multi/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
hpchub_server=$(command -v jupyterhub-singleuser) || hpchub_fail jupyterhub-singleuser" is not on the PATH on $(hostname): the profile's environment must provide JupyterHub's single-user server (JupyterHub 4.x to 6.x with jupyter_server 2.x)"
IFS= read -r hpchub_shebang <"$hpchub_server" || true
case $hpchub_shebang in
    "#!"*python*) hpchub_python=${hpchub_shebang#"#!"} ;;
    *) hpchub_python=python3 ;;
esac
# unquoted: a "#!/usr/bin/env python3" line is a command and its argument
$hpchub_python -m hpchub_job.requirements || exit 1
export HPCHUB_SCHEDULER=slurm
export HPCHUB_NODE_NAME="$SLURMD_NODENAME"
exec jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0
