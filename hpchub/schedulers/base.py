"""What every scheduler backend provides, and the common job status it parses into.

A backend only builds argv lists and parses machine-readable output; running the commands
(locally, via sudo, later over SSH) is the caller's business.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class JobState(enum.Enum):
    PENDING = "pending"
    HELD = "held"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETING = "completing"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"  # stuck in an error state that needs a person (SGE Eqw)

    @property
    def is_active(self) -> bool:
        """Still holds (or waits for) an allocation."""
        return self in (JobState.PENDING, JobState.HELD, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETING)

    @property
    def is_waiting(self) -> bool:
        return self in (JobState.PENDING, JobState.HELD)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    scheduler_state: str  # as the scheduler says it, e.g. PENDING, Eqw
    user: str = ""
    name: str = ""
    queue: str = ""
    nodes: tuple[str, ...] = ()
    reason: str | None = None  # pending/held/error reason in the scheduler's words
    estimated_start: datetime | None = None
    submitted: datetime | None = None
    started: datetime | None = None
    priority: float | None = None  # higher starts sooner; for the position in the queue

    @property
    def host(self) -> str | None:
        """Where the batch script (and so the server) runs: the first node."""
        return self.nodes[0] if self.nodes else None


@dataclass(frozen=True)
class QueueInfo:
    """A partition (Slurm) or cluster queue (SGE) as the scheduler sees it right now."""

    name: str
    available: bool
    cores_total: int
    cores_free: int
    nodes_total: int
    nodes_free: int
    jobs_pending: int = 0
    jobs_running: int = 0
    max_walltime: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class SchedulerBackend(Protocol):
    """One per scheduler; pure functions of their arguments."""

    name: str

    def submit_argv(self) -> list[str]:
        """Submit the job script given on stdin; prints what ``parse_submit`` reads."""

    def parse_submit(self, stdout: str) -> str:
        """The job id from the submit command's output."""

    def status_argv(self, users: Sequence[str] | None = None) -> list[str]:
        """One command for the status of all jobs (of ``users``, or of everybody)."""

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        """Job id -> status for every job in the output. Jobs missing from it are gone."""

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        ...

    def queue_info_argvs(self) -> list[list[str]]:
        """Commands whose outputs ``parse_queue_info`` reads, in this order."""

    def parse_queue_info(self, outputs: Sequence[str]) -> list[QueueInfo]:
        ...


class ParseError(ValueError):
    """Scheduler output that does not look like what the backend expects."""
