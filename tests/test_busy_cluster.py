"""tests/clusters/busy.sh, the busy test cluster: `fill` makes a real queue of other accounts' jobs
(some run, the rest wait for resources or behind those, and a short small job still starts at once:
backfill), `drain` removes exactly those jobs. On it, the form's start estimate says what then
happens: the choices it says start now start at once when submitted, the others wait. Each test
fills one cluster for a few seconds and always drains it; marked `busy`, tests/run.sh runs them
after its lanes, alone, since a filled cluster makes the other tests' jobs wait."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from helpers.jobs import cancel_and_remove_logs
from helpers.jobs import submit as submit_job
from helpers.profiles import busy_multi_profile, local_site_text
from helpers.support import CLUSTER_SCRIPTS, SITE_CONFIGS

from hpchub.core.config import parse_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request
from hpchub.core.render import UserAccount
from hpchub.hub.estimate import estimate_text
from hpchub.transports.cluster import client_for

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


USER = "alice"


async def estimate_then_submit(site, profile: str, choices: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """For each choice of ``profile``: the form's words for it (the job the spawner would submit, asked
    as alice) and then the same job submitted (sleeping instead of serving); (words, job id, log)."""
    answers = []
    for options in choices:  # all asked before any is submitted: each answer is for the same queue
        request = resolve_request(site, site.profile(profile), options)
        job = server_job(site, request, UserAccount.lookup(USER))
        found = await client_for(site, request.cluster_name).estimate(
            USER, job.script, datetime.now(), timedelta(seconds=request.walltime.seconds))
        answers.append(estimate_text(found, datetime.now()))
    submitted = []
    for words, options in zip(answers, choices, strict=True):
        job_id, log = await submit_job(site, profile, USER, "sleep 300", **options)
        submitted.append((words, job_id, log))
    return submitted


def states_after(submitted: list[tuple[str, str, str]], state_of: Callable[[str], str], running: str,
                 seconds: float) -> list[tuple[str, str]]:
    """(estimate, state) per job once each job that "starts now" runs, or after ``seconds``; the
    scheduler looks at a new job within seconds here (Slurm's backfill every second, sched_interval 5;
    Grid Engine's schedule_interval 1 s)."""
    deadline = time.monotonic() + seconds
    while True:
        states = [(words, state_of(job_id)) for words, job_id, _ in submitted]
        if all((state == running) == (words == "starts now") for words, state in states) or time.monotonic() > deadline:
            return states
        time.sleep(1)


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.parametrize("filled", ["multi"], indirect=True)
async def test_slurm_estimates_on_the_busy_partition_say_what_then_happens(slurm_cluster, filled):
    # sbatch --test-only alone says "in about an hour" for all three (it adds a delay for the waiting
    # jobs and ignores backfill); a short 1-core job fits on node3 before m3's planned start.
    site = parse_site_config(local_site_text("slurm", busy_multi_profile()), source=SITE_CONFIGS / "local-slurm.yaml")
    # Asked before a backfill pass has planned the waiting fillers, the estimate keeps Slurm's time
    # for all (a waiting job just submitted may take the room): ask once they are planned.
    deadline = time.monotonic() + 20
    while not planned("multi") and time.monotonic() < deadline:
        time.sleep(0.5)
    choices = [{"cores": "1", "walltime": "00:10:00"},  # backfill: starts now
               {"cores": "1", "walltime": "01:30:00"},  # would delay m3 (planned on all three nodes)
               {"cores": "4", "walltime": "00:10:00"}]  # node3 has 2 CPUs free
    submitted = await estimate_then_submit(site, "busy-multi", choices)
    try:
        assert [words for words, _, _ in submitted][0] == "starts now"
        assert all(words.startswith("expected to start at") for words, _, _ in submitted[1:]), submitted
        # What happens: the first runs within a backfill pass, the others still wait after 20 s.
        states = states_after(submitted, job_state, "RUNNING", 20)
        assert [state for _, state in states] == ["RUNNING", "PENDING", "PENDING"], states
    finally:
        await cancel_and_remove_logs(site, [(job_id, USER, log) for _, job_id, log in submitted])


def planned(partition: str) -> bool:
    """Whether every waiting filler of ``partition`` has a start the backfill scheduler planned."""
    out = subprocess.run(["squeue", "-h", "-u", ACCOUNTS, "-p", partition, "-t", "PD", "-o", "%S"],
                         capture_output=True, text=True).stdout.split()
    return bool(out) and "N/A" not in out


def sge_state(job_id: str) -> str:
    out = subprocess.run(["qstat", "-u", USER], capture_output=True, text=True).stdout
    return next((fields[4] for fields in (line.split() for line in out.splitlines()[2:]) if fields[0] == job_id), "")


@pytest.mark.sge
@pytest.mark.parametrize("filled", ["short.q"], indirect=True)
async def test_grid_engine_estimates_on_the_busy_queue_say_what_then_happens(sge_cluster, filled):
    site = parse_site_config(local_site_text("sge"), source=SITE_CONFIGS / "local-sge.yaml")
    # short.q: s1 holds 6 of 8 slots, s2 (8 slots) waits: 1 slot starts now, 4 would wait.
    submitted = await estimate_then_submit(site, "small", [{"cores": "1"}, {"cores": "4"}])
    try:
        assert [words for words, _, _ in submitted] == ["starts now", "would wait: no queue can take it now"]
        states = states_after(submitted, sge_state, "r", 20)
        assert [state for _, state in states] == ["r", "qw"], states
    finally:
        await cancel_and_remove_logs(site, [(job_id, USER, log) for _, job_id, log in submitted])
