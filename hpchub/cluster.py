"""Talking to one cluster: a scheduler backend plus a transport (how argv runs on behalf of a
user), all through the one command runner.

Who runs what:
- status, queue and node queries run as the hub's own account;
- everything done for a user (submit, cancel, the user's files under ~/.hpchub) runs AS that user:
  ``sudo -n -u USER -- ...`` with ``via: sudo``, or directly where hpchub already runs as the
  user (a notebook's engine launcher). The user's files are handled only by ``hpchub-job``
  (hpchub/jobfiles.py), a command with fixed subcommands, so the hub needs no right to run
  ``tee``, ``rm`` or ``tail`` as anyone.
- ``via: local`` runs every user's job as the hub's own account; it is refused when that is root.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .runner import DEFAULT_TIMEOUT, CommandResult, run_command
from .schedulers import JobStatus, QueueInfo, SchedulerBackend, backend_for

# Scheduler clients need these from the hub's environment; nothing else is passed on, so a
# token in the hub's environment never reaches a job through sbatch's default --export=ALL.
_SCHEDULER_ENV = ("SLURM_CONF", "SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT", "SGE_ARCH", "HOME", "USER")
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JOBFILES_COMMAND = "hpchub-job"


def scheduler_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", _SAFE_PATH), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update({key: os.environ[key] for key in _SCHEDULER_ENV if key in os.environ})
    return env


def default_jobfiles_command() -> str:
    """``hpchub-job`` of this installation (next to the running Python): the absolute path a
    sudoers rule names."""
    beside = Path(sys.executable).parent / JOBFILES_COMMAND
    return str(beside) if beside.exists() else JOBFILES_COMMAND


class AccountRefused(PermissionError):
    """hpchub will not act as this account (root, a system account, the hub itself)."""


@dataclass(frozen=True)
class ClusterSpec:
    """Everything needed to reach a cluster and act for its users, without the site config: the
    spawner keeps it in its state, so a running job is found and cancelled even after the site
    config lost that cluster or is broken."""

    name: str
    scheduler: str
    via: str  # sudo | local (| ssh later)
    sudo: str = "sudo"
    jobfiles: str = JOBFILES_COMMAND
    uid_min: int = 1000

    @classmethod
    def from_site(cls, site: Any, name: str) -> ClusterSpec:
        cluster = site.clusters[name]
        return cls(
            name=name, scheduler=cluster.scheduler, via=cluster.submit.via, sudo=cluster.submit.sudo,
            jobfiles=default_jobfiles_command(), uid_min=site.effective_uid_min,
        )

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClusterSpec:
        fields = {key: state[key] for key in cls.__dataclass_fields__ if key in state}
        return cls(**fields)

    def as_current_user(self) -> ClusterSpec:
        """The same cluster from a process that already runs as the user (a notebook's launcher)."""
        return ClusterSpec(self.name, self.scheduler, "local", self.sudo, default_jobfiles_command(), self.uid_min)


class ClusterClient:
    """Submit, query, cancel and describe queues on one cluster."""

    def __init__(self, spec: ClusterSpec, timeout: float = DEFAULT_TIMEOUT):
        self.spec = spec
        self.name = spec.name
        self.backend: SchedulerBackend = backend_for(spec.scheduler)
        self.timeout = timeout

    # -- transport -----------------------------------------------------------------------------
    def check_account(self, user: str) -> None:
        """Refuse to act as root, a system account, or the hub's own account (sudo), and refuse to
        run users' jobs as root (local)."""
        if self.spec.via == "local":
            if os.geteuid() == 0:
                raise AccountRefused(
                    f"cluster {self.name!r}: submit via 'local' runs every user's job as the hub's account, "
                    "which is root here; use 'via: sudo'")
            return
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise AccountRefused(f"no unix account {user!r} on this host") from None
        if uid < self.spec.uid_min:
            raise AccountRefused(f"account {user!r} has uid {uid}, below the site's minimum {self.spec.uid_min}: "
                                 "hpchub does not run jobs as system accounts")
        if uid == os.getuid():
            raise AccountRefused(f"account {user!r} is the hub's own account: hpchub runs jobs as the users only")

    def as_user(self, user: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as it is run on behalf of ``user`` (never through a shell)."""
        self.check_account(user)
        if self.spec.via == "sudo":
            return [self.spec.sudo, "-n", "-u", user, "--", *argv]
        return list(argv)

    async def run(self, argv: Sequence[str], *, user: str | None = None, input: str | None = None) -> CommandResult:
        if user is not None:
            argv = self.as_user(user, argv)
        return await run_command(argv, input=input, timeout=self.timeout, env=scheduler_env())

    # -- the user's side: one call of hpchub-job each --------------------------------------------
    async def submit(self, user: str, key: str, script: str, files: Mapping[str, str], keep_days: int | None = None) -> str:
        """Write the job's files (mode 600 under ~/.hpchub/jobs/KEY) and submit ``script``, as
        ``user``, in one call; return the job id. On a refused submission nothing is left behind."""
        payload: dict[str, Any] = {"files": dict(files), "script": script}
        if keep_days is not None:
            payload["keep_days"] = keep_days
        result = await self.run([self.spec.jobfiles, "submit", key, self.spec.scheduler], user=user,
                                input=json.dumps(payload))
        return self.backend.parse_submit(result.stdout)

    async def remove_files(self, user: str, key: str) -> None:
        await self.run([self.spec.jobfiles, "remove", key], user=user)

    async def read_log_tail(self, user: str, log_name: str, lines: int) -> str:
        """The last ``lines`` lines of the user's job output ~/.hpchub/logs/LOG_NAME."""
        return (await self.run([self.spec.jobfiles, "tail", log_name, str(lines)], user=user)).stdout

    # -- the scheduler -------------------------------------------------------------------------
    async def status(self, users: Sequence[str] | None = None) -> dict[str, JobStatus]:
        """Every job (of ``users``, or of everybody) in one scheduler call, as the hub."""
        result = await self.run(self.backend.status_argv(users))
        return self.backend.parse_status(result.stdout)

    async def job_names(self, user: str) -> dict[str, str]:
        """Job id -> job name for the user's jobs (names are the user's text: asked for only here)."""
        result = await self.run(self.backend.job_names_argv(user))
        return self.backend.parse_job_names(result.stdout, user)

    async def cancel(self, user: str, job_ids: Sequence[str]) -> None:
        await self.run(self.backend.cancel_argv(job_ids), user=user)

    async def queue_info(self) -> list[QueueInfo]:
        outputs = [(await self.run(argv)).stdout for argv in self.backend.queue_info_argvs()]
        return self.backend.parse_queue_info(outputs)

    async def node_address(self, node: str) -> str | None:
        """The node's address as the scheduler knows it (None: ask DNS)."""
        argv = self.backend.node_address_argv(node)
        if argv is None:
            return None
        return self.backend.parse_node_address((await self.run(argv)).stdout)

    async def queue_nodes(self, queue: str) -> list[tuple[str, str | None]]:
        """(node, the scheduler's address or None) for every node of ``queue``."""
        return self.backend.parse_queue_nodes((await self.run(self.backend.queue_nodes_argv(queue))).stdout)

    async def explain(self, job_id: str) -> str | None:
        """The scheduler's own words on why a job is held or in error."""
        return self.backend.parse_explain((await self.run(self.backend.explain_argv(job_id))).stdout)


def client_for(site: Any, name: str) -> ClusterClient:
    return ClusterClient(ClusterSpec.from_site(site, name))
