"""Talking to one cluster: a scheduler backend plus the way its commands are run (as the hub,
or as the user through sudo), all through the one command runner."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .config import Cluster
from .runner import DEFAULT_TIMEOUT, CommandResult, run_command
from .schedulers import JobStatus, QueueInfo, backend_for

# Scheduler clients need these from the hub's environment; nothing else is passed on, so a
# token in the hub's environment never reaches a job through sbatch's default --export=ALL.
_SCHEDULER_ENV = ("SLURM_CONF", "SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT", "SGE_ARCH", "HOME", "USER")
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def scheduler_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", _SAFE_PATH), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update({key: os.environ[key] for key in _SCHEDULER_ENV if key in os.environ})
    return env


class ClusterClient:
    """Submit, query, cancel and describe queues on one cluster of the site config."""

    def __init__(self, name: str, cluster: Cluster, timeout: float = DEFAULT_TIMEOUT):
        self.name = name
        self.cluster = cluster
        self.backend = backend_for(cluster.scheduler)
        self.timeout = timeout

    def as_user(self, user: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as it is run on behalf of ``user`` (never through a shell)."""
        if self.cluster.submit.via == "sudo":
            return [self.cluster.submit.sudo, "-n", "-u", user, "--", *argv]
        return list(argv)

    async def run(self, argv: Sequence[str], *, user: str | None = None, input: str | None = None) -> CommandResult:
        if user is not None:
            argv = self.as_user(user, argv)
        return await run_command(argv, input=input, timeout=self.timeout, env=scheduler_env())

    async def submit(self, user: str, script: str, log_dir: str | None = None) -> str:
        """Submit ``script`` as ``user``; return the job id. ``log_dir`` is created first, since
        a job whose output directory is missing dies without a word (Slurm) or sits in Eqw (SGE)."""
        if log_dir:
            await self.run(["mkdir", "-p", "-m", "700", log_dir], user=user)
        result = await self.run(self.backend.submit_argv(), user=user, input=script)
        return self.backend.parse_submit(result.stdout)

    async def write_user_file(self, user: str, path: str, text: str) -> None:
        """Write ``text`` to ``path`` as ``user``, readable by that user only. The file is created
        empty with mode 600 first, so its content is never readable by anyone else."""
        await self.run(["install", "-D", "-m", "600", "/dev/null", path], user=user)
        await self.run(["tee", path], user=user, input=text)

    async def read_tail(self, user: str, path: str, lines: int) -> str:
        """The last ``lines`` lines of a file only ``user`` may read (a job's output)."""
        return (await self.run(["tail", "-n", str(lines), path], user=user)).stdout

    async def status(self, users: Sequence[str] | None = None) -> dict[str, JobStatus]:
        """Every job (of ``users``, or of everybody) in one scheduler call."""
        result = await self.run(self.backend.status_argv(users))
        return self.backend.parse_status(result.stdout)

    async def cancel(self, user: str, job_ids: Sequence[str]) -> None:
        await self.run(self.backend.cancel_argv(job_ids), user=user)

    async def queue_info(self) -> list[QueueInfo]:
        outputs = [(await self.run(argv)).stdout for argv in self.backend.queue_info_argvs()]
        return self.backend.parse_queue_info(outputs)
