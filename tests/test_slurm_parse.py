"""Slurm backend: argv builders and parsers, against output captured from the real local Slurm."""

from datetime import datetime

import pytest
from support import REPO

from hpchub.schedulers import JobState, ParseError, slurm

DATA = REPO / "tests" / "data"
SEP = slurm.SEP


def test_status_is_one_call_for_all_jobs_or_given_users():
    argv = slurm.status_argv()
    assert argv[:3] == ["squeue", "--noheader", "--states=all"] and not any(a.startswith("--users") for a in argv)
    assert slurm.status_argv(["bob", "alice", "bob"])[-1] == "--users=alice,bob"


def test_parse_captured_squeue_output():
    jobs = slurm.parse_status((DATA / "squeue-all-states.txt").read_text())
    assert {job_id: job.state for job_id, job in jobs.items()} == {
        "1": JobState.RUNNING,
        "2": JobState.RUNNING,
        "3": JobState.HELD,
        "4": JobState.CANCELLED,
        "5": JobState.FAILED,
    }
    assert jobs["2"].nodes == ("node1", "node2", "node3") and jobs["2"].host == "node1"
    assert jobs["1"].host == "vm" and jobs["1"].started == datetime(2026, 11, 25, 20, 11, 58)
    assert jobs["3"].reason == "JobHeldUser" and jobs["3"].estimated_start is None
    assert jobs["5"].reason == "NonZeroExitCode"
    assert jobs["1"].user == "alice" and jobs["2"].queue == "multi"


def line(*, job_id="7", state="PENDING", reason="Priority", start="2026-11-25T21:00:00", nodes="", batch="n/a"):
    return SEP.join([job_id, state, "bob", "hpchub-bob-small", "debug", batch, nodes, reason, start, "2026-11-25T20:00:00", "100"])


def test_pending_job_has_reason_and_estimated_start():
    (job,) = slurm.parse_status(line()).values()
    assert job.state is JobState.PENDING
    assert job.reason == "Priority" and job.estimated_start == datetime(2026, 11, 25, 21, 0)
    assert job.priority == 100.0 and job.host is None


def test_batch_host_comes_first_among_nodes():
    (job,) = slurm.parse_status(line(state="RUNNING", reason="None", nodes="node[1-3]", batch="node2")).values()
    assert job.nodes == ("node2", "node1", "node3")


@pytest.mark.parametrize(
    "raw, state",
    [("CONFIGURING", JobState.PENDING), ("COMPLETING", JobState.COMPLETING), ("COMPLETED", JobState.FINISHED),
     ("TIMEOUT", JobState.FAILED), ("NODE_FAIL", JobState.FAILED), ("OUT_OF_MEMORY", JobState.FAILED),
     ("SUSPENDED", JobState.SUSPENDED), ("REQUEUE_HOLD", JobState.HELD), ("PREEMPTED", JobState.FAILED)],
)
def test_state_table(raw, state):
    (job,) = slurm.parse_status(line(state=raw)).values()
    assert job.state is state and job.scheduler_state == raw


def test_unknown_state_and_wrong_field_count_are_parse_errors():
    with pytest.raises(ParseError, match="unknown Slurm job state 'WEIRD'"):
        slurm.parse_status(line(state="WEIRD"))
    with pytest.raises(ParseError, match="fields"):
        slurm.parse_status("1|RUNNING|alice")


@pytest.mark.parametrize(
    "hostlist, hosts",
    [("vm", ["vm"]), ("node[1-3]", ["node1", "node2", "node3"]), ("node[01-03,7],gpu1", ["node01", "node02", "node03", "node7", "gpu1"]),
     ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"])],
)
def test_expand_hostlist(hostlist, hosts):
    assert slurm.expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("stdout, job_id", [("123\n", "123"), ("456;cluster2\n", "456")])
def test_parse_submit(stdout, job_id):
    assert slurm.parse_submit(stdout) == job_id


def test_parse_submit_without_job_id():
    with pytest.raises(ParseError, match="sbatch printed no job id"):
        slurm.parse_submit("sbatch: error: Batch job submission failed\n")


def test_queue_info_from_captured_sinfo():
    queues = {q.name: q for q in slurm.parse_queue_info([(DATA / "sinfo.txt").read_text(), (DATA / "squeue-partitions.txt").read_text()])}
    assert set(queues) == {"debug", "multi"}
    assert (queues["multi"].nodes_total, queues["multi"].cores_total) == (3, 12)
    assert queues["debug"].available and queues["debug"].max_walltime == "4:00:00"
    assert queues["debug"].jobs_running + queues["debug"].jobs_pending > 0


def test_cancel_argv():
    assert slurm.cancel_argv(["1", "2"]) == ["scancel", "1", "2"]
