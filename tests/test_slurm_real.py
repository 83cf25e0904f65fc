"""Rendered job scripts on the real local Slurm (tests/clusters/slurm.sh), what only Slurm does:
multi-node over namespace nodes, the CLI, job names users choose, PrivateData, node addresses.
What both schedulers do alike is in test_schedulers_real.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from helpers.jobs import scheduler_output, submit, wait_for, wait_for_file_text
from helpers.support import SITE_CONFIGS, run_hpchub

from hpchub.schedulers import JobState, slurm
from hpchub.transports.cluster import client_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


@pytest.fixture
def scheduler() -> str:
    """conftest's `local_site` and `cleanup` for Slurm only."""
    return "slurm"


@pytest.mark.multinode
async def test_multi_node_job_spreads_over_namespace_nodes(local_site, cleanup):
    client = client_for(local_site, "slurm")
    command = "bash -c 'srun --ntasks-per-node=1 hostname | sort; echo done; sleep 300'"
    job_id, log = await submit(local_site, "multi", "alice", command, nodes="3")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: jobs[job_id].state is JobState.RUNNING, what="multi-node job running")
    assert jobs[job_id].nodes == ("node1", "node2", "node3") and jobs[job_id].queue == "multi"
    text = await wait_for_file_text(Path(log), "done")
    assert text.splitlines()[-4:-1] == ["node1", "node2", "node3"]


async def test_cli_submit_status_queues_cancel(cleanup):
    site = str(SITE_CONFIGS / "local-slurm.yaml")
    submitted = run_hpchub("submit", site, "--profile", "small", "--user", "bob", "--command", "sleep 300")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    cleanup.append((job_id, "bob", f"/home/bob/.hpchub/logs/hpchub-bob-small.slurm.{job_id}.log"))
    status = run_hpchub("status", site, job_id)
    assert status.returncode == 0, status.stderr
    row = status.stdout.splitlines()[1].split()
    # The status query no longer carries job names (users choose them); the NAME column may be empty.
    assert row[:3] == ["slurm", job_id, "bob"] and ({"pending", "running"} & set(row))
    queues = run_hpchub("queues", site)
    assert queues.returncode == 0, queues.stderr
    lines = {line.split()[1]: line.split() for line in queues.stdout.splitlines()[1:]}
    assert lines["debug"][2] == "up" and lines["multi"][4].endswith("/3") and lines["debug"][-1] == "yes"
    cancelled = run_hpchub("cancel", site, job_id, "--user", "bob")
    assert cancelled.returncode == 0, cancelled.stderr
    missing = run_hpchub("status", site, "999999")
    assert missing.returncode == 1 and "job 999999: not known to the scheduler" in missing.stderr


WEIRD_NAME = "x\n999\x1fCOMPLETED"  # the old status format's separator and line end: a forged record


async def test_a_user_naming_a_job_with_separators_hides_no_job(local_site, cleanup):
    """Before: the weird name split alice's squeue line, parse_status raised, and every job on the
    cluster was unknown. Now: every job parses and the weird job is found by id, its name exactly."""
    client = client_for(local_site, "slurm")
    normal_job, normal_log = await submit(local_site, "small", "bob", "sleep 300")
    cleanup.append((normal_job, "bob", normal_log))
    weird_log = f"/tmp/hpchub-test-weird-{uuid.uuid4().hex}.log"
    weird_job = slurm.parse_submit(scheduler_output(
        ["sbatch", "--parsable", f"--job-name={WEIRD_NAME}", "--partition=debug", "--time=5", "--mem=50M",
         "--begin=now+1hour", f"--output={weird_log}", "--chdir=/tmp", "--wrap=sleep 300"], user="alice"))
    cleanup.append((weird_job, "alice", weird_log))

    jobs = await wait_for(client, lambda jobs: normal_job in jobs and weird_job in jobs, what="both jobs listed")
    assert not jobs.problems and "999" not in jobs
    assert jobs[normal_job].state in (JobState.PENDING, JobState.RUNNING) and jobs[normal_job].user == "bob"
    assert jobs[weird_job].state is JobState.PENDING and jobs[weird_job].user == "alice"
    assert jobs[weird_job].reason == "BeginTime"

    names = slurm.parse_job_names(scheduler_output(slurm.job_names_argv("alice")), "alice")
    assert names[weird_job] == WEIRD_NAME.splitlines()[0] and normal_job not in names
    assert slurm.parse_job_names(scheduler_output(slurm.job_names_argv("bob")), "bob")[normal_job] == "hpchub-bob-small"
    assert slurm.parse_explain(scheduler_output(slurm.explain_argv(weird_job))).endswith("(PENDING, BeginTime)")


def test_private_data_of_the_local_slurm_is_off():
    assert slurm.parse_private_data(scheduler_output(slurm.private_data_argv())) is False


def test_node_address_from_slurm():
    assert slurm.parse_node_address(scheduler_output(slurm.node_address_argv("node1"))) is not None
