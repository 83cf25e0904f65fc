"""hpchub's own Prometheus metrics, served with JupyterHub's on the hub's ``/hub/metrics``.

JupyterHub exposes prometheus_client's default registry there, so defining the metrics at import
is all it takes. Labels are bounded by the site config and by the tables below (cluster, profile,
reason, state, command kind, error class): never a user name or a job id, which would make one
series per user or per job.

Who records what:
- the spawner: spawns, spawn duration and queue wait, spawn failures by reason, and its server's
  state (read at scrape time, see ``ServerStates``);
- the cluster client: every command it runs on a cluster, by kind (``timed_command``);
- the status poller: its consecutive failures and the interval it is backing off to;
- each cluster's runtime: its reverse forwards, held or dead, and the login node's refusals (read at scrape time).
- the SSH pool: its open connections (read at scrape time, see ``SSHConnections``).
Processes other than the hub (the CLI, a notebook's engine launcher) record too, in their own
memory; nobody scrapes them.
"""

from __future__ import annotations

import enum
import functools
import sys
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..schedulers import ParseError
from ..transports.runner import CommandError, CommandTimeout, OutputTooLarge

# Batch jobs: a spawn takes seconds on an idle partition and hours in a full one.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, float("inf"))
# Scheduler commands: tens of milliseconds locally, seconds over SSH, the runner's timeout (30 s) at worst.
COMMAND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, float("inf"))


class SpawnFailure(str, enum.Enum):
    """Why a spawn failed: the ``reason`` label of hpchub_spawn_failures_total."""

    OPTIONS_REFUSED = "options_refused"  # the request or the script was refused before submission (HTTP 4xx)
    ACCOUNT_REFUSED = "account_refused"  # hpchub does not act as this account (root, system, the hub's own)
    LOGIN_UNREACHABLE = "login_unreachable"  # the login node (via: ssh) did not answer; nothing submitted
    REFUSED_BY_SCHEDULER = "refused_by_scheduler"  # sbatch/qsub refused the job
    SUBMIT_UNKNOWN = "submit_unknown"  # the submission's outcome is unknown (timeout, dropped connection)
    HELD = "held"  # the job is held (user or admin hold)
    ERROR_STATE = "error_state"  # the job is in the scheduler's error state (SGE Eqw)
    JOB_ENDED = "job_ended"  # the job ended before its server reported its port
    TIMEOUT = "timeout"  # JupyterHub's start_timeout (queue wait included) ran out
    CANCELLED = "cancelled"  # the user (or an admin) cancelled the pending spawn
    ERROR = "error"  # anything else (see the hub log)


class ServerState(str, enum.Enum):
    """A server's state: the ``state`` label of hpchub_servers."""

    WAITING = "waiting"  # job submitted, not running yet
    STARTING = "starting"  # job running, the server has not reported its port yet
    RUNNING = "running"  # the server reported its port (or runs since before a hub restart)


SPAWNS = Counter(
    "hpchub_spawns", "Spawns started (the request was resolved to a cluster and a profile).",
    ["cluster", "profile"])
SPAWN_DURATION = Histogram(
    "hpchub_spawn_duration_seconds",
    "Seconds from the job's submission to its server reporting its port (successful spawns), queue wait included.",
    ["cluster", "profile"], buckets=BATCH_BUCKETS)
QUEUE_WAIT = Histogram(
    "hpchub_queue_wait_seconds",
    "Seconds a server job waited in the queue: the scheduler's start time minus its submit time "
    "(else from submission until hpchub saw the job running).",
    ["cluster", "profile"], buckets=BATCH_BUCKETS)
SPAWN_FAILURES = Counter(
    "hpchub_spawn_failures", "Spawns that failed, by reason class.", ["cluster", "profile", "reason"])
COMMAND_DURATION = Histogram(
    "hpchub_cluster_command_duration_seconds",
    "Seconds a command on a cluster took (scheduler queries, submissions, cancellations, the user-side "
    "hpchub-job calls), failed ones included.",
    ["cluster", "kind"], buckets=COMMAND_BUCKETS)
COMMAND_FAILURES = Counter(
    "hpchub_cluster_command_failures",
    "Commands on a cluster that failed, by kind and error class (timeout, failed: non-zero exit or not run, "
    "too_much_output: stopped at its output limit, unreachable: the SSH login node, unparsable output, "
    "error: anything else).",
    ["cluster", "kind", "error"])
POLLER_FAILURES = Gauge(
    "hpchub_status_poller_consecutive_failures",
    "Status queries of the cluster's shared poller that failed in a row (0: the scheduler answers).", ["cluster"])
POLLER_INTERVAL = Gauge(
    "hpchub_status_poller_interval_seconds",
    "Seconds between the shared poller's status queries: its interval, or its backoff while queries fail.",
    ["cluster"])


# -- spawns ------------------------------------------------------------------------------------
def spawn_started(cluster: str, profile: str) -> None:
    SPAWNS.labels(cluster, profile).inc()
    for reason in SpawnFailure:  # every reason's series exists from the first spawn: increase() sees the first failure
        SPAWN_FAILURES.labels(cluster, profile, reason.value)


def spawn_failed(cluster: str, profile: str, reason: SpawnFailure) -> None:
    SPAWN_FAILURES.labels(cluster, profile, reason.value).inc()


def queue_waited(cluster: str, profile: str, seconds: float) -> None:
    QUEUE_WAIT.labels(cluster, profile).observe(max(seconds, 0.0))


def spawn_succeeded(cluster: str, profile: str, seconds: float) -> None:
    SPAWN_DURATION.labels(cluster, profile).observe(max(seconds, 0.0))


# -- servers, counted at scrape time ------------------------------------------------------------
class TrackedServer(Protocol):
    def metrics_state(self) -> tuple[str, ServerState] | None:
        """(cluster, state) of the server's job, or None if it has none."""


class ServerStates(Collector):
    """hpchub_servers{cluster, state}, counted over the live spawners when Prometheus scrapes.

    Each spawner says its own state (it alone knows "starting": the job runs, the server has not
    reported yet), so nothing is incremented or decremented on the way: a path that forgets a
    decrement cannot skew the count, and a spawner JupyterHub dropped simply drops out."""

    def __init__(self) -> None:
        self._servers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._clusters: set[str] = set()  # clusters seen: their series stay, at 0, when no server is left

    def track(self, server: TrackedServer) -> None:
        self._servers.add(server)

    def counts(self) -> dict[tuple[str, ServerState], int]:
        counts: dict[tuple[str, ServerState], int] = {}
        for server in list(self._servers):
            found = server.metrics_state()
            if found is not None:
                counts[found] = counts.get(found, 0) + 1
                self._clusters.add(found[0])
        return counts

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("hpchub_servers", "", labels=["cluster", "state"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "hpchub_servers", "Servers by the state of their job: waiting in the queue, starting (the job runs, "
            "the server has not reported yet), running.", labels=["cluster", "state"])
        counts = self.counts()
        for cluster in sorted(self._clusters):
            for state in ServerState:
                family.add_metric([cluster, state.value], counts.get((cluster, state), 0))
        yield family


SERVERS = ServerStates()
REGISTRY.register(SERVERS)


# -- reverse forwards (to_hub: reverse), read at scrape time ---------------------------------------
class TrackedForwards(Protocol):
    name: str

    def hub_forward_counts(self) -> tuple[int, int, int]:
        """(held, dead, refusals) of the cluster's reverse forwards."""


class ReverseForwards(Collector):
    """hpchub_reverse_forwards{cluster, state} (held: the login node forwards the port to the hub;
    dead: it refused the hub's request, someone else may hold the port) and
    hpchub_reverse_forward_refusals_total{cluster}, read from each cluster's runtime when scraped."""

    def __init__(self) -> None:
        self._runtimes: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, runtime: TrackedForwards) -> None:
        self._runtimes.add(runtime)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("hpchub_reverse_forwards", "", labels=["cluster", "state"])
        yield CounterMetricFamily("hpchub_reverse_forward_refusals", "", labels=["cluster"])

    def collect(self) -> Iterator[Metric]:
        forwards = GaugeMetricFamily(
            "hpchub_reverse_forwards", "Reverse forwards (to_hub: reverse) on the login node: held by the hub, or dead "
            "(the login node refused the hub's request: someone else may hold the port; no new job is given it).",
            labels=["cluster", "state"])
        refusals = CounterMetricFamily(
            "hpchub_reverse_forward_refusals", "Requests for a reverse forward the login node refused.", labels=["cluster"])
        counts: dict[str, tuple[int, int, int]] = {}
        for runtime in list(self._runtimes):
            held, dead, refused = runtime.hub_forward_counts()
            if held or dead or refused:
                old = counts.get(runtime.name, (0, 0, 0))
                counts[runtime.name] = (old[0] + held, old[1] + dead, old[2] + refused)
        for cluster, (held, dead, refused) in sorted(counts.items()):
            forwards.add_metric([cluster, "held"], held)
            forwards.add_metric([cluster, "dead"], dead)
            refusals.add_metric([cluster], refused)
        yield forwards
        yield refusals


REVERSE_FORWARDS = ReverseForwards()
REGISTRY.register(REVERSE_FORWARDS)


class SSHConnections(Collector):
    """hpchub_ssh_connections{login_node}: the connections the hub's SSH pools hold open, counted
    at scrape time (hpchub.transports.sshpool keeps them; an idle one is closed after its idle timeout)."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._nodes: set[str] = set()  # login nodes seen: their series stay, at 0, when no connection is left

    def track(self, pool: Any) -> None:
        """``pool``: anything with ``connections() -> {login node: open connections}``."""
        self._pools.add(pool)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pool in list(self._pools):
            for node, count in pool.connections().items():
                counts[node] = counts.get(node, 0) + count
        self._nodes.update(counts)
        return counts

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("hpchub_ssh_connections", "", labels=["login_node"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "hpchub_ssh_connections", "SSH connections the hub holds open to a login node (host:port), one per "
            "remote account in use; each is an sshd there.", labels=["login_node"])
        counts = self.counts()
        for node in sorted(self._nodes):
            family.add_metric([node], counts.get(node, 0))
        yield family


SSH_CONNECTIONS = SSHConnections()
REGISTRY.register(SSH_CONNECTIONS)


# -- the status poller ----------------------------------------------------------------------------
def poller_backoff(cluster: str, failures: int, interval: float) -> None:
    """The poller of ``cluster`` has failed ``failures`` times in a row and queries every ``interval`` s."""
    POLLER_FAILURES.labels(cluster).set(failures)
    POLLER_INTERVAL.labels(cluster).set(interval)


# -- commands on a cluster ----------------------------------------------------------------------
def command_error_class(error: BaseException) -> str | None:
    """The ``error`` label for a failed command; None for what is no command failure (the account
    was refused before anything ran, the caller was cancelled)."""
    if isinstance(error, (PermissionError, KeyboardInterrupt, SystemExit)) or not isinstance(error, Exception):
        return None  # AccountRefused is a PermissionError; CancelledError is a BaseException
    # hpchub.transports.sshpool (and paramiko) is loaded only for clusters reached over SSH: no SSH error otherwise.
    sshpool = sys.modules.get("hpchub.transports.sshpool")
    if sshpool is not None and isinstance(error, (sshpool.LoginUnreachable, sshpool.ConnectionLost)):
        return "unreachable"
    if isinstance(error, CommandTimeout):
        return "timeout"
    if isinstance(error, OutputTooLarge):
        return "too_much_output"
    if isinstance(error, CommandError):
        return "failed"
    if isinstance(error, ParseError):
        return "unparsable"
    return "error"


_P = ParamSpec("_P")
_R = TypeVar("_R")
_Method = Callable[Concatenate[Any, _P], Coroutine[Any, Any, _R]]


def timed_command(kind: str) -> Callable[[_Method[_P, _R]], _Method[_P, _R]]:
    """Decorate a cluster client's async method (its ``self.name`` is the cluster): record how long
    each call took and, by error class, each one that failed."""

    def decorate(method: _Method[_P, _R]) -> _Method[_P, _R]:
        @functools.wraps(method)
        async def timed(self: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            started = time.monotonic()
            try:
                result = await method(self, *args, **kwargs)
            except BaseException as error:
                error_class = command_error_class(error)
                if error_class is not None:
                    COMMAND_DURATION.labels(self.name, kind).observe(time.monotonic() - started)
                    COMMAND_FAILURES.labels(self.name, kind, error_class).inc()
                raise
            COMMAND_DURATION.labels(self.name, kind).observe(time.monotonic() - started)
            return result

        return timed

    return decorate
