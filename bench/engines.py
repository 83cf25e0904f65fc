"""Time from Cluster.start to n engines registered: hpchub's launcher against ipyparallel's own
Slurm launcher, side by side on the same local multi-node Slurm (partition `multi`, 3 nodes).

Run as root on a machine where tests/clusters/slurm.sh is up; each measurement runs as the
ordinary user alice, like a notebook would:

    /opt/hpchub/venv/bin/python bench/engines.py [--repeat 3] [--n 4 8]

Prints one line per run and a summary with the ratio hpchub / ipyparallel (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/python"

RUN = """
import asyncio, json, time
import ipyparallel as ipp
import hpchub.parallel

async def main(kind, n):
    common = dict(n=n, controller_ip="*", controller_location="10.77.0.1")
    if kind == "hpchub":
        cluster = hpchub.parallel.Cluster(profile="multi", site_config=SITE, options={"nodes": 3}, **common)
    else:
        if kind.endswith("+1s-heartbeat"):  # the same controller setting hpchub uses
            common["controller_args"] = ["--HeartMonitor.period=1000"]
        cluster = ipp.Cluster(engines="slurm", **common)
        cluster.config.SlurmEngineSetLauncher.queue = "multi"
        cluster.config.SlurmEngineSetLauncher.batch_template = (
            "#!/bin/bash\\n#SBATCH --partition=multi\\n#SBATCH --nodes=3\\n#SBATCH --ntasks={n}\\n"
            "#SBATCH --time=01:00:00\\n#SBATCH --output=/dev/null\\nsrun {program_and_args}\\n")
    started = time.monotonic()
    rc = await cluster.start_and_connect()  # returns once n engines have registered
    seconds = time.monotonic() - started
    assert len(rc) == n, len(rc)
    hosts = len(set(rc[:].apply_sync(__import__("socket").gethostname)))
    rc.close()
    await cluster.stop_cluster()
    print(json.dumps({"kind": kind, "n": n, "seconds": seconds, "hosts": hosts}))

asyncio.run(main(KIND, N))
"""


KINDS = ("hpchub", "ipyparallel-slurm", "ipyparallel-slurm+1s-heartbeat")


def measure(kind: str, n: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-bench-"))
    scratch.chmod(0o755)
    shutil.chown(scratch, "alice")  # ipyparallel's launcher writes its batch script into the cwd
    script = scratch / "run.py"
    site = REPO / "site-configs" / "local-slurm.yaml"
    script.write_text(f"SITE = {str(site)!r}\nKIND = {kind!r}\nN = {n}\n" + textwrap.dedent(RUN))
    script.chmod(0o644)
    try:
        result = subprocess.run(["sudo", "-n", "-u", "alice", PYTHON, str(script)], capture_output=True, text=True,
                                timeout=180, cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"{kind} n={n} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    results: dict[tuple[str, int], list[float]] = {}
    for n in args.n:
        for _ in range(args.repeat):
            for kind in KINDS:  # interleaved, so drift hits all alike
                run = measure(kind, n)
                results.setdefault((kind, n), []).append(run["seconds"])
                print(f"{kind:32} n={n}: {run['seconds']:.2f} s to {n} engines on {run['hosts']} nodes", flush=True)
    print("\nmedian seconds from Cluster.start to all engines registered (ratio: against ipyparallel-slurm)")
    print(f"{'n':>3}  " + "  ".join(f"{kind:>32}" for kind in KINDS))
    for n in args.n:
        baseline = statistics.median(results[("ipyparallel-slurm", n)])
        cells = []
        for kind in KINDS:
            median = statistics.median(results[(kind, n)])
            cells.append(f"{median:6.2f} s (ratio {median / baseline:4.2f})".rjust(32))
        print(f"{n:>3}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
