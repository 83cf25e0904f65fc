#!/bin/bash
#$ -S /bin/bash
#$ -N hpchub-alice-small
#$ -q long.q
#$ -pe smp 4
#$ -l h_rt=01:00:00
#$ -l h_vmem=1024M
#$ -r n
#$ -o /home/alice/.hpchub/logs/hpchub-alice-small.sge.$JOB_ID.log
#$ -j y
#$ -wd /home/alice

hpchub_fail() { echo "hpchub: $*" >&2; exit 1; }
echo "hpchub: job ${SLURM_JOB_ID:-${JOB_ID:-?}} for alice started on $(hostname) at $(date -Is)"

. /opt/hpchub/venv/bin/activate || hpchub_fail "cannot activate the virtual environment "/opt/hpchub/venv
export OMP_NUM_THREADS=1

[ -r /home/alice/.hpchub/jobs/hpchub-alice-small/env ] || hpchub_fail "missing "/home/alice/.hpchub/jobs/hpchub-alice-small/env" (written at submit time)"
set -a
. /home/alice/.hpchub/jobs/hpchub-alice-small/env
set +a
export HPCHUB_ENGINE_PROFILE=small
export HPCHUB_SITE_CONFIG=$CHECKOUT/site-configs/local-sge.yaml
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
