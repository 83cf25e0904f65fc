"""Talking to one cluster: a scheduler backend plus a transport (how argv runs on behalf of a
user), all through the one command runner.

Who runs what:
- status, queue and node queries run as the hub's own account;
- everything done for a user (submit, cancel, the user's files under ~/.hpchub) runs AS that user:
  ``sudo -n -u USER -- ...`` with ``via: sudo``, or directly where hpchub already runs as the
  user (a notebook's engine launcher). The user's files are handled only by ``hpchub-job``
  (hpchub/job/jobfiles.py), a command with fixed subcommands, so the hub needs no right to run
  ``tee``, ``rm`` or ``tail`` as anyone.
- ``via: local`` runs every user's job as the hub's own account; it is refused when that is root.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import pwd
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..core import metrics
from ..core.accounts import unix_groups
from ..core.render import USERNAME_RE
from ..schedulers import JobStatus, QueueInfo, SchedulerBackend, backend_for
from ..schedulers.base import Allocations, StartEstimate
from .runner import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, CommandError, CommandResult, run_command

# Scheduler clients need these from the hub's environment; nothing else is passed on, so a
# token in the hub's environment never reaches a job through sbatch's default --export=ALL.
_SCHEDULER_ENV = ("SLURM_CONF", "SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT", "SGE_ARCH", "HOME", "USER")
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JOBFILES_COMMAND = "hpchub-job"

USER_MAX_OUTPUT = DEFAULT_MAX_OUTPUT
"""Bytes of stdout (and of stderr) kept of a command run as a user (kinds submit, cancel,
remove_files, log_tail: a few lines; a tail reads at most 64 KiB of the log). More is a user's
shell startup file or command gone wild: it is stopped (OutputTooLarge), the hub's memory kept."""
QUERY_MAX_OUTPUT = 64 << 20
"""The same for the hub's own queries (kinds status, job_names, queue_info, queue_nodes,
node_address, explain, allocations), which list the whole cluster. Sized from bench/parsing.py:
a 10,000-job status answer is 0.9 MiB from squeue (hpchub's format) and 8.0 MiB from
``qstat -xml -g t`` (22,325 entries: one per slot of a parallel job); 64 MiB is 8 times the larger,
room for about 75,000 Grid Engine jobs of that mix, and still a bound on what a poll can cost."""


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


class EstimateUnsupported(CommandError):
    """``hpchub-job`` where the cluster's commands run is from an hpchub older than start estimates:
    it answered ``hpchub-job estimate`` with its usage. Its message is one line (not that usage)."""

    def __init__(self, error: CommandError, message: str):
        self.message = message
        super().__init__(error.argv, error.returncode, error.stdout, error.stderr)

    def _describe(self) -> str:
        return self.message


def lacks_subcommand(error: CommandError, subcommand: str) -> bool:
    """``hpchub-job`` refused the call with its usage (exit 2), and that usage has no ``subcommand``:
    an hpchub-job older than the subcommand (a wrong call of a current one lists it)."""
    return (error.returncode == 2 and "usage: hpchub-job" in error.stderr
            and f"hpchub-job {subcommand} " not in error.stderr)


@dataclass(frozen=True)
class ClusterSpec:
    """Everything needed to reach a cluster and act for its users, without the site config: the
    spawner keeps it in its state, so a running job is found and cancelled even after the site
    config lost that cluster or is broken."""

    name: str
    scheduler: str
    via: str  # sudo | local | ssh
    sudo_command: str = "sudo"
    jobfiles: str = JOBFILES_COMMAND
    uid_min: int = 1000
    # via: ssh (see config.Submit and config.Network)
    host: str | None = None
    port: int = 22
    user: str = "{user}"
    key: str | None = None
    known_hosts: str | None = None
    ssh_sudo: bool = False
    query_user: str | None = None
    to_servers: str = "direct"
    to_hub: str = "direct"
    # Accounts never acted as for a hub user (config.Submit.refused_accounts).
    service_accounts: tuple[str, ...] = ()
    idle_timeout: float | None = None  # seconds; None: the SSH pool's default
    # The hub's own queries (run as the hub or query_user) use the binaries in commands_dir, with
    # these VAR=value settings (config.SGEOptions.commands_dir); None: the commands on the PATH.
    commands_dir: str | None = None
    commands_env: tuple[str, ...] = ()
    # How many commands run as users at once (config.Submit.parallel_commands). Not part of what makes
    # two specs the same cluster: a job's saved spec from before a change still finds its runtime.
    parallel_commands: int = field(default=16, compare=False)

    @classmethod
    def from_site(cls, site: Any, name: str) -> ClusterSpec:
        cluster = site.clusters[name]
        submit, network = cluster.submit, cluster.network
        commands: dict[str, Any] = {}
        if cluster.scheduler == "sge" and cluster.sge.commands_dir is not None:
            commands = {"commands_dir": cluster.sge.commands_dir,
                        "commands_env": (f"SGE_ROOT={cluster.sge.root}", f"SGE_CELL={cluster.sge.cell}")}
        if submit.via == "ssh":
            return cls(
                name=name, scheduler=cluster.scheduler, via="ssh", jobfiles=submit.jobfiles or JOBFILES_COMMAND,
                uid_min=site.effective_uid_min, host=submit.host, port=submit.port, user=submit.user, key=submit.key,
                known_hosts=submit.known_hosts, ssh_sudo=submit.sudo, query_user=submit.status_account,
                to_servers=network.to_servers, to_hub=network.to_hub, service_accounts=submit.refused_accounts,
                idle_timeout=submit.idle_timeout, parallel_commands=submit.parallel_commands, **commands,
            )
        return cls(
            name=name, scheduler=cluster.scheduler, via=submit.via, sudo_command=submit.sudo_command,
            jobfiles=default_jobfiles_command(), uid_min=site.effective_uid_min, to_hub=network.to_hub,
            service_accounts=submit.refused_accounts, parallel_commands=submit.parallel_commands, **commands,
        )

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClusterSpec:
        fields = {key: state[key] for key in cls.__dataclass_fields__ if key in state}
        for name in ("commands_env", "service_accounts"):  # lists after the JSON round trip; the spec must stay hashable
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)

    def as_current_user(self) -> ClusterSpec:
        """The same cluster from a process that already runs as the user on the cluster (a
        notebook's launcher): commands run directly, whatever the hub's transport is."""
        return ClusterSpec(self.name, self.scheduler, "local", jobfiles=default_jobfiles_command(), uid_min=self.uid_min,
                           commands_dir=self.commands_dir, commands_env=self.commands_env)


class ClusterClient:
    """Submit, query, cancel and describe queues on one cluster."""

    def __init__(self, spec: ClusterSpec, timeout: float = DEFAULT_TIMEOUT):
        self.spec = spec
        self.name = spec.name
        self.backend: SchedulerBackend = backend_for(spec.scheduler)
        self.timeout = timeout
        self._user_command_slots = asyncio.Semaphore(spec.parallel_commands)

    # -- transport -----------------------------------------------------------------------------
    def check_account(self, user: str) -> None:
        """Refuse to act as root, a service account (the site's, and over SSH the query account and
        the one that sudo's), a system account, or the hub's own account (sudo), and refuse to run
        users' jobs as root (local). Over SSH the accounts live on the login node: the names are
        checked here, the uid by ``hpchub-job`` there (and by its sshd and sudoers)."""
        if not USERNAME_RE.match(user) or user == "root":
            raise AccountRefused(f"hpchub does not act as {user!r}")
        if user in self.refused_accounts():
            raise AccountRefused(f"cluster {self.name!r}: {user!r} is a service account (submit.service_accounts, "
                                 "query_user or the sudo: true user): hpchub does not act as it for a hub user")
        if self.spec.via == "ssh":
            return
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

    def refused_accounts(self) -> set[str]:
        """The spec's service accounts, and (for a spec saved before they were listed) its own."""
        spec = self.spec
        own = {spec.query_user} if spec.via == "ssh" and spec.query_user else set()
        if spec.via == "ssh" and spec.ssh_sudo:
            own.add(spec.user)
        return set(spec.service_accounts) | own

    def as_user(self, user: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as it is run on behalf of ``user`` (never through a shell)."""
        self.check_account(user)
        if self.spec.via == "sudo" or (self.spec.via == "ssh" and self.spec.ssh_sudo):
            return [self.spec.sudo_command, "-n", "-u", user, "--", *argv]
        return list(argv)

    def ssh_target(self, user: str | None) -> Any:
        """The login-node account a command runs as: the user's own (``user: "{user}"``), the
        service account (``sudo: true``, which then sudo's to the user), or for the hub's own
        queries ``query_user``."""
        from .sshpool import SSHTarget  # paramiko: only for clusters that need it

        spec = self.spec
        account = spec.query_user if user is None else (user if spec.user == "{user}" else spec.user)
        if account is None:
            raise AccountRefused(f"cluster {self.name!r}: no account for the hub's own queries (submit.query_user)")
        assert spec.host is not None and spec.key is not None and spec.known_hosts is not None
        return SSHTarget(host=spec.host, port=spec.port, user=account, key_file=spec.key.replace("{user}", account),
                         known_hosts=spec.known_hosts, idle_timeout=spec.idle_timeout)

    async def run(self, argv: Sequence[str], *, user: str | None = None, input: str | None = None) -> CommandResult:
        """``argv`` as ``user`` (None: as the hub), keeping at most USER_MAX_OUTPUT (as a user) or
        QUERY_MAX_OUTPUT (the hub's queries) of its stdout and of its stderr. Commands as users run at
        most ``parallel_commands`` at once; the hub's own queries never wait for them."""
        max_output = USER_MAX_OUTPUT if user is not None else QUERY_MAX_OUTPUT
        if user is None:  # the hub's own queries: one per poll or cache, never queued behind users' commands
            if self.spec.commands_dir is not None and "/" not in argv[0]:
                argv = ["env", *self.spec.commands_env, posixpath.join(self.spec.commands_dir, argv[0]), *argv[1:]]
            return await self._run(argv, None, input, max_output)
        argv = self.as_user(user, argv)
        async with self._user_command_slots:  # the time limit starts once the command does
            return await self._run(argv, user, input, max_output)

    async def _run(self, argv: Sequence[str], user: str | None, input: str | None, max_output: int) -> CommandResult:
        if self.spec.via == "ssh":
            return await ssh_pool().run(self.ssh_target(user), list(argv), input=input, timeout=self.timeout,
                                        max_output=max_output)
        return await run_command(argv, input=input, timeout=self.timeout, env=scheduler_env(), max_output=max_output)

    # -- the user's side: one call of hpchub-job each --------------------------------------------
    @metrics.timed_command("submit")
    async def submit(self, user: str, key: str, script: str, files: Mapping[str, str], keep_days: int | None = None) -> str:
        """Write the job's files (mode 600 under ~/.hpchub/jobs/KEY) and submit ``script``, as
        ``user``, in one call; return the job id. On a refused submission nothing is left behind."""
        payload: dict[str, Any] = {"files": dict(files), "script": script}
        if keep_days is not None:
            payload["keep_days"] = keep_days
        result = await self.run([self.spec.jobfiles, "submit", key, self.spec.scheduler], user=user,
                                input=json.dumps(payload))
        return self.backend.parse_submit(result.stdout)

    @metrics.timed_command("estimate")
    async def estimate(self, user: str, script: str, now: datetime,
                       walltime: timedelta | None = None) -> StartEstimate | None:
        """When ``script`` would start if ``user`` submitted it now (their limits and associations
        count), asked as ``user`` without submitting it; None when the answer is not understood.
        ``now``: the scheduler's local time, to tell "starts now" from a later start; ``walltime``:
        the job's, to tell whether backfill has room for it. Raises EstimateUnsupported when the
        cluster's hpchub-job is too old to estimate."""
        try:
            result = await self.run([self.spec.jobfiles, "estimate", self.spec.scheduler], user=user,
                                    input=json.dumps({"files": {}, "script": script}))
        except CommandError as error:
            if not lacks_subcommand(error, "estimate"):
                raise
            where = f"the login node {self.spec.host}" if self.spec.via == "ssh" else "this host"
            raise EstimateUnsupported(error, f"{self.spec.jobfiles} on {where} has no `estimate` subcommand (it is "
                                             "from an older hpchub): install the hub's hpchub there for start "
                                             "estimates") from None
        try:
            answer = json.loads(result.stdout)
            output = str(answer["output"])
            # an older hpchub-job (a login node not yet updated) sends no context
            context = [str(text) for text in answer.get("context", [])]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return self.backend.parse_estimate(output, now, context, walltime)

    @metrics.timed_command("remove_files")
    async def remove_files(self, user: str, key: str) -> None:
        await self.run([self.spec.jobfiles, "remove", key], user=user)

    @metrics.timed_command("log_tail")
    async def read_log_tail(self, user: str, log_name: str, lines: int) -> str:
        """The last ``lines`` lines of the user's job output ~/.hpchub/logs/LOG_NAME."""
        return (await self.run([self.spec.jobfiles, "tail", log_name, str(lines)], user=user)).stdout

    # -- the scheduler -------------------------------------------------------------------------
    @metrics.timed_command("status")
    async def status(self, users: Sequence[str] | None = None) -> dict[str, JobStatus]:
        """Every job (of ``users``, or of everybody) in one scheduler call, as the hub."""
        result = await self.run(self.backend.status_argv(users))
        return self.backend.parse_status(result.stdout)

    @metrics.timed_command("job_names")
    async def job_names(self, user: str) -> dict[str, str]:
        """Job id -> job name for the user's jobs (names are the user's text: asked for only here)."""
        result = await self.run(self.backend.job_names_argv(user))
        return self.backend.parse_job_names(result.stdout, user)

    @metrics.timed_command("cancel")
    async def cancel(self, user: str, job_ids: Sequence[str]) -> None:
        await self.run(self.backend.cancel_argv(job_ids), user=user)

    @metrics.timed_command("queue_info")
    async def queue_info(self) -> list[QueueInfo]:
        outputs = [(await self.run(argv)).stdout for argv in self.backend.queue_info_argvs()]
        return self.backend.parse_queue_info(outputs)

    @metrics.timed_command("allocations")
    async def allocations(self, user: str, groups: Sequence[str]) -> Allocations:
        """``user``'s accounts/projects, QoS and reservations, asked as the hub. ``groups``: the
        user's unix groups."""
        outputs = await self._rounds(lambda outputs: self.backend.allocations_argvs(user, outputs))
        return self.backend.parse_allocations(user, groups, outputs)

    @metrics.timed_command("cluster_allocations")
    async def cluster_allocations(self) -> Allocations:
        """Every account/project, QoS and reservation the cluster has, asked as the hub."""
        outputs = await self._rounds(self.backend.cluster_allocations_argvs)
        return self.backend.parse_cluster_allocations(outputs)

    async def _rounds(self, next_argvs: Callable[[list[str]], list[list[str]]]) -> list[str]:
        """The outputs of a backend's rounds of commands: each round's commands see the outputs of
        the earlier ones. A failure the backend reads as "none defined" is an empty output."""
        outputs: list[str] = []
        while argvs := next_argvs(outputs):
            for argv in argvs:
                try:
                    outputs.append((await self.run(argv)).stdout)
                except CommandError as error:
                    if not self.backend.empty_answer(argv, error.returncode, error.stdout + error.stderr):
                        raise
                    outputs.append("")
        return outputs

    @metrics.timed_command("node_address")
    async def node_address(self, node: str) -> str | None:
        """The node's address as the scheduler knows it (None: ask DNS)."""
        argv = self.backend.node_address_argv(node)
        if argv is None:
            return None
        return self.backend.parse_node_address((await self.run(argv)).stdout)

    @metrics.timed_command("queue_nodes")
    async def queue_nodes(self, queue: str) -> list[tuple[str, str | None]]:
        """(node, the scheduler's address or None) for every node of ``queue``."""
        return self.backend.parse_queue_nodes((await self.run(self.backend.queue_nodes_argv(queue))).stdout)

    @metrics.timed_command("explain")
    async def explain(self, job_id: str) -> str | None:
        """The scheduler's own words on why a job is held or in error."""
        return self.backend.parse_explain((await self.run(self.backend.explain_argv(job_id))).stdout)


_pools: dict[int, Any] = {}


def ssh_pool() -> Any:
    """This event loop's pool of SSH connections: one per login node and account."""
    from .sshpool import SSHPool

    key = id(asyncio.get_running_loop())
    if key not in _pools:
        _pools[key] = SSHPool()
    return _pools[key]


def client_for(site: Any, name: str) -> ClusterClient:
    return ClusterClient(ClusterSpec.from_site(site, name))


class AllocationsUnavailable(RuntimeError):
    """The scheduler's list of a user's accounts, QoS and reservations could not be read; the message
    names the cluster, the user and the command that failed with its output."""


async def user_allocations(client: ClusterClient, user: str) -> Allocations:
    """``user``'s allocations asked through ``client``, with the user's unix groups as this host's NSS
    has them: one way for every face that has no cache (`hpchub render`/`submit`, a notebook's engine
    launcher, where ``client`` runs the commands as the user). A failure is AllocationsUnavailable."""
    groups = await asyncio.get_running_loop().run_in_executor(None, unix_groups, user)
    try:
        return await client.allocations(user, sorted(groups))
    except Exception as error:  # a failed command, an unreadable answer, an unreachable login node
        raise AllocationsUnavailable(
            f"cannot read {user}'s accounts, QoS and reservations from cluster {client.name!r}: {error}") from None
