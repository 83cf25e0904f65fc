"""What both real schedulers do alike, once per scheduler (tests/clusters/slurm.sh and sge.sh):
jobs of several users submitted via sudo, seen through one status call, then cancelled; a failing
job reported; server jobs never requeued. Where the schedulers differ (what they list, their
queues, their words), a small table or branch per scheduler says so."""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from pathlib import Path

from helpers.jobs import scheduler_output, submit, wait_for, wait_for_file_text

from hpchub.schedulers import JobState, queue_position, slurm
from hpchub.transports.cluster import client_for


@dataclass(frozen=True)
class TwoServers:
    """How alice's and bob's servers are asked for on a scheduler, and what alice's job reports."""

    alice_options: dict[str, str]
    bob_profile: str
    report: str  # printed by the job before "ready": its account, host and environment
    alice_environment: str  # the report's third line for alice's job


REPORT = "id -un; hostname; echo venv=$VIRTUAL_ENV omp=$OMP_NUM_THREADS"
TWO_SERVERS = {
    "slurm": TwoServers({"cores": "2", "memory": "2G"}, "small", REPORT, "venv=/opt/hpchub/venv omp=1"),
    "sge": TwoServers({"cores": "2", "queue": "long.q"}, "smp", REPORT + " slots=$NSLOTS",
                      "venv=/opt/hpchub/venv omp=1 slots=2"),
}


async def test_jobs_of_several_users_in_one_status_call_then_cancelled(scheduler, local_site, cleanup):
    servers = TWO_SERVERS[scheduler]
    client = client_for(local_site, scheduler)
    command = f"bash -c '{servers.report}; echo ready; sleep 300'"
    alice_job, alice_log = await submit(local_site, "small", "alice", command, **servers.alice_options)
    cleanup.append((alice_job, "alice", alice_log))
    bob_job, bob_log = await submit(local_site, servers.bob_profile, "bob", command)
    cleanup.append((bob_job, "bob", bob_log))
    held_job, held_log = await submit(local_site, "held", "alice", "sleep 300")
    cleanup.append((held_job, "alice", held_log))
    if scheduler == "slurm":  # a job that may not start yet: pending, with a reason and an estimated start
        later_job, later_log = await submit(local_site, "later", "bob", "sleep 300")
        cleanup.append((later_job, "bob", later_log))

    jobs = await wait_for(
        client,
        lambda jobs: jobs[alice_job].state is JobState.RUNNING and jobs[bob_job].state is JobState.RUNNING,
        what="both servers running",
    )
    assert (jobs[alice_job].user, jobs[bob_job].user) == ("alice", "bob")
    assert jobs[alice_job].host == "vm"
    assert jobs[held_job].state is JobState.HELD

    # The job ran as alice, with the site's environment block applied.
    log = await wait_for_file_text(Path(alice_log), "ready")
    assert log.splitlines()[1:4] == ["alice", "vm", servers.alice_environment]
    assert Path(alice_log).stat().st_uid == pwd.getpwnam("alice").pw_uid

    queues = {queue.name: queue for queue in await client.queue_info()}
    if scheduler == "slurm":
        # squeue's status carries no job names (users choose them): they come from a query of their own.
        names = slurm.parse_job_names(scheduler_output(slurm.job_names_argv("alice")), "alice")
        assert names[alice_job] == "hpchub-alice-small"
        assert jobs[held_job].reason == "JobHeldUser"
        assert jobs[later_job].state is JobState.PENDING and jobs[later_job].reason == "BeginTime"
        assert jobs[later_job].estimated_start is not None
        assert queues["debug"].cores_total == 8 and queues["debug"].cores_free <= 5
        assert queues["debug"].jobs_running >= 2 and queues["debug"].jobs_pending >= 2
        assert queues["multi"].nodes_total == 3
        # bob's waiting job is in the queue's list of every pending priority (alice's held one too).
        assert jobs[later_job].priority in queues["debug"].pending_priorities
        assert len(queues["debug"].pending_priorities) >= 2
        assert queue_position(queues["debug"], jobs[later_job]) >= 1
    else:
        assert jobs[alice_job].queue == "long.q" and jobs[bob_job].queue == "short.q"
        assert jobs[alice_job].name == "hpchub-alice-small"
        assert jobs[held_job].scheduler_state == "hqw"
        assert set(queues) >= {"short.q", "long.q"}
        assert queues["short.q"].cores_total == 8 and queues["short.q"].cores_free <= 6
        assert queues["long.q"].jobs_running >= 1 and queues["short.q"].jobs_pending >= 1
        # The held job waits but cannot start: it is not ahead of anybody.
        assert queue_position(queues["short.q"], jobs[held_job]) is None

    for job_id, user, _ in cleanup:
        await client.cancel(user, [job_id])
    ours = {job_id for job_id, _, _ in cleanup}
    if scheduler == "slurm":  # squeue lists ended jobs for a while, with their end state
        jobs = await wait_for(
            client,
            lambda jobs: all(job_id not in jobs or not jobs[job_id].state.is_active for job_id in ours),
            what="all our jobs gone",
        )
        assert all(jobs[job_id].state is JobState.CANCELLED for job_id in ours if job_id in jobs)
    else:  # qstat forgets them
        await wait_for(client, lambda jobs: not ours & set(jobs), what="all our jobs gone from qstat")


async def test_a_failing_job_is_reported(scheduler, local_site, cleanup):
    client = client_for(local_site, scheduler)
    job_id, log = await submit(local_site, "small", "alice", "bash -c 'echo broken environment >&2; exit 3'")
    cleanup.append((job_id, "alice", log))
    if scheduler == "slurm":  # squeue keeps the ended job for a while: failed, and why
        jobs = await wait_for(client, lambda jobs: job_id in jobs and jobs[job_id].state is JobState.FAILED,
                              what="job failed")
        assert jobs[job_id].reason == "NonZeroExitCode"
        assert "broken environment" in Path(log).read_text()
    else:  # qstat forgets the ended job at once: its output says what happened
        await wait_for(client, lambda jobs: job_id not in jobs, what="job gone")
        text = await wait_for_file_text(Path(log), "broken environment")
        assert "hpchub: job" in text


async def test_server_jobs_are_not_requeued(scheduler, local_site, cleanup):
    job_id, log = await submit(local_site, "small", "alice", "sleep 300")
    cleanup.append((job_id, "alice", log))
    if scheduler == "slurm":
        assert " Requeue=0 " in scheduler_output(["scontrol", "show", "job", job_id, "--oneliner"])
    else:
        shown = scheduler_output(["qstat", "-j", job_id])
        assert any(line.split() == ["restart:", "n"] for line in shown.splitlines())
