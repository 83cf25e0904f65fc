"""Job scripts from Jinja templates.

Quoting is the default: every ``{{ value }}`` is passed through ``shlex.quote`` unless it is
:class:`Raw`, text that is either written by the admin (prologue, directives) or was checked
against a strict pattern before it got here (names, paths, numbers). A value containing a
newline is refused outright, because a newline inside quotes still ends a ``#SBATCH`` line.
"""

from __future__ import annotations

import functools
import importlib.util
import pwd
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ..schedulers import backend_for
from .config import PODMAN_ARCHIVE_PREFIXES, Container, ContainerImage, Environment, SiteConfig
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


def shell_script(text: str) -> Raw:
    """A (multi-line) script as one quoted word, for ``bash -c``: unlike a value it may span lines,
    which inside single quotes are only text; the script itself is template output."""
    if "\0" in text:
        raise RenderError("refusing to put a NUL character into a job script")
    return Raw(shlex.quote(str(text)))


def prefixed(values: Sequence[Any], flag: str) -> list[Any]:
    """``[flag, value]`` for each value: ``names | prefixed("--env") | shell_join``."""
    return [item for value in values for item in (flag, value)]


def packaged_templates_dir() -> Path:
    # templates/ is installed as the data-only package hpchub.templates (see setup.cfg).
    spec = importlib.util.find_spec("hpchub.templates")
    if spec is None or not spec.submodule_search_locations:
        raise RenderError("the packaged templates (hpchub.templates) are not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class SiteTemplateLoader(jinja2.BaseLoader):
    """``hpchub/NAME`` is the packaged template NAME and nothing else (a site file at
    ``templates_dir/hpchub/NAME`` never shadows it); any other name is looked up in the site's
    templates first, then in the packaged ones. So a site file that replaces ``slurm.sh.j2`` can
    still extend the original."""

    def __init__(self, site_templates: Path | None):
        self.packaged = jinja2.FileSystemLoader(str(packaged_templates_dir()))
        self.site = jinja2.FileSystemLoader(str(site_templates)) if site_templates is not None else None

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template.startswith(PACKAGED_PREFIX):
            try:
                return self.packaged.get_source(environment, template[len(PACKAGED_PREFIX):])
            except jinja2.TemplateNotFound:
                raise jinja2.TemplateNotFound(template) from None
        if self.site is None:
            return self.packaged.get_source(environment, template)
        try:
            return self.site.get_source(environment, template)
        except jinja2.TemplateNotFound:
            pass
        source, filename, packaged_uptodate = self.packaged.get_source(environment, template)
        site_file = Path(self.site.searchpath[0], template)

        def uptodate() -> bool:  # a site file added later must replace the cached packaged one
            return not site_file.exists() and (packaged_uptodate is None or packaged_uptodate())

        return source, filename, uptodate


@functools.lru_cache(maxsize=16)
def template_environment(site_templates: Path | None = None) -> jinja2.Environment:
    """Jinja for job scripts: :class:`SiteTemplateLoader`, shell quoting, undefined is an error.
    One per templates directory, so a template is compiled once, not at every spawn; Jinja checks
    the files' mtimes at each use (auto_reload), so an edited template still takes effect."""
    environment = jinja2.Environment(
        loader=SiteTemplateLoader(site_templates),
        undefined=jinja2.StrictUndefined,
        finalize=shell_value,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Text that template code itself produced ({{ super() }}, macros, {% set %} blocks) is
    # already quoted where needed: mark it Raw so printing it does not quote it twice.
    environment.concat = _concat_raw  # type: ignore[method-assign]
    environment.filters["shell_join"] = shell_join
    environment.filters["shell_script"] = shell_script
    environment.filters["prefixed"] = prefixed
    return environment


def _concat_raw(parts) -> Raw:
    return Raw("".join(parts))


@dataclass(frozen=True)
class UserAccount:
    name: str
    home: str

    @classmethod
    def lookup(cls, name: str) -> UserAccount:
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
    # The server reports its port to the hub (hpchub.job.extension); the script names its node.
    report_port: bool = False
    # The job's directory holding the job side's bundle (hpchub.core.bundle): put first on PYTHONPATH
    # and JUPYTER_PATH, and the server's environment checked before it starts (hpchub.job.requirements).
    bundle_dir: str | None = None

    @property
    def start_command(self) -> tuple[str, ...]:
        """The command as the job runs it: with a bundle, through its start-server.sh, which checks
        the environment the server finds (on the node, or inside the container) first."""
        if self.bundle_dir is None:
            return tuple(self.command)
        return ("/bin/sh", f"{self.bundle_dir}/start-server.sh", *self.command)


def job_context(
    site: SiteConfig,
    request: JobRequest,
    user: UserAccount,
    launch: Launch,
    name: str,
    tasks: int | None = None,
) -> dict[str, Any]:
    """The variables every job template sees. ``tasks``: engine jobs run that many tasks."""
    profile = request.profile
    cluster = request.cluster
    environment: Environment = cluster.environment.extended_by(profile.environment)
    name = checked(name, re.compile(r"^[A-Za-z0-9_.+-]+$"), "job name")
    home = checked(user.home, SAFE_PATH_RE, "home directory")
    log_dir = f"{home}/.hpchub/logs"
    backend = backend_for(cluster.scheduler)
    sge_memory_mb = None
    if request.memory is not None:
        sge_memory_mb = backend.memory_per_request_mb(
            request.memory.megabytes, request.cores, cluster.sge.memory_per_slot
        )
    if launch.secrets_file is not None:
        checked(launch.secrets_file, SAFE_PATH_RE, "secrets file")
    container = None
    if environment.container is not None:
        image = request.image or environment.container.default_image()
        assert image is not None, "checked when the site config was loaded"
        container = container_context(environment.container, image, cluster.scheduler, request.gpus, launch,
                                      environment.env)
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
            "requeue": profile.requeue,
            "gpus": request.gpus,
            "nodes": request.nodes,
            "tasks": tasks,
            "account": Raw(request.account) if request.account else None,
            "qos": Raw(request.qos) if request.qos else None,
            "reservation": Raw(request.reservation) if request.reservation else None,
            "directives": [Raw(d) for d in profile.directives],
            "workdir": home,
            "log_dir": Raw(log_dir),
            # The cluster key keeps job ids of clusters that share home directories apart.
            "output": Raw(f"{log_dir}/{name}.{request.cluster_name}.{backend.OUTPUT_JOB_ID}.log"),
            # The variable holding the scheduler's name for the node a job runs on.
            "node_name_variable": Raw(backend.NODE_NAME_VARIABLE),
        },
        "environment": {
            "modules": [Raw(m) for m in environment.modules],
            "venv": environment.venv,
            "conda_env": environment.conda_env,
            "prologue": Raw(environment.prologue) if environment.prologue else None,
            "env": environment.env,
            # Quoted like any value; the path was checked (options.user_env_path) and is under the home.
            "user_env": {"path": f"{home}/{request.user_env}", "name": f"~/{request.user_env}"}
            if request.user_env else None,
        },
        "launch": launch,
        "container": container,
    }


# The scheduler's variables a job's processes read (job id, node name, task, slots): podman passes in
# only what it is told (``--env NAME``, ``NAME*`` for a prefix); apptainer passes the environment on.
SCHEDULER_VARIABLES = {"slurm": ("SLURM*",), "sge": ("JOB_ID", "JOB_NAME", "NSLOTS", "PE_HOSTFILE", "SGE_*")}
# What the job script itself exports for the job side (HPCHUB_JOB_END, HPCHUB_NODE_NAME, ...).
JOB_VARIABLES = ("HPCHUB_*", "LANG", "TZ")


# Run inside the container: the job's secrets file is read there, so its values never pass a
# command line (``ps`` shows those to every user on the node).
SOURCE_SECRETS = 'set -a && . "$1" && set +a && shift && exec "$@"'


def container_context(container: Container, image: ContainerImage, scheduler: str, gpus: int, launch: Launch,
                      admin_env: Mapping[str, str]) -> dict[str, Any]:
    """What the container partials see (``container`` in a template): the runtime and its partial,
    the image as the runtime takes it and the file to check on the node (None for a name or a
    remote reference), the binds, whether to pass the GPUs, the admin's flags, the environment
    variables to pass in by name (podman; never their values, which ``ps`` would show) and the
    command run inside (the launch command, after sourcing the secrets file if it has one)."""
    assert container.runtime is not None, "checked when the site config was loaded"
    reference = image.image
    image_file: str | None = None
    if container.runtime == "podman":
        if reference.startswith(PODMAN_ARCHIVE_PREFIXES):
            image_file = reference.split(":", 1)[1]
        elif reference.startswith("/"):
            # `podman save --format oci-archive` writes these; docker-archive:PATH says otherwise.
            image_file, reference = reference, f"oci-archive:{reference}"
    elif reference.startswith("/"):
        image_file = reference
    patterns = [*JOB_VARIABLES, *SCHEDULER_VARIABLES.get(scheduler, ())]
    prefixes = tuple(pattern[:-1] for pattern in patterns if pattern.endswith("*"))
    # The bundle's paths (partials/launch.sh.j2 exports them) reach the server inside too.
    bundle = ("PYTHONPATH", "JUPYTER_PATH") if launch.bundle_dir else ()
    variables = [*patterns, *bundle,
                 *(name for name in (*admin_env, *launch.env) if not name.startswith(prefixes))]
    if gpus:
        variables.append("CUDA_VISIBLE_DEVICES")
    return {
        "runtime": container.runtime,
        # apptainer and singularity take the same command line: one partial for both.
        "partial": "partials/container-podman.sh.j2" if container.runtime == "podman"
        else "partials/container-apptainer.sh.j2",
        "image": checked(reference, re.compile(r"^[A-Za-z0-9_.+@/:-]+$"), "container image"),
        "image_file": checked(image_file, SAFE_PATH_RE, "container image") if image_file is not None else None,
        "label": image.label,
        "binds": [checked(bind, re.compile(r"^/[A-Za-z0-9_.+@/:-]*$"), "container bind") for bind in container.binds],
        "gpus": container.gpus == "auto" and gpus > 0,
        "options": [Raw(option) for option in container.options],
        "env_names": list(dict.fromkeys(variables)),
        "command": (("/bin/sh", "-c", SOURCE_SECRETS, "hpchub-secrets", launch.secrets_file, *launch.start_command)
                    if launch.secrets_file else launch.start_command),
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
