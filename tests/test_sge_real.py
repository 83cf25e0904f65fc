"""Rendered job scripts on the real local Grid Engine (tests/clusters/sge.sh), what only Grid Engine
does: the error state Eqw, job names with control characters or XML in them. What both schedulers
do alike is in test_schedulers_real.py."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from helpers.jobs import submit, wait_for

from hpchub.schedulers import JobState, sge
from hpchub.transports.cluster import client_for

pytestmark = [pytest.mark.sge, pytest.mark.usefixtures("sge_cluster")]


@pytest.fixture
def scheduler() -> str:
    """conftest's `local_site` and `cleanup` for Grid Engine only."""
    return "sge"


async def test_a_job_that_cannot_start_is_reported_in_error(local_site, cleanup):
    client = client_for(local_site, "sge")
    job_id, log = await submit(local_site, "broken-output", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: jobs[job_id].state is JobState.ERROR, what="job in Eqw")
    assert jobs[job_id].scheduler_state == "Eqw" and "error state" in jobs[job_id].reason


def _qsub(user: str, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sudo", "-n", "-u", user, "qsub", "-terse", *args], input=script, capture_output=True,
                          text=True, timeout=60, cwd="/tmp")


@pytest.mark.parametrize("name", ["x\n999\x1fCOMPLETED", "x\x1fy", "x\ty"], ids=repr)
def test_grid_engine_refuses_job_names_with_control_characters(name):
    """What SGE 8.1.9 does with such names (recorded, since the parser relies on little of it):
    qsub refuses them, so they never reach qstat's XML."""
    result = _qsub("alice", "sleep 1\n", "-h", "-o", "/dev/null", "-j", "y", "-q", "short.q", "-N", name)
    if result.returncode == 0:  # never expected; do not leave the job behind
        subprocess.run(["sudo", "-n", "-u", "alice", "qdel", result.stdout.strip()], capture_output=True)
    assert result.returncode != 0 and "Unable to run job" in result.stdout + result.stderr


ODD_NAME = "a<b>&c]]>"  # allowed by SGE, and SGE writes its "<" as "%lt;" in qstat -xml


async def test_a_job_with_an_odd_name_hides_no_job_and_its_name_reads_exactly(local_site, cleanup):
    client = client_for(local_site, "sge")
    normal_job, normal_log = await submit(local_site, "small", "bob", "sleep 300")
    cleanup.append((normal_job, "bob", normal_log))
    odd_log = f"/tmp/hpchub-test-odd-{uuid.uuid4().hex}.log"
    submitted = _qsub("alice", "sleep 300\n", "-h", "-o", odd_log, "-j", "y", "-q", "short.q", "-N", ODD_NAME)
    assert submitted.returncode == 0, submitted.stderr
    odd_job = sge.parse_submit(submitted.stdout)
    cleanup.append((odd_job, "alice", odd_log))

    jobs = await wait_for(client, lambda jobs: normal_job in jobs and odd_job in jobs, what="both jobs listed")
    assert not jobs.problems
    assert jobs[normal_job].user == "bob" and jobs[normal_job].name == "hpchub-bob-small"
    assert jobs[odd_job].state is JobState.HELD and jobs[odd_job].name == ODD_NAME

    listed = subprocess.run(sge.job_names_argv("alice"), capture_output=True, text=True, timeout=60)
    names = sge.parse_job_names(listed.stdout, "alice")
    assert names[odd_job] == ODD_NAME and normal_job not in names
