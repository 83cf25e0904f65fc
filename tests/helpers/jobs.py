"""Helpers for the real-scheduler tests: submit rendered scripts as test users, wait for states."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import time
from pathlib import Path

from hpchub.core.config import SiteConfig, parse_site_config
from hpchub.core.jobs import command_job
from hpchub.core.options import resolve_request
from hpchub.core.render import UserAccount
from hpchub.schedulers import JobStatus
from hpchub.transports.cluster import ClusterClient, client_for
from hpchub.transports.runner import CommandError

from .profiles import REAL_SCHEDULER_TEST_PROFILES, local_site_text
from .support import SITE_CONFIGS


def local_site_with_test_profiles(scheduler: str) -> SiteConfig:
    """site-configs/local-<scheduler>.yaml plus the profiles the real-scheduler tests submit."""
    text = local_site_text(scheduler, REAL_SCHEDULER_TEST_PROFILES[scheduler])
    return parse_site_config(text, source=SITE_CONFIGS / f"local-{scheduler}.yaml")


async def submit(site: SiteConfig, profile: str, user: str, command: str, **options) -> tuple[str, str]:
    """Build ``profile``'s job for ``user`` with ``command`` as the launch (hpchub.core.jobs, as
    `hpchub submit --command` does) and submit it; return (job id, log path)."""
    request = resolve_request(site, site.profile(profile), options)
    job = command_job(site, request, UserAccount.lookup(user), shlex.split(command))
    job_id = await client_for(site, request.cluster_name).submit(user, job.key, job.script, {})
    return job_id, job.log_path(job_id)


def accounted_as(job_id: str, since: float, expected: list[str], timeout: float = 30) -> list[str]:
    """``USER|JOBNAME`` of Slurm job ``job_id`` as slurmdbd recorded it, among the jobs submitted
    since ``since`` (epoch seconds), once it is ``expected`` or after ``timeout`` seconds: the local
    cluster's job ids start again when its state is reset while the database keeps the old records,
    and the record reaches slurmdbd a moment after the job (for a moment it may name the job
    "allocation")."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 1))
    deadline = time.monotonic() + timeout
    while True:
        lines = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-S", start, "-j", job_id,
                                "-o", "user,jobname,submit"], capture_output=True, text=True).stdout.split()
        ours = ["|".join(line.split("|")[:2]) for line in lines
                if time.mktime(time.strptime(line.split("|")[2], "%Y-%m-%dT%H:%M:%S")) >= int(since) - 1]
        if ours == expected or time.monotonic() > deadline:
            return ours
        time.sleep(0.5)


async def cancel_and_remove_logs(site: SiteConfig, submitted: list[tuple[str, str, str]]) -> None:
    """Test cleanup: cancel every (job id, user, log) submitted, ignoring jobs already gone."""
    client = client_for(site, next(iter(site.clusters)))
    for job_id, user, log in submitted:
        try:
            await client.cancel(user, [job_id])
        except CommandError:
            pass
        Path(log).unlink(missing_ok=True)


def scheduler_output(argv: list[str], user: str | None = None) -> str:
    """What a scheduler command prints, run as root or (with ``user``) as that user; it must succeed."""
    sudo = ["sudo", "-n", "-u", user] if user else []
    result = subprocess.run(sudo + argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def wait_for(client: ClusterClient, predicate, timeout: float = 60, what: str = "") -> dict[str, JobStatus]:
    """Poll the status (one call for all jobs each time) until ``predicate(jobs)`` holds."""
    deadline = time.monotonic() + timeout
    jobs: dict[str, JobStatus] = {}
    while time.monotonic() < deadline:
        jobs = await client.status()
        if predicate(jobs):
            return jobs
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last status: {jobs}")


async def wait_for_file_text(path: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        if path.exists():
            content = path.read_text()
            if text in content:
                return content
        await asyncio.sleep(0.3)
    raise AssertionError(f"{path} never contained {text!r}; it has: {content!r}")
