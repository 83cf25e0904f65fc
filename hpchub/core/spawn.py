"""A single-user server's job, from the user's choice to its submission, in three calls: ``resolve``
(the choice checked against the profile and the user's allocations), ``prepare_server_job`` (the
account check, the rendered job, its user-only files) and ``submit`` (lifecycle.submit_and_watch).
The spawner calls these and nothing else of the job's assembly, so one spawn goes spawner -> here
-> options/jobs/render -> lifecycle -> cluster -> transport, and back.

A failure says in plain words what happened and carries its reason class for hpchub's metrics
(``JobRefused``); the spawner turns it into JupyterHub's spawn failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..job import walltime as job_walltime
from ..schedulers.base import Allocations
from ..transports import tls
from ..transports.cluster import AccountRefused
from ..transports.runner import CommandError
from ..transports.sshpool import LoginUnreachable
from . import jobs, lifecycle
from .config import Profile, SiteConfig, hub_identity_refusal
from .metrics import SpawnFailure
from .options import JobRequest, needs_allocations, resolve_request
from .render import UserAccount
from .runtime import ClusterRuntime


class JobRefused(Exception):
    """The server job cannot be prepared or submitted; ``failure`` is its reason class."""

    def __init__(self, message: str, failure: SpawnFailure = SpawnFailure.ERROR):
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class HubSide:
    """What the hub gives a server job: its secrets (the hub's environment for the job), its API URL,
    its TLS files (internal_ssl) and the walltime warning setting."""

    env: Mapping[str, str]
    api_url: str
    internal_ssl: bool = False
    cert_paths: Mapping[str, str] | None = None
    walltime_warning: int = job_walltime.DEFAULT_WARNING


@dataclass(frozen=True)
class ServerJob:
    """A server job ready to submit: the job, its user-only files, and the port of the reverse
    forward its job calls the hub at ("" for none)."""

    job: jobs.PreparedJob
    files: dict[str, str]
    hub_port: str = ""


async def resolve(site: SiteConfig, profile: Profile, options: Mapping[str, Any],
                  allocations: Callable[[], Awaitable[Allocations | None]]) -> JobRequest:
    """resolve_request with the user's ``allocations()`` (asked for only when the profile needs them;
    unknown ones refuse a field from the scheduler with a message, rather than guessing)."""
    known = await allocations() if needs_allocations(site, profile) else None
    return resolve_request(site, profile, options, known)


async def prepare_server_job(site: SiteConfig, runtime: ClusterRuntime, request: JobRequest, hub_user: str,
                             unix_name: str, server_name: str, server_command: Sequence[str],
                             hub: HubSide) -> ServerJob:
    """The job ``request`` makes for ``hub_user``'s server ``server_name``, run as ``unix_name``, and
    its files. RenderError: the choice cannot make a job (the user's to fix); JobRefused: hpchub
    refuses to submit it."""
    try:
        runtime.client.check_account(unix_name)  # before rendering: the home comes from this account
    except AccountRefused as error:
        raise JobRefused(f"hpchub refuses to start this server: hub user {hub_user!r} runs as unix "
                         f"account {unix_name!r} (HPCSpawner.unix_account): {error}",
                         SpawnFailure.ACCOUNT_REFUSED) from None
    user = UserAccount.lookup(unix_name)
    job = jobs.server_job(site, request, user, server_name, server_command)
    files, hub_port = await _job_files(site, runtime, job, hub)
    return ServerJob(job, files, hub_port)


async def _job_files(site: SiteConfig, runtime: ClusterRuntime, job: jobs.PreparedJob,
                     hub: HubSide) -> tuple[dict[str, str], str]:
    """The job's user-only files: the hub's secrets (env), TLS files, the site config's copy; and the
    reverse forward's port."""
    env = dict(hub.env)
    try:
        found = await _hub_api_for_jobs(runtime, hub)
    except LoginUnreachable as error:
        raise JobRefused(f"hpchub cannot reach the cluster's login node; nothing was submitted. {error}",
                         SpawnFailure.LOGIN_UNREACHABLE) from None
    hub_port = ""
    if found is not None:  # the hub as the job reaches it (off-cluster hubs: a URL or a reverse forward)
        jobs_hub, port = found
        hub_port = str(port) if port else ""
        own = hub.api_url.rstrip("/")
        env = {key: jobs_hub + value[len(own):] if value.startswith(own) else value for key, value in env.items()}
    files = {}
    if hub.cert_paths:  # internal_ssl: the server's key and certificate, user-only like the token
        files.update(tls.tls_files(dict(hub.cert_paths)))
        env.update(tls.tls_env(job.job_dir))
    # Per-spawn, like the hub's secrets: the script (and so `hpchub render`) does not depend on it.
    env[job_walltime.ENV_WARNING] = str(hub.walltime_warning)
    files["env"] = jobs.env_file(env)
    if runtime.client.spec.via == "ssh" and site.source is not None:  # for hpchub.parallel in the job (jobs.py)
        files[jobs.SITE_COPY] = Path(site.source).read_text()
    return files, hub_port


async def _hub_api_for_jobs(runtime: ClusterRuntime, hub: HubSide) -> tuple[str, int | None] | None:
    """The hub's API URL for a new job and the reverse forward's port (None: the hub's own URL);
    refuses a ``to_hub`` whose port or URL someone else could answer on unless the job verifies the
    hub (internal_ssl)."""
    spec = runtime.client.spec
    if spec.to_hub == "direct":
        return None
    refusal = hub_identity_refusal(spec.name, spec.to_hub, hub.internal_ssl)
    if refusal is not None:
        raise JobRefused(f"hpchub refuses to start this server: {refusal}")
    return await runtime.hub_api_for_jobs(hub.api_url)


async def submit(runtime: ClusterRuntime, prepared: ServerJob, keep_days: int, watcher: str) -> str:
    """Submit the job and start watching it (lifecycle.submit_and_watch); its id. A failure says in
    plain words what happened (JobRefused)."""
    try:
        return await lifecycle.submit_and_watch(runtime, prepared.job, prepared.files, keep_days=keep_days,
                                                watcher=watcher)
    except AccountRefused as error:
        raise JobRefused(f"hpchub refuses to start this server: {error}", SpawnFailure.ACCOUNT_REFUSED) from None
    except LoginUnreachable as error:  # nothing was submitted (a wrong host key, the login node down)
        raise JobRefused(f"hpchub cannot reach the cluster's login node; nothing was submitted. {error}",
                         SpawnFailure.LOGIN_UNREACHABLE) from None
    except CommandError as error:
        raise JobRefused(f"The scheduler refused the job: {_first_line(error.stderr) or error}",
                         SpawnFailure.REFUSED_BY_SCHEDULER) from None
    except lifecycle.SubmittedJobNotOurs as error:
        raise JobRefused(f"hpchub refused the job id the submission reported: {error}",
                         SpawnFailure.SUBMIT_UNKNOWN) from None
    except lifecycle.SubmitOutcomeUnknown as error:
        raise JobRefused(f"hpchub could not tell whether the job was submitted; please try again. {error}",
                         SpawnFailure.SUBMIT_UNKNOWN) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""
