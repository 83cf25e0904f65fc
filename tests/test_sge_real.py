"""Rendered job scripts on the real local Grid Engine (tests/clusters/sge.sh): submitted as
ordinary users via sudo, several jobs in one qstat call, held and error states, queue info, qdel."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers.jobs import cancel_and_remove_logs, site_with_extra_profiles, submit, wait_for, wait_for_file_text

from hpchub.cluster import client_for
from hpchub.schedulers import JobState, queue_position, sge

pytestmark = [pytest.mark.sge, pytest.mark.usefixtures("sge_cluster")]

EXTRA_PROFILES = """
  - slug: held
    name: held on submit
    cluster: sge
    queue: short.q
    resources: {cores: 1, memory: 100M, walltime: "00:10:00"}
    directives: ["-h"]
  - slug: broken-output
    name: output path nobody can write (lands in Eqw)
    cluster: sge
    queue: short.q
    resources: {cores: 1, memory: 100M, walltime: "00:10:00"}
    directives: ["-o /proc/hpchub-cannot-write-here"]
"""

REPORT = "id -un; hostname; echo venv=$VIRTUAL_ENV omp=$OMP_NUM_THREADS slots=$NSLOTS; echo ready"


@pytest.fixture
def site():
    return site_with_extra_profiles("local-sge.yaml", EXTRA_PROFILES)


@pytest.fixture
async def cleanup(site):
    """Cancel whatever a test submitted, and remove its logs, even when it fails."""
    submitted: list[tuple[str, str, str]] = []
    yield submitted
    await cancel_and_remove_logs(site, submitted)


async def test_jobs_of_several_users_in_one_status_call_then_deleted(site, cleanup):
    client = client_for(site, "sge")
    alice_job, alice_log = await submit(site, "small", "alice", f"bash -c '{REPORT}; sleep 300'", cores="2", queue="long.q")
    cleanup.append((alice_job, "alice", alice_log))
    bob_job, bob_log = await submit(site, "smp", "bob", f"bash -c '{REPORT}; sleep 300'")
    cleanup.append((bob_job, "bob", bob_log))
    held_job, held_log = await submit(site, "held", "alice", "sleep 300")
    cleanup.append((held_job, "alice", held_log))

    jobs = await wait_for(
        client,
        lambda jobs: jobs[alice_job].state is JobState.RUNNING and jobs[bob_job].state is JobState.RUNNING,
        what="both jobs running",
    )
    assert (jobs[alice_job].user, jobs[bob_job].user) == ("alice", "bob")
    assert jobs[alice_job].queue == "long.q" and jobs[bob_job].queue == "short.q"
    assert jobs[alice_job].host == "vm" and jobs[alice_job].name == "hpchub-alice-small"
    assert jobs[held_job].state is JobState.HELD and jobs[held_job].scheduler_state == "hqw"

    log_path = Path(alice_log)
    log = await wait_for_file_text(log_path, "ready")
    assert log.splitlines()[1:4] == ["alice", "vm", "venv=/opt/hpchub/venv omp=1 slots=2"]
    assert log_path.stat().st_uid == pwd.getpwnam("alice").pw_uid

    queues = {queue.name: queue for queue in await client.queue_info()}
    assert set(queues) >= {"short.q", "long.q"}
    assert queues["short.q"].cores_total == 8 and queues["short.q"].cores_free <= 6
    assert queues["long.q"].jobs_running >= 1 and queues["short.q"].jobs_pending >= 1
    # The held job waits but cannot start: it is not ahead of anybody.
    assert queue_position(queues["short.q"], jobs[held_job]) is None

    for job_id, user, _ in cleanup:
        await client.cancel(user, [job_id])
    ours = {alice_job, bob_job, held_job}
    await wait_for(client, lambda jobs: not ours & set(jobs), what="all three jobs gone from qstat")


async def test_a_job_that_cannot_start_is_reported_in_error(site, cleanup):
    client = client_for(site, "sge")
    job_id, log = await submit(site, "broken-output", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: jobs[job_id].state is JobState.ERROR, what="job in Eqw")
    assert jobs[job_id].scheduler_state == "Eqw" and "error state" in jobs[job_id].reason


async def test_a_failing_job_leaves_qstat_and_its_output(site, cleanup):
    client = client_for(site, "sge")
    job_id, log = await submit(site, "small", "alice", "bash -c 'echo broken environment >&2; exit 3'")
    cleanup.append((job_id, "alice", log))
    await wait_for(client, lambda jobs: job_id not in jobs, what="job gone")
    text = await wait_for_file_text(Path(log), "broken environment")
    assert "hpchub: job" in text


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


async def test_a_job_with_an_odd_name_hides_no_job_and_its_name_reads_exactly(site, cleanup):
    client = client_for(site, "sge")
    normal_job, normal_log = await submit(site, "small", "bob", "sleep 300")
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


async def test_server_jobs_are_not_rerun(site, cleanup):
    job_id, log = await submit(site, "small", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    shown = subprocess.run(["qstat", "-j", job_id], capture_output=True, text=True, timeout=60).stdout
    assert any(line.split() == ["restart:", "n"] for line in shown.splitlines())
