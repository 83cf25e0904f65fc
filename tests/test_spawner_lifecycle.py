"""HPCSpawner's lifecycle against a fake scheduler (fast tier; the real one is in test_e2e_*)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
from support import SITE_CONFIGS
from tornado import web

from hpchub.cluster import ClusterClient
from hpchub.config import load_site_config
from hpchub.poller import StatusPoller
from hpchub.runner import CommandError, CommandResult
from hpchub.runtime import ClusterRuntime
from hpchub.schedulers import JobState, JobStatus
from hpchub.spawner import HPCSpawner, SpawnFailed

SITE = SITE_CONFIGS / "local-slurm.yaml"
TOKEN = "f" * 32


class FakeCluster(ClusterClient):
    """The scheduler as a dict of jobs; records what the spawner asked of it."""

    def __init__(self, name, cluster):
        super().__init__(name, cluster)
        self.jobs: dict[str, JobStatus] = {}
        self.files: dict[str, tuple[str, str]] = {}
        self.scripts: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.commands: list[list[str]] = []
        self.failing = False

    async def write_user_file(self, user, path, text):
        self.files[path] = (user, text)

    async def submit(self, user, script, log_dir=None):
        job_id = str(100 + len(self.scripts))
        self.scripts.append((user, script))
        self.jobs[job_id] = JobStatus(job_id, JobState.PENDING, "PENDING", user=user, queue="debug", reason="Priority", priority=5.0)
        return job_id

    async def status(self, users=None):
        if self.failing:
            raise CommandError(["squeue"], 1, stderr="slurm_load_jobs error: Unable to contact slurm controller")
        return dict(self.jobs)

    async def cancel(self, user, job_ids):
        self.cancelled += job_ids
        for job_id in job_ids:
            if job_id in self.jobs:
                self.jobs[job_id] = replace(self.jobs[job_id], state=JobState.CANCELLED, scheduler_state="CANCELLED")

    async def read_tail(self, user, path, lines):
        return "hpchub: the 'module' command is not available on vm\n"

    async def run(self, argv, *, user=None, input=None):
        self.commands.append(list(argv))
        return CommandResult(tuple(argv), 0, "NodeAddr=127.0.0.1\n" if argv[0] == "scontrol" else "", "", 0.0)

    def set(self, job_id, state, **changes):
        self.jobs[job_id] = replace(self.jobs[job_id], state=state, scheduler_state=state.name, **changes)


@pytest.fixture
async def fake():
    site = load_site_config(SITE)
    cluster = FakeCluster("slurm", site.clusters["slurm"])
    key = (str(site.source), "slurm", id(asyncio.get_running_loop()))
    runtime = ClusterRuntime("slurm", cluster, StatusPoller(cluster.status, interval=0.5, min_interval=0.02, jitter=0))
    ClusterRuntime.registry[key] = runtime
    yield cluster
    ClusterRuntime.registry.pop(key)
    if runtime.task:
        runtime.task.cancel()


def make_spawner(user="alice", groups=(), options=None, site=SITE) -> HPCSpawner:
    user_model = SimpleNamespace(name=user, groups=[SimpleNamespace(name=g) for g in groups], url=f"/user/{user}/")
    spawner = HPCSpawner(user=user_model, site_config=str(site), startup_poll_interval=0.02, poll_interval=1,
                         stop_wait_timeout=2, user_options=options or {})
    spawner.api_token = TOKEN
    spawner.get_env = lambda: {"JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_API_URL": "http://10.77.0.1:8081/hub/api", "PATH": "/hub/path"}
    return spawner


async def wait_until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def drain(spawner) -> list[str]:
    messages = []
    while not spawner._progress.empty():
        messages.append(spawner._progress.get_nowait()["message"])
    return messages


async def test_start_waits_for_running_and_port_then_poll_and_stop(fake):
    spawner = make_spawner(options={"profile": "small", "cores": "2"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    user, script = fake.scripts[0]
    assert user == "alice" and "#SBATCH --cpus-per-task=2" in script and TOKEN not in script
    secrets_user, secrets = fake.files[spawner.secrets_file]
    assert secrets_user == "alice" and f"JUPYTERHUB_API_TOKEN={TOKEN}" in secrets and "PATH" not in secrets
    await wait_until(lambda: any("waiting in queue debug" in e["message"] for e in list(spawner._progress._queue)))
    assert spawner.accept_port(1234)  # a port may arrive before the scheduler says running
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    assert await asyncio.wait_for(start, 5) == ("127.0.0.1", 1234)
    messages = drain(spawner)
    assert messages[0] == "Submitted job 100 to debug on slurm"
    assert "Job 100 is waiting in queue debug (other jobs with higher priority are ahead in the queue), position 1" in messages
    assert "Job 100 running on vm; starting the server" in messages
    state = spawner.get_state()
    assert (state["job_id"], state["job_host"], state["job_profile"]) == ("100", "vm", "small")
    assert await spawner.poll() is None
    assert not spawner.accept_port(999)  # no longer waiting
    await spawner.stop()
    assert fake.cancelled == ["100"] and ["rm", "-f", spawner.secrets_file] in fake.commands


async def test_a_scheduler_outage_is_unknown_and_keeps_the_server(fake):
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    spawner.accept_port(4321)
    await asyncio.wait_for(start, 5)
    fake.failing = True
    fake.jobs.clear()
    await asyncio.sleep(1.2)
    assert await spawner.poll() is None
    fake.failing = False
    for _ in range(100):  # once past the backoff, the job is really gone
        if await spawner.poll() == 1:
            break
        await asyncio.sleep(0.05)
    assert await spawner.poll() == 1


@pytest.mark.parametrize(
    "state, expected",
    [(JobState.FAILED, "the job ended (FAILED"), (JobState.HELD, "is held by the scheduler"),
     (JobState.ERROR, "error state")],
)
async def test_a_job_that_fails_while_starting_ends_the_spawn_with_the_reason(fake, state, expected):
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    fake.set("100", state)
    with pytest.raises(SpawnFailed) as caught:
        await asyncio.wait_for(start, 5)
    assert expected in caught.value.message
    if state is not JobState.HELD:
        assert "Last lines of /home/alice/.hpchub/logs/hpchub-alice-small.slurm.100.log" in caught.value.message
        assert "'module' command is not available" in caught.value.message
    assert fake.cancelled == ["100"]


async def test_a_job_that_dies_before_reporting_its_port(fake):
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    await wait_until(lambda: spawner.job_host == "vm")
    del fake.jobs["100"]
    with pytest.raises(SpawnFailed, match="the job ended before the server reported its port"):
        await asyncio.wait_for(start, 5)


async def test_start_cancelled_by_the_hub_timeout_cancels_the_job(fake):
    spawner = make_spawner(options={"profile": "small"})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(spawner.start(), 0.3)
    assert fake.cancelled == ["100"]


async def test_bad_options_are_refused_before_anything_is_submitted(fake):
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as caught:
        spawner.apply_user_options(spawner, {"profile": "small", "cores": 9})
    assert caught.value.status_code == 400 and "9 is above the maximum 4" in caught.value.log_message
    spawner.user_options = {"profile": "small", "walltime": "99:00:00"}
    with pytest.raises(web.HTTPError):
        await spawner.start()
    assert fake.scripts == []


def test_profiles_with_groups_are_offered_to_members_only():
    production = SITE_CONFIGS / "example-slurm-production.yaml"
    everybody = [p.slug for p in make_spawner(site=production).visible_profiles()]
    assert everybody == ["cpu-small", "cpu-multi"]
    gpu_user = make_spawner(groups=("gpu-users",), site=production)
    assert [p.slug for p in gpu_user.visible_profiles()] == ["cpu-small", "cpu-multi", "gpu"]
    with pytest.raises(web.HTTPError) as caught:
        make_spawner(site=production)._request_from({"profile": "gpu"})
    assert caught.value.status_code == 400
    assert gpu_user._request_from({"profile": "gpu", "gpus": 2}).gpus == 2


def test_fixed_profile_for_wrapspawner_entries():
    spawner = make_spawner(options={"profile": "hpc-small"})
    spawner.profile = "multi"
    assert spawner._request_from({"profile": "hpc-small", "nodes": 3}).nodes == 3


async def test_stopping_a_server_cancels_the_engine_jobs_it_started(fake):
    spawner = make_spawner(options={"profile": "multi"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    fake.set("100", JobState.RUNNING, nodes=("node1",))
    spawner.accept_port(4000)
    await asyncio.wait_for(start, 5)
    # Engine jobs the notebook submitted (hpchub.parallel names them after the server's job).
    fake.jobs["201"] = JobStatus("201", JobState.RUNNING, "RUNNING", user="alice", name="hpchub-alice-multi-engines-p100")
    fake.jobs["202"] = JobStatus("202", JobState.RUNNING, "RUNNING", user="alice", name="hpchub-alice-multi-engines-p999")
    fake.jobs["203"] = JobStatus("203", JobState.RUNNING, "RUNNING", user="bob", name="hpchub-bob-multi-engines-p100")
    await asyncio.sleep(0.05)  # older than the poller's min_interval: stop() asks the scheduler again
    await spawner.stop()
    assert fake.cancelled == ["100", "201"]


async def test_server_jobs_tell_notebooks_the_site_config_and_engine_profile(fake):
    spawner = make_spawner(options={"profile": "multi"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    _, script = fake.scripts[0]
    assert f"export HPCHUB_SITE_CONFIG={SITE}\n" in script and "export HPCHUB_ENGINE_PROFILE=multi\n" in script
    start.cancel()
