"""What a user reads while their server starts or when it fails: pure functions of the job's
status, so they are tested without a hub or a scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..schedulers import JobState, JobStatus, QueueInfo, queue_position


def submitted(job_id: str, queue: str, cluster: str) -> str:
    return f"Submitted job {job_id} to {queue} on {cluster}"


def waiting(job_id: str, status: JobStatus, reason_text: Mapping[str, str], queue: QueueInfo | None) -> str:
    """``Job 12 is waiting in queue debug (waiting for free resources), position 3 among all
    waiting jobs, ...``: the position counts every user's pending jobs in that queue with a higher
    priority (from the queue numbers, fetched at most once per queue_info_ttl), not only the hub's."""
    text = f"Job {job_id} is waiting in queue {status.queue or (queue.name if queue else '?')}"
    if status.reason:
        text += f" ({reason_text.get(status.reason, status.reason)})"
    if queue is not None:
        position = queue_position(queue, status)
        if position:
            text += f", position {position} among all waiting jobs"
    if status.estimated_start:
        text += f", estimated start {status.estimated_start:%Y-%m-%d %H:%M}"
    return text


def unreadable(job_id: str, status: JobStatus) -> str:
    return f"Job {job_id} is listed by the scheduler in a state hpchub cannot read ({status.scheduler_state or '?'})"


def scheduler_silent(job_id: str, error: str | None) -> str:
    return f"Job {job_id} submitted; the scheduler is not answering ({error or 'no answer yet'})"


def running(job_id: str, host: str) -> str:
    return f"Job {job_id} running on {host}; starting the server"


def server_reported(host: str, port: int) -> str:
    return f"Server on {host}:{port} reported; connecting"


def held(job_id: str, status: JobStatus) -> str:
    return f"Job {job_id} is held by the scheduler ({status.reason or 'held'}); it was cancelled."


def ended(status: JobStatus | None) -> str:
    if status is None:
        return "the job ended before the server started"
    return f"the job ended ({status.scheduler_state}{', ' + status.reason if status.reason else ''})"


def failure(job_id: str, what: str, log_path: str, tail: str | None) -> str:
    """The message of a failed spawn: what happened and the last lines of the job's output."""
    text = f"Job {job_id}: {what}."
    if tail is None:
        return text + f" (no output in {log_path})"
    if tail.strip():
        text += f"\nLast lines of {log_path}:\n{tail.rstrip()}"
    return text


# The job's state in plain words, for the waiting page (the scheduler's own word stays in
# ``scheduler_state``).
STATE_WORDS: dict[JobState, str] = {
    JobState.PENDING: "waiting in the queue",
    JobState.HELD: "held by the scheduler",
    JobState.RUNNING: "running",
    JobState.SUSPENDED: "suspended by the scheduler",
    JobState.COMPLETING: "ending",
    JobState.FINISHED: "ended",
    JobState.FAILED: "ended with an error",
    JobState.CANCELLED: "cancelled",
    JobState.ERROR: "in an error state",
    JobState.UNKNOWN: "in a state hpchub cannot read",
}
SUBMITTED = "submitted, not listed by the scheduler yet"
SCHEDULER_SILENT = "submitted; the scheduler is not answering"
SERVER_STARTING = "running; the server is starting"


def details(job_id: str, cluster: str, queue: str, status: JobStatus | None = None,
            reason_text: Mapping[str, str] | None = None, queue_info: QueueInfo | None = None,
            state: str | None = None) -> dict[str, Any]:
    """The job as the waiting page shows it (the ``hpchub`` key of a progress event, sent to the
    browser as JSON): plain words, None where the scheduler does not say. ``state`` overrides the
    words for the job's state (e.g. while the scheduler does not answer)."""
    if status is None:
        return {"job_id": job_id, "cluster": cluster, "queue": queue, "state": state or SUBMITTED,
                "scheduler_state": None, "reason": None, "position": None, "estimated_start": None, "node": None}
    reason = status.reason
    estimated = status.estimated_start
    if estimated is not None and estimated.tzinfo is None:
        # The scheduler's times are the hub's local time: with the offset, the browser shows its own.
        estimated = estimated.astimezone()
    return {
        "job_id": job_id,
        "cluster": cluster,
        "queue": status.queue or queue,  # pending Grid Engine jobs name no queue yet: the one asked for
        "state": state or STATE_WORDS[status.state],
        "scheduler_state": status.scheduler_state,
        "reason": (reason_text or {}).get(reason, reason) if reason else None,
        "position": queue_position(queue_info, status) if queue_info is not None else None,
        "estimated_start": estimated.isoformat() if estimated is not None else None,
        "node": None if status.state.is_waiting else status.host,
    }
