"""Every job hpchub submits is built here, once: the spawner, the ipyparallel launcher, the CLI
(`hpchub render` / `submit`) and the tests call these functions, so what `hpchub render` prints is
what the spawner submits.

Names, per user (each user's files live in their own home, so only one user's names must differ):
- server job ``hpchub-USER-PROFILE`` and, for a named server, ``hpchub-USER-PROFILE.s-SERVER``
  (profile slugs have no ``.``, so profile ``gpu`` + server ``large`` and profile ``gpu-large``
  differ);
- engine job ``hpchub-USER-PROFILE.e-PARENTJOB``: the server job whose notebook started it.
The job's files (secrets env, TLS key) go to ``~/.hpchub/jobs/KEY/``; KEY is the job name for a
server and the job name plus a random part for engine sets (a notebook may start several).
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import job as job_side
from ..job import requirements
from ..schedulers import backend_for
from . import bundle
from .config import Environment, SiteConfig
from .options import JobRequest
from .render import Launch, RenderError, UserAccount, engine_context, job_context, render_job_script, template_name

SERVER_COMMAND = ("jupyterhub-singleuser",)
# Appended to the server command: the job side's extension (hpchub.job.extension, as the job's bundle
# names it: hpchub.core.bundle) binds the address the hub connects to and reports the port once the
# server listens on it; port 0 lets the OS choose a free one at bind time.
# The server asks the hub again about a caller after AUTH_CACHE_SECONDS (JupyterHub's default: 300), so
# a share granted or revoked (docs/sharing.md), a token revoked or a user removed takes effect within
# seconds. At most one /hub/api/user call per open browser session and interval; 0 would mean "forever".
AUTH_CACHE_SECONDS = 5
SERVER_ARGS = (f"--ServerApp.jpserver_extensions={job_side.BUNDLE_PACKAGE}.extension=True", "--ServerApp.port=0",
               f"--HubOAuth.cache_max_age={AUTH_CACHE_SECONDS}")
# Real-time collaboration's document store and file-id index (SQLite files, in the server's working
# directory and the user's Jupyter data directory by default): one per job, in the job's directory,
# so two servers of one user on different nodes never share a file over NFS.
COLLABORATION_STORE = "ystore.db"
COLLABORATION_FILE_IDS = "file_id.db"
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENGINE_MARK = ".e-"

# What ipyparallel's hpchub launchers inside a server job read (see hpchub.parallel).
ENV_SITE_CONFIG = "HPCHUB_SITE_CONFIG"
ENV_ENGINE_PROFILE = "HPCHUB_ENGINE_PROFILE"
# The account, QoS and reservation (its name) a server job charges: engines its notebook starts charge
# the same unless told otherwise (hpchub.parallel). Grid Engine has no variables of its own for them.
ENV_PARENT_ALLOCATIONS = {"account": "HPCHUB_ACCOUNT", "qos": "HPCHUB_QOS", "reservation": "HPCHUB_RESERVATION"}
# The label of the container image the user picked for a server job: its engines run in the same one.
ENV_PARENT_IMAGE = "HPCHUB_IMAGE"
# The user's own environment of a server job (options.user_env_path): its engines use the same one.
ENV_PARENT_USER_ENV = "HPCHUB_USER_ENV"
# A server job submitted over SSH gets the site config as this file of its job directory.
SITE_COPY = "site.yaml"


@dataclass(frozen=True)
class PreparedJob:
    """A rendered job, ready to submit, and what the hub must remember about it."""

    kind: str  # "server" | "engines" | "command" | "probe"
    cluster_name: str
    scheduler: str
    user: UserAccount
    name: str  # the scheduler's job name
    key: str  # ~/.hpchub/jobs/KEY holds the job's files
    script: str
    output: str  # job output path with the scheduler's job-id token in it
    request: JobRequest
    context: Mapping[str, Any] = field(repr=False, default_factory=dict)
    # Files the job needs besides the submitter's secrets (a server job: the job side's bundle),
    # written to its directory at submission; `hpchub render` lists them.
    files: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def job_dir(self) -> str:
        return job_dir(self.user, self.key)

    def log_path(self, job_id: str) -> str:
        return self.output.replace(backend_for(self.scheduler).OUTPUT_JOB_ID, job_id)

    def log_name(self, job_id: str) -> str:
        return Path(self.log_path(job_id)).name

    def files_with(self, secrets: Mapping[str, str]) -> dict[str, str]:
        """Everything written to the job's directory: the job's own files and the caller's ``secrets``."""
        return {**self.files, **secrets}


def job_dir(user: UserAccount, key: str) -> str:
    return f"{user.home}/.hpchub/jobs/{key}"


def server_job_name(user: UserAccount, profile_slug: str, server_name: str = "") -> str:
    if server_name and not SERVER_NAME_RE.match(server_name):
        raise RenderError(f"server name {server_name!r}: use letters, digits, '_' and '-' only (at most 64)")
    return f"hpchub-{user.name}-{profile_slug}" + (f".s-{server_name}" if server_name else "")


def engine_job_name(user: UserAccount, profile_slug: str, parent_job: str) -> str:
    return f"hpchub-{user.name}-{profile_slug}{ENGINE_MARK}{parent_job}"


def is_engine_job_of(name: str, user: str, parent_job: str) -> bool:
    """Is ``name`` an engine job that ``user``'s server job ``parent_job`` started?"""
    return name.startswith(f"hpchub-{user}-") and name.endswith(f"{ENGINE_MARK}{parent_job}")


def environment_server_args(environment: Environment, directory: str) -> tuple[str, ...]:
    """The server arguments of what a profile's environment turns on or off: real-time collaboration
    (``collaboration``; unset: as the environment's own Jupyter config has it) and a jupytext pairing
    (``jupytext``). The job side's check (hpchub.job.requirements) finds them on the command line and
    ends the job at once if the environment lacks what they need. ``directory``: the job's."""
    args: list[str] = []
    if environment.collaboration:
        args += [requirements.COLLABORATION_ON, "--YDocExtension.disable_rtc=False",
                 f"--SQLiteYStore.db_path={directory}/{COLLABORATION_STORE}",
                 f"--BaseFileIdManager.db_path={directory}/{COLLABORATION_FILE_IDS}"]
    elif environment.collaboration is False:
        args.append("--YDocExtension.disable_rtc=True")  # harmless where jupyter-collaboration is missing
    if environment.jupytext is not None:
        args += [requirements.JUPYTEXT_ON, f"{requirements.JUPYTEXT_FORMATS}{environment.jupytext}"]
    return tuple(args)


def _prepare(kind: str, site: SiteConfig, request: JobRequest, user: UserAccount, name: str, key: str,
             context: dict[str, Any], template: str, files: Mapping[str, str] | None = None) -> PreparedJob:
    script = render_job_script(site, context, template)
    return PreparedJob(kind, request.cluster_name, request.cluster.scheduler, user, name, key, script,
                       str(context["job"]["output"]), request, context, files or {})


def server_job(
    site: SiteConfig,
    request: JobRequest,
    user: UserAccount,
    server_name: str = "",
    server_command: Sequence[str] = SERVER_COMMAND,
) -> PreparedJob:
    """A single-user server job: the job side travels with it (hpchub.core.bundle), hub secrets from
    the user-only file, the port reported once the server listens, the engine launcher told which
    site config and profile it belongs to and what the job charges."""
    name = server_job_name(user, request.profile.slug, server_name)
    env = {ENV_ENGINE_PROFILE: request.profile.slug}
    chosen = {"account": request.account, "qos": request.qos, "reservation": request.reservation_name}
    env.update({ENV_PARENT_ALLOCATIONS[field]: value for field, value in chosen.items() if value})
    if request.image is not None:
        env[ENV_PARENT_IMAGE] = request.image.label
    if request.user_env is not None:
        env[ENV_PARENT_USER_ENV] = request.user_env
    if request.cluster.submit.via == "ssh":
        # The hub's file is not on the cluster: a copy travels with the job's files (SITE_COPY).
        env[ENV_SITE_CONFIG] = f"{job_dir(user, name)}/{SITE_COPY}"
    elif site.source is not None:
        env[ENV_SITE_CONFIG] = str(Path(site.source).resolve())
    environment = request.cluster.environment.extended_by(request.profile.environment)
    command = (*server_command, *SERVER_ARGS, *environment_server_args(environment, job_dir(user, name)))
    launch = Launch(command=command, env=env, secrets_file=f"{job_dir(user, name)}/env",
                    report_port=True, bundle_dir=job_dir(user, name))
    context = job_context(site, request, user, launch, name=name)
    return _prepare("server", site, request, user, name, name, context, template_name(request),
                    bundle.job_side_files())


def command_job(site: SiteConfig, request: JobRequest, user: UserAccount, command: Sequence[str]) -> PreparedJob:
    """An admin's test of a profile: its environment block, then ``command`` instead of a server."""
    name = server_job_name(user, request.profile.slug)
    context = job_context(site, request, user, Launch(command=tuple(command)), name=name)
    return _prepare("command", site, request, user, name, name, context, template_name(request))


PROBE_MARK = ".doctor"
PROBE_SCRIPT = "probe.py"


def probe_job(site: SiteConfig, request: JobRequest, user: UserAccount, probe_args: Sequence[str]) -> PreparedJob:
    """``hpchub doctor``'s probe: the profile's job (directives, environment block) running the probe
    (its job file PROBE_SCRIPT, hpchub/job/probe.py) with the environment's ``python3`` instead of the
    server. Its own name and a fresh key: it never meets the user's server job or that job's files."""
    name = f"{server_job_name(user, request.profile.slug)}{PROBE_MARK}"
    key = f"{name}.{secrets.token_hex(3)}"
    command = ("python3", f"{job_dir(user, key)}/{PROBE_SCRIPT}", *probe_args)
    context = job_context(site, request, user, Launch(command=command), name=name)
    return _prepare("probe", site, request, user, name, key, context, template_name(request))


def engine_job(
    site: SiteConfig,
    request: JobRequest,
    user: UserAccount,
    n: int,
    parent_job: str,
    engine_command: Sequence[str],
    key: str | None = None,
) -> PreparedJob:
    """``n`` ipyparallel engines as one job; their connection file comes in the job's files."""
    name = engine_job_name(user, request.profile.slug, parent_job)
    key = key or f"{name}.{secrets.token_hex(3)}"
    launch = Launch(command=tuple(engine_command), secrets_file=f"{job_dir(user, key)}/env")
    context = engine_context(site, request, user, launch, name, n)
    return _prepare("engines", site, request, user, name, key, context, template_name(request, "engines"))


def env_file(env: Mapping[str, str]) -> str:
    """The text of a job's secrets env file (sourced with ``set -a`` by the job)."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
