"""The waiting page's job details (hpchub.hub.progress.details): pure, no hub, no scheduler."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hpchub.hub import progress
from hpchub.schedulers import JobState, JobStatus, QueueInfo, sge, slurm

QUEUE = QueueInfo("debug", True, 8, 0, 1, 0, jobs_pending=3, pending_priorities=(9.0, 5.0, 7.0))


def test_just_submitted_names_the_job_and_where_it_went():
    assert progress.details("17", "slurm", "debug") == {
        "job_id": "17", "cluster": "slurm", "queue": "debug", "state": "submitted, not listed by the scheduler yet",
        "scheduler_state": None, "reason": None, "position": None, "estimated_start": None, "node": None}


def test_a_waiting_job_in_plain_words_with_the_reason_translated_and_its_place():
    start = datetime(2030, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=2)))
    status = JobStatus("17", JobState.PENDING, "PENDING", queue="debug", reason="Priority", priority=5.0,
                       estimated_start=start)
    found = progress.details("17", "slurm", "debug", status, slurm.REASON_TEXT, QUEUE)
    assert found["state"] == "waiting in the queue"
    assert found["reason"] == "other jobs with higher priority are ahead in the queue"
    assert found["position"] == 3  # 9.0 and 7.0 start before 5.0, whoever's they are
    assert datetime.fromisoformat(found["estimated_start"]) == start and found["estimated_start"].endswith("+02:00")
    assert found["node"] is None and found["scheduler_state"] == "PENDING"
    json.dumps(found)  # it goes to the browser as JSON


def test_a_scheduler_time_without_zone_is_sent_with_the_hubs_offset():
    status = JobStatus("17", JobState.PENDING, "PENDING", estimated_start=datetime(2030, 5, 6, 7, 8))
    sent = datetime.fromisoformat(progress.details("17", "slurm", "debug", status)["estimated_start"])
    assert sent.tzinfo is not None and sent == datetime(2030, 5, 6, 7, 8).astimezone()


def test_a_reason_the_table_does_not_know_is_passed_as_the_scheduler_says_it():
    status = JobStatus("17", JobState.PENDING, "PENDING", reason="QOSGrpNodeLimit")
    assert progress.details("17", "slurm", "debug", status, slurm.REASON_TEXT)["reason"] == "QOSGrpNodeLimit"


def test_a_pending_grid_engine_job_keeps_the_queue_it_asked_for_and_has_no_position_without_priority():
    status = JobStatus("9", JobState.PENDING, "qw")
    found = progress.details("9", "sge", "short.q", status, sge.REASON_TEXT, QUEUE)
    assert (found["queue"], found["state"], found["reason"], found["position"]) == ("short.q", "waiting in the queue",
                                                                                    None, None)


def test_a_running_job_names_its_node_and_every_state_has_words():
    status = JobStatus("17", JobState.RUNNING, "RUNNING", queue="multi", nodes=("node1", "node2"))
    found = progress.details("17", "slurm", "debug", status, slurm.REASON_TEXT, QUEUE)
    assert (found["state"], found["node"], found["queue"], found["position"]) == ("running", "node1", "multi", None)
    assert set(progress.STATE_WORDS) == set(JobState)


def test_the_caller_may_say_the_state_in_its_own_words():
    status = JobStatus("17", JobState.RUNNING, "RUNNING", nodes=("vm",))
    assert progress.details("17", "slurm", "debug", status, state=progress.SERVER_STARTING)["state"] == \
        "running; the server is starting"
    assert progress.details("17", "slurm", "debug", state=progress.SCHEDULER_SILENT)["state"] == \
        "submitted; the scheduler is not answering"
