#!/bin/bash
# hpchub's main job on one machine (Debian 12, as root): install and start the local Slurm,
# check the site config, render and submit a job of the `small` profile as the ordinary user
# alice, and show it running through the scheduler. (With the spawner this becomes the
# running hub; see README.md.)
#
# usage: bash examples/local.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/clusters/install-packages.sh slurm
bash tests/setup-python.sh
bash tests/clusters/users.sh
bash tests/clusters/slurm.sh up

hpchub=${HPCHUB_VENV:-/opt/hpchub/venv}/bin/hpchub
site=site-configs/local-slurm.yaml
# Stand-in for the Jupyter server until the spawner starts real ones: proves the job's
# environment (user, node, venv with JupyterLab) and keeps the allocation for a minute.
command="python -c \"import getpass, socket, time, jupyterlab; print(getpass.getuser(), 'on', socket.gethostname(), 'with JupyterLab', jupyterlab.__version__, flush=True); time.sleep(60)\""

echo "== hpchub check $site"
"$hpchub" check "$site"
echo "== the job script (hpchub render ... --set cores=2)"
"$hpchub" render "$site" --profile small --user alice --set cores=2 --command "$command"
echo "== submitting as alice"
job=$("$hpchub" submit "$site" --profile small --user alice --set cores=2 --command "$command")
echo "job $job"
log=/home/alice/.hpchub/logs/hpchub-alice-small.$job.log
for _ in $(seq 60); do
    grep -q "with JupyterLab" "$log" 2>/dev/null && break
    sleep 0.5
done
echo "== hpchub status"
"$hpchub" status "$site" "$job"
echo "== job output ($log)"
cat "$log"
echo "== hpchub queues"
"$hpchub" queues "$site"
echo "== the job keeps running for a minute; cancel it with: $hpchub cancel $site $job --user alice"
