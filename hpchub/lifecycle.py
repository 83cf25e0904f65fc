"""A job's life on the hub's side, written once for the spawner, the engine launcher and the CLI:
submit (files and script in one call as the user) and watch, ask whether it ended, cancel it
(only if it is still the job we started) and wait until it is gone, remove its files."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from .jobs import PreparedJob
from .poller import JobView, Presence
from .runner import CommandError
from .runtime import ClusterRuntime
from .schedulers import JobState

log = logging.getLogger("hpchub.lifecycle")


def has_ended(view: JobView) -> bool:
    """The scheduler no longer lists the job, or lists it as over. UNKNOWN is never "ended"."""
    if view.presence is Presence.GONE:
        return True
    return view.presence is Presence.KNOWN and view.status is not None and not view.status.state.is_active


def is_stuck(view: JobView) -> bool:
    """Listed, but in a state that needs a person (SGE Eqw; held)."""
    return view.presence is Presence.KNOWN and view.status is not None and view.status.state in (JobState.ERROR, JobState.HELD)


async def submit_and_watch(runtime: ClusterRuntime, job: PreparedJob, files: Mapping[str, str],
                           keep_days: int | None = None) -> str:
    """Write ``files`` to the job's directory and submit it, as the job's user in one call; the
    cluster's shared poller watches the job from then on. Returns the job id."""
    job_id = await runtime.client.submit(job.user.name, job.key, job.script, files, keep_days=keep_days)
    runtime.poller.watch(job_id, job.user.name)
    return job_id


async def is_our_job(runtime: ClusterRuntime, user: str, job_id: str, name: str | None) -> bool:
    """Is ``job_id`` still the job we submitted: the same user and (where recorded) the same name?
    A job id the scheduler reused for someone else's job must never be cancelled."""
    view = runtime.poller.view(job_id)
    if view.presence is Presence.KNOWN and view.status is not None and view.status.user and view.status.user != user:
        return False
    if not name:
        return True
    try:
        names = await runtime.client.job_names(user)
    except CommandError as error:
        log.warning("cannot check the name of job %s before cancelling it: %s", job_id, error)
        return True  # the user matched; cancel runs as that user, who cannot cancel others' jobs
    return job_id not in names or names[job_id] == name


async def cancel(runtime: ClusterRuntime, user: str, job_ids: list[str]) -> None:
    try:
        await runtime.client.cancel(user, job_ids)
    except CommandError as error:
        log.warning("cancelling %s as %s: %s", " ".join(job_ids), user, error)


async def cancel_and_wait(runtime: ClusterRuntime, user: str, job_id: str, name: str | None,
                          timeout: float, interval: float) -> bool:
    """Cancel the job as ``user`` if it is still ours, and wait (up to ``timeout``) until the
    scheduler no longer runs it. True when it is over."""
    runtime.poller.watch(job_id, user)
    if not await is_our_job(runtime, user, job_id, name):
        log.warning("job %s is no longer %s's %s (job id reused?): not cancelling it", job_id, user, name)
        return True
    await cancel(runtime, user, [job_id])
    deadline = time.monotonic() + timeout
    while True:
        view = await runtime.poller.get(job_id, max_age=interval)
        if has_ended(view):
            return True
        if time.monotonic() >= deadline:
            log.warning("job %s still listed %.0f s after cancelling it", job_id, timeout)
            return False
        await asyncio.sleep(interval)


async def remove_files(runtime: ClusterRuntime, user: str, key: str) -> None:
    """Remove ~/.hpchub/jobs/KEY as the user (the secrets of a job that is over)."""
    try:
        await runtime.client.remove_files(user, key)
    except (CommandError, PermissionError) as error:
        log.warning("removing %s's job files %s: %s", user, key, error)
