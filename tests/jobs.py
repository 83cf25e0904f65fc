"""Helpers for the real-scheduler tests: submit rendered scripts as test users, wait for states."""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

from support import SITE_CONFIGS

from hpchub.cluster import ClusterClient
from hpchub.config import SiteConfig, parse_site_config
from hpchub.options import resolve_request
from hpchub.render import UserAccount, job_context, job_name, render_job_script, server_launch, template_name
from hpchub.runner import CommandError
from hpchub.schedulers import JobStatus


def site_with_extra_profiles(config: str, extra: str) -> SiteConfig:
    """A local site config plus test-only profiles (appended to its profile list)."""
    return parse_site_config((SITE_CONFIGS / config).read_text() + extra, source=SITE_CONFIGS / config)


async def submit(site: SiteConfig, profile: str, user: str, command: str, **options) -> tuple[str, str]:
    """Render ``profile`` for ``user`` with ``command`` as the launch, submit it; return (job id, log path)."""
    request = resolve_request(site, site.profile(profile), options)
    account = UserAccount.lookup(user)
    name = job_name(account, profile)
    context = job_context(site, request, account, server_launch(account, name, test_command=shlex.split(command)), name=name)
    script = render_job_script(site, context, template_name(request))
    client = ClusterClient(request.cluster_name, request.cluster)
    job_id = await client.submit(user, script, log_dir=context["job"]["log_dir"])
    return job_id, str(context["job"]["output"]).replace("%j", job_id).replace("$JOB_ID", job_id)


async def cancel_and_remove_logs(site: SiteConfig, submitted: list[tuple[str, str, str]]) -> None:
    """Test cleanup: cancel every (job id, user, log) submitted, ignoring jobs already gone."""
    name = next(iter(site.clusters))
    client = ClusterClient(name, site.clusters[name])
    for job_id, user, log in submitted:
        try:
            await client.cancel(user, [job_id])
        except CommandError:
            pass
        Path(log).unlink(missing_ok=True)


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
