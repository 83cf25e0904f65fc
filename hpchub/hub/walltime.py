"""A server's walltime as its user sees it on the hub's pages: when the job ends, how long is left,
and why it ended.

Pure functions of the job's end (epoch seconds, reported by the job: ``HPCHUB_JOB_END``, see the
job script's header and hpchub/job/walltime.py), the scheduler's view and a clock, so they are
tested without a hub.
"""

from __future__ import annotations

import time

from ..core.poller import JobView, Presence
from ..job.walltime import parse_end

# A job that ends this close to (or after) its computed end ran out of walltime: the script's
# clock starts a moment after the scheduler's, and schedulers kill on their own check interval.
END_SLACK_SECONDS = 60

# The ends hpchub accepts from a job: no batch job runs for a year, and a job that reports its port
# has just started, so its end is not days past. Anything else is a broken or hostile job's value,
# never kept: an end like 10**20 is past what time.localtime can show (the home page would fail).
MAX_END_AHEAD = 366 * 86400
MAX_END_BEHIND = 86400

WALLTIME_REACHED = "walltime reached"
STOPPED = "stopped"
# Schedulers' words for a job killed at its time limit (Slurm; Grid Engine's qstat forgets ended jobs).
_TIMEOUT_STATES = {"TIMEOUT", "TO", "DEADLINE", "DL"}


def end_reason(view: JobView, job_ends: int, now: float | None = None) -> str:
    """Why a job that the poller saw end is over: ``walltime reached`` if the scheduler says so
    or, when it no longer lists the job, if its end time has come; else ``the job ended (STATE)``."""
    now = time.time() if now is None else now
    status = view.status if view.presence is Presence.KNOWN else None
    if status is not None and status.scheduler_state.upper() in _TIMEOUT_STATES:
        return WALLTIME_REACHED
    if status is None and job_ends and now >= job_ends - END_SLACK_SECONDS:
        return WALLTIME_REACHED
    if status is not None and status.scheduler_state:
        return f"the job ended ({status.scheduler_state})"
    return "the job ended"


def duration_text(seconds: float) -> str:
    """``1 h 12 min``, ``5 min``, ``40 s``: a time left, rounded down to what a reader needs."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def clock_text(epoch: float, now: float | None = None) -> str:
    """The end as the hub's local time: ``14:30`` today, ``2024-05-02 14:30`` another day."""
    now = time.time() if now is None else now
    end, today = time.localtime(epoch), time.localtime(now)
    if end[:3] == today[:3]:
        return time.strftime("%H:%M", end)
    return time.strftime("%Y-%m-%d %H:%M", end)


def reported_end_is_plausible(ends: int, now: float | None = None) -> bool:
    """Is ``ends`` (epoch seconds, as a starting job reports it) within a day before and a year after now?"""
    now = time.time() if now is None else now
    return now - MAX_END_BEHIND <= ends <= now + MAX_END_AHEAD


def saved_end(value: object, now: float | None = None) -> int | None:
    """A job end from a server's saved state: as ``parse_end``, and at most a year ahead (a saved end
    may be long past: the job ran while the hub was down). Else None: the end is dropped, not shown."""
    now = time.time() if now is None else now
    ends = parse_end(value)
    return ends if ends is not None and ends <= now + MAX_END_AHEAD else None
