"""What the hub's home page shows about a server, from cached data only (the shared poller's last
answer, the spawner's state): rendering a page never asks the scheduler. HPCSpawner.page_info
passes its state in; this module needs no spawner and can be tested alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ..core.runtime import ClusterRuntime
from ..schedulers import JobState, JobStatus
from ..transports.cluster import ClusterSpec
from . import walltime


def server_info(job_id: str, end_reason: str, job_ends: int, status: JobStatus | None,
                now: float | None = None) -> dict[str, object]:
    """The home page's keys for a server whose running job is ``job_id`` ("" for none): ``job_id``,
    ``state`` (e.g. "running on node1"), ``queue`` and ``node`` (as the scheduler last said, "" if
    it did not), ``ends`` (epoch or None), ``ends_at`` ("14:30"), ``time_left`` ("1 h 12 min"),
    ``end_reason`` (why the last job ended, once none runs)."""
    now = time.time() if now is None else now
    info: dict[str, object] = {"job_id": job_id, "state": "", "queue": "", "node": "", "ends": None, "ends_at": "",
                               "time_left": "", "end_reason": "" if job_id else end_reason}
    if not job_id:
        return info
    info["state"] = state_words(status)
    if status is not None:
        info.update(queue=status.queue, node=status.host or "")
    if job_ends and walltime.saved_end(job_ends, now):
        info.update(ends=job_ends, ends_at=walltime.clock_text(job_ends, now),
                    time_left=walltime.duration_text(job_ends - now))
    return info


def cached_status(job_cluster: Mapping[str, object], job_id: str) -> JobStatus | None:
    """The shared poller's last answer about ``job_id`` on the saved cluster; None if there is none
    (no poller runs for that cluster in this event loop, or the state does not name one)."""
    if "scheduler" not in job_cluster:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    runtime = ClusterRuntime.registry.get((ClusterSpec.from_state(job_cluster), id(loop)))
    return runtime.poller.view(job_id).status if runtime is not None else None


def state_words(status: JobStatus | None) -> str:
    """A job's state for the home page: "waiting in queue debug", "running on node1"."""
    if status is None:
        return "submitted"
    if status.state is JobState.RUNNING:
        return f"running on {status.host}" if status.host else "running"
    if status.state.is_waiting:
        return f"waiting in queue {status.queue}" if status.queue else "waiting in the queue"
    return status.scheduler_state.lower() or status.state.value
