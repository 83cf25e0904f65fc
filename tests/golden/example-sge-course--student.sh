#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-student
#$ -q course.q
#$ -l h_rt=03:00:00
#$ -l h_vmem=4096M
#$ -P datalit
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-student.teaching.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Ins)"
export HPCHUB_JOB_END=$(( $(date +%s) + 10800 ))

. /sw/courses/datascience/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/sw/courses/datascience/venv
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-student/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-student/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-student/env
set +a
export HPCHUB_ENGINE_PROFILE=student
export HPCHUB_ACCOUNT=datalit
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-sge-course.yaml
export PYTHONPATH=/home/alice/.hpchub/jobs/hpchub-alice-student/python"${PYTHONPATH:+:$PYTHONPATH}"
export JUPYTER_PATH=/home/alice/.hpchub/jobs/hpchub-alice-student/jupyter"${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HPCHUB_SCHEDULER=sge
export HPCHUB_NODE_NAME="$HOSTNAME"
exec /bin/sh /home/alice/.hpchub/jobs/hpchub-alice-student/start-server.sh jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True --ServerApp.port=0
