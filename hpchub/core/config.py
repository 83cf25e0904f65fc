"""The site config: one YAML file in which an HPC admin describes clusters, queues and profiles.

Loading is two passes. The structure (keys, types, patterns) is checked by pydantic models
that refuse unknown keys; then the cross-references (profile -> cluster -> queue) and the queue
limits are checked. Every problem is reported as ``FILE:LINE: path.to.key: what is wrong`` and
all problems are reported at once.

Over 500 lines because the schema is one document: the models, their cross-references and the
FILE:LINE reporting are read together, and the docs' reference is generated from them.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, StrictBool, StrictInt, StrictStr

from ..job.logindefs import login_defs_uid_min
from .notebook_formats import formats_problem
from .units import Memory, Walltime
from .yamlfile import YAMLFileError, load_yaml

log = logging.getLogger("hpchub.config")

# Values that end up in scheduler directives are held to these patterns: quoting does not
# protect a directive line, so only characters that cannot start a new option or line pass.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
MODULE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+/@:-]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
TEMPLATE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\.j2$"


def _no_newlines(value: str) -> str:
    if any(char in value for char in "\n\r\0"):
        raise ValueError("must be a single line (no newline or NUL characters)")
    return value


MemoryValue = Annotated[Memory, PlainValidator(Memory.parse), PlainSerializer(str)]
WalltimeValue = Annotated[Walltime, PlainValidator(Walltime.parse), PlainSerializer(str)]
Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
SingleLine = Annotated[StrictStr, pydantic.AfterValidator(_no_newlines)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class QueueLimits(_Model):
    """What one Slurm partition or Grid Engine queue allows a single job (per node)."""

    max_walltime: WalltimeValue | None = Field(default=None, description="the longest walltime (HH:MM:SS or D-HH:MM:SS)")
    max_cores: PositiveInt | None = Field(default=None, description="cores per node")
    max_memory: MemoryValue | None = Field(default=None, description="memory per node")
    max_nodes: PositiveInt | None = Field(default=None, description="nodes one job may have")
    max_gpus: NonNegativeInt | None = Field(default=None, description="GPUs per node")
    description: SingleLine = Field(default="", description="shown to users")


# Container images: what each runtime can take. Paths and references are written unquoted into
# scripts only after these checks; they are still shell-quoted like every value.
IMAGE_FILE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".sif", ".simg", ".img", ".squashfs")
PODMAN_ARCHIVE_PREFIXES = ("oci-archive:", "docker-archive:")
APPTAINER_REMOTE_PREFIXES = ("docker://", "oras://")
# A registry reference podman can pull or has stored: [registry[:port]/]path[:tag][@digest].
PODMAN_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"
                            r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
SAFE_IMAGE_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@/-]*$")
BIND_MODES = ("ro", "rw")
CONTAINER_RUNTIMES = ("podman", "apptainer", "singularity")


def _image_text(value: str) -> str:
    """What every image reference is, whatever the runtime: one line, no flag, no blanks."""
    _no_newlines(value)
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-': it would be read as a flag")
    if any(char.isspace() for char in value):
        raise ValueError(f"{value!r} has blanks")
    return value


def _is_path_like(image: str) -> bool:
    return image.startswith(("/", ".", "~")) or image.endswith(IMAGE_FILE_SUFFIXES)


def image_problem(runtime: str, image: str) -> str | None:
    """Why ``runtime`` cannot take ``image``; None: it can."""
    if runtime == "podman":
        if image.startswith(PODMAN_ARCHIVE_PREFIXES):
            path = image.split(":", 1)[1]
            if not path.startswith("/"):
                return f"{image!r}: the archive's path must be absolute"
            if not SAFE_IMAGE_PATH_RE.match(path):
                return f"{image!r}: the archive's path has characters that are not allowed"
            return None
        if image.startswith(APPTAINER_REMOTE_PREFIXES[1]) or image.endswith((".sif", ".simg")):
            return f"{image!r} is an Apptainer/Singularity image: podman cannot run it"
        if _is_path_like(image):
            if not image.startswith("/"):
                return f"{image!r} is a relative path: give the absolute path the nodes see"
            if not image.endswith(".tar"):
                return (f"{image!r}: podman runs an archive file written by `podman save` (a .tar: "
                        "oci-archive, or docker-archive:PATH) or an image name")
            if not SAFE_IMAGE_PATH_RE.match(image):
                return f"{image!r}: the path has characters that are not allowed"
            return None
        if not PODMAN_NAME_RE.match(image):
            return (f"{image!r} is neither an absolute path to an archive nor an image name podman takes "
                    "(registry/name:tag, lower case)")
        return None
    # apptainer, singularity
    if image.startswith(APPTAINER_REMOTE_PREFIXES):
        reference = image.split("://", 1)[1]
        if not PODMAN_NAME_RE.match(reference):
            return f"{image!r}: not an image reference (registry/name:tag, lower case)"
        return None
    if image.startswith(PODMAN_ARCHIVE_PREFIXES):
        return f"{image!r}: give {runtime} a .sif file (apptainer build lab.sif {image}) or a docker:// reference"
    if not image.startswith("/"):
        if _is_path_like(image):
            return f"{image!r} is a relative path: give the absolute path the nodes see"
        return f"{image!r}: {runtime} takes an absolute path (a .sif file) or a docker:// or oras:// reference"
    if not SAFE_IMAGE_PATH_RE.match(image):
        return f"{image!r}: the path has characters that are not allowed"
    return None


def _bind(value: Any) -> str:
    """``/path`` or ``/host:/container[:ro|rw]``, both paths absolute, nothing a runtime reads as a flag."""
    if not isinstance(value, str):
        raise ValueError(f"a bind is a string like /scratch or /data:/data:ro, got {value!r}")
    _no_newlines(value)
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-': it would be read as a flag")
    parts = value.split(":")
    if len(parts) > 3:
        raise ValueError(f"{value!r}: give /path, /host:/container or /host:/container:ro")
    for path in parts[:2]:
        if not path.startswith("/"):
            raise ValueError(f"{value!r}: {path!r} is not an absolute path")
        if not SAFE_IMAGE_PATH_RE.match(path) or "," in path:
            raise ValueError(f"{value!r}: {path!r} has characters that are not allowed in a bind")
    if len(parts) == 3 and parts[2] not in BIND_MODES:
        raise ValueError(f"{value!r}: the mode {parts[2]!r} is neither ro nor rw")
    return value


def _jupytext_formats(value: str) -> str:
    problem = formats_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


ImageReference = Annotated[StrictStr, pydantic.AfterValidator(_image_text)]
JupytextFormats = Annotated[StrictStr, pydantic.AfterValidator(_jupytext_formats)]
Bind = Annotated[str, PlainValidator(_bind)]


class ContainerImage(_Model):
    """An image a profile offers its users: they pick it by its label, never by its path."""

    label: Annotated[SingleLine, Field(min_length=1)] = Field(description="what users see and pick")
    image: ImageReference = Field(description="the image (as for container.image)")


class Container(_Model):
    """The server (and the engines) run in a container image; the job script wraps the launch in the
    runtime (templates/partials/container-podman.sh.j2, container-apptainer.sh.j2). Modules and the
    prologue still run on the node first (e.g. `module load apptainer`). A profile's container is
    merged into its cluster's: keys it sets win, binds and options are appended."""

    runtime: Literal["podman", "apptainer", "singularity"] | None = Field(
        default=None, description="podman (rootless, as the user), apptainer or singularity (required, here or in "
        "the cluster's container)")
    image: ImageReference | None = Field(
        default=None, description="podman: an image name the nodes have (or can pull), or the absolute path of an "
        "archive written by `podman save` (PATH.tar: an OCI archive; docker-archive:PATH for a Docker one); "
        "apptainer/singularity: the absolute path of a .sif file (or a sandbox directory), or a docker:// or oras:// "
        "reference. The default of `images`, if both are given")
    images: list[ContainerImage] = Field(
        default=[], description="images the user may pick from on the form (by label); the first is preselected "
        "unless `image` names one of them")
    binds: list[Bind] = Field(
        default=[], description="more directories in the container (the home always is): /path or "
        "/host:/container[:ro|rw], absolute paths")
    gpus: Literal["auto", "off"] = Field(
        default="auto", description="auto: the job's GPUs in the container when it has any (apptainer/singularity: "
        "--nv; podman: --device nvidia.com/gpu=all, which needs the NVIDIA Container Toolkit's CDI spec on the "
        "nodes); off: never")
    options: list[SingleLine] = Field(
        default=[], description="more runtime flags, admin-only, inserted as written before the image (e.g. "
        "--pull=never for podman, --writable-tmpfs for apptainer); not --cleanenv: the job's variables must reach "
        "the server")

    def extended_by(self, other: Container | None) -> Container:
        """This container with a profile's: keys it sets win, binds and options appended."""
        if other is None:
            return self
        set_by_other = other.model_fields_set
        # The image and the list to pick from are one choice: a profile that sets either sets both.
        own_images = bool({"image", "images"} & set_by_other)
        return Container(
            runtime=other.runtime or self.runtime,
            image=other.image if own_images else self.image,
            images=other.images if own_images else self.images,
            binds=[*self.binds, *(b for b in other.binds if b not in self.binds)],
            gpus=other.gpus if "gpus" in set_by_other else self.gpus,
            options=[*self.options, *other.options],
        )

    def default_image(self) -> ContainerImage | None:
        """The image a job gets when the user picks none: ``image`` (one of ``images`` if those are
        given), else the first of ``images``."""
        for offered in self.images:
            if self.image is None or offered.image == self.image:
                return offered
        return ContainerImage(label=self.image, image=self.image) if self.image is not None else None


class Environment(_Model):
    """How a job gets its software before the server or engines start."""

    modules: list[Annotated[StrictStr, Field(pattern=MODULE_PATTERN)]] = Field(
        default=[], description="`module load` lines, in order")
    venv: SingleLine | None = Field(default=None, description="a virtual environment activated before the server starts")
    conda_env: SingleLine | None = Field(
        default=None, description="`conda activate NAME` (conda must already be set up in the shell)")
    prologue: StrictStr | None = Field(default=None, description="admin shell lines, inserted as written")
    env: dict[Annotated[StrictStr, Field(pattern=ENV_NAME_PATTERN)], SingleLine] = Field(
        default={}, description="environment variables exported in the job, values shell-quoted")
    container: Container | None = Field(
        default=None, description="run the server and the engines in this container image (modules and the "
        "prologue run on the node before it starts)")
    user_envs: StrictBool | None = Field(
        default=None, description="let users run the server (and its engines) in their own venv or conda env: the "
        "form offers a field for its path under their home (envs/lab or ~/envs/lab), activated after the modules, "
        "venv, env and prologue above, as the user, in the user's own job; the job fails with a clear message when "
        "it is missing or has no jupyterhub-singleuser. Off unless set (a profile's setting wins over its "
        "cluster's); not with a container")
    collaboration: StrictBool | None = Field(
        default=None, description="true: JupyterLab's real-time collaboration is on in the server (several people "
        "in one notebook see each other's edits and cursors), whatever the environment's own Jupyter config says; "
        "the environment (or container image) must have jupyter-collaboration (3.x or newer; 5.x for JupyterLab "
        "4.6), or the job fails at once saying so. Its document store and file-id index live in the job's "
        "directory. false: off. Unset: as the environment has it (on where jupyter-collaboration is installed). "
        "Whoever joins a server runs code as its owner, with the owner's files and allocation. A profile's "
        "setting wins over its cluster's")
    jupytext: JupytextFormats | None = Field(
        default=None, description="pair every notebook the server saves with text files, a jupytext formats "
        "string such as \"ipynb,py:percent\" (NAME.ipynb and NAME.py side by side), \"ipynb,md:myst\" or "
        "\"ipynb,notebooks///ipynb,scripts///py:percent\"; groups of paired formats separated by \";\". The "
        "environment must have jupytext 1.16 or newer, whose own check of the string ends the job if it refuses "
        "it. A jupytext.toml (or pyproject.toml [tool.jupytext], or jupytext's config in ~/.config) in the "
        "notebook's directory or above replaces this pairing for the notebooks under it. A profile's setting "
        "wins over its cluster's")

    @property
    def allows_user_envs(self) -> bool:
        return bool(self.user_envs)

    def extended_by(self, other: Environment | None) -> Environment:
        """This environment with a profile's additions: modules appended, env merged, container merged
        (see Container.extended_by); user_envs, collaboration and jupytext: the profile's where it sets them."""
        if other is None:
            return self
        return Environment(
            modules=[*self.modules, *(m for m in other.modules if m not in self.modules)],
            venv=other.venv or self.venv,
            conda_env=other.conda_env or self.conda_env,
            prologue="\n".join(p for p in (self.prologue, other.prologue) if p) or None,
            env={**self.env, **other.env},
            container=self.container.extended_by(other.container) if self.container is not None else other.container,
            user_envs=other.user_envs if other.user_envs is not None else self.user_envs,
            collaboration=other.collaboration if other.collaboration is not None else self.collaboration,
            jupytext=other.jupytext if other.jupytext is not None else self.jupytext,
        )


# "{user}" in an SSH account or key path stands for the hub user's unix name.
USER_TEMPLATE_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*|\{user\})$"
KEY_PATH_PATTERN = r"^/([A-Za-z0-9_.+@-]|\{user\}|/)*$"
ABSOLUTE_PATH_PATTERN = r"^/[A-Za-z0-9_.+@/-]*$"
HOST_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"


class Submit(_Model):
    """How the hub runs scheduler commands. ``via`` has no default: ``local`` runs every user's
    job as the hub's own account, which must never happen because a key was left out."""

    via: Literal["local", "sudo", "ssh"] = Field(
        description="sudo: `sudo -n -u USER` on this host (the job runs as the user); local: as the hub's own "
        "account, so every user's job runs as that account (refused when the hub runs as root); ssh: over SSH "
        "to a login node")
    sudo_command: SingleLine = Field(default="sudo", description="via: sudo: the sudo program (path)")
    # via: ssh - the login node, the account, and how the hub proves who it is.
    host: Annotated[StrictStr, Field(pattern=HOST_PATTERN)] | None = Field(
        default=None, description="via: ssh: the login node (required)")
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = Field(default=22, description="via: ssh: the login node's SSH port")
    user: Annotated[StrictStr, Field(pattern=USER_TEMPLATE_PATTERN)] = Field(
        default="{user}", description="via: ssh: the remote account: \"{user}\" is the hub user's own, or one fixed account")
    key: Annotated[StrictStr, Field(pattern=KEY_PATH_PATTERN)] | None = Field(
        default=None, description="via: ssh: the private key file (required, absolute); \"{user}\" becomes the remote account")
    known_hosts: Annotated[StrictStr, Field(pattern=KEY_PATH_PATTERN)] | None = Field(
        default=None, description="via: ssh: the login node's host key (required); unknown or changed keys are refused")
    sudo: bool = Field(default=False, description="via: ssh: log in as the service account `user`, then sudo -n -u USER")
    query_user: Annotated[StrictStr, Field(pattern=NAME_PATTERN)] | None = Field(
        default=None, description="via: ssh: the account the hub's own status and queue queries run as "
                          "(default: `user` when it is one fixed account)")
    jobfiles: Annotated[StrictStr, Field(pattern=KEY_PATH_PATTERN)] | None = Field(
        default=None, description="via: ssh: hpchub-job on the login node (default: hpchub-job on its PATH)")
    service_accounts: list[Name] = Field(
        default=[], description="accounts hpchub never acts as for a hub user, whatever their uid (besides root, accounts "
                        "below uid_min and the hub's own); query_user and the user of a sudo: true login always are")
    idle_timeout: PositiveInt | None = Field(
        default=None, description="via: ssh: seconds after which a connection that ran no command is closed, unless "
                          "a tunnel or reverse forward uses it (default 300)")
    parallel_commands: PositiveInt = Field(
        default=16, description="at most this many commands run as users at once on this cluster (submissions, start "
                        "estimates, cancels, file clean-ups); the others wait their turn, and their time limit counts "
                        "from when they start. A class pressing Start together then neither floods the scheduler's "
                        "controller (500 sbatch at once made some time out on the test VM) nor runs each command "
                        "into its time limit. Read when the hub starts")

    @property
    def status_account(self) -> str | None:
        """The remote account of the hub's own queries (via: ssh)."""
        return self.query_user or (self.user if "{user}" not in self.user else None)

    @property
    def refused_accounts(self) -> tuple[str, ...]:
        """``service_accounts`` with the accounts hpchub uses for itself over SSH: the query account
        and the service account that sudo's to the users."""
        own = [self.status_account] if self.via == "ssh" else []
        if self.via == "ssh" and self.sudo:
            own.append(self.user)
        return tuple(dict.fromkeys(name for name in (*self.service_accounts, *own) if name is not None))


class Network(_Model):
    """How the hub reaches servers and jobs reach the hub (matters when the hub is off the cluster)."""

    # direct: the hub connects to node:port; tunnel: through the login node's SSH connection.
    to_servers: Literal["direct", "tunnel"] = Field(
        default="direct", description="direct: the hub connects to node:port; tunnel: through the login node (via: ssh)")
    # direct: jobs use the hub's API URL; reverse: a forward on the login node; or the API URL jobs use.
    to_hub: Annotated[StrictStr, Field(pattern=r"^(direct|reverse|https?://[^\s]+)$")] = Field(
        default="direct", description="direct: jobs use the hub's API URL; reverse: a forward on the login node (via: ssh); "
        "or the URL jobs use to reach the hub's API (reverse and http:// need c.JupyterHub.internal_ssl)")


def hub_identity_refusal(cluster: str, to_hub: str, internal_ssl: bool) -> str | None:
    """Why the hub must not run jobs with this ``to_hub`` without ``c.JupyterHub.internal_ssl``; None: fine.

    ``reverse`` hands jobs a port on the login node, which any user there can bind whenever the hub
    does not hold it (a reconnect, a hub restart); an ``http://`` URL travels in clear. Whoever
    answers there gets every job's API token and answers its token checks ("yes, this is bob").
    With internal_ssl the jobs verify the hub's certificate: an impostor learns nothing."""
    if internal_ssl or not (to_hub == "reverse" or to_hub.startswith("http://")):
        return None
    where = ("a port on the login node that any user there can bind while the hub does not hold it (after a "
             "reconnect or a hub restart)" if to_hub == "reverse" else "a plain http:// URL anyone on the way can answer")
    return (f"clusters.{cluster}.network.to_hub: {to_hub} needs c.JupyterHub.internal_ssl = True in "
            f"jupyterhub_config.py: jobs would call the hub at {where}, and whoever answers there receives every "
            "job's API token and can answer its token checks as any user; with internal_ssl the jobs verify "
            "the hub's certificate")


class SGEOptions(_Model):
    """Grid Engine details that differ between sites."""

    parallel_environment: Name = Field(default="smp", description="the parallel environment of jobs with cores > 1 (-pe NAME N)")
    memory_resource: Name = Field(default="h_vmem", description="the memory request (-l NAME=...)")
    memory_per_slot: bool = Field(
        default=True, description="Grid Engine counts the memory resource per slot: a job's memory is divided by its cores")
    gpu_resource: Name = Field(default="gpu", description="the GPU request (-l NAME=N)")
    # Debian's qstat, qsub, ... on the PATH are one wrapper script that works out the architecture
    # (twice, about 14 processes) at every call: 0.17 s and 80 ms of CPU where the binary takes 0.02 s.
    commands_dir: Annotated[StrictStr, Field(pattern=ABSOLUTE_PATH_PATTERN)] | None = Field(
        default=None, description="the directory of Grid Engine's own binaries ($SGE_ROOT/bin/$ARCH; Debian: "
                          "/usr/lib/gridengine): the hub's status and queue queries run them directly")
    root: Annotated[StrictStr, Field(pattern=ABSOLUTE_PATH_PATTERN)] | None = Field(
        default=None, description="SGE_ROOT for those binaries (required with commands_dir)")
    cell: Name = Field(default="default", description="SGE_CELL for those binaries")
    reservation_owners: list[Name] = Field(
        default=[], description="accounts, besides Grid Engine's managers and operators, whose advance "
        "reservations a profile's reservation may name: any user in the arusers list can make one under any name")


class Cluster(_Model):
    """One cluster: its scheduler, how the hub reaches it, and its queues."""

    scheduler: Literal["slurm", "sge"] = Field(description="the scheduler backend")
    submit: Submit = Field(description="how jobs are submitted (required, no default)")
    network: Network = Field(default=Network(), description="how the hub and the jobs reach each other")
    environment: Environment = Field(default=Environment(), description="how every job of this cluster gets its software")
    queues: dict[Name, QueueLimits] = Field(
        min_length=1, description="Slurm partitions or Grid Engine queues, by name, with what one job may have")
    sge: SGEOptions = Field(default=SGEOptions(), description="Grid Engine only")


class Resources(_Model):
    """What one job asks for; cores, memory and gpus are per node."""

    cores: PositiveInt = Field(default=1, description="cores per node")
    memory: MemoryValue | None = Field(default=None, description="memory per node (512M, 4G, 1T); unset: the queue's default")
    walltime: WalltimeValue = Field(description="HH:MM:SS (hours may exceed 24) or D-HH:MM:SS")
    gpus: NonNegativeInt = Field(default=0, description="GPUs per node")
    nodes: PositiveInt = Field(default=1, description="nodes (Grid Engine: 1)")


class IntRange(_Model):
    """A number the user may change: within min/max, or one of the choices."""

    min: NonNegativeInt | None = Field(default=None, description="the smallest value")
    max: NonNegativeInt | None = Field(default=None, description="the largest value")
    choices: list[NonNegativeInt] | None = Field(default=None, min_length=1, description="the values offered")


class MemoryRange(_Model):
    """Memory the user may change: within min/max, or one of the choices."""

    min: MemoryValue | None = Field(default=None, description="the least memory")
    max: MemoryValue | None = Field(default=None, description="the most memory")
    choices: list[MemoryValue] | None = Field(default=None, min_length=1, description="the sizes offered")


class WalltimeRange(_Model):
    """A walltime the user may change: within min/max, or one of the choices."""

    min: WalltimeValue | None = Field(default=None, description="the shortest walltime")
    max: WalltimeValue | None = Field(default=None, description="the longest walltime")
    choices: list[WalltimeValue] | None = Field(default=None, min_length=1, description="the walltimes offered")


class NameChoices(_Model):
    """Names the user may pick from (they must include the profile's own)."""

    choices: list[Name] = Field(min_length=1, description="the names offered")


@dataclass(frozen=True)
class FromScheduler:
    """``{from_scheduler: true}``: whatever the scheduler lets the user have (asked when the form is drawn)."""


def _allocation_setting(value: Any) -> str | tuple[str, ...] | FromScheduler:
    """``account``/``qos``/``reservation`` of a profile: a fixed name, a list of choices, or
    ``{from_scheduler: true}``. One validator instead of a union, so a mistake gives one message."""
    if isinstance(value, (FromScheduler, tuple)):
        return value
    if isinstance(value, str):
        return _allocation_name(value)
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list; give at least one name, or leave the key out")
        names = tuple(_allocation_name(item) for item in value)
        if len(set(names)) != len(names):
            raise ValueError(f"lists a name twice: {list(names)}")
        return names
    if isinstance(value, dict):
        if value == {"from_scheduler": True}:
            return FromScheduler()
        raise ValueError(f"a mapping here must be {{from_scheduler: true}}, got {value!r}")
    raise ValueError(f"give a name, a list of names or {{from_scheduler: true}}, got {value!r}")


def _allocation_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a name")
    if not re.match(NAME_PATTERN, value):
        raise ValueError(f"{value!r} has characters that are not allowed here (pattern {NAME_PATTERN})")
    return value


def _allocation_json(value: str | tuple[str, ...] | FromScheduler) -> Any:
    return {"from_scheduler": True} if isinstance(value, FromScheduler) else list(value) if isinstance(value, tuple) \
        else value


AllocationSetting = Annotated[
    str | tuple[str, ...] | FromScheduler, PlainValidator(_allocation_setting), PlainSerializer(_allocation_json)
]
ALLOCATION_FIELDS = ("account", "qos", "reservation")


@dataclass(frozen=True)
class AllocationRule:
    """What one profile lets a user put in ``account``, ``qos`` or ``reservation``, read from the setting.

    - unset: nothing (the scheduler's own default); a fixed name: that, the user cannot change it;
    - a list: one of them, the first preselected (the user must pick one);
    - ``{from_scheduler: true}``: what the scheduler allows this user; account and QoS preselect the
      scheduler's defaults for the user, a reservation is optional (none preselected);
    - the older ``account: NAME`` with ``user_adjustable.account.choices``: one of the choices, NAME
      preselected (no ``account``: none preselected, the scheduler's default account).
    """

    field: str
    choices: tuple[str, ...] = ()  # the admin's list (empty with from_scheduler: the scheduler's list)
    default: str | None = None
    from_scheduler: bool = False
    # The user may leave it empty (nothing on the job: the scheduler decides).
    optional: bool = True

    @property
    def adjustable(self) -> bool:
        return self.from_scheduler or len(self.choices) > 1 or (len(self.choices) == 1 and self.default is None)

    @property
    def fixed(self) -> str | None:
        """The one value when the user has no say."""
        return None if self.adjustable else self.default


class UserAdjustable(_Model):
    """The fields a user may change in the spawn form or through ``user_options``."""

    cores: IntRange | None = Field(default=None, description="cores per node: min/max or choices")
    memory: MemoryRange | None = Field(default=None, description="memory per node: min/max or choices")
    walltime: WalltimeRange | None = Field(default=None, description="walltime: min/max or choices")
    gpus: IntRange | None = Field(default=None, description="GPUs per node: min/max or choices")
    nodes: IntRange | None = Field(default=None, description="nodes: min/max or choices")
    queue: NameChoices | None = Field(default=None, description="queues to choose from")
    account: NameChoices | None = Field(
        default=None, description="accounts to choose from (the older form of a profile's `account` list)")

    def fields(self) -> dict[str, Any]:
        return {name: value for name, value in self if value is not None}


class Profile(_Model):
    """What a user picks in the spawn form: a job on one cluster's queue, its resources, and who may use it."""

    slug: Annotated[StrictStr, Field(pattern=SLUG_PATTERN)] = Field(description="[a-z0-9-]+, unique; in links and job names")
    name: SingleLine = Field(description="shown to users")
    description: StrictStr = Field(default="", description="shown to users")
    cluster: StrictStr = Field(description="a key of `clusters`")
    queue: Name = Field(description="a queue of that cluster")
    resources: Resources = Field(description="what one job asks for")
    user_adjustable: UserAdjustable = Field(
        default=UserAdjustable(), description="what a user may change (form, user_options, --set)")
    # Each: a fixed name, a list of choices or {from_scheduler: true} (see AllocationRule).
    account: AllocationSetting | None = Field(
        default=None, description="Slurm account / Grid Engine project (-P): a name (fixed), a list (the user picks, the "
        "first preselected) or {from_scheduler: true} (what the scheduler allows this user, their default preselected)")
    qos: AllocationSetting | None = Field(default=None, description="Slurm only")
    reservation: AllocationSetting | None = Field(
        default=None, description="a name pins the reservation (a course profile); on Grid Engine the AR's name (-N), "
        "used only if exactly one AR of a manager, operator or sge.reservation_owners account has it")
    directives: list[SingleLine] = Field(default=[], description="extra scheduler directives, admin-only, passed as given")
    environment: Environment | None = Field(
        default=None, description="added to the cluster's environment (modules appended, env merged)")
    # Who may use the profile (all four empty: everyone). Each list holds the names of one name space,
    # so that a hub user and a unix account (or a JupyterHub group and a unix group) that happen to
    # share a name never get each other's profiles.
    hub_users: list[SingleLine] = Field(default=[], description="JupyterHub user names")
    hub_groups: list[SingleLine] = Field(default=[], description="JupyterHub group names")
    unix_users: list[SingleLine] = Field(default=[], description="unix accounts (the account a hub user runs as, "
                                                         "HPCSpawner.unix_account)")
    unix_groups: list[SingleLine] = Field(default=[], description="unix/LDAP groups of that account, secondary ones "
                                                          "included")
    template: Annotated[StrictStr, Field(pattern=TEMPLATE_PATTERN)] | None = Field(
        default=None, description="a template name to use instead of the scheduler's default")
    requeue: bool = Field(
        default=False, description="let the scheduler requeue the job (node failure, preemption); off: a server job "
        "that died stays ended instead of coming back as another job under the same id",
    )

    def allocation_rules(self) -> dict[str, AllocationRule]:
        """Every field's rule (ALLOCATION_FIELDS), at once: what resolving a choice reads."""
        return {field: self.allocation(field) for field in ALLOCATION_FIELDS}

    def allocation(self, field: str) -> AllocationRule:
        """The rule for ``field`` (one of ALLOCATION_FIELDS), from its setting."""
        setting = getattr(self, field)
        legacy = self.user_adjustable.account if field == "account" else None
        if isinstance(setting, FromScheduler):
            # The scheduler always has a default account for a user; "none" would mean the same.
            return AllocationRule(field, from_scheduler=True, optional=field != "account")
        if isinstance(setting, tuple):
            return AllocationRule(field, setting, setting[0], optional=False)
        if legacy is not None:
            return AllocationRule(field, tuple(legacy.choices), setting, optional=setting is None)
        if setting is None:
            return AllocationRule(field)
        return AllocationRule(field, (setting,), setting, optional=False)


class SiteConfig(_Model):
    """The site config file: one YAML file per site."""

    site: SingleLine = Field(description="the site's display name")
    clusters: dict[Name, Cluster] = Field(min_length=1, description="the clusters, by key")
    profiles: list[Profile] = Field(min_length=1, description="what users may start")
    templates_dir: StrictStr | None = Field(
        default=None, description="job templates searched before the packaged ones (relative to this file); "
        "`hpchub/NAME` always names the packaged template NAME")
    # The smallest uid a job may run as; unset: UID_MIN from /etc/login.defs.
    uid_min: NonNegativeInt | None = Field(
        default=None, description="the smallest uid a job may run as (default: UID_MIN of /etc/login.defs, 1000 without it)")

    # Set by load_site_config: where the file was, to resolve relative paths.
    _source: Path | None = pydantic.PrivateAttr(None)
    # Set by parse_site_config: names and lines of the keys, for checks that name FILE:LINE later.
    _keys: Any = pydantic.PrivateAttr(None)  # a _PathNamer

    @property
    def source(self) -> Path | None:
        return self._source

    def key(self, *loc: str | int) -> tuple[str, int | None]:
        """A key's readable name (``profiles[gpu].environment``; a profile is given by its index) and
        the line it is on (the nearest enclosing key's line when the key itself is not written)."""
        if self._keys is None:
            return ".".join(str(part) for part in loc), None
        return self._keys.name(loc), self._keys.line(loc)

    def profile(self, slug: str) -> Profile:
        for profile in self.profiles:
            if profile.slug == slug:
                return profile
        raise KeyError(slug)

    @property
    def effective_uid_min(self) -> int:
        """The smallest uid a job may run as: ``uid_min`` if the site sets it, else the system's."""
        return self.uid_min if self.uid_min is not None else login_defs_uid_min()

    def templates_path(self) -> Path | None:
        if self.templates_dir is None:
            return None
        path = Path(self.templates_dir)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


@dataclass(frozen=True)
class Identity:
    """Who asks for a profile, in both name spaces: the hub user and its JupyterHub groups, the unix
    account it runs as and that account's groups (None/empty where unknown, e.g. ``hpchub check``
    knows only unix accounts)."""

    hub_user: str | None = None
    hub_groups: frozenset[str] = frozenset()
    unix_user: str | None = None
    unix_groups: frozenset[str] = frozenset()


def profile_allows(profile: Profile, who: Identity) -> bool:
    """Whether ``who`` may use ``profile``: it names nobody, or each of its lists is matched only
    against names of its own name space (``hub_users`` the hub name, ``unix_groups`` the account's
    unix groups, ...): a unix account called like a hub user is not that user, nor a JupyterHub
    group a unix group of the same name."""
    if not (profile.hub_users or profile.hub_groups or profile.unix_users or profile.unix_groups):
        return True
    return (who.hub_user is not None and who.hub_user in profile.hub_users
            or who.unix_user is not None and who.unix_user in profile.unix_users
            or not who.hub_groups.isdisjoint(profile.hub_groups)
            or not who.unix_groups.isdisjoint(profile.unix_groups))


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str
    line: int | None = None


class SiteConfigError(ValueError):
    """A site config that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        super().__init__(self.format())

    def format(self) -> str:
        lines = []
        for problem in self.problems:
            where = f"{self.source}:{problem.line}" if problem.line else self.source
            lines.append(f"{where}: {problem.path}: {problem.message}" if problem.path else f"{where}: {problem.message}")
        return "\n".join(lines)


def load_site_config(path: str | Path) -> SiteConfig:
    """Read, validate and cross-check a site config file; raise SiteConfigError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SiteConfigError(str(path), [ConfigProblem("", f"cannot read: {error.strerror}")]) from None
    return parse_site_config(text, source=path)


class SiteConfigFile:
    """A site config file that follows edits: ``current()`` re-reads it when its content changed,
    keeps the last good config when an edit is invalid (logging the errors once per bad content),
    and raises only if the file was never valid. ``generation`` goes up each time a new good
    config is taken, so callers know when to rebuild what they made from the old one."""

    # A file changed twice within this many seconds can keep its mtime and size (coarse
    # timestamps): such a stat is not trusted, and the next call hashes the content again.
    _RACY_SECONDS = 2.0

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.generation = 0
        self.last_error: SiteConfigError | None = None
        self._site: SiteConfig | None = None
        self._good_digest: str | None = None
        self._seen_digest: str | None = None  # the content of the last read, good or bad
        self._seen_stat: tuple | None = None

    def current(self) -> SiteConfig:
        try:
            stat = os.stat(self.path)
        except OSError as error:
            self._seen_stat = None
            return self._bad(f"stat:{error.strerror}", _unreadable(self.path, error))
        stat_key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if stat_key == self._seen_stat:
            return self._unchanged()
        try:
            content = self.path.read_bytes()
        except OSError as error:
            self._seen_stat = None
            return self._bad(f"read:{error.strerror}", _unreadable(self.path, error))
        racy = time.time() - stat.st_mtime < self._RACY_SECONDS
        self._seen_stat = None if racy else stat_key
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._seen_digest:  # touched, or written with the same text
            return self._unchanged()
        if digest == self._good_digest and self._site is not None:  # back to the content in use
            self._seen_digest = digest
            self.last_error = None
            return self._site
        try:
            site = parse_site_config(content.decode("utf-8", errors="replace"), source=self.path)
        except SiteConfigError as error:
            return self._bad(digest, error)
        self._seen_digest = digest
        self._site = site
        self._good_digest = digest
        self.last_error = None
        self.generation += 1
        if self.generation > 1:
            log.info("site config %s changed: the new version is in use for new servers", self.path)
        return site

    def _unchanged(self) -> SiteConfig:
        if self._site is None:
            assert self.last_error is not None
            raise self.last_error
        return self._site

    def _bad(self, fingerprint: str, error: SiteConfigError) -> SiteConfig:
        """An unusable file; ``fingerprint`` names the content (or the OS error) so it is logged once."""
        if fingerprint != self._seen_digest:
            if self._site is None:
                log.error("site config %s is not usable:\n%s", self.path, error.format())
            else:
                log.error("site config %s: the edit is not usable, the last good version stays in use:\n%s",
                          self.path, error.format())
        self._seen_digest = fingerprint
        self.last_error = error
        if self._site is None:
            raise error
        return self._site


def _unreadable(path: Path, error: OSError) -> SiteConfigError:
    return SiteConfigError(str(path), [ConfigProblem("", f"cannot read: {error.strerror}")])


def parse_site_config(text: str, source: Path | str = "<site config>") -> SiteConfig:
    source_name = str(source)
    try:
        data, lines = load_yaml(text)
    except YAMLFileError as error:
        raise SiteConfigError(source_name, [ConfigProblem("", str(error), error.line)]) from None
    if not isinstance(data, dict):
        raise SiteConfigError(source_name, [ConfigProblem("", "must be a mapping with keys site, clusters, profiles")])
    namer = _PathNamer(data, lines)
    try:
        site = SiteConfig.model_validate(data)
    except pydantic.ValidationError as error:
        problems = [namer.problem(e) for e in error.errors()]
        raise SiteConfigError(source_name, problems) from None
    site._source = Path(source) if isinstance(source, Path) else None
    site._keys = namer
    problems = [namer.resolve(p) for p in check_references_and_limits(site)]
    if problems:
        raise SiteConfigError(source_name, problems)
    return site


class _PathNamer:
    """Turns key paths into readable names (``profiles[gpu].resources``) with line numbers."""

    def __init__(self, data: dict, lines: dict):
        self.data = data
        self.lines = lines

    def name(self, loc: tuple) -> str:
        parts: list[str] = []
        node: Any = self.data
        for key in loc:
            if isinstance(key, int) and isinstance(node, list):
                item = node[key] if key < len(node) else None
                slug = item.get("slug") if isinstance(item, dict) else None
                parts.append(f"[{slug}]" if isinstance(slug, str) and slug else f"[{key}]")
                node = item
            else:
                parts.append(f".{key}" if parts else str(key))
                node = node.get(key) if isinstance(node, dict) else None
        return "".join(parts)

    def line(self, loc: tuple) -> int | None:
        for end in range(len(loc), -1, -1):
            if tuple(loc[:end]) in self.lines:
                return self.lines[tuple(loc[:end])]
        return None

    def problem(self, error: Any) -> ConfigProblem:
        loc = tuple(error["loc"])
        if loc and loc[-1] == "[key]":  # pydantic's marker for "the dict key itself is wrong"
            loc = loc[:-1]
        kind = error["type"]
        if kind == "extra_forbidden":
            parent_loc, key = loc[:-1], loc[-1]
            if _field_of(loc) in _REPLACED_KEYS:
                return ConfigProblem(self.name(loc), _REPLACED_KEYS[_field_of(loc)], self.line(loc))
            message = f"unknown key {key!r}"
            allowed = self._allowed_keys(parent_loc)
            if allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                message += f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            return ConfigProblem(self.name(loc), message, self.line(loc))
        if kind == "missing":
            message = _REQUIRED_MESSAGES.get(_field_of(loc), "required key is missing")
            return ConfigProblem(self.name(loc), message, self.line(loc))
        if kind == "string_pattern_mismatch":
            value = error.get("input")
            return ConfigProblem(
                self.name(loc),
                f"{value!r} has characters that are not allowed here (pattern {error['ctx']['pattern']})",
                self.line(loc),
            )
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if kind in ("int_type", "string_type", "bool_type", "dict_type", "list_type", "model_type"):
            message = f"{message}, got {error.get('input')!r}"
        return ConfigProblem(self.name(loc), message, self.line(loc))

    def resolve(self, problem: _RawProblem) -> ConfigProblem:
        return ConfigProblem(self.name(problem.loc), problem.message, self.line(problem.loc))

    def _allowed_keys(self, parent_loc: tuple) -> list[str]:
        model: Any = SiteConfig
        container = False  # the previous key was a dict or list field: this key is an item key
        for key in parent_loc:
            if container:
                container = False
                continue
            field = model.model_fields.get(key) if model is not None else None
            if field is None:
                return []
            model = _model_of(field.annotation)
            container = _is_container(field.annotation)
        return list(model.model_fields) if model is not None and not container else []


# Keys of older versions whose meaning cannot be carried over unambiguously: what to write instead.
_REPLACED_KEYS = {
    ("profiles", "users"): "no longer a key: it matched the hub user name or the unix account, so a hub user and "
                           "a unix account of the same name got each other's profiles; write hub_users: [...] for "
                           "JupyterHub user names and/or unix_users: [...] for unix accounts",
    ("profiles", "groups"): "no longer a key: it matched JupyterHub groups and unix groups alike, so a group of "
                            "one kind got the profiles of a same-named group of the other; write unix_groups: [...] "
                            "for unix/LDAP groups and/or hub_groups: [...] for JupyterHub groups",
}

# Required keys whose absence deserves more than "required key is missing".
_REQUIRED_MESSAGES = {
    ("clusters", "submit"): "required: how jobs are submitted (sudo, local or ssh)",
    ("clusters", "submit", "via"): "required: how jobs are submitted (sudo, local or ssh)",
}


def _field_of(loc: tuple) -> tuple:
    """``loc`` without the item keys (cluster names, list indexes): which field of the schema it is."""
    if len(loc) >= 2 and loc[0] == "clusters":
        return ("clusters", *loc[2:])
    return tuple(key for key in loc if not isinstance(key, int))


def _is_container(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    if origin in (dict, list):
        return True
    return any(_is_container(arg) for arg in getattr(annotation, "__args__", ()) or () if arg is not type(None))


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ()) or ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class _RawProblem:
    loc: tuple
    message: str


def check_references_and_limits(site: SiteConfig) -> list[_RawProblem]:
    """Cross-checks pydantic cannot do field by field: references and queue limits."""
    problems: list[_RawProblem] = []
    for cluster_name, cluster_config in site.clusters.items():
        problems += _check_submit(cluster_name, cluster_config)
    seen_slugs: set[str] = set()
    for index, profile in enumerate(site.profiles):
        at = ("profiles", index)
        if profile.slug in seen_slugs:
            problems.append(_RawProblem(at + ("slug",), f"slug {profile.slug!r} is used by an earlier profile"))
        seen_slugs.add(profile.slug)
        cluster = site.clusters.get(profile.cluster)
        if cluster is None:
            problems.append(
                _RawProblem(at + ("cluster",), f"no cluster {profile.cluster!r} (clusters: {', '.join(site.clusters)})")
            )
            continue
        queues = [profile.queue]
        if profile.user_adjustable.queue:
            queues += [q for q in profile.user_adjustable.queue.choices if q != profile.queue]
        for queue in queues:
            if queue not in cluster.queues:
                field = "queue" if queue == profile.queue else "user_adjustable.queue"
                problems.append(
                    _RawProblem(
                        at + tuple(field.split(".")),
                        f"cluster {profile.cluster!r} has no queue {queue!r} (queues: {', '.join(cluster.queues)})",
                    )
                )
                continue
            problems += _check_against_queue(profile, queue, cluster.queues[queue], at)
        if cluster.scheduler == "sge" and (profile.resources.nodes > 1 or profile.user_adjustable.nodes):
            problems.append(
                _RawProblem(at + ("resources", "nodes"), "Grid Engine profiles run a server on one host: nodes must be 1")
            )
        problems += _check_bounds_consistent(profile, at)
        problems += _check_allocations(profile, cluster, at)
        problems += _check_container(profile, cluster, at)
    return _unique(problems)


def _check_container(profile: Profile, cluster: Cluster, at: tuple) -> list[_RawProblem]:
    """The profile's container (its own merged into its cluster's): a runtime, an image, images the
    runtime can take, labels users can tell apart; no venv or conda env of the node around it."""
    environment = cluster.environment.extended_by(profile.environment)
    container = environment.container
    if container is None:
        return []
    own = profile.environment.container if profile.environment is not None else None
    profile_at, cluster_at = at + ("environment", "container"), ("clusters", profile.cluster, "environment", "container")

    def where(*keys: str) -> tuple:
        """The container key the value of ``keys[0]`` comes from: the profile's if it sets it, else the cluster's."""
        sets_it = own is not None and bool(set(keys) & own.model_fields_set)
        return profile_at if sets_it or cluster.environment.container is None else cluster_at

    problems = []
    if container.runtime is None:
        problems.append(_RawProblem(where("runtime"), "runtime is required: podman, apptainer or singularity"))
    if container.image is None and not container.images:
        problems.append(_RawProblem(where("image", "images"), "give an image (or images to pick from)"))
    images_at = where("image", "images")
    if container.runtime is not None:
        if container.image is not None:
            problem = image_problem(container.runtime, container.image)
            if problem is not None:
                problems.append(_RawProblem(images_at + ("image",), problem))
        for index, offered in enumerate(container.images):
            problem = image_problem(container.runtime, offered.image)
            if problem is not None:
                problems.append(_RawProblem(images_at + ("images", index, "image"), problem))
    labels = [offered.label for offered in container.images]
    for index, label in enumerate(labels):
        if label in labels[:index]:
            problems.append(_RawProblem(images_at + ("images", index, "label"), f"label {label!r} is used by an "
                                        "earlier image: users pick images by their label"))
    if container.image is not None and container.images and container.image not in (i.image for i in container.images):
        problems.append(_RawProblem(images_at + ("image",), "with images, image names the one preselected: it must "
                                    "be one of them (or leave it out: the first is preselected)"))
    if environment.allows_user_envs:
        user_envs_at = at if profile.environment is not None and profile.environment.user_envs is not None \
            else ("clusters", profile.cluster)
        problems.append(_RawProblem(user_envs_at + ("environment", "user_envs"), "a user's own venv or conda env "
                                    "and a container image exclude each other: the server runs the image's Python, "
                                    "and an env built on the nodes does not run inside it (offer the image and the "
                                    "user envs in two profiles)"))
    for key in ("venv", "conda_env"):
        if getattr(environment, key) is not None:
            env_at = at if profile.environment is not None and getattr(profile.environment, key) is not None \
                else ("clusters", profile.cluster)
            problems.append(_RawProblem(env_at + ("environment", key), f"a {key} of the node means nothing inside the "
                                        "container image: the image brings its own Python (modules and the prologue "
                                        "still run on the node, e.g. to load the container runtime)"))
    return problems


def _check_allocations(profile: Profile, cluster: Cluster, at: tuple) -> list[_RawProblem]:
    problems = []
    if cluster.scheduler == "sge" and profile.qos is not None:
        problems.append(_RawProblem(at + ("qos",), "Grid Engine has no QoS; remove qos (account means the project, -P)"))
    if profile.user_adjustable.account is not None and isinstance(profile.account, (tuple, FromScheduler)):
        problems.append(_RawProblem(at + ("user_adjustable", "account"), "account already says what users may choose "
                                    "(a list or from_scheduler); remove user_adjustable.account"))
    return problems


_SSH_ONLY = ("host", "key", "known_hosts", "query_user", "jobfiles", "idle_timeout")


def _check_submit(name: str, cluster: Cluster) -> list[_RawProblem]:
    """The keys ``via: ssh`` needs, and no SSH key where it means nothing."""
    submit, at = cluster.submit, ("clusters", name, "submit")
    problems = []
    if submit.via == "ssh":
        for key in ("host", "key", "known_hosts"):
            if getattr(submit, key) is None:
                problems.append(_RawProblem(at + (key,), f"required with via: ssh ({_SSH_KEY_HELP[key]})"))
        if submit.sudo and "{user}" in submit.user:
            problems.append(_RawProblem(at + ("user",), "with sudo: true, user is the service account hpchub logs in as "
                                                         "(a fixed name, not {user})"))
        if submit.status_account is None:
            problems.append(_RawProblem(at + ("query_user",), "required when user is {user}: the account whose key runs "
                                                               "the hub's status and queue queries"))
    else:
        for key in _SSH_ONLY:
            if getattr(submit, key) is not None:
                problems.append(_RawProblem(at + (key,), f"only means something with via: ssh (this cluster has via: "
                                                         f"{submit.via})"))
        if submit.sudo:
            problems.append(_RawProblem(at + ("sudo",), "only means something with via: ssh"))
    if cluster.sge.commands_dir is not None and cluster.sge.root is None:
        problems.append(_RawProblem(("clusters", name, "sge", "commands_dir"), "needs sge.root too (the SGE_ROOT the "
                                                                               "binaries run with)"))
    network = cluster.network
    if submit.via != "ssh" and (network.to_servers == "tunnel" or network.to_hub == "reverse"):
        problems.append(_RawProblem(("clusters", name, "network"), "tunnels and reverse forwards need via: ssh"))
    return problems


_SSH_KEY_HELP = {
    "host": "the login node",
    "key": "the private key file; {user} stands for the user's name",
    "known_hosts": "the login node's host key; hpchub never accepts an unknown one",
}


def _unique(problems: list[_RawProblem]) -> list[_RawProblem]:
    return list(dict.fromkeys(problems))


_LIMITS = {
    "walltime": "max_walltime",
    "cores": "max_cores",
    "memory": "max_memory",
    "nodes": "max_nodes",
    "gpus": "max_gpus",
}


def _check_against_queue(profile: Profile, queue_name: str, queue: QueueLimits, at: tuple) -> list[_RawProblem]:
    problems = []
    for field, limit_name in _LIMITS.items():
        limit = getattr(queue, limit_name)
        if limit is None:
            continue
        value = getattr(profile.resources, field)
        if value is not None and value > limit:
            problems.append(
                _RawProblem(
                    at + ("resources", field),
                    f"{value} exceeds queue {queue_name!r} limit {limit}",
                )
            )
        bound = getattr(profile.user_adjustable, field)
        if bound is None:
            continue
        for key, candidate in (("max", bound.max), *(("choices", c) for c in bound.choices or ())):
            if candidate is not None and candidate > limit:
                problems.append(
                    _RawProblem(
                        at + ("user_adjustable", field, key),
                        f"{candidate} exceeds queue {queue_name!r} limit {limit}",
                    )
                )
    return problems


def _check_bounds_consistent(profile: Profile, at: tuple) -> list[_RawProblem]:
    problems = []
    for field, bound in profile.user_adjustable.fields().items():
        where = at + ("user_adjustable", field)
        default = getattr(profile, field) if field in ("queue", "account") else getattr(profile.resources, field)
        if field in ("queue", "account"):
            if isinstance(default, str) and default not in bound.choices:
                problems.append(_RawProblem(where + ("choices",), f"must include the profile's own {field} {default!r}"))
            continue
        if bound.choices is not None and (bound.min is not None or bound.max is not None):
            problems.append(_RawProblem(where, "give either choices or min/max, not both"))
            continue
        if bound.min is not None and bound.max is not None and bound.min > bound.max:
            problems.append(_RawProblem(where, f"min {bound.min} is larger than max {bound.max}"))
        if default is None:
            continue
        if bound.choices is not None and default not in bound.choices:
            problems.append(_RawProblem(where + ("choices",), f"must include the profile's default {default}"))
        if bound.min is not None and default < bound.min:
            problems.append(_RawProblem(where + ("min",), f"the profile's default {default} is below min {bound.min}"))
        if bound.max is not None and default > bound.max:
            problems.append(_RawProblem(where + ("max",), f"the profile's default {default} is above max {bound.max}"))
    return problems
