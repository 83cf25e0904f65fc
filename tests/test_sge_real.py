"""Rendered job scripts on the real local Grid Engine (tests/clusters/sge.sh): submitted as
ordinary users via sudo, several jobs in one qstat call, held and error states, queue info, qdel."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest
from jobs import cancel_and_remove_logs, site_with_extra_profiles, submit, wait_for, wait_for_file_text

from hpchub.cluster import ClusterClient
from hpchub.schedulers import JobState

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
    client = ClusterClient("sge", site.clusters["sge"])
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

    for job_id, user, _ in cleanup:
        await client.cancel(user, [job_id])
    ours = {alice_job, bob_job, held_job}
    await wait_for(client, lambda jobs: not ours & set(jobs), what="all three jobs gone from qstat")


async def test_a_job_that_cannot_start_is_reported_in_error(site, cleanup):
    client = ClusterClient("sge", site.clusters["sge"])
    job_id, log = await submit(site, "broken-output", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    jobs = await wait_for(client, lambda jobs: jobs[job_id].state is JobState.ERROR, what="job in Eqw")
    assert jobs[job_id].scheduler_state == "Eqw" and "error state" in jobs[job_id].reason


async def test_a_failing_job_leaves_qstat_and_its_output(site, cleanup):
    client = ClusterClient("sge", site.clusters["sge"])
    job_id, log = await submit(site, "small", "alice", "bash -c 'echo broken environment >&2; exit 3'")
    cleanup.append((job_id, "alice", log))
    await wait_for(client, lambda jobs: job_id not in jobs, what="job gone")
    text = await wait_for_file_text(Path(log), "broken environment")
    assert "hpchub: job" in text
