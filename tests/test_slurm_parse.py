"""Slurm backend: argv builders and parsers, against output captured from the real local Slurm."""

import dataclasses
import logging
from datetime import datetime

import pytest
from helpers.support import REPO

from hpchub.schedulers import JobState, JobStatus, ParseError, QueueInfo, queue_position, slurm

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
    return SEP.join([job_id, state, "bob", "debug", batch, nodes, reason, start, "2026-11-25T20:00:00", "100"])


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


def test_the_status_query_prints_nothing_a_user_chooses():
    (fmt,) = [arg for arg in slurm.status_argv() if arg.startswith("--format=")]
    assert "%j" not in fmt and "%k" not in fmt and "%o" not in fmt and "%Z" not in fmt
    assert fmt.removeprefix("--format=").split(SEP) == ["%i", "%T", "%u", "%P", "%B", "%N", "%r", "%S", "%V", "%Q"]


def test_a_job_named_with_a_separator_and_newline_costs_nothing():
    """Captured on the real Slurm: bob's pending job 14 is named "x\\n999\\x1fCOMPLETED" (a forged
    record in the old format, which listed names). Every line parses, job 14 included, and no job
    999 appears."""
    jobs = slurm.parse_status((DATA / "squeue-weird-name.txt").read_text())
    assert not jobs.problems
    assert "999" not in jobs and len(jobs) == 16
    assert jobs["14"].state is JobState.PENDING and jobs["14"].user == "bob" and jobs["14"].reason == "BeginTime"
    assert jobs["15"].state is JobState.RUNNING and jobs["15"].host == "vm"


def test_an_unknown_state_marks_that_job_unknown_and_active(caplog):
    text = "\n".join([line(job_id="7", state="WEIRD_NEW_STATE"), line(job_id="8", state="RUNNING", reason="None")])
    with caplog.at_level(logging.WARNING, logger="hpchub.schedulers"):
        jobs = slurm.parse_status(text)
    assert jobs["7"].state is JobState.UNKNOWN and jobs["7"].scheduler_state == "WEIRD_NEW_STATE"
    assert jobs["7"].state.is_active and not jobs["7"].state.is_waiting
    assert jobs["8"].state is JobState.RUNNING
    assert jobs.problems == ("job 7: unknown Slurm job state 'WEIRD_NEW_STATE'",)
    assert "WEIRD_NEW_STATE" in caplog.text


@pytest.mark.parametrize(
    "bad",
    ["1|RUNNING|alice", SEP.join(["x"] * 11), SEP.join(["not-an-id"] + ["RUNNING"] * 9)],
    ids=["too few fields", "too many fields", "no job id"],
)
def test_a_line_without_a_job_id_is_skipped_and_reported(bad, caplog):
    text = "\n".join([line(job_id="7"), bad, line(job_id="8", state="RUNNING", reason="None")])
    with caplog.at_level(logging.WARNING, logger="hpchub.schedulers"):
        jobs = slurm.parse_status(text)
    assert set(jobs) == {"7", "8"} and len(jobs.problems) == 1
    assert "not understood" in caplog.text
    assert isinstance(jobs, dict)


@pytest.mark.parametrize(
    "bad",
    [line(job_id="9", state="RUNNING", nodes="node[1-x]"), line(job_id="9", state="RUNNING", nodes="node[1-3"),
     "9" + SEP + "RUNNING", SEP.join(["9"] * 12)],
    ids=["bad node list", "unclosed node list", "too few fields", "too many fields"],
)
def test_a_bad_line_with_a_job_id_marks_that_job_unknown_not_gone(bad):
    jobs = slurm.parse_status("\n".join([line(job_id="7"), bad, line(job_id="8", state="RUNNING", reason="None")]))
    assert jobs["9"].state is JobState.UNKNOWN and jobs["9"].state.is_active and len(jobs.problems) == 1
    assert jobs["7"].state is JobState.PENDING and jobs["8"].state is JobState.RUNNING


def test_brackets_in_an_array_id_or_a_reason_leave_a_plain_node_list_alone():
    text = "\n".join([line(job_id="7_[1-30%2]", reason="ReqNodeNotAvail, UnavailableNodes:node[1-3]"),
                      line(job_id="8_4", state="RUNNING", reason="None", nodes="vm,node2", batch="node2")])
    jobs = slurm.parse_status(text)
    assert not jobs.problems
    assert jobs["7_[1-30%2]"].state is JobState.PENDING and jobs["7_[1-30%2]"].reason.endswith("node[1-3]")
    assert jobs["8_4"].nodes == ("node2", "vm") and jobs["8_4"].host == "node2"


def test_a_parsed_job_reads_like_any_job_status_and_stays_frozen():
    """The parse keeps each line and reads most fields when asked; what callers see is the same."""
    (job,) = slurm.parse_status(line(job_id="12", state="CANCELLED by 1001", reason="None", nodes="node[1-2]",
                                     batch="node2", start="2026-11-25T21:00:00")).values()
    assert isinstance(job, JobStatus)
    assert {field.name: getattr(job, field.name) for field in dataclasses.fields(JobStatus)} == {
        "job_id": "12", "state": JobState.CANCELLED, "scheduler_state": "CANCELLED", "user": "bob", "name": "",
        "queue": "debug", "nodes": ("node2", "node1"), "reason": None, "estimated_start": None,
        "submitted": datetime(2026, 11, 25, 20, 0), "started": datetime(2026, 11, 25, 21, 0), "priority": 100.0}
    assert job.host == "node2" and job == slurm.parse_status(line(
        job_id="12", state="CANCELLED by 1001", reason="None", nodes="node[1-2]", batch="node2",
        start="2026-11-25T21:00:00"))["12"]
    for field in ("state", "nodes", "started", "job_id"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(job, field, None)


def test_job_names_are_asked_for_one_user_and_a_spilled_name_cannot_pose_as_another_user():
    assert slurm.job_names_argv("bob") == ["squeue", "--noheader", "--states=all", "--users=bob",
                                           "--format=%i\x1f%u\x1f%j"]
    # bob's job 14 is named "x\n999\x1falice\x1fhpchub-alice-small": its second line looks like an entry.
    stdout = "12\x1fbob\x1fcapture\n14\x1fbob\x1fx\n999\x1falice\x1fhpchub-alice-small\n"
    assert slurm.parse_job_names(stdout, "bob") == {"12": "capture", "14": "x"}
    assert slurm.parse_job_names(stdout, "alice") == {"999": "hpchub-alice-small"}  # alice never asks bob's output
    assert slurm.parse_job_names("", "carol") == {}


def test_explain_reads_state_and_reason_without_the_name():
    argv = slurm.explain_argv("14")
    assert argv[0] == "squeue" and "--jobs=14" in argv and not any("%j" in arg for arg in argv)
    assert slurm.parse_explain(f"PENDING{SEP}ReqNodeNotAvail\n") == (
        "requested nodes are not available (down, drained or reserved) (PENDING, ReqNodeNotAvail)")
    assert slurm.parse_explain(f"PENDING{SEP}SomethingNew\n") == "SomethingNew (PENDING, SomethingNew)"
    assert slurm.parse_explain(f"RUNNING{SEP}None\n") is None and slurm.parse_explain("") is None


def test_private_data_jobs_is_detected_in_scontrol_show_config():
    captured = (DATA / "scontrol-show-config.txt").read_text()
    assert slurm.private_data_argv() == ["scontrol", "show", "config"]
    assert slurm.parse_private_data(captured) is False
    assert slurm.parse_private_data(captured.replace("PrivateData             = none",
                                                     "PrivateData             = accounts,jobs,usage")) is True
    assert slurm.parse_private_data(captured.replace("PrivateData             = none",
                                                     "PrivateData             = usage,users")) is False


def test_memory_request_is_per_node_whatever_the_cores():
    assert slurm.memory_per_request_mb(4096, 4, per_slot=True) == 4096


@pytest.mark.parametrize(
    "hostlist, hosts",
    [("vm", ["vm"]), ("node[1-3]", ["node1", "node2", "node3"]),
     ("node[01-03,7],gpu1", ["node01", "node02", "node03", "node7", "gpu1"]),
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


@pytest.mark.parametrize("stderr, unknown", [
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n", True),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n", False),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
     False),
    ("", False),
])
def test_a_submit_that_lost_the_controllers_answer_has_an_unknown_outcome(stderr, unknown):
    assert slurm.submit_outcome_unknown(stderr) is unknown


def test_queue_info_from_captured_sinfo():
    outputs = [(DATA / "sinfo.txt").read_text(), (DATA / "squeue-partitions.txt").read_text()]
    queues = {q.name: q for q in slurm.parse_queue_info(outputs)}
    assert set(queues) == {"debug", "multi"}
    assert (queues["multi"].nodes_total, queues["multi"].cores_total) == (3, 12)
    assert queues["debug"].available and queues["debug"].max_walltime == "4:00:00"
    assert (queues["debug"].jobs_running, queues["debug"].jobs_pending) == (1, 4)


def _captured_queues():
    outputs = [(DATA / "sinfo.txt").read_text(), (DATA / "squeue-partitions.txt").read_text()]
    return {q.name: q for q in slurm.parse_queue_info(outputs)}


def test_queue_info_lists_the_priorities_of_every_pending_job():
    """Captured with pending jobs of alice and bob (one of bob's with --nice=100) and one running."""
    argv = slurm.queue_info_argvs()[1]
    assert argv[0] == "squeue" and not any(arg.startswith("--users") for arg in argv) and argv[-1].endswith("%Q")
    queues = _captured_queues()
    assert queues["debug"].pending_priorities == (4294901749.0, 4294901748.0, 4294901747.0, 4294901646.0)
    assert queues["multi"].pending_priorities == ()


def test_a_job_pending_in_two_partitions_counts_in_both():
    squeue = f"debug,multi{SEP}PENDING{SEP}500\ndebug{SEP}PENDING{SEP}100\n"
    queues = {q.name: q for q in slurm.parse_queue_info([(DATA / "sinfo.txt").read_text(), squeue])}
    assert queues["debug"].pending_priorities == (500.0, 100.0) and queues["multi"].pending_priorities == (500.0,)


def _pending(priority, state=JobState.PENDING):
    return JobStatus(job_id="13", state=state, scheduler_state="PENDING", queue="debug", priority=priority)


def test_queue_position_counts_every_users_pending_jobs_with_higher_priority():
    queues = _captured_queues()
    # alice's job 13 (4294901747) has jobs 11 (alice) and 12 (bob) ahead; bob's niced job 14 is behind.
    assert queue_position(queues["debug"], _pending(4294901747.0)) == 3
    assert queue_position(queues["debug"], _pending(4294901749.0)) == 1
    assert queue_position(queues["debug"], _pending(4294901646.0)) == 4
    assert queue_position(queues["debug"], _pending(None)) is None
    assert queue_position(queues["debug"], _pending(4294901747.0, JobState.RUNNING)) is None
    assert queue_position(QueueInfo("x", True, 1, 1, 1, 1), _pending(5.0)) == 1


def test_cancel_argv():
    assert slurm.cancel_argv(["1", "2"]) == ["scancel", "1", "2"]


def test_the_submit_environment_has_no_sbatch_input_variables():
    """sbatch's input variables override the script's #SBATCH lines: hpchub-job drops them (the real
    submission with a user's own SBATCH_* is in test_user_settings_real.py)."""
    environ = {"PATH": "/usr/bin", "HOME": "/home/carol", "SLURM_CONF": "/etc/slurm/slurm.conf",
               "SBATCH_PARTITION": "multi", "SBATCH_TIMELIMIT": "7", "SLURM_CLUSTERS": "other", "SLURM_HINT": "x"}
    assert slurm.submit_environment(environ) == {"PATH": "/usr/bin", "HOME": "/home/carol",
                                                 "SLURM_CONF": "/etc/slurm/slurm.conf"}
    assert slurm.submit_script("#!/bin/bash\n#SBATCH -p debug\n") == "#!/bin/bash\n#SBATCH -p debug\n"
