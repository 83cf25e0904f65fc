"""Rendered job scripts on the real local Slurm (tests/clusters/slurm.sh): submitted as ordinary
users via sudo, seen through one status call, queue info, multi-node over namespace nodes, cancel."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers.jobs import cancel_and_remove_logs, site_with_extra_profiles, submit, wait_for, wait_for_file_text
from helpers.support import SITE_CONFIGS, run_hpchub

from hpchub.cluster import client_for
from hpchub.schedulers import JobState, queue_position, slurm

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

EXTRA_PROFILES = """
  - slug: held
    name: held on submit
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 100M, walltime: "00:10:00"}
    directives: ["--hold"]
  - slug: later
    name: starts in an hour
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 100M, walltime: "00:10:00"}
    directives: ["--begin=now+1hour"]
"""

REPORT = "id -un; hostname; echo venv=$VIRTUAL_ENV omp=$OMP_NUM_THREADS; echo ready"


@pytest.fixture
def site():
    return site_with_extra_profiles("local-slurm.yaml", EXTRA_PROFILES)


@pytest.fixture
async def cleanup(site):
    """Cancel whatever a test submitted, and remove its logs, even when it fails."""
    submitted: list[tuple[str, str, str]] = []
    yield submitted
    await cancel_and_remove_logs(site, submitted)


async def test_jobs_of_several_users_in_one_status_call_then_cancelled(site, cleanup):
    client = client_for(site, "slurm")
    alice_job, alice_log = await submit(site, "small", "alice", f"bash -c '{REPORT}; sleep 300'", cores="2", memory="2G")
    cleanup.append((alice_job, "alice", alice_log))
    bob_job, bob_log = await submit(site, "small", "bob", f"bash -c '{REPORT}; sleep 300'")
    cleanup.append((bob_job, "bob", bob_log))
    held_job, held_log = await submit(site, "held", "alice", "sleep 300")
    cleanup.append((held_job, "alice", held_log))
    later_job, later_log = await submit(site, "later", "bob", "sleep 300")
    cleanup.append((later_job, "bob", later_log))

    jobs = await wait_for(
        client,
        lambda jobs: jobs[alice_job].state is JobState.RUNNING and jobs[bob_job].state is JobState.RUNNING,
        what="both servers running",
    )
    assert (jobs[alice_job].user, jobs[bob_job].user) == ("alice", "bob")
    assert jobs[alice_job].host == "vm"
    assert slurm.parse_job_names(_scheduler(slurm.job_names_argv("alice")), "alice")[alice_job] == "hpchub-alice-small"
    assert jobs[held_job].state is JobState.HELD and jobs[held_job].reason == "JobHeldUser"
    assert jobs[later_job].state is JobState.PENDING and jobs[later_job].reason == "BeginTime"
    assert jobs[later_job].estimated_start is not None

    # The job ran as alice, with the site's environment block applied.
    log = await wait_for_file_text(Path(alice_log), "ready")
    assert log.splitlines()[1:4] == ["alice", "vm", "venv=/opt/hpchub/venv omp=1"]
    assert Path(alice_log).stat().st_uid == pwd.getpwnam("alice").pw_uid

    queues = {queue.name: queue for queue in await client.queue_info()}
    assert queues["debug"].cores_total == 8 and queues["debug"].cores_free <= 5
    assert queues["debug"].jobs_running >= 2 and queues["debug"].jobs_pending >= 2
    assert queues["multi"].nodes_total == 3
    # bob's waiting job is in the queue's list of every pending priority (alice's held one too).
    assert jobs[later_job].priority in queues["debug"].pending_priorities
    assert len(queues["debug"].pending_priorities) >= 2
    assert queue_position(queues["debug"], jobs[later_job]) >= 1

    for job_id, user, _ in cleanup:
        await client.cancel(user, [job_id])
    ours = {alice_job, bob_job, held_job, later_job}
    jobs = await wait_for(
        client,
        lambda jobs: all(job_id not in jobs or not jobs[job_id].state.is_active for job_id in ours),
        what="all four jobs gone",
    )
    assert all(jobs[job_id].state is JobState.CANCELLED for job_id in ours if job_id in jobs)


@pytest.mark.multinode
async def test_multi_node_job_spreads_over_namespace_nodes(site, cleanup):
    client = client_for(site, "slurm")
    command = "bash -c 'srun --ntasks-per-node=1 hostname | sort; echo done; sleep 300'"
    job_id, log = await submit(site, "multi", "alice", command, nodes="3")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: jobs[job_id].state is JobState.RUNNING, what="multi-node job running")
    assert jobs[job_id].nodes == ("node1", "node2", "node3") and jobs[job_id].queue == "multi"
    text = await wait_for_file_text(Path(log), "done")
    assert text.splitlines()[-4:-1] == ["node1", "node2", "node3"]


async def test_a_failing_job_is_reported_failed(site, cleanup):
    client = client_for(site, "slurm")
    job_id, log = await submit(site, "small", "alice", "bash -c 'echo broken environment >&2; exit 3'")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: job_id in jobs and jobs[job_id].state is JobState.FAILED, what="job failed")
    assert jobs[job_id].reason == "NonZeroExitCode"
    assert "broken environment" in Path(log).read_text()


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


def _scheduler(argv: list[str], user: str | None = None) -> str:
    sudo = ["sudo", "-n", "-u", user] if user else []
    result = subprocess.run(sudo + argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_user_naming_a_job_with_separators_hides_no_job(site, cleanup):
    """Before: the weird name split alice's squeue line, parse_status raised, and every job on the
    cluster was unknown. Now: every job parses and the weird job is found by id, its name exactly."""
    client = client_for(site, "slurm")
    normal_job, normal_log = await submit(site, "small", "bob", "sleep 300")
    cleanup.append((normal_job, "bob", normal_log))
    weird_log = f"/tmp/hpchub-test-weird-{uuid.uuid4().hex}.log"
    weird_job = slurm.parse_submit(_scheduler(
        ["sbatch", "--parsable", f"--job-name={WEIRD_NAME}", "--partition=debug", "--time=5", "--mem=50M",
         "--begin=now+1hour", f"--output={weird_log}", "--chdir=/tmp", "--wrap=sleep 300"], user="alice"))
    cleanup.append((weird_job, "alice", weird_log))

    jobs = await wait_for(client, lambda jobs: normal_job in jobs and weird_job in jobs, what="both jobs listed")
    assert not jobs.problems and "999" not in jobs
    assert jobs[normal_job].state in (JobState.PENDING, JobState.RUNNING) and jobs[normal_job].user == "bob"
    assert jobs[weird_job].state is JobState.PENDING and jobs[weird_job].user == "alice"
    assert jobs[weird_job].reason == "BeginTime"

    names = slurm.parse_job_names(_scheduler(slurm.job_names_argv("alice")), "alice")
    assert names[weird_job] == WEIRD_NAME.splitlines()[0] and normal_job not in names
    assert slurm.parse_job_names(_scheduler(slurm.job_names_argv("bob")), "bob")[normal_job] == "hpchub-bob-small"
    assert slurm.parse_explain(_scheduler(slurm.explain_argv(weird_job))).endswith("(PENDING, BeginTime)")


async def test_server_jobs_are_not_requeued(site, cleanup):
    job_id, log = await submit(site, "small", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    assert " Requeue=0 " in _scheduler(["scontrol", "show", "job", job_id, "--oneliner"])


def test_private_data_of_the_local_slurm_is_off():
    assert slurm.parse_private_data(_scheduler(slurm.private_data_argv())) is False


def test_node_address_from_slurm():
    assert slurm.parse_node_address(_scheduler(slurm.node_address_argv("node1"))) is not None
