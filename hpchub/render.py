"""Job scripts from Jinja templates.

Quoting is the default: every ``{{ value }}`` is passed through ``shlex.quote`` unless it is
:class:`Raw`, text that is either written by the admin (prologue, directives) or was checked
against a strict pattern before it got here (names, paths, numbers). A value containing a
newline is refused outright, because a newline inside quotes still ends a ``#SBATCH`` line.
"""

from __future__ import annotations

import importlib.util
import pwd
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from .config import Environment, SiteConfig
from .options import JobRequest

USERNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+@-]*$")
PACKAGED_PREFIX = "hpchub/"


class Raw(str):
    """Text that goes into a job script exactly as it is (admin-written, or pattern-checked)."""


class RenderError(ValueError):
    pass


def checked(value: str, pattern: re.Pattern, what: str) -> Raw:
    """``value`` as Raw if it matches ``pattern``; the way user-derived text reaches a directive."""
    if not isinstance(value, str) or not pattern.match(value):
        raise RenderError(f"{what} {value!r} has characters that are not allowed in a job script")
    return Raw(value)


def shell_value(value: Any) -> str:
    """How a ``{{ value }}`` is written into a script: quoted, and never across lines."""
    if isinstance(value, Raw):
        return value
    if value is None:
        raise RenderError("a template printed an empty value (None); guard it with {% if %}")
    text = str(value)
    if any(char in text for char in "\n\r\0"):
        raise RenderError(f"refusing to put a value with a line break into a job script: {text!r}")
    return shlex.quote(text)


def shell_join(args: Sequence[Any]) -> Raw:
    """A command line from a list of arguments, each quoted."""
    return Raw(" ".join(shell_value(arg) for arg in args))


def packaged_templates_dir() -> Path:
    # templates/ is installed as the data-only package hpchub.templates (see setup.cfg).
    spec = importlib.util.find_spec("hpchub.templates")
    return Path(next(iter(spec.submodule_search_locations)))


def template_environment(site_templates: Path | None = None) -> jinja2.Environment:
    """Site templates first, then the packaged ones; ``hpchub/NAME`` always means the packaged one
    (so a site file that replaces ``slurm.sh.j2`` can still extend the original)."""
    packaged = jinja2.FileSystemLoader(str(packaged_templates_dir()))
    loaders: list[jinja2.BaseLoader] = []
    if site_templates is not None:
        loaders.append(jinja2.FileSystemLoader(str(site_templates)))
    loaders += [packaged, jinja2.PrefixLoader({PACKAGED_PREFIX.rstrip("/"): packaged})]
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        finalize=shell_value,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Text that template code itself produced ({{ super() }}, macros, {% set %} blocks) is
    # already quoted where needed: mark it Raw so printing it does not quote it twice.
    environment.concat = _concat_raw
    environment.filters["shell_join"] = shell_join
    return environment


def _concat_raw(parts) -> Raw:
    return Raw("".join(parts))


@dataclass(frozen=True)
class UserAccount:
    name: str
    home: str

    @classmethod
    def lookup(cls, name: str) -> "UserAccount":
        checked(name, USERNAME_RE, "user name")
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            home = f"/home/{name}"
        return cls(name, home)


@dataclass(frozen=True)
class Launch:
    """What the job starts once its environment is ready."""

    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    # Secrets (the hub API token) reach the job in this file, readable by the user only.
    secrets_file: str | None = None
    # The server reports its port to the hub (hpchub.singleuser); the script names its node.
    report_port: bool = False


SERVER_COMMAND = ("jupyterhub-singleuser",)
# Appended to the server command: hpchub.singleuser picks the listening address and reports the
# port once the server listens on it; port 0 lets the OS choose a free one at bind time.
SERVER_ARGS = ("--ServerApp.jpserver_extensions=hpchub.singleuser=True", "--ServerApp.port=0")


def server_launch(
    user: UserAccount,
    name: str,
    server_command: Sequence[str] = SERVER_COMMAND,
    test_command: Sequence[str] | None = None,
) -> Launch:
    """How a server job starts: hub secrets from a user-only file, then the server, which reports
    its own port. ``test_command`` (an admin trying a profile) runs instead and needs neither."""
    if test_command:
        return Launch(command=tuple(test_command))
    return Launch(command=(*server_command, *SERVER_ARGS), secrets_file=f"{user.home}/.hpchub/{name}.env",
                  report_port=True)


def job_name(user: UserAccount, profile_slug: str, suffix: str = "") -> str:
    return f"hpchub-{user.name}-{profile_slug}{suffix}"


def job_context(
    site: SiteConfig,
    request: JobRequest,
    user: UserAccount,
    launch: Launch,
    name: str | None = None,
    tasks: int | None = None,
) -> dict[str, Any]:
    """The variables every job template sees. ``tasks``: engine jobs run that many tasks."""
    profile = request.profile
    cluster = request.cluster
    environment: Environment = cluster.environment.extended_by(profile.environment)
    name = checked(name or job_name(user, profile.slug), re.compile(r"^[A-Za-z0-9_.-]+$"), "job name")
    home = checked(user.home, SAFE_PATH_RE, "home directory")
    log_dir = f"{home}/.hpchub/logs"
    job_id_token = "%j" if cluster.scheduler == "slurm" else "$JOB_ID"
    sge_memory_mb = None
    if request.memory is not None:
        slots = request.cores if cluster.sge.memory_per_slot else 1
        sge_memory_mb = -(-request.memory.megabytes // slots)
    if launch.secrets_file is not None:
        checked(launch.secrets_file, SAFE_PATH_RE, "secrets file")
    return {
        "site": site.site,
        "cluster": {"name": request.cluster_name, "scheduler": cluster.scheduler},
        "sge": cluster.sge,
        "user": user,
        "profile": profile,
        "job": {
            "name": name,
            "queue": Raw(request.queue),
            "cores": request.cores,
            "memory": request.memory,
            "sge_memory_mb": sge_memory_mb,
            "walltime": request.walltime,
            "gpus": request.gpus,
            "nodes": request.nodes,
            "tasks": tasks,
            "account": Raw(request.account) if request.account else None,
            "directives": [Raw(d) for d in profile.directives],
            "workdir": home,
            "log_dir": Raw(log_dir),
            # The cluster key keeps job ids of clusters that share home directories apart.
            "output": Raw(f"{log_dir}/{name}.{request.cluster_name}.{job_id_token}.log"),
        },
        "environment": {
            "modules": [Raw(m) for m in environment.modules],
            "venv": environment.venv,
            "conda_env": environment.conda_env,
            "prologue": Raw(environment.prologue) if environment.prologue else None,
            "env": environment.env,
        },
        "launch": launch,
    }


def template_name(request: JobRequest, kind: str = "") -> str:
    if request.profile.template and not kind:
        return request.profile.template
    return f"{request.cluster.scheduler}{'-' + kind if kind else ''}.sh.j2"


ENGINE_STOP_MARGIN = 60  # seconds before the walltime at which engines are told to stop


def engine_context(site: SiteConfig, request: JobRequest, user: UserAccount, launch: Launch, name: str, n: int) -> dict[str, Any]:
    """The variables of an engines template: a job context with ``n`` tasks, plus ``engines``."""
    context = job_context(site, request, user, launch, name=name, tasks=n)
    margin = min(ENGINE_STOP_MARGIN, request.walltime.seconds // 10)
    context["engines"] = {"stop_margin": margin, "run_seconds": request.walltime.seconds - margin}
    return context


def render_job_script(site: SiteConfig, context: Mapping[str, Any], template: str) -> str:
    environment = template_environment(site.templates_path())
    try:
        return environment.get_template(template).render(context)
    except jinja2.TemplateNotFound as error:
        raise RenderError(f"template {error.name!r} not found in {_search_path(site)}") from None
    except jinja2.UndefinedError as error:
        raise RenderError(f"template {template!r}: {error.message}") from None
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"template {error.filename or error.name}:{error.lineno}: {error.message}") from None


def _search_path(site: SiteConfig) -> str:
    site_dir = site.templates_path()
    return ", ".join(str(p) for p in ([site_dir] if site_dir else []) + [packaged_templates_dir()])
