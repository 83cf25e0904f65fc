"""The wait of one spawn and what the user is told meanwhile: from the submitted job to a running
job on a node (``StartWait.until_running``), then to the port the server reports
(``StartWait.for_port``), each step a progress event (``ProgressLog``, texts from hpchub.hub.progress).
A job that ends, is held or errs while starting fails the spawn at once (``SpawnFailed``) with the
scheduler's reason and the log's tail. HPCSpawner creates one ``StartWait`` per spawn; this module
needs no spawner, so it can be read and tested alone.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jupyterhub.spawner import SpawnException

from ..core import lifecycle, metrics
from ..core.poller import Presence
from ..core.runtime import ClusterRuntime
from ..schedulers import JobState, QueueInfo
from ..transports.cluster import AccountRefused
from ..transports.runner import CommandError
from . import porthandler, progress


class SpawnFailed(SpawnException):
    """The job cannot become a server; the message (with the job's last output) is shown to the user,
    ``failure`` is the reason class counted in hpchub_spawn_failures_total."""

    def __init__(self, message: str, failure: metrics.SpawnFailure = metrics.SpawnFailure.ERROR):
        super().__init__(message, reason="hpc-job", status_code=500,
                         message_html=f"<pre style='white-space: pre-wrap'>{html.escape(message)}</pre>")
        self.failure = failure


class ProgressLog:
    """A spawn's progress events, replayed to every listener (a reloaded waiting page, a second tab,
    the API), not handed out once; the oldest go past ``kept``."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, log_name: str, kept: int):
        self._log, self._log_name = log, log_name
        self.events: deque[dict[str, Any]] = deque(maxlen=kept)
        self.emitted = 0  # over the log's life, so a listener knows where it is after a clear()
        self.details: dict[str, Any] = {}  # the job's details of the last event that had them
        self._added = asyncio.Event()

    def clear(self) -> None:
        """A new spawn: its listeners see none of the last one's events."""
        self.events.clear()

    def emit(self, percent: int, message: str, job_details: dict[str, Any] | None = None) -> None:
        """A progress event: the text, and the job's details (progress.details) for the waiting page."""
        self._log.info("%s: %s", self._log_name, message)
        event: dict[str, Any] = {"progress": percent, "message": message}
        if job_details is not None:
            event["hpchub"] = self.details = job_details
        self.events.append(event)
        self.emitted += 1
        self._added.set()
        self._added = asyncio.Event()

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event kept so far, then each new one (for ever: JupyterHub ends the stream)."""
        sent = 0  # events emitted before this one was sent
        while True:
            while sent < self.emitted:
                first_kept = self.emitted - len(self.events)
                sent = max(sent, first_kept)
                event = self.events[sent - first_kept]
                sent += 1
                yield event
            await self._added.wait()


@dataclass(frozen=True)
class StartupPolling:
    """How often a starting job is checked: every ``interval`` seconds at first, then ``backoff``
    times the time waited so far, never less often than every ``ceiling`` seconds."""

    interval: float
    backoff: float
    ceiling: float

    def check_interval(self, waited: float) -> float:
        """Seconds between status checks of a spawn that has waited ``waited`` seconds."""
        return max(self.interval, min(self.backoff * waited, self.ceiling))


@dataclass
class StartWait:
    """Waiting for one submitted server job (``job_id``, run as ``job_user``, logging to ``job_log``)."""

    runtime: ClusterRuntime
    job_id: str
    job_user: str
    job_log: str
    port: asyncio.Future[porthandler.PortReport]
    events: ProgressLog
    polling: StartupPolling
    queue_info_ttl: float
    tail_lines: int

    async def until_running(self, queue_name: str) -> str:
        """The node the job runs on, once the scheduler says so; meanwhile why it waits."""
        runtime = self.runtime
        last_event = None
        cluster_name = runtime.client.spec.name
        reasons = runtime.client.backend.REASON_TEXT
        started = time.monotonic()
        reported = False
        while True:
            # A reported port means the job runs: ask the scheduler now for its node.
            interval = self.polling.check_interval(time.monotonic() - started)
            view = await runtime.poller.get(self.job_id, max_age=0 if reported else interval)
            status = view.status
            if view.presence is Presence.KNOWN and status is not None and status.state is JobState.ERROR:
                why = await self._explain() or status.scheduler_state
                raise SpawnFailed(await self._failure_text(f"the job is in an error state ({why})"),
                                  metrics.SpawnFailure.ERROR_STATE)
            if lifecycle.has_ended(view):
                raise SpawnFailed(await self._failure_text(progress.ended(view.status)),
                                  metrics.SpawnFailure.JOB_ENDED)
            if view.presence is Presence.KNOWN and status is not None:
                if status.state is JobState.RUNNING and status.host:
                    self.events.emit(50, progress.running(self.job_id, status.host),
                                     progress.details(self.job_id, cluster_name, queue_name, status, reasons))
                    return status.host
                if status.state is JobState.HELD:
                    raise SpawnFailed(progress.held(self.job_id, status), metrics.SpawnFailure.HELD)
                if status.state is JobState.UNKNOWN:
                    message = progress.unreadable(self.job_id, status)
                    job_details = progress.details(self.job_id, cluster_name, queue_name, status, reasons)
                else:
                    # Pending Grid Engine jobs name no queue yet: the one the job asked for.
                    wanted = status.queue or queue_name
                    queue = next((q for q in await self._queue_numbers() if q.name == wanted), None)
                    message = progress.waiting(self.job_id, status, reasons, queue)
                    job_details = progress.details(self.job_id, cluster_name, queue_name, status, reasons, queue)
            else:
                message = progress.scheduler_silent(self.job_id, view.error)
                job_details = dict(self.events.details, state=progress.SCHEDULER_SILENT)
            if (message, job_details) != last_event:
                self.events.emit(20, message, job_details)
                last_event = (message, job_details)
            if reported:  # our last answer predates the job's start: ask again as soon as the poller may
                # (the rest of its min_interval since its last query, not a whole one from now: on
                # average half a startup_poll_interval less per spawn)
                await asyncio.sleep(runtime.poller.next_query_in())
            else:
                reported = await self._reported_within(interval)

    async def for_port(self) -> porthandler.PortReport:
        """The port the server reports; a job that dies or errs meanwhile fails the spawn."""
        started = time.monotonic()
        while True:
            interval = self.polling.check_interval(time.monotonic() - started)
            if await self._reported_within(interval):
                return self.port.result()
            # Keep watching the job: a server that dies at start ends the spawn.
            view = await self.runtime.poller.get(self.job_id, max_age=interval)
            if lifecycle.is_stuck(view):  # before "ended": a job in error (SGE Eqw) is not active either
                why = await self._explain() or (view.status.scheduler_state if view.status else "")
                raise SpawnFailed(await self._failure_text(f"the job is in an error state ({why})"),
                                  metrics.SpawnFailure.ERROR_STATE)
            if lifecycle.has_ended(view):
                what = "the job ended before the server reported its port"
                raise SpawnFailed(await self._failure_text(what), metrics.SpawnFailure.JOB_ENDED)

    async def _reported_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the job's port report; True once it is in."""
        try:
            await asyncio.wait_for(asyncio.shield(self.port), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _queue_numbers(self) -> list[QueueInfo]:
        queues = await self.runtime.queue_numbers(self.queue_info_ttl).get()
        return list(queues) if isinstance(queues, list) else []

    async def _explain(self) -> str | None:
        try:
            return await self.runtime.client.explain(self.job_id)
        except CommandError:
            return None

    async def _failure_text(self, what: str) -> str:
        tail: str | None = None
        if self.job_log:
            try:
                tail = await self.runtime.client.read_log_tail(self.job_user, os.path.basename(self.job_log),
                                                               self.tail_lines)
            except (CommandError, AccountRefused):
                tail = None
        return progress.failure(self.job_id, what, self.job_log, tail)
