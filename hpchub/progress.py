"""What a user reads while their server starts or when it fails: pure functions of the job's
status, so they are tested without a hub or a scheduler."""

from __future__ import annotations

from collections.abc import Mapping

from .schedulers import JobStatus, QueueInfo, queue_position


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
