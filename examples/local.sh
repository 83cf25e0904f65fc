#!/bin/bash
# hpchub's main job on one machine (Debian 12, as root): install what is needed, start the local
# Slurm (or Grid Engine with HPCHUB_SCHEDULER=sge), then run JupyterHub with hpchub and
# configurable-http-proxy at http://127.0.0.1:8000 in the foreground (Ctrl-C stops the hub;
# running servers are batch jobs and keep running, and the hub reattaches to them next time).
#
# Log in as alice, bob or carol with the password hpchub-test, pick a profile, and JupyterLab
# starts inside a batch job under that unix user.
#
# usage: bash examples/local.sh            (HPCHUB_SCHEDULER=slurm|sge, HPCHUB_PORT=8000)
set -euo pipefail
cd "$(dirname "$0")/.."
scheduler=${HPCHUB_SCHEDULER:-slurm}
case "$scheduler" in
    slurm | sge) ;;
    *) echo "local.sh: HPCHUB_SCHEDULER must be slurm or sge" >&2; exit 2 ;;
esac

bash tests/clusters/install-packages.sh "$scheduler"
bash tests/setup-python.sh
bash tests/setup-proxy.sh >/dev/null
bash tests/clusters/users.sh
bash "tests/clusters/$scheduler.sh" up

venv=${HPCHUB_VENV:-/opt/hpchub/venv}
export HPCHUB_SITE_CONFIG=${HPCHUB_SITE_CONFIG:-$PWD/site-configs/local-$scheduler.yaml}
export HPCHUB_STATE_DIR=${HPCHUB_STATE_DIR:-/var/lib/hpchub-hub}
"$venv/bin/hpchub" check "$HPCHUB_SITE_CONFIG"
mkdir -p "$HPCHUB_STATE_DIR"
echo "hpchub: JupyterHub at http://127.0.0.1:${HPCHUB_PORT:-8000}/ -- log in as alice, bob or carol, password ${HPCHUB_PASSWORD:-hpchub-test}"
cd "$HPCHUB_STATE_DIR"
exec "$venv/bin/jupyterhub" -f "$OLDPWD/examples/jupyterhub_config.py"
