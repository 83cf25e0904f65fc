"""What every scheduler backend provides, and the common job status it parses into.

A backend only builds argv lists and parses machine-readable output; running the commands
(locally, via sudo, later over SSH) is the caller's business. :class:`SchedulerBackend` lists
every member a backend module has; ``tests/test_backend_contract.py`` checks both modules.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

log = logging.getLogger("hpchub.schedulers")


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
    UNKNOWN = "unknown"  # the scheduler lists the job but hpchub cannot read its state

    @property
    def is_active(self) -> bool:
        """Still holds (or waits for) an allocation. A listed job whose state hpchub cannot read
        counts as active: nobody may treat it as ended (and, say, forget to cancel it)."""
        return self in (
            JobState.PENDING, JobState.HELD, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETING,
            JobState.UNKNOWN,
        )

    @property
    def is_waiting(self) -> bool:
        return self in (JobState.PENDING, JobState.HELD)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    scheduler_state: str  # as the scheduler says it, e.g. PENDING, Eqw
    user: str = ""
    # Grid Engine only: Slurm's status query leaves the (user-chosen) name out; ask
    # ``job_names_argv`` where the name matters.
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


set_frozen = object.__setattr__  # sets a field of a frozen status once, in its __init__


class LazyJobStatus(JobStatus):
    """A JobStatus whose id and state are read at parse time (every caller needs them) and whose
    other fields a backend's subclass reads from the scheduler's answer when first asked: a poll
    lists every job of the watched users and the hub reads a few of them (bench/parsing.py)."""

    __slots__ = ("_job_id", "_state")
    _job_id: str
    _state: JobState

    def __init__(self, job_id: str, state: JobState) -> None:
        set_frozen(self, "_job_id", job_id)
        set_frozen(self, "_state", state)

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def state(self) -> JobState:
        return self._state


class JobStatuses(dict[str, JobStatus]):
    """Job id -> status, as ``parse_status`` returns it; ``problems`` names the lines (entries)
    that could not be read. Each such problem costs at most its own job, never the whole answer."""

    def __init__(self, jobs: Mapping[str, JobStatus] | Iterable[tuple[str, JobStatus]] = (),
                 problems: Sequence[str] = ()):
        super().__init__(jobs)
        self.problems: tuple[str, ...] = tuple(problems)


def job_statuses(jobs: Mapping[str, JobStatus], problems: Sequence[str], command: str) -> JobStatuses:
    """The parse result, with skipped entries logged (a user's odd job must not pass unseen)."""
    if problems:
        log.warning("%s: %d entries not understood (those jobs only): %s", command, len(problems),
                    "; ".join(problems[:5]))
    return JobStatuses(jobs, problems)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """For parsing a status answer: it allocates an object or more per job and none of them in a
    reference cycle, and the cycle collector would otherwise run every few hundred of them, at times
    over the hub's whole heap (half the parse's CPU time for 10,000 jobs, bench/parsing.py).
    The collector runs as usual again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    # Priorities of every job waiting to start in this queue, of every user (not only the hub's).
    pending_priorities: tuple[float, ...] = ()


@dataclass(frozen=True)
class SchedulerQueueLimits:
    """What a queue lets one job have, as the scheduler enforces it (None: no limit there).
    ``texts`` holds each limit as the scheduler writes it (``MaxTime=04:00:00``), for messages."""

    walltime_seconds: int | None = None
    cores_per_node: int | None = None
    memory_mb_per_node: int | None = None  # Slurm MaxMemPerNode
    memory_mb_per_slot: int | None = None  # Grid Engine h_vmem: per slot of a job
    nodes: int | None = None  # the most nodes one job may have
    nodes_total: int | None = None  # the nodes the queue has
    texts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    """An advance reservation (Slurm reservation, Grid Engine AR) as the scheduler lists it. Times are
    the scheduler's local time without a zone, as it prints them (like JobStatus's)."""

    name: str
    # What a job names to run in it: Slurm ``--reservation=NAME``, Grid Engine ``-ar NUMBER``.
    reservation_id: str
    start: datetime | None
    end: datetime | None
    active: bool  # open now (Slurm State=ACTIVE, Grid Engine state r)
    users: tuple[str, ...] = ()  # who may use it; a leading "-" on each (Slurm): everybody but them
    groups: tuple[str, ...] = ()  # unix groups whose members may use it
    accounts: tuple[str, ...] = ()  # Slurm: jobs charged to one of these ("-" as for users)
    queue: str | None = None  # partition / queue it holds, None: not tied to one
    nodes: tuple[str, ...] = ()
    state: str = ""  # in the scheduler's words
    # Grid Engine: the account that made it (qrsub); any user in its arusers list may make one, with
    # any name. None: only the scheduler's admins make reservations (Slurm).
    owner: str | None = None

    def admits(self, user: str, groups: Sequence[str] = (), accounts: Sequence[str] = ()) -> bool:
        """Whether ``user`` (member of ``groups``, allowed to charge ``accounts``) may run a job in it:
        by user or group if it names any, and with one of its accounts if it names any (Slurm wants both)."""
        by_name = bool(self.users) and _listed(self.users, [user]) or bool(self.groups) and _listed(self.groups, groups)
        if (self.users or self.groups) and not by_name:
            return False
        return not self.accounts or _listed(self.accounts, accounts)


def _listed(entries: Sequence[str], names: Sequence[str]) -> bool:
    """One of ``names`` is in ``entries``; entries that all start with "-" list who is left out."""
    if entries and all(entry.startswith("-") for entry in entries):
        excluded = {entry[1:] for entry in entries}
        return any(name not in excluded for name in names)
    return not set(entries).isdisjoint(names)


@dataclass(frozen=True)
class Allocations:
    """What one user may charge and use on one cluster, as the scheduler says."""

    # Slurm accounts (associations of the cluster) / Grid Engine projects the user may name, sorted.
    accounts: tuple[str, ...]
    default_account: str | None  # charged when a job names none (Slurm DefaultAccount, SGE default_project)
    qos: tuple[str, ...] = ()  # every QoS the user may ask for with some account, sorted (Grid Engine: none)
    qos_by_account: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_qos: str | None = None  # of the default account (None: the scheduler's own default)
    reservations: tuple[Reservation, ...] = ()  # those the user may use, open or not yet
    # Grid Engine: its managers and operators (qconf -sm, -so), whose reservations profiles may pin.
    reservation_admins: tuple[str, ...] = ()


def queue_position(queue: QueueInfo, status: JobStatus) -> int | None:
    """A pending job's place in ``queue``: 1 + the pending jobs there (anybody's) with a higher
    priority. None when the scheduler gave no priority or the job is not pending."""
    if status.priority is None or status.state is not JobState.PENDING:
        return None
    return 1 + sum(1 for priority in queue.pending_priorities if priority > status.priority)


@dataclass(frozen=True)
class StartEstimate:
    """The scheduler's answer to "when would this job start?", asked without submitting it.
    ``starts_now``: it would start at once; ``start``: the scheduler's expected start (its local time,
    without a zone; None when the scheduler names no time: Grid Engine); ``words``: the line of the
    answer this was read from, as the scheduler wrote it."""

    starts_now: bool
    start: datetime | None = None
    words: str = ""


class SchedulerBackend(Protocol):
    """One module per scheduler; every function is pure (argv in, parsed values out).

    A command a backend cannot offer is ``None`` from its ``*_argv`` (the caller then uses the
    fallback the docstring names), never a missing member.
    """

    name: str
    # The token a job's output path uses for the job id (the scheduler expands it).
    OUTPUT_JOB_ID: str
    # Pending/held reasons in the scheduler's words -> plain words for the spawn page.
    REASON_TEXT: dict[str, str]
    # The environment variable that names, inside a job, the node it runs on as the scheduler
    # names it (the hub resolves that name to the address it connects to).
    NODE_NAME_VARIABLE: str

    def submit_argv(self) -> list[str]:
        """Submit the job script given on stdin; prints what ``parse_submit`` reads."""

    def submit_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The environment the submit command runs with, made from the submitting user's own
        (``hpchub-job submit``): without what the user's shell may set that would change the job."""

    def submit_script(self, script: str) -> str:
        """The job script as the submit command reads it on stdin (``hpchub-job submit``): made
        deaf to the user's own default-request files, if the scheduler reads any."""

    def parse_submit(self, stdout: str) -> str:
        """The job id from the submit command's output."""

    def submit_outcome_unknown(self, output: str) -> bool:
        """Whether a failed submit command's stderr says it lost the controller's answer, so the job
        may exist all the same (then hpchub looks for it by name and cancels it, as for a time-out)."""

    def estimate_argv(self) -> list[str]:
        """Asks when the job script on stdin would start, without submitting it (``hpchub-job
        estimate`` runs it as the user, with ``submit_environment`` and ``submit_script``)."""

    def estimate_context_argvs(self, output: str, now: datetime) -> list[list[str]]:
        """Read-only questions ``hpchub-job estimate`` asks after ``estimate_argv`` answered
        ``output`` (at ``now``, local time), for what that answer alone does not tell (Slurm: whether
        backfill would start the job sooner); [] for none."""

    def parse_estimate(self, output: str, now: datetime, context: Sequence[str] = (),
                       walltime: timedelta | None = None) -> StartEstimate | None:
        """The estimate from ``estimate_argv``'s stdout and stderr together, with the stdout of
        ``estimate_context_argvs`` (``context``; fewer when one failed) and the job's ``walltime``;
        ``now``: the scheduler's local time. None for an answer that is not understood (no estimate:
        never a guess)."""

    def status_argv(self, users: Sequence[str] | None = None) -> list[str]:
        """One command for the status of all jobs (of ``users``, or of everybody). Its output
        holds nothing a user chooses that could break the parse (no job names on Slurm)."""

    def parse_status(self, stdout: str) -> JobStatuses:
        """Job id -> status for every job in the output. Jobs missing from it are gone. An entry
        that cannot be read is skipped (listed in ``problems``); a job whose state cannot be read
        is JobState.UNKNOWN. Raises ParseError only when the output as a whole is unreadable."""

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        ...

    def queue_info_argvs(self) -> list[list[str]]:
        """Commands whose outputs ``parse_queue_info`` reads, in this order (one poll interval)."""

    def parse_queue_info(self, outputs: Sequence[str]) -> list[QueueInfo]:
        ...

    def queue_nodes_argv(self, queue: str) -> list[str]:
        """The nodes of ``queue`` (for TLS certificates made before a job has its node)."""
        ...

    def parse_queue_nodes(self, stdout: str) -> list[tuple[str, str | None]]:
        """(node name, the scheduler's address for it or None: ask DNS) for each node."""
        ...

    def node_address_argv(self, node: str) -> list[str] | None:
        """The address the scheduler has for ``node``; None: resolve the node name with DNS."""

    def parse_node_address(self, stdout: str) -> str | None:
        ...

    def explain_argv(self, job_id: str) -> list[str]:
        """The scheduler's own words on why a job waits, is held or is in error."""

    def parse_explain(self, stdout: str) -> str | None:
        ...

    def job_names_argv(self, user: str) -> list[str]:
        """The names of ``user``'s jobs, in a format that survives any name (newlines included).
        For the rare questions that need a name: is this still the job we started, which engine
        jobs does a user have."""

    def parse_job_names(self, stdout: str, user: str) -> dict[str, str]:
        """Job id -> exact name, for ``user``'s jobs only (the command may list others too)."""

    def memory_per_request_mb(self, memory_mb: int, cores: int, per_slot: bool) -> int:
        """The number the memory request states for a job with ``memory_mb`` in total on
        ``cores`` cores (per node on Slurm; per slot on Grid Engine when ``per_slot``)."""

    def private_data_argv(self) -> list[str] | None:
        """The scheduler configuration that says whether users see each other's jobs (None:
        the scheduler has no such setting)."""

    def parse_private_data(self, stdout: str) -> bool:
        """True when other users' jobs are hidden from a user (Slurm ``PrivateData=jobs``)."""

    def queue_limits_argv(self, queue: str) -> list[str]:
        """The limits the scheduler sets on one job in ``queue`` (``hpchub check --live``)."""

    def parse_queue_limits(self, stdout: str) -> SchedulerQueueLimits:
        """The limits from ``queue_limits_argv``'s output; ParseError when it names no queue."""
    def allocations_argvs(self, user: str, outputs: Sequence[str]) -> list[list[str]]:
        """The next commands for ``user``'s allocations, given the outputs of all earlier ones
        (none at first); [] when ``parse_allocations`` has all it needs. The caller loops:
        ``while argvs := allocations_argvs(user, outputs): outputs += [stdout of each argv]``.
        (Grid Engine needs three rounds: the projects' access lists are found in the projects.)"""

    def parse_allocations(self, user: str, groups: Sequence[str], outputs: Sequence[str]) -> Allocations:
        """``user``'s accounts/projects, QoS and the reservations open to them (``groups``: the
        user's unix groups, for reservations and access lists that name groups)."""

    def cluster_allocations_argvs(self, outputs: Sequence[str]) -> list[list[str]]:
        """As ``allocations_argvs``, for what the whole cluster has (``hpchub check --live``)."""

    def parse_cluster_allocations(self, outputs: Sequence[str]) -> Allocations:
        """Every account/project, QoS and reservation of the cluster; ``qos_by_account``: the QoS some
        association of each account allows; no default account."""

    def empty_answer(self, argv: Sequence[str], returncode: int | None, output: str) -> bool:
        """Whether a failed command of the allocation rounds means "none defined" (``output``: its
        stdout and stderr): Grid Engine's ``qconf -sprjl`` exits 1 on a cluster without projects."""


class ParseError(ValueError):
    """Scheduler output that does not look like what the backend expects."""
