#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-parallel
#$ -q course.q
#$ -pe smp 4
#$ -l h_rt=03:00:00
#$ -l h_vmem=1024M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-parallel.teaching.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 10800 ))

# Batch shells are not login shells: make sure the module command exists.
type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true
type module >/dev/null 2>&1 || hpchub_fail "the 'module' command is not available on $(hostname)"
module load apptainer || hpchub_fail "module load apptainer failed"
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-parallel/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-parallel/env" (written at submit time)"
export HPCHUB_ENGINE_PROFILE=parallel
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-sge-course.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-parallel/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-parallel/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
# The server runs in the container image /sw/courses/datalit/datascience-notebook.sif.
command -v apptainer >/dev/null || hpchub_fail "apptainer is not on the PATH on $(hostname) (load its module in environment.modules)"
[ -r /sw/courses/datalit/datascience-notebook.sif ] || hpchub_fail "container image" /sw/courses/datalit/datascience-notebook.sif "is not readable on $(hostname)"

exec apptainer exec --bind /scratch \
    /sw/courses/datalit/datascience-notebook.sif \
    /bin/sh -c 'set -a && . "$1" && set +a && shift && exec "$@"' hpchub-secrets /home/alice/.hpchub/jobs/hpchub-alice-parallel/env /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-parallel/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0 --HubOAuth.cache_max_age=5 --ServerApp.jpserver_extensions=jupyter_server_ydoc=True --YDocExtension.disable_rtc=False --SQLiteYStore.db_path=/home/alice/.hpchub/jobs/hpchub-alice-parallel/ystore.db --BaseFileIdManager.db_path=/home/alice/.hpchub/jobs/hpchub-alice-parallel/file_id.db --ServerApp.jpserver_extensions=jupyterlab_jupytext=True --ContentsManager.formats=ipynb,py:percent

