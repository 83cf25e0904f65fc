"""hpchub's Prometheus metrics against a fake scheduler: each one moves when it should, with the
right labels, and no label carries a user name or a job id. (A real hub's /hub/metrics after
real spawns: test_e2e_metrics.py.)"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from test_spawner_lifecycle import SITE, TOKEN, FakeCluster, fake, make_spawner, wait_until  # noqa: F401 (fixture)

from hpchub.core import metrics
from hpchub.core.config import load_site_config
from hpchub.core.poller import StatusPoller
from hpchub.core.runtime import ClusterRuntime
from hpchub.hub import porthandler
from hpchub.hub.spawner import SpawnFailed
from hpchub.schedulers import JobState
from hpchub.transports.cluster import ClusterClient, ClusterSpec
from hpchub.transports.runner import CommandError, CommandResult, CommandTimeout

SMALL = {"cluster": "slurm", "profile": "small"}


def value(name: str, **labels: str) -> float:
    """A sample's current value; 0 for a series that does not exist yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def servers(state: str, cluster: str = "slurm") -> float:
    return value("hpchub_servers", cluster=cluster, state=state)


def failures(reason: str, cluster: str = "slurm", profile: str = "small") -> float:
    return value("hpchub_spawn_failures_total", cluster=cluster, profile=profile, reason=reason)


async def test_a_spawn_observes_its_queue_wait_and_duration_and_its_server_state(fake):  # noqa: F811
    before = {name: value(name, **SMALL) for name in (
        "hpchub_spawns_total", "hpchub_queue_wait_seconds_count", "hpchub_queue_wait_seconds_bucket",
        "hpchub_spawn_duration_seconds_count")}
    before_le = {le: value("hpchub_queue_wait_seconds_bucket", le=le, **SMALL) for le in ("30.0", "60.0")}
    baseline = {state: servers(state) for state in ("waiting", "starting", "running")}

    def moved(state: str) -> float:
        return servers(state) - baseline[state]

    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    await wait_until(lambda: moved("waiting") == 1)
    assert moved("starting") == moved("running") == 0
    # The scheduler's own times: 42 s in the queue, whatever the hub's polling noticed.
    submitted = datetime(2025, 1, 1, 12, 0, 0)
    fake.set("100", JobState.RUNNING, nodes=("vm",), submitted=submitted, started=submitted + timedelta(seconds=42))
    await wait_until(lambda: moved("starting") == 1)
    assert moved("waiting") == 0
    porthandler.waiting_for(TOKEN).set_result(porthandler.PortReport(1234, None))
    await asyncio.wait_for(start, 5)
    assert (moved("waiting"), moved("starting"), moved("running")) == (0, 0, 1)

    assert value("hpchub_spawns_total", **SMALL) == before["hpchub_spawns_total"] + 1
    assert value("hpchub_queue_wait_seconds_count", **SMALL) == before["hpchub_queue_wait_seconds_count"] + 1
    assert value("hpchub_queue_wait_seconds_bucket", le="30.0", **SMALL) == before_le["30.0"]
    assert value("hpchub_queue_wait_seconds_bucket", le="60.0", **SMALL) == before_le["60.0"] + 1
    assert value("hpchub_spawn_duration_seconds_count", **SMALL) == before["hpchub_spawn_duration_seconds_count"] + 1
    # Every failure reason's series exists from the first spawn (so increase() sees the first failure).
    assert all(REGISTRY.get_sample_value("hpchub_spawn_failures_total", dict(SMALL, reason=reason.value)) is not None
               for reason in metrics.SpawnFailure)

    await spawner.stop()
    assert (moved("waiting"), moved("starting"), moved("running")) == (0, 0, 0)
    # The cluster's series stay (at 0 once no server is left): an alert on them never sees them vanish.
    assert REGISTRY.get_sample_value("hpchub_servers", {"cluster": "slurm", "state": "waiting"}) is not None


async def test_a_server_that_runs_since_before_a_hub_restart_counts_as_running(fake):  # noqa: F811
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    porthandler.waiting_for(TOKEN).set_result(porthandler.PortReport(1234, None))
    await asyncio.wait_for(start, 5)
    running = servers("running")
    restarted = make_spawner(options={"profile": "small"})  # the new hub's spawner, from the saved state
    restarted.load_state(spawner.get_state())
    assert restarted.metrics_state() is None  # nothing known until JupyterHub's poll says the job is there
    assert await restarted.poll() is None
    assert servers("running") == running + 1 and restarted.metrics_state() == ("slurm", metrics.ServerState.RUNNING)
    fake.set("100", JobState.FINISHED)
    for _ in range(100):
        if await restarted.poll() == 1:
            break
        await asyncio.sleep(0.05)
    assert restarted.metrics_state() is None  # an ended job is no server, even before JupyterHub clears the state


class RefusingCluster(FakeCluster):
    async def submit(self, user, key, script, files, keep_days=None):
        raise CommandError(["sbatch"], 1, stderr="sbatch: error: Batch job submission failed: Invalid account")


async def test_a_refused_submission_counts_one_failure_by_its_reason(fake):  # noqa: F811
    spec = ClusterSpec.from_site(load_site_config(SITE), "slurm")
    ClusterRuntime.registry[(spec, id(asyncio.get_running_loop()))].client = RefusingCluster(spec)
    reasons = {reason.value: failures(reason.value) for reason in metrics.SpawnFailure}
    waiting = servers("waiting")
    spawner = make_spawner(options={"profile": "small"})
    with pytest.raises(SpawnFailed, match="Invalid account"):
        await spawner.start()
    changed = {reason: failures(reason) - count for reason, count in reasons.items() if failures(reason) != count}
    assert changed == {"refused_by_scheduler": 1}
    assert servers("waiting") == waiting and spawner.metrics_state() is None


@pytest.mark.parametrize("state, reason", [(JobState.FAILED, "job_ended"), (JobState.HELD, "held"),
                                           (JobState.ERROR, "error_state")])
async def test_a_job_that_fails_while_waiting_counts_its_reason(fake, state, reason):  # noqa: F811
    count, waiting = failures(reason), servers("waiting")
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    await wait_until(lambda: servers("waiting") == waiting + 1)
    fake.set("100", state)
    with pytest.raises(SpawnFailed):
        await asyncio.wait_for(start, 5)
    assert failures(reason) == count + 1
    assert servers("waiting") == waiting


async def test_the_hubs_timeout_and_a_cancelled_spawn_are_told_apart(fake):  # noqa: F811
    timeouts, cancels = failures("timeout"), failures("cancelled")
    spawner = make_spawner(options={"profile": "small"})
    spawner.start_timeout = 2
    with pytest.raises(asyncio.TimeoutError):  # how JupyterHub applies start_timeout
        await asyncio.wait_for(spawner.start(), spawner.start_timeout)
    assert (failures("timeout"), failures("cancelled")) == (timeouts + 1, cancels)

    spawner = make_spawner(options={"profile": "small"})
    spawner.start_timeout = 2
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: len(fake.scripts) == 2)
    start.cancel()  # the waiting page's Cancel: JupyterHub cancels the spawn long before start_timeout
    with pytest.raises(asyncio.CancelledError):
        await start
    assert (failures("timeout"), failures("cancelled")) == (timeouts + 1, cancels + 1)


class ScriptedClient(ClusterClient):
    """A real cluster client whose commands answer from a script: the metrics hooks run as in production."""

    def __init__(self, name: str):
        super().__init__(ClusterSpec(name=name, scheduler="slurm", via="sudo"))
        self.answers: list[object] = []  # CommandResult stdout text, or an exception to raise

    async def run(self, argv, *, user=None, input=None):
        if user is not None:
            argv = self.as_user(user, argv)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return CommandResult(tuple(argv), 0, str(answer), "", 0.01)


def command_failures(cluster: str, kind: str, error: str) -> float:
    return value("hpchub_cluster_command_failures_total", cluster=cluster, kind=kind, error=error)


async def test_a_failing_status_query_counts_a_failure_and_the_poller_backs_off():
    client = ScriptedClient("metrics-status")
    now = [0.0]
    poller = StatusPoller(client.status, interval=30, min_interval=1, max_backoff=300, jitter=0, clock=lambda: now[0],
                          cluster="metrics-status")
    assert value("hpchub_status_poller_consecutive_failures", cluster="metrics-status") == 0
    assert value("hpchub_status_poller_interval_seconds", cluster="metrics-status") == 30
    poller.watch("7", "bob")
    unreachable = CommandError(["squeue"], 1, stderr="slurm_load_jobs error: Unable to contact slurm controller")
    client.answers = [unreachable, CommandTimeout(["squeue"], None, reason="timed out after 30 s"), ""]

    now[0] = 100
    await poller.refresh()
    assert command_failures("metrics-status", "status", "failed") == 1
    assert value("hpchub_cluster_command_duration_seconds_count", cluster="metrics-status", kind="status") == 1
    assert value("hpchub_status_poller_consecutive_failures", cluster="metrics-status") == 1
    assert value("hpchub_status_poller_interval_seconds", cluster="metrics-status") == 30

    now[0] = 131
    await poller.refresh()
    assert command_failures("metrics-status", "status", "timeout") == 1
    assert value("hpchub_status_poller_consecutive_failures", cluster="metrics-status") == 2
    assert value("hpchub_status_poller_interval_seconds", cluster="metrics-status") == 60  # backing off

    now[0] = 192
    await poller.refresh()  # the scheduler answers again (no jobs)
    assert value("hpchub_status_poller_consecutive_failures", cluster="metrics-status") == 0
    assert value("hpchub_status_poller_interval_seconds", cluster="metrics-status") == 30
    assert value("hpchub_cluster_command_duration_seconds_count", cluster="metrics-status", kind="status") == 3
    assert command_failures("metrics-status", "status", "failed") == 1  # a success counts no failure


async def test_every_command_kind_is_timed_and_only_real_command_failures_count():
    client = ScriptedClient("metrics-kinds")
    client.answers = ["12\n", "", "sbatch: garbage\n"]
    assert await client.submit("bob", "hpchub-bob-small", "#!/bin/bash\n", {"env": ""}) == "12"
    await client.cancel("bob", ["12"])
    with pytest.raises(Exception, match="no job id"):
        await client.submit("bob", "hpchub-bob-small", "#!/bin/bash\n", {"env": ""})
    with pytest.raises(PermissionError):  # hpchub refuses to act as root: nothing ran, no command failed
        await client.cancel("root", ["12"])
    assert value("hpchub_cluster_command_duration_seconds_count", cluster="metrics-kinds", kind="submit") == 2
    assert value("hpchub_cluster_command_duration_seconds_count", cluster="metrics-kinds", kind="cancel") == 1
    assert command_failures("metrics-kinds", "submit", "unparsable") == 1
    assert command_failures("metrics-kinds", "cancel", "failed") == 0


async def test_no_label_names_a_user_or_a_job(fake):  # noqa: F811
    spawner = make_spawner(user="bob", options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    porthandler.waiting_for(TOKEN).set_result(porthandler.PortReport(1234, None))
    await asyncio.wait_for(start, 5)
    assert spawner.metrics_state() == ("slurm", metrics.ServerState.RUNNING)
    failing = ScriptedClient("metrics-labels")
    failing.answers = [CommandError(["squeue", "--user=bob"], 1, stderr="squeue: error: bob 100")]
    with pytest.raises(CommandError):
        await failing.status(["bob"])
    allowed_labels = {"cluster", "profile", "reason", "state", "kind", "error", "le", "login_node"}
    seen = 0
    for family in REGISTRY.collect():
        if not family.name.startswith("hpchub_"):
            continue
        for sample in family.samples:
            seen += 1
            assert set(sample.labels) <= allowed_labels, sample
            for label, text in sample.labels.items():
                assert text not in {"alice", "bob", "carol", "root"}, sample
                assert label == "le" or not text.isdigit(), sample  # no job id
    assert seen > 0
    names = {family.name for family in REGISTRY.collect()}
    assert {"hpchub_spawns", "hpchub_spawn_duration_seconds", "hpchub_queue_wait_seconds", "hpchub_spawn_failures",
            "hpchub_servers", "hpchub_cluster_command_duration_seconds", "hpchub_cluster_command_failures",
            "hpchub_status_poller_consecutive_failures", "hpchub_status_poller_interval_seconds"} <= names


def test_a_command_stopped_at_its_output_limit_has_its_own_error_class():
    from hpchub.core.metrics import command_error_class
    from hpchub.transports.runner import OutputTooLarge

    assert command_error_class(OutputTooLarge(["hpchub-job", "tail"], "stdout", 1 << 20, "flood", "")) == "too_much_output"
