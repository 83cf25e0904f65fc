"""A job's life on the hub's side, written once for the spawner, the engine launcher and the CLI:
submit (files and script in one call as the user) and watch, ask whether it ended, cancel it
(only if it is still the job we started) and wait until it is gone, remove its files.

A job is watched with its owner: the job id a submission prints is the user's text (their shell
on the login node prints what it likes), so a job is adopted only once the scheduler lists it as
that user's, under the name hpchub gave it, and no other server watches it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from ..schedulers import JobState, ParseError
from ..transports.runner import CommandError, CommandTimeout, OutputTooLarge
from ..transports.sshpool import ConnectionLost
from .jobs import PreparedJob
from .poller import JobView, JobWatchedElsewhere, Presence
from .runtime import ClusterRuntime

log = logging.getLogger("hpchub.lifecycle")


def has_ended(view: JobView) -> bool:
    """The scheduler no longer lists the job, or lists it as over. UNKNOWN is never "ended"."""
    if view.presence is Presence.GONE:
        return True
    return view.presence is Presence.KNOWN and view.status is not None and not view.status.state.is_active


def is_stuck(view: JobView) -> bool:
    """Listed, but in a state that needs a person (SGE Eqw; held)."""
    return view.presence is Presence.KNOWN and view.status is not None and view.status.state in (JobState.ERROR, JobState.HELD)


class SubmitOutcomeUnknown(RuntimeError):
    """A submission that may or may not have created a job; any job it created was cancelled."""


class SubmittedJobNotOurs(SubmitOutcomeUnknown):
    """The job id a submission reported is not the job it submitted (another user's job, another
    name, or a job another server watches): not adopted, never cancelled."""


async def submit_and_watch(runtime: ClusterRuntime, job: PreparedJob, files: Mapping[str, str],
                           keep_days: int | None = None, watcher: str = "") -> str:
    """Write the job's own files and ``files`` (its secrets) to the job's directory and submit it, as
    the job's user in one call; the cluster's shared poller watches the job for ``watcher``
    (StatusPoller.watch) from then on.
    Returns the job id.

    When the outcome is unknown (the command timed out or was stopped for writing too much, the SSH
    connection dropped, the output held no job id, the submit command lost the controller's answer:
    backend.submit_outcome_unknown) the job may exist without the hub knowing its
    id: a server nobody can stop, holding the user's name and the queue's resources. Such jobs are
    found by name and cancelled before the error is raised (SubmitOutcomeUnknown). So they are when
    the reported job id is not the job submitted (SubmittedJobNotOurs; the job with that id is left alone)."""
    try:
        job_id = await runtime.client.submit(job.user.name, job.key, job.script, job.files_with(files),
                                             keep_days=keep_days)
    except (CommandTimeout, OutputTooLarge, ConnectionLost, ParseError) as error:
        note = await _cancel_unseen_note(runtime, job)
        raise SubmitOutcomeUnknown(f"submitting {job.name} had an unknown outcome ({error}){note}") from error
    except CommandError as error:
        if not runtime.client.backend.submit_outcome_unknown(error.stderr):
            raise  # the scheduler refused the job: nothing was created
        note = await _cancel_unseen_note(runtime, job)
        raise SubmitOutcomeUnknown(f"submitting {job.name} had an unknown outcome (the scheduler's answer was lost: "
                                   f"{error.stderr.strip().splitlines()[-1]}){note}") from error
    await _adopt_submitted(runtime, job, job_id, watcher)
    return job_id


async def _adopt_submitted(runtime: ClusterRuntime, job: PreparedJob, job_id: str, watcher: str) -> None:
    """Watch the job a submission reported once the scheduler lists it as the job's user's, under
    the job's name, and no other server watches it; else cancel what the submission may have
    created (by name) and raise."""
    user = job.user.name
    try:
        listed = (await runtime.client.job_names(user)).get(job_id)
    except CommandError as error:
        note = await _cancel_unseen_note(runtime, job)
        raise SubmitOutcomeUnknown(f"submitting {job.name} reported job {job_id}, but listing {user}'s jobs to "
                                   f"confirm it failed ({error}){note}") from error
    if listed is None:
        problem = f"the scheduler lists no job {job_id} of {user}'s"
    elif listed != job.name:
        problem = f"{user}'s job {job_id} is named {listed!r}, not {job.name!r}"
    else:
        try:
            runtime.poller.watch(job_id, user, watcher)
            return
        except JobWatchedElsewhere:
            problem = f"job {job_id} is another server's"
    log.warning("submitting %s for %s reported job %s, which is not the job submitted (%s): job %s is left alone",
                job.name, user, job_id, problem, job_id)
    cancelled = [found for found in await _cancel_unseen(runtime, job) if found != job_id]
    note = f"; cancelled job {', '.join(cancelled)} it had submitted" if cancelled else ""
    raise SubmittedJobNotOurs(f"submitting {job.name} reported job {job_id}, but {problem}: that job is not "
                              f"adopted{note}")


async def _cancel_unseen_note(runtime: ClusterRuntime, job: PreparedJob) -> str:
    """_cancel_unseen, said as the end of an error message ("" when there was nothing to cancel)."""
    cancelled = await _cancel_unseen(runtime, job)
    return f"; cancelled job {', '.join(cancelled)} it had submitted" if cancelled else ""


async def _cancel_unseen(runtime: ClusterRuntime, job: PreparedJob) -> list[str]:
    """Cancel the user's jobs named like ``job`` (its name holds user, profile and server, so these
    are this server's) and remove its files; the ids cancelled."""
    user = job.user.name
    try:
        found = [job_id for job_id, name in (await runtime.client.job_names(user)).items() if name == job.name]
    except CommandError as error:
        log.error("submitting %s for %s had an unknown outcome, and listing %s's jobs failed too (%s): a job "
                  "named %s may be left running", job.name, user, user, error, job.name)
        found = []
    if found:
        log.warning("submitting %s for %s had an unknown outcome: cancelling job %s found under its name", job.name,
                    user, " ".join(found))
        await cancel(runtime, user, found)
    await remove_files(runtime, user, job.key)
    return found


async def is_our_job(runtime: ClusterRuntime, user: str, job_id: str, name: str | None) -> bool:
    """Is ``job_id`` still the job we submitted: listed as the user's and (where recorded) under the
    same name? A job id the scheduler reused for someone else's job must never be cancelled; a job
    it no longer lists needs no cancel."""
    view = runtime.poller.view(job_id)
    if view.other_owner:
        return False
    if view.presence is Presence.KNOWN and view.status is not None and view.status.user and view.status.user != user:
        return False
    try:
        names = await runtime.client.job_names(user)
    except CommandError as error:
        log.warning("cannot check the owner and name of job %s before cancelling it: %s", job_id, error)
        return True  # cancel runs as the user, who cannot cancel others' jobs
    return job_id in names and (not name or names[job_id] == name)


async def cancel(runtime: ClusterRuntime, user: str, job_ids: list[str]) -> None:
    try:
        await runtime.client.cancel(user, job_ids)
    except CommandError as error:
        log.warning("cancelling %s as %s: %s", " ".join(job_ids), user, error)


async def cancel_and_wait(runtime: ClusterRuntime, user: str, job_id: str, name: str | None,
                          timeout: float, interval: float, watcher: str = "") -> bool:
    """Cancel the job as ``user`` if it is still ours (``watcher``'s), and wait (up to ``timeout``)
    until the scheduler no longer runs it. True when it is over (or not ours to wait for)."""
    try:
        runtime.poller.watch(job_id, user, watcher)
    except JobWatchedElsewhere:
        log.warning("job %s is another server's: %s's %s does not cancel it", job_id, user, name)
        return True
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
