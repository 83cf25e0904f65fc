"""Start estimates on the real local Slurm and Grid Engine: the job the spawner would submit
(hpchub.core.jobs.server_job), asked as alice through ``sudo -n -u alice hpchub-job estimate`` with
``sbatch --test-only`` / ``qsub -w p``. A job that fits "starts now"; with carol's job holding what it
needs (cancelled at the end) Slurm names the time carol's job ends and Grid Engine says it would wait.
Nothing is submitted for alice. Marker `empty_queue`: tests/run.sh runs these after its lanes, whose
jobs would change the answers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from helpers import holding
from helpers.jobs import local_site_with_test_profiles

from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request
from hpchub.core.render import UserAccount
from hpchub.hub.estimate import estimate_text
from hpchub.transports.cluster import client_for, default_jobfiles_command

pytestmark = [pytest.mark.e2e, pytest.mark.empty_queue]

USER = "alice"
async def ask(scheduler: str, profile: str, **options: str):
    site = local_site_with_test_profiles(scheduler)
    request = resolve_request(site, site.profile(profile), options)
    job = server_job(site, request, UserAccount.lookup(USER))
    return await client_for(site, scheduler).estimate(USER, job.script, datetime.now(),
                                                      timedelta(seconds=request.walltime.seconds))


def never_submitted(words: str) -> bool:
    """The job id sbatch --test-only names is no job: the question submitted nothing."""
    job_id = words.split()[2]
    listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
    return listed.stdout.strip() == ""


@pytest.fixture(autouse=True)
def _queue_empty(request: pytest.FixtureRequest) -> None:
    for scheduler in ("slurm", "sge"):
        if request.node.get_closest_marker(scheduler):
            holding.queue_emptied(scheduler)


@pytest.fixture
def slurm_node_held(slurm_cluster) -> Iterator[datetime]:
    """carol's exclusive job on node3 of partition multi; yields when it started."""
    with holding.slurm_node_held() as started:
        yield started


@pytest.fixture
def sge_queue_full(sge_cluster) -> Iterator[None]:
    """carol's job holding all 8 slots of short.q."""
    with holding.sge_queue_held():
        yield


@pytest.mark.slurm
async def test_slurm_a_job_that_fits_starts_now(slurm_cluster):
    found = await ask("slurm", "small", cores="1")
    assert found is not None and found.starts_now, found
    assert estimate_text(found, datetime.now()) == "starts now"
    assert "in partition debug" in found.words
    assert never_submitted(found.words)


@pytest.mark.slurm
@pytest.mark.multinode
async def test_slurm_a_job_that_needs_a_held_node_is_expected_when_that_job_ends(slurm_node_held):
    assert (await ask("slurm", "multi", nodes="2")).starts_now  # two of three nodes are free
    found = await ask("slurm", "multi", nodes="3")
    assert found is not None and not found.starts_now, found
    # Slurm's own answer: when carol's job reaches its time limit (to the second, give or take the poll).
    expected = slurm_node_held + timedelta(minutes=holding.HOLD_MINUTES)
    assert abs(found.start - expected) < timedelta(seconds=15), (found.start, expected)
    assert estimate_text(found, datetime.now()) == f"expected to start at {found.start:%H:%M}"


@pytest.mark.sge
async def test_grid_engine_a_job_that_fits_starts_now(sge_cluster):
    found = await ask("sge", "small")
    assert found is not None and found.starts_now and found.words.startswith("verification: found"), found


@pytest.mark.sge
async def test_grid_engine_a_job_in_a_full_queue_would_wait(sge_queue_full):
    found = await ask("sge", "small")
    assert found is not None and not found.starts_now and found.start is None, found
    assert estimate_text(found, datetime.now()) == "would wait: no queue can take it now"


@pytest.mark.slurm
def test_hpchub_job_estimate_writes_no_files_and_takes_none(slurm_cluster):
    command = ["sudo", "-n", "-u", USER, "--", default_jobfiles_command(), "estimate", "slurm"]
    refused = subprocess.run(command, input=json.dumps({"files": {"env": "X=1"}, "script": "#!/bin/bash\n"}),
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "writes no files" in refused.stderr
    unknown = subprocess.run([*command[:-1], "pbs"], input=json.dumps({"files": {}, "script": "#!/bin/bash\n"}),
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "no scheduler backend 'pbs'" in unknown.stderr
