"""tests/clusters/busy.sh, the busy test cluster: `fill` makes a real queue of other accounts' jobs
(some run, the rest wait for resources or behind those, and a short small job still starts at once:
backfill), `drain` removes exactly those jobs. Each test fills one cluster for a few seconds and
always drains it; marked `busy`, tests/run.sh runs them after its lanes, alone, since a filled
cluster makes the other tests' jobs wait."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from helpers.support import CLUSTER_SCRIPTS

pytestmark = pytest.mark.busy

BUSY = CLUSTER_SCRIPTS / "busy.sh"
ACCOUNTS = os.environ.get("HPCHUB_BUSY_USERS", "hpcbench07,hpcbench08,hpcbench09")


def busy(*args: str) -> str:
    done = subprocess.run(["bash", str(BUSY), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def filled(request: pytest.FixtureRequest):
    target = request.param
    try:
        busy("fill", target)
        yield target
    finally:
        busy("drain", target)


def slurm_fillers(partition: str) -> dict[str, tuple[str, str]]:
    """Job name -> (state, reason) of the fillers queued in ``partition``."""
    out = subprocess.run(["squeue", "-h", "-u", ACCOUNTS, "-p", partition, "-t", "PD,R,CG", "-o", "%j %T %r"],
                         capture_output=True, text=True, check=True).stdout
    return {name: (state, reason) for name, state, reason in (line.split() for line in out.splitlines())
            if name.startswith("busy-")}


def sge_fillers() -> dict[str, str]:
    """Job name -> state (r, qw, ...) of the fillers queued in Grid Engine."""
    out = subprocess.run(["qstat", "-u", ACCOUNTS], capture_output=True, text=True, check=True).stdout
    return {fields[2]: fields[4] for fields in (line.split() for line in out.splitlines()[2:])
            if fields[2].startswith("busy-")}


def submit(user: str, *args: str) -> str:
    done = subprocess.run(["sudo", "-n", "-u", user, "sbatch", "--parsable", "--account=bench", "--job-name=busy-test",
                           "--output=/dev/null", "--chdir=/tmp", *args, "--wrap", "sleep 60"],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip().split(";")[0]


def job_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.parametrize("filled", ["multi"], indirect=True)
def test_fill_makes_the_multi_partition_queue_with_backfill_and_drain_empties_it(slurm_cluster, filled):
    planned = {"busy-m1": ("RUNNING", "None"), "busy-m2": ("RUNNING", "None"),
               # the first in line waits for nodes, the next behind it (slurmctld gives the reasons
               # on its next scheduling pass: sched_interval=5)
               "busy-m3": ("PENDING", "Resources"), "busy-m4": ("PENDING", "Priority")}
    deadline = time.monotonic() + 20
    while (fillers := slurm_fillers("multi")) != planned and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fillers == planned
    # Two CPUs of node3 are free until m2 ends, before m3 can start: backfill starts a short 1-CPU
    # job there at once (`sbatch --test-only` does not say so: it answers m3's end), a whole node waits.
    first_account = ACCOUNTS.split(",")[0]
    small = submit(first_account, "-p", "multi", "-n", "1", "-t", "5")
    whole_node = submit(first_account, "-p", "multi", "-N", "1", "-c", "4", "-t", "5")
    try:
        deadline = time.monotonic() + 20
        while job_state(small) != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (job_state(small), job_state(whole_node)) == ("RUNNING", "PENDING")
    finally:
        subprocess.run(["scancel", small, whole_node], check=True)
    busy("drain", "multi")
    assert slurm_fillers("multi") == {}
    busy("drain", "multi")  # idempotent: nothing left to cancel


@pytest.mark.sge
@pytest.mark.parametrize("filled", ["short.q"], indirect=True)
def test_fill_makes_short_q_queue_and_drain_empties_it(sge_cluster, filled):
    fillers = sge_fillers()
    assert fillers["busy-s1"] in ("t", "r") and fillers["busy-s2"] == "qw", fillers
    busy("fill", "short.q")  # idempotent: the same jobs, none added
    assert set(sge_fillers()) == {"busy-s1", "busy-s2"}
    busy("drain", "short.q")
    assert sge_fillers() == {}
