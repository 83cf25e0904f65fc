#!/bin/bash
#SBATCH --job-name=hpchub-alice-gpu
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=65536M
#SBATCH --time=1-00:00:00
#SBATCH --gres=gpu:2
#SBATCH --account=ml-lab
#SBATCH --no-requeue
#SBATCH --output=/home/alice/.hpchub/logs/hpchub-alice-gpu.hpc.%j.log
#SBATCH --chdir=/home/alice
#SBATCH --constraint=a100

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Is)"

# Batch shells are not login shells: make sure the module command exists.
type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true
type module >/dev/null 2>&1 || hpchub_fail "the 'module' command is not available on $(hostname)"
module load python/3.11 || hpchub_fail "module load python/3.11 failed"
module load jupyterlab/4 || hpchub_fail "module load jupyterlab/4 failed"
module load cuda/12.4 || hpchub_fail "module load cuda/12.4 failed"
. /sw/jupyter/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/sw/jupyter/venv
export HTTPS_PROXY=http://proxy.example.edu:3128
export JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
# Site prologue (from the site config)
# Keep numerical libraries to the cores Slurm gave us.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}


[ -r /home/alice/.hpchub/jobs/hpchub-alice-gpu/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-gpu/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-gpu/env
set +a
export HPCHUB_ENGINE_PROFILE=gpu
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/example-slurm-production.yaml
# Pick a free port on this node and report it to the hub. The port is all the hub takes from a
# job (the host comes from the scheduler), and only with this server's own token.
command -v python3 >/dev/null || hpchub_fail "python3 is not on PATH after the environment block"
HPCHUB_PORT=$(python3 - <<'HPCHUB_REPORT_PORT'
import json, os, socket, sys, time, urllib.error, urllib.request

with socket.socket() as sock:
    sock.bind(("", 0))
    port = sock.getsockname()[1]
url = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/hpchub/port"
request = urllib.request.Request(
    url, data=json.dumps({"port": port}).encode(), method="POST",
    headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"},
)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the hub is never behind the site's web proxy
for attempt in range(1, 6):
    try:
        opener.open(request, timeout=10).close()
        break
    except urllib.error.HTTPError as error:
        print(f"hpchub: the hub refused port {port} at {url}: {error.code} {error.read()[:300]!r}", file=sys.stderr)
        if error.code < 500:
            sys.exit(1)
    except OSError as error:
        print(f"hpchub: cannot reach the hub at {url} (attempt {attempt}): {error}", file=sys.stderr)
    if attempt == 5:
        sys.exit(1)
    time.sleep(2)
print(port)
HPCHUB_REPORT_PORT
) || hpchub_fail "could not report the server's port to the hub"
echo "hpchub: server port $HPCHUB_PORT reported to the hub"
export JUPYTERHUB_SERVICE_URL="http://0.0.0.0:${HPCHUB_PORT}${JUPYTERHUB_SERVICE_PREFIX:-/}"
exec jupyterhub-singleuser
