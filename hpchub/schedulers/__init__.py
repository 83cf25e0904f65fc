"""One small module per scheduler; see base.SchedulerBackend for what each provides."""

from __future__ import annotations

from . import sge, slurm
from .base import (
    Allocations,
    JobState,
    JobStatus,
    JobStatuses,
    ParseError,
    QueueInfo,
    Reservation,
    SchedulerBackend,
    SchedulerQueueLimits,
    StartEstimate,
    queue_position,
)

BACKENDS: dict[str, SchedulerBackend] = {"slurm": slurm, "sge": sge}


def backend_for(scheduler: str) -> SchedulerBackend:
    try:
        return BACKENDS[scheduler]
    except KeyError:
        raise ValueError(f"no scheduler backend {scheduler!r} (have: {', '.join(BACKENDS)})") from None


__all__ = [
    "Allocations", "BACKENDS", "JobState", "JobStatus", "JobStatuses", "ParseError", "QueueInfo", "Reservation",
    "SchedulerBackend", "SchedulerQueueLimits", "StartEstimate", "backend_for", "queue_position",
]
