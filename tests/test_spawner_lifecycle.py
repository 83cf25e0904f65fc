"""HPCSpawner's lifecycle against a fake scheduler (fast tier; the real one is in test_e2e_*)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers.support import SITE_CONFIGS
from tornado import web

from hpchub.core.accounts import unix_groups
from hpchub.core.config import load_site_config
from hpchub.core.poller import StatusPoller
from hpchub.core.runtime import ClusterRuntime
from hpchub.hub import porthandler
from hpchub.hub.spawner import HPCSpawner, SpawnFailed
from hpchub.schedulers import JobState, JobStatus, QueueInfo
from hpchub.transports.cluster import ClusterClient, ClusterSpec
from hpchub.transports.runner import CommandError

SITE = SITE_CONFIGS / "local-slurm.yaml"
TOKEN = "f" * 32


class FakeCluster(ClusterClient):
    """The scheduler as a dict of jobs; records what the spawner asked of it."""

    def __init__(self, spec):
        super().__init__(spec)
        self.jobs: dict[str, JobStatus] = {}
        self.names: dict[str, str] = {}
        self.files: dict[str, tuple[str, dict]] = {}
        self.scripts: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.removed: list[str] = []
        self.failing = False
        self.status_calls: list[float] = []  # loop times of the status queries

    async def submit(self, user, key, script, files, keep_days=None):
        self.check_account(user)  # what every command run as a user goes through
        self.keep_days = keep_days
        job_id = str(100 + len(self.scripts))
        self.scripts.append((user, script))
        self.files[key] = (user, dict(files))
        self.names[job_id] = key
        self.jobs[job_id] = JobStatus(job_id, JobState.PENDING, "PENDING", user=user, queue="debug", reason="Priority",
                                      priority=5.0)
        return job_id

    async def status(self, users=None):
        self.status_calls.append(asyncio.get_running_loop().time())
        if self.failing:
            raise CommandError(["squeue"], 1, stderr="slurm_load_jobs error: Unable to contact slurm controller")
        return dict(self.jobs)

    async def job_names(self, user):
        return {job_id: name for job_id, name in self.names.items() if self.jobs.get(job_id) and self.jobs[job_id].user == user}

    async def cancel(self, user, job_ids):
        self.cancelled += job_ids
        for job_id in job_ids:
            if job_id in self.jobs:
                self.jobs[job_id] = replace(self.jobs[job_id], state=JobState.CANCELLED, scheduler_state="CANCELLED")

    async def read_log_tail(self, user, log_name, lines):
        return "hpchub: the 'module' command is not available on vm\n"

    async def remove_files(self, user, key):
        self.removed.append(key)

    async def node_address(self, node):
        return "127.0.0.1"

    async def explain(self, job_id):
        return None

    async def queue_info(self):
        return [QueueInfo("debug", True, 8, 8, 1, 1, jobs_pending=3, pending_priorities=(9.0, 5.0, 7.0))]

    def set(self, job_id, state, **changes):
        self.jobs[job_id] = replace(self.jobs[job_id], state=state, scheduler_state=state.name, **changes)


def install_fake(spec: ClusterSpec) -> FakeCluster:
    cluster = FakeCluster(spec)
    runtime = ClusterRuntime(cluster, StatusPoller(cluster.status, interval=0.5, min_interval=0.02, jitter=0))
    ClusterRuntime.registry[(spec, id(asyncio.get_running_loop()))] = runtime
    return cluster


@pytest.fixture
async def fake():
    spec = ClusterSpec.from_site(load_site_config(SITE), "slurm")
    cluster = install_fake(spec)
    yield cluster
    runtime = ClusterRuntime.registry.pop((spec, id(asyncio.get_running_loop())))
    if runtime.task:
        runtime.task.cancel()


def make_spawner(user="alice", groups=(), options=None, site=SITE, server="") -> HPCSpawner:
    user_model = SimpleNamespace(name=user, groups=[SimpleNamespace(name=g) for g in groups], url=f"/user/{user}/")
    spawner = HPCSpawner(user=user_model, site_config=str(site), startup_poll_interval=0.02, poll_interval=1,
                         stop_wait_timeout=2, user_options=options or {},
                         orm_spawner=SimpleNamespace(name=server, server=None) if server else None)
    spawner.api_token = TOKEN
    spawner.get_env = lambda: {"JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_API_URL": "http://10.77.0.1:8081/hub/api",
                               "PATH": "/hub/path"}
    return spawner


async def wait_until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def messages(spawner) -> list[str]:
    """The progress messages of the spawner's current spawn so far."""
    return [event["message"] for event in spawner._progress.events]


def report_port(port: int, ends: int | None = None) -> bool:
    """What the port endpoint does when the job reports (tests/test_e2e_* go through HTTP)."""
    future = porthandler.waiting_for(TOKEN)
    if future is None or future.done():
        return False
    future.set_result(porthandler.PortReport(port, ends))
    return True


async def start_running(spawner, fake, node="vm", port=1234, ends=None):
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    job_id = str(100 + len(fake.scripts) - 1)
    fake.set(job_id, JobState.RUNNING, nodes=(node,))
    report_port(port, ends)
    return await asyncio.wait_for(start, 5)


async def poll_until_ended(spawner, timeout=3.0) -> bool:
    """poll() until it says the job ended (within 1.5 poll intervals it answers from the cache)."""
    for _ in range(int(timeout / 0.05)):
        if await spawner.poll() == 1:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_start_waits_for_running_and_port_then_poll_and_stop(fake):
    spawner = make_spawner(options={"profile": "small", "cores": "2"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    user, script = fake.scripts[0]
    assert user == "alice" and "#SBATCH --cpus-per-task=2" in script and TOKEN not in script
    secrets_user, files = fake.files["hpchub-alice-small"]
    assert secrets_user == "alice" and f"JUPYTERHUB_API_TOKEN={TOKEN}" in files["env"] and "PATH" not in files["env"]
    assert ". /home/alice/.hpchub/jobs/hpchub-alice-small/env" in script
    await wait_until(lambda: any("waiting in queue debug" in text for text in messages(spawner)))
    assert report_port(1234)  # a port may arrive before the scheduler says running
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    assert await asyncio.wait_for(start, 5) == ("127.0.0.1", 1234)
    emitted = messages(spawner)
    assert emitted[0] == "Submitted job 100 to debug on slurm"
    # Position among every pending job of the queue (9.0 and 7.0 are ahead of 5.0), not only the hub's.
    assert ("Job 100 is waiting in queue debug (other jobs with higher priority are ahead in the queue), "
            "position 3 among all waiting jobs") in emitted
    assert "Job 100 running on vm; starting the server" in emitted
    # The waiting page's details travel with the events (JupyterHub passes extra keys through).
    details = {event["progress"]: event["hpchub"] for event in spawner._progress.events}
    assert details[10]["state"] == "submitted, not listed by the scheduler yet" and details[10]["job_id"] == "100"
    assert details[20] == {
        "job_id": "100", "cluster": "slurm", "queue": "debug", "state": "waiting in the queue",
        "scheduler_state": "PENDING", "reason": "other jobs with higher priority are ahead in the queue",
        "position": 3, "estimated_start": None, "node": None}
    assert details[50]["node"] == "vm" and details[50]["state"] == "running"
    assert details[90]["node"] == "vm" and details[90]["state"] == "running; the server is starting"
    state = spawner.get_state()
    assert (state["job_id"], state["job_host"], state["job_profile"]) == ("100", "vm", "small")
    assert state["job_cluster"]["scheduler"] == "slurm" and state["job_cluster"]["via"] == "sudo"
    assert await spawner.poll() is None
    assert porthandler.waiting_for(TOKEN) is None  # no longer waiting
    await spawner.stop()
    assert fake.cancelled == ["100"] and fake.removed == ["hpchub-alice-small"]
    assert fake.keep_days == 14  # old logs are cleaned in the same call as the submission


async def test_every_progress_listener_gets_the_whole_spawn_a_new_spawn_starts_afresh(fake):
    # A reloaded waiting page (or a second tab) opens a new stream: it must still show the job.
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: any("waiting in queue" in text for text in messages(spawner)))

    async def first_events(count: int) -> list[str]:
        events = []
        async for event in spawner.progress():
            events.append(event["message"])
            if len(events) == count:
                return events
        return events

    early = asyncio.create_task(first_events(3))
    assert await first_events(2) == ["Submitted job 100 to debug on slurm", messages(spawner)[1]]
    fake.set("100", JobState.RUNNING, nodes=("vm",))  # a listener that waits gets the next event too
    assert (await asyncio.wait_for(early, 5))[2] == "Job 100 running on vm; starting the server"
    report_port(1234)
    await asyncio.wait_for(start, 5)
    await spawner.stop()
    spawner.clear_state()
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts[1:])
    assert (await asyncio.wait_for(first_events(1), 5)) == ["Submitted job 101 to debug on slurm"]
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start


async def test_a_hub_user_named_root_gets_no_job(fake):
    spawner = make_spawner(user="root", options={"profile": "small"})
    with pytest.raises(SpawnFailed, match="hpchub does not act as 'root'"):
        await spawner.start()
    assert fake.scripts == [] and porthandler.waiting_for(TOKEN) is None


async def test_a_scheduler_outage_is_unknown_and_keeps_the_server(fake):
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake, port=4321)
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


async def test_a_job_that_ends_on_its_own_loses_its_files(fake):
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake)
    fake.set("100", JobState.FINISHED)
    assert await poll_until_ended(spawner)
    await wait_until(lambda: fake.removed == ["hpchub-alice-small"])
    assert fake.cancelled == []


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
    assert fake.cancelled == ["100"] and fake.removed == ["hpchub-alice-small"]


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
    assert porthandler.waiting_for(TOKEN) is None


async def test_bad_options_are_refused_before_anything_is_submitted(fake):
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as caught:
        await spawner.apply_user_options(spawner, {"profile": "small", "cores": 9})
    assert caught.value.status_code == 400 and "9 is above the maximum 4" in caught.value.log_message
    for huge in ("9" * 400 + "G", "9" * 400 + ":00:00"):  # a clear 400, never an overflow (500)
        field = "memory" if huge.endswith("G") else "walltime"
        with pytest.raises(web.HTTPError) as caught:
            await spawner.apply_user_options(spawner, {"profile": "small", field: huge})
        assert caught.value.status_code == 400
    spawner.user_options = {"profile": "small", "walltime": "99:00:00"}
    with pytest.raises(web.HTTPError):
        await spawner.start()
    assert fake.scripts == []


PRODUCTION = SITE_CONFIGS / "example-slurm-production.yaml"


async def test_profiles_with_groups_are_offered_to_members_only():
    everybody = [p.slug for p in await make_spawner(site=PRODUCTION).visible_profiles()]
    assert everybody == ["cpu-small", "cpu-multi"]
    gpu_user = make_spawner(groups=("gpu-users",), site=PRODUCTION)
    assert [p.slug for p in await gpu_user.visible_profiles()] == ["cpu-small", "cpu-multi", "gpu"]
    with pytest.raises(web.HTTPError) as caught:
        await make_spawner(site=PRODUCTION)._request_from({"profile": "gpu"})
    assert caught.value.status_code == 400
    assert (await gpu_user._request_from({"profile": "gpu", "gpus": 2})).gpus == 2
    # A user whose name is the group's name is not a member.
    assert "gpu" not in [p.slug for p in await make_spawner(user="gpu-users", site=PRODUCTION).visible_profiles()]


async def test_a_fixed_profile_is_still_restricted_to_its_users_and_groups():
    stranger = make_spawner(site=PRODUCTION)
    stranger.profile = "gpu"  # a wrapspawner entry "GPU" offered to everybody
    with pytest.raises(web.HTTPError) as caught:
        await stranger._request_from({})
    assert caught.value.status_code == 403
    member = make_spawner(groups=("gpu-users",), site=PRODUCTION)
    member.profile = "gpu"
    assert (await member._request_from({"profile": "cpu-small"})).profile.slug == "gpu"


def test_unix_groups_come_from_getgrouplist():
    import grp
    import os
    import pwd

    expected = {grp.getgrgid(gid).gr_name for gid in os.getgrouplist("alice", pwd.getpwnam("alice").pw_gid)}
    assert "alice" in unix_groups("alice") and unix_groups("alice") == expected
    assert unix_groups("no-such-user-here") == set()


async def test_fixed_profile_for_wrapspawner_entries():
    spawner = make_spawner(options={"profile": "hpc-small"})
    spawner.profile = "multi"
    assert (await spawner._request_from({"profile": "hpc-small", "nodes": 3})).nodes == 3


async def test_stopping_a_server_cancels_the_engine_jobs_it_started(fake):
    spawner = make_spawner(options={"profile": "multi"})
    await start_running(spawner, fake, node="node1", port=4000)
    # Engine jobs the notebook submitted (hpchub.parallel names them after the server's job).
    for job_id, user, name in (("201", "alice", "hpchub-alice-multi.e-100"), ("202", "alice", "hpchub-alice-multi.e-999"),
                               ("203", "bob", "hpchub-bob-multi.e-100")):
        fake.jobs[job_id] = JobStatus(job_id, JobState.RUNNING, "RUNNING", user=user)
        fake.names[job_id] = name
    await asyncio.sleep(0.05)  # older than the poller's min_interval: stop() asks the scheduler again
    await spawner.stop()
    assert fake.cancelled == ["100", "201"]


async def test_a_reused_job_id_is_never_cancelled(fake):
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake)
    fake.names["100"] = "someone-elses-job"  # the id now belongs to another job of the user
    await asyncio.sleep(0.05)
    await spawner.stop(now=True)
    assert fake.cancelled == []


async def test_server_jobs_tell_notebooks_the_site_config_and_engine_profile(fake):
    spawner = make_spawner(options={"profile": "multi"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    _, script = fake.scripts[0]
    assert f"export HPCHUB_SITE_CONFIG={SITE}\n" in script and "export HPCHUB_ENGINE_PROFILE=multi\n" in script
    start.cancel()


async def test_named_servers_and_profiles_never_share_files(fake):
    gpu_large = make_spawner(options={"profile": "small"}, server="large")
    start = asyncio.create_task(gpu_large.start())
    await wait_until(lambda: fake.scripts)
    start.cancel()
    assert list(fake.files) == ["hpchub-alice-small.s-large"]
    assert "/home/alice/.hpchub/jobs/hpchub-alice-small.s-large/env" in fake.scripts[0][1]


async def test_a_broken_or_changed_site_config_never_orphans_a_running_job(fake, tmp_path, caplog):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.read_text())
    spawner = make_spawner(options={"profile": "small"}, site=site_file)
    await start_running(spawner, fake)
    state = spawner.get_state()
    site_file.write_text("clusters: [this is not a site config\n")  # broken edit
    restarted = make_spawner(site=site_file)
    restarted.load_state(state)
    assert await restarted.poll() is None  # running, found from the saved state alone
    other = tmp_path / "other.yaml"  # the cluster renamed away in a new config
    other.write_text(SITE.read_text().replace("  slurm:\n", "  renamed:\n").replace("cluster: slurm", "cluster: renamed"))
    moved = make_spawner(site=other)
    moved.load_state(state)
    assert await moved.poll() is None
    fake.set("100", JobState.FINISHED)
    assert await poll_until_ended(moved)
    # State an older spawner (batchspawner) left: a clear log line, no crash, no "gone".
    old = make_spawner(site=site_file)
    old.load_state({"job_id": "77", "job_status": "RUNNING"})
    assert await old.poll() is None
    assert "does not say which cluster it runs on" in caplog.text
    await old.stop()  # no crash either


async def test_site_config_edits_take_effect_for_new_spawns(fake, tmp_path):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.read_text())
    spawner = make_spawner(site=site_file)
    with pytest.raises(web.HTTPError):
        await spawner.apply_user_options(spawner, {"profile": "small", "cores": 6})
    site_file.write_text(SITE.read_text().replace("cores: {min: 1, max: 4}", "cores: {min: 1, max: 6}", 1))
    await spawner.apply_user_options(spawner, {"profile": "small", "cores": 6})
    site_file.write_text("site: [broken\n")
    await spawner.apply_user_options(spawner, {"profile": "small", "cores": 6})  # the last good config stays


def test_the_port_endpoint_does_not_import_the_spawner():
    import subprocess
    import sys

    code = "import sys, hpchub.hub.porthandler; print('hpchub.hub.spawner' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_hpchub_render_prints_exactly_what_the_spawner_submits(fake, capsys):
    from hpchub.admin.cli import main as hpchub_cli

    spawner = make_spawner(options={"profile": "small", "cores": "2", "memory": "2G"}, server="big")
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    start.cancel()
    assert hpchub_cli(["render", str(SITE), "--profile", "small", "--user", "alice", "--server", "big",
                       "--set", "cores=2", "--set", "memory=2G"]) == 0
    assert capsys.readouterr().out == fake.scripts[0][1]


async def test_a_job_that_runs_then_lands_in_an_error_state_says_so(fake):
    """Grid Engine may show a job running for a moment and then put it in Eqw (a busy machine):
    the spawn fails with "error state", not as an ended job."""
    spawner = make_spawner(options={"profile": "small"})
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts)
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    await wait_until(lambda: spawner.job_host == "vm")
    fake.set("100", JobState.ERROR)
    with pytest.raises(SpawnFailed, match="the job is in an error state"):
        await asyncio.wait_for(start, 5)


@pytest.mark.parametrize("failure", ["timeout", "connection lost", "no job id", "output too large",
                                     "controller's answer lost"])
async def test_a_submission_with_an_unknown_outcome_leaves_no_job_running(fake, failure):
    # sbatch ran but the hub never learned the job id: that job would be a server nobody stops.
    from hpchub.schedulers import ParseError
    from hpchub.transports.runner import CommandTimeout, OutputTooLarge
    from hpchub.transports.sshpool import ConnectionLost

    errors = {"timeout": CommandTimeout(["sudo", "hpchub-job"], None, reason="timed out after 30 s"),
              "connection lost": ConnectionLost(["hpchub-job"], None, reason="the SSH connection was lost"),
              "no job id": ParseError("sbatch printed no job id: 'Submitted'"),
              "output too large": OutputTooLarge(["hpchub-job"], "stdout", 1 << 20, "", ""),
              # slurmctld too busy to answer in time (500 sbatch at once on the test VM): sbatch gives up
              # on the answer, but the job may exist
              "controller's answer lost": CommandError(
                  ["sudo", "hpchub-job"], 1,
                  stderr="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n")}
    submit = fake.submit

    async def submit_then_fail(user, key, script, files, keep_days=None):
        job_id = await submit(user, key, script, files, keep_days)
        fake.names[job_id] = script.split("--job-name=", 1)[1].split("\n", 1)[0]
        raise errors[failure]

    fake.submit = submit_then_fail
    fake.names["99"] = "hpchub-alice-other"  # another server of alice's: not touched
    fake.jobs["99"] = JobStatus("99", JobState.RUNNING, "RUNNING", user="alice")
    spawner = make_spawner(options={"profile": "small"})
    with pytest.raises(SpawnFailed, match="could not tell whether the job was submitted.*cancelled job 100"):
        await spawner.start()
    assert fake.cancelled == ["100"] and fake.jobs["100"].state is JobState.CANCELLED
    assert fake.jobs["99"].state is JobState.RUNNING
    assert list(fake.files) == fake.removed  # its files too
    assert porthandler.waiting_for(TOKEN) is None


@pytest.mark.parametrize("backoff", [0.0, 0.5])
async def test_a_spawn_that_keeps_waiting_asks_the_scheduler_less_and_less(fake, backoff):
    # Spawns waiting for hours in a full queue must not poll every startup_poll_interval: with
    # backoff 0.5, a spawn that waited 1 s checks every 0.5 s (every 0.02 s without).
    calls = fake.status_calls
    spawner = make_spawner(options={"profile": "small"})
    spawner.startup_poll_backoff = backoff
    start = asyncio.create_task(spawner.start())
    try:
        await wait_until(lambda: fake.scripts)
        begin = asyncio.get_running_loop().time()
        await asyncio.sleep(2.0)
        later = [t for t in calls if t >= begin + 1.0]  # the second second of waiting
        if backoff:
            assert len(later) <= 4, len(later)
        else:
            assert len(later) >= 15, len(later)
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)


async def test_the_port_report_ends_the_wait_at_once_whatever_the_poll_interval(fake):
    # The poller last saw the job pending; the job then starts and the server reports its port:
    # the spawn asks the scheduler for the node now rather than at its next check (5 s here).
    spawner = make_spawner(options={"profile": "small"})
    spawner.startup_poll_interval = 5.0
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    await wait_until(lambda: any("waiting in queue" in text for text in messages(spawner)))
    began = asyncio.get_running_loop().time()
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    assert report_port(4321)
    assert await asyncio.wait_for(start, timeout=3) == ("127.0.0.1", 4321)
    assert asyncio.get_running_loop().time() - began < 1.0


@pytest.mark.parametrize("internal_ssl", [False, True])
async def test_a_to_hub_others_could_answer_needs_internal_ssl(tmp_path, internal_ssl):
    """Jobs told a plain http:// hub URL (or a login node's port) would hand their token to whoever
    answers there: without internal_ssl (jobs verify the hub's certificate) the spawn is refused
    before anything is submitted, naming the cluster, the key and why."""
    site = tmp_path / "site.yaml"
    site.write_text(SITE.read_text().replace(
        "submit: {via: sudo}\n", "submit: {via: sudo}\n    network: {to_hub: 'http://hub.example.org:8081/hub/api'}\n"))
    spec = ClusterSpec.from_site(load_site_config(site), "slurm")
    fake = install_fake(spec)
    try:
        spawner = make_spawner(options={"profile": "small"}, site=site)
        spawner.internal_ssl = internal_ssl
        spawner.hub = SimpleNamespace(api_url="http://10.77.0.1:8081/hub/api")
        if not internal_ssl:
            with pytest.raises(SpawnFailed) as refused:
                await spawner.start()
            assert str(refused.value).split(": ", 1)[1].startswith(
                "hpchub refuses to start this server: clusters.slurm.network.to_hub: http://hub.example.org:8081/hub/api "
                "needs c.JupyterHub.internal_ssl = True")
            assert "receives every job's API token" in str(refused.value)
            assert fake.scripts == []
            return
        await start_running(spawner, fake)
        _, files = fake.files["hpchub-alice-small"]
        assert "JUPYTERHUB_API_URL=http://hub.example.org:8081/hub/api" in files["env"]
        await spawner.stop()
    finally:
        runtime = ClusterRuntime.registry.pop((spec, id(asyncio.get_running_loop())))
        if runtime.task:
            runtime.task.cancel()


async def test_after_the_port_report_the_node_is_asked_as_soon_as_the_poller_may(fake):
    # The poller may query at most every min_interval (1 s here). The spawn saw the job pending 0.6 s
    # before its server reported: the scheduler is asked for the node 0.4 s after the report, when
    # the poller may query again, not a whole min_interval after the report.
    runtime = next(runtime for (spec, _), runtime in ClusterRuntime.registry.items() if runtime.client is fake)
    runtime.poller.min_interval = 1.0
    spawner = make_spawner(options={"profile": "small"})
    spawner.startup_poll_interval = 5.0
    start = asyncio.create_task(spawner.start())
    await wait_until(lambda: any("waiting in queue" in text for text in messages(spawner)))
    seen_pending = fake.status_calls[-1]
    await asyncio.sleep(0.6 - (asyncio.get_running_loop().time() - seen_pending))
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    reported = asyncio.get_running_loop().time()
    assert report_port(4321)
    assert await asyncio.wait_for(start, timeout=3) == ("127.0.0.1", 4321)
    assert asyncio.get_running_loop().time() - reported < 0.75
    assert fake.status_calls[-1] - seen_pending >= 1.0  # and not before the poller may
