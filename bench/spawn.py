"""Spawn latency and scheduler load: hpchub against batchspawner's SlurmSpawner, side by side on
the same local Slurm, each behind a real JupyterHub and configurable-http-proxy.

For each spawner: spawn servers for alice, bob and carol one after another through the REST API
(time from POST to ready), then leave them running for a few poll intervals and count the
squeue calls slurmctld received (sdiag REQUEST_JOB_INFO), then stop them.

    /opt/hpchub/venv/bin/python bench/spawn.py [--intervals 3] [--poll-interval 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.hub import Hub, job_info_rpcs, spawn, stop  # noqa: E402
from helpers.support import SITE_CONFIGS, user_readable  # noqa: E402

USERS = ("alice", "bob", "carol")

BATCHSPAWNER_CONFIG = """
load_subconfig({base!r})
import batchspawner  # registers batchspawner's port handler
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_partition = "debug"
c.SlurmSpawner.req_runtime = "01:00:00"
c.SlurmSpawner.req_memory = "1024M"
c.SlurmSpawner.req_prologue = "source /opt/hpchub/venv/bin/activate"
c.SlurmSpawner.startup_poll_interval = 0.5
c.Spawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.env_keep = ["PATH", "LANG"]  # JupyterHub 6 keeps no PATH by itself
"""


def run(kind: str, intervals: int, poll_interval: int) -> dict:
    state = Path(tempfile.mkdtemp(prefix=f"hpchub-bench-{kind}-"))
    site = user_readable("bench-site.yaml", (SITE_CONFIGS / "local-slurm.yaml").read_text())
    config = None
    if kind == "batchspawner":
        config = state / "jupyterhub_config.py"
        config.write_text(textwrap.dedent(BATCHSPAWNER_CONFIG.format(base=str(REPO / "examples" / "jupyterhub_config.py"))))
    hub = Hub(site, state, poll_interval=poll_interval, config_file=config)
    hub.start()
    try:
        seconds = []
        for user in USERS:
            started = time.monotonic()
            spawn(hub, user, {"profile": "small"} if kind == "hpchub" else {})
            seconds.append(time.monotonic() - started)
        subprocess.run(["sdiag", "--reset"], check=True, capture_output=True)
        time.sleep(intervals * poll_interval)
        queries = job_info_rpcs()
        for user in USERS:
            stop(hub, user)
    finally:
        hub.close()
    return {"spawn": seconds, "queries": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, default=3)
    parser.add_argument("--poll-interval", type=int, default=10)
    args = parser.parse_args()
    results = {kind: run(kind, args.intervals, args.poll_interval) for kind in ("hpchub", "batchspawner")}
    for kind, result in results.items():
        print(f"{kind:13} spawn to ready: {', '.join(f'{s:.1f}' for s in result['spawn'])} s; "
              f"{result['queries']} squeue calls in {args.intervals} poll intervals with {len(USERS)} servers")
    ours, theirs = results["hpchub"], results["batchspawner"]
    spawn_ratio = statistics.median(ours["spawn"]) / statistics.median(theirs["spawn"])
    load_ratio = ours["queries"] / max(theirs["queries"], 1)
    print(f"\nratios hpchub / batchspawner (lower is better): spawn time {spawn_ratio:.2f}, squeue calls {load_ratio:.2f}")


if __name__ == "__main__":
    main()
