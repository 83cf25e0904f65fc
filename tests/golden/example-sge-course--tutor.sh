#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-tutor
#$ -q all.q
#$ -pe smp 2
#$ -l h_rt=08:00:00
#$ -l h_vmem=4096M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-tutor.teaching.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 28800 ))

. /sw/courses/datascience/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/sw/courses/datascience/venv
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-tutor/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-tutor/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-tutor/env
set +a
export HPCHUB_ENGINE_PROFILE=tutor
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-sge-course.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-tutor/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-tutor/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-tutor/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0
