"""One status query per cluster per poll interval, shared by every spawner (and engine launcher).

Spawners ask the poller about their job; the poller answers from its last snapshot when that is
fresh enough and otherwise runs one status command for every job it watches (coalescing
concurrent callers into that one command). A failed query is never "job gone": callers get
UNKNOWN until the scheduler answers again, and the poller backs off meanwhile. A query that does
not answer within ``query_timeout`` has failed: no caller waits longer than that.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ..schedulers import JobStatus
from ..transports.runner import DEFAULT_TIMEOUT
from . import metrics

log = logging.getLogger("hpchub.poller")

StatusQuery = Callable[[Sequence[str] | None], Awaitable[dict[str, JobStatus]]]


class Presence(enum.Enum):
    KNOWN = "known"  # the scheduler listed the job; see .status
    GONE = "gone"  # a successful query did not list it
    UNKNOWN = "unknown"  # no successful query since the job was watched (scheduler not answering)


@dataclass(frozen=True)
class JobView:
    presence: Presence
    status: JobStatus | None = None
    as_of: float | None = None  # monotonic time of the query this comes from
    error: str | None = None  # the last query's error, while UNKNOWN
    # GONE because the scheduler lists the job id as another user's job (a reused id, or one a
    # submission's output claimed): never the watcher's job, never to be cancelled by it.
    other_owner: str = ""


class JobWatchedElsewhere(ValueError):
    """The job id is already watched for another user or another of the user's servers: a job
    belongs to one server, whatever a submission's output claims."""


@dataclass
class _Snapshot:
    jobs: dict[str, JobStatus] = field(default_factory=dict)
    users: frozenset[str] = frozenset()
    taken: float = float("-inf")  # monotonic


class StatusPoller:
    """Batched, cached, fault-tolerant job status for one cluster."""

    def __init__(
        self,
        query: StatusQuery,
        *,
        interval: float = 30.0,
        min_interval: float = 1.0,
        max_backoff: float = 300.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        query_timeout: float = 2 * DEFAULT_TIMEOUT,
        cluster: str = "",
    ):
        """``query_timeout``: seconds after which a status query counts as failed (its callers
        get UNKNOWN, the poller backs off), whatever the query does; longer than the command
        runner's own bound, so it only catches a query that hangs outside a command.
        ``cluster``: the name its backoff is reported under (hpchub.core.metrics); "": not reported."""
        self._query = query
        self.interval = interval
        self.min_interval = min_interval
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.query_timeout = query_timeout
        self._clock = clock
        self._snapshot = _Snapshot()
        # job id -> (its user, which of the user's servers or engine sets watches it)
        self._watched: dict[str, tuple[str, str]] = {}
        self._watched_since: dict[str, float] = {}
        self._on_end: dict[str, Callable[[], Awaitable[object]]] = {}
        self._inflight: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task] = set()  # timed-out queries, cancelled but not yet ended
        self._failures = 0
        self._retry_at = float("-inf")
        self.last_error: str | None = None
        self.cluster = cluster
        self._report_backoff(interval)

    # -- which jobs -------------------------------------------------------------------------
    def watch(self, job_id: str, user: str, watcher: str = "") -> None:
        """Watch ``job_id``, ``user``'s job, for ``watcher`` (which of the user's servers, engine
        sets... it is). The job is that watcher's alone: JobWatchedElsewhere if another user or
        watcher already watches it. A job the scheduler lists as another user's is GONE to it."""
        if job_id in self._watched:
            if not self.watches(job_id, user, watcher):
                raise JobWatchedElsewhere(f"job {job_id} is already watched for another server")
            return
        self._watched[job_id] = (user, watcher)
        self._watched_since[job_id] = self._clock()

    def watches(self, job_id: str, user: str, watcher: str = "") -> bool:
        """Is ``job_id`` watched for this user and watcher?"""
        return self._watched.get(job_id) == (user, watcher)

    def unwatch(self, job_id: str, user: str, watcher: str = "") -> None:
        """Stop watching ``job_id`` (and its end callback), if this user and watcher watch it."""
        if self.watches(job_id, user, watcher):
            self._watched.pop(job_id, None)
            self._watched_since.pop(job_id, None)
            self._on_end.pop(job_id, None)

    def on_end(self, job_id: str, callback: Callable[[], Awaitable[object]] | None, user: str,
               watcher: str = "") -> None:
        """Call ``callback`` once, right after the query that first finds ``job_id`` gone or
        ended (so a stopped server is noticed within one interval, not one interval later).
        ``None`` removes the callback. Only the job's own watcher sets or removes it."""
        if not self.watches(job_id, user, watcher):
            return
        if callback is None:
            self._on_end.pop(job_id, None)
        else:
            self._on_end[job_id] = callback

    def snapshot(self) -> dict[str, JobStatus]:
        """Every job the last successful query listed (the watched users' jobs)."""
        return dict(self._snapshot.jobs)

    @property
    def watched(self) -> dict[str, str]:
        return {job_id: user for job_id, (user, _) in self._watched.items()}

    # -- answers ----------------------------------------------------------------------------
    def view(self, job_id: str) -> JobView:
        """What the last successful query says about ``job_id`` (no scheduler call). A watched job
        the scheduler lists as another user's is GONE, with ``other_owner``."""
        snapshot = self._snapshot
        watched = self._watched.get(job_id)
        user = watched[0] if watched is not None else None
        covered = user is None or not snapshot.users or user in snapshot.users
        since = self._watched_since.get(job_id, float("-inf"))
        if snapshot.taken < since or not covered:
            return JobView(Presence.UNKNOWN, error=self.last_error)
        if job_id in snapshot.jobs:
            status = snapshot.jobs[job_id]
            if user is not None and status.user and status.user != user:
                return JobView(Presence.GONE, as_of=snapshot.taken, other_owner=status.user)
            return JobView(Presence.KNOWN, status, snapshot.taken)
        return JobView(Presence.GONE, as_of=snapshot.taken)

    async def get(self, job_id: str, max_age: float | None = None) -> JobView:
        """The job's status, no older than ``max_age`` seconds (default: the poll interval) if
        the scheduler answers; UNKNOWN while it does not."""
        max_age = self.interval if max_age is None else max(max_age, self.min_interval)
        view = self.view(job_id)
        if view.as_of is not None and self._clock() - view.as_of <= max_age:
            return view
        await self.refresh(max_age)
        return self.view(job_id)

    def next_query_in(self) -> float:
        """Seconds until refresh() may run a new query: the last one is ``min_interval`` old and any
        backoff is over (0: now)."""
        now = self._clock()
        return max(0.0, self._snapshot.taken + self.min_interval - now, self._retry_at - now)

    async def refresh(self, max_age: float | None = None) -> None:
        """Run one status query for all watched jobs, unless one is running (then wait for it),
        the last one is younger than ``max_age`` (never less than ``min_interval``, however
        many callers ask), or the poller is backing off after failures."""
        if self._inflight is None:
            if self._clock() < self._retry_at:
                return
            if self._clock() - self._snapshot.taken < max(max_age or 0, self.min_interval):
                return
            # A task of its own, so that a caller that is cancelled does not cancel the query
            # the other callers wait for.
            self._inflight = asyncio.get_running_loop().create_task(self._run_query())
        await asyncio.shield(self._inflight)

    async def _run_query(self) -> None:
        try:
            await self._query_and_record()
        finally:
            self._inflight = None

    async def _query_and_record(self) -> None:
        users = frozenset(user for user, _ in self._watched.values())
        started = self._clock()
        query = asyncio.ensure_future(self._query(sorted(users) if users else None))
        # asyncio.wait, not wait_for: wait_for waits for the cancelled query to end, which a query
        # stuck outside a cancellation point never does.
        await asyncio.wait((query,), timeout=self.query_timeout)
        if not query.done():
            query.cancel()
            self._abandoned.add(query)
            query.add_done_callback(self._forget_abandoned)
            self._record_failure(f"status query timed out after {self.query_timeout:g} s")
            return
        try:
            jobs = query.result()
        except (Exception, asyncio.CancelledError) as error:  # any failure means "unknown", never "gone"
            self._record_failure(str(error).splitlines()[0] if str(error) else type(error).__name__)
            return
        if self._failures:
            log.info("status query answers again after %d failures", self._failures)
        self._failures = 0
        self._retry_at = float("-inf")
        self.last_error = None
        self._report_backoff(self.interval)
        self._snapshot = _Snapshot(jobs, users, started)
        self._notify_ended()

    def _record_failure(self, error: str) -> None:
        self._failures += 1
        delay = min(self.interval * 2 ** (self._failures - 1), self.max_backoff)
        self._retry_at = self._clock() + delay * (1 + random.uniform(0, self.jitter))
        self.last_error = error
        self._report_backoff(delay)
        log.warning("status query failed (%d in a row; next try in %.0f s): %s", self._failures, delay, error)

    def _report_backoff(self, interval: float) -> None:
        if self.cluster:
            metrics.poller_backoff(self.cluster, self._failures, interval)

    def _forget_abandoned(self, query: asyncio.Future) -> None:
        self._abandoned.discard(query)
        if not query.cancelled() and query.exception() is not None:
            log.info("an abandoned status query failed late: %s", query.exception())

    def _notify_ended(self) -> None:
        for job_id in list(self._on_end):
            view = self.view(job_id)
            status = view.status
            if view.presence is Presence.GONE or (status is not None and not status.state.is_active):
                callback = self._on_end.pop(job_id)
                asyncio.ensure_future(callback())

    # -- background loop --------------------------------------------------------------------
    async def run_forever(self) -> None:
        """Refresh every interval (with jitter, so that hubs restarted together spread out)."""
        while True:
            await asyncio.sleep(self.interval * (1 + random.uniform(-self.jitter, self.jitter)))
            if self._watched:
                try:
                    await self.refresh(max_age=self.interval / 2)
                except Exception:  # pragma: no cover - refresh already turns errors into state
                    log.exception("status refresh failed")


class CachedQuery:
    """A value fetched at most once per ``ttl`` seconds, shared by all callers (queue information
    for the spawn form). A failed fetch keeps the last value and is retried after ``ttl``."""

    def __init__(self, fetch: Callable[[], Awaitable[object]], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self.ttl = ttl
        self._clock = clock
        self.value: object | None = None
        self.fetched = float("-inf")
        self.value_fetched = float("-inf")  # when ``value`` was fetched (a failed fetch keeps an older one)
        self.error: str | None = None
        self._inflight: asyncio.Task | None = None

    def age(self) -> float | None:
        """Seconds since the value in hand was fetched; None before the first good fetch."""
        return None if self.value_fetched == float("-inf") else self._clock() - self.value_fetched

    async def get(self) -> object | None:
        if self._clock() - self.fetched < self.ttl:
            return self.value
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(self._inflight)
        return self.value

    async def _run(self) -> None:
        try:
            self.value = await self._fetch()
            self.value_fetched = self._clock()
            self.error = None
        except Exception as error:  # the form still renders, without live numbers
            self.error = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("queue information unavailable: %s", self.error)
        finally:
            self.fetched = self._clock()
            self._inflight = None
