"""A job is tracked with its owner: the job id a submission prints is the user's text (over SSH their
shell prints what it likes), so it is adopted only once the scheduler lists it as that user's job
under hpchub's name, and no other server's job is ever watched, shared, stopped or cancelled through
it; nor after a hub restart, where job ids may have been reused (Grid Engine wraps them).

The fast tests use the fake scheduler of test_spawner_lifecycle; the real schedulers behind the real
login node are in test_job_owner_real.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from test_spawner_lifecycle import fake, make_spawner, poll_until_ended, start_running  # noqa: F401 (fixture)

from hpchub.core import runtime as runtime_module
from hpchub.core.poller import StatusPoller
from hpchub.core.runtime import ClusterRuntime
from hpchub.hub import porthandler
from hpchub.hub.spawner import SpawnFailed
from hpchub.schedulers import JobState, JobStatus
from hpchub.transports.runner import CommandError


def runtime_of(fake) -> ClusterRuntime:  # noqa: F811
    return ClusterRuntime.registry[(fake.spec, id(asyncio.get_running_loop()))]


def restart_hub(fake) -> ClusterRuntime:  # noqa: F811
    """A new hub process: a new runtime (nothing watched) on the same scheduler."""
    key = (fake.spec, id(asyncio.get_running_loop()))
    old = ClusterRuntime.registry[key]
    if old.task:
        old.task.cancel()
    runtime = ClusterRuntime.registry[key] = ClusterRuntime(fake, StatusPoller(fake.status, interval=0.5,
                                                                               min_interval=0.02, jitter=0))
    return runtime


def report_job_id(fake, job_id: str) -> None:  # noqa: F811
    """hpchub-job's output ends with ``job_id`` (a line the user's shell printed last), while the
    submission itself went through: the user's real job exists under hpchub's name."""
    submit = fake.submit

    async def submit_and_print(user, key, script, files, keep_days=None):
        await submit(user, key, script, files, keep_days)
        return job_id

    fake.submit = submit_and_print


@pytest.mark.parametrize("owner", ["bob", "alice/other"])
async def test_a_submission_that_reports_another_servers_job_is_refused_and_leaves_it_alone(fake, owner):  # noqa: F811
    user, server = owner.split("/") if "/" in owner else (owner, "")
    other = make_spawner(user=user, options={"profile": "small"}, server=server)
    await start_running(other, fake)  # job 100
    report_job_id(fake, "100")
    alice = make_spawner(options={"profile": "small"})
    with pytest.raises(SpawnFailed, match=r"refused the job id the submission reported: submitting hpchub-alice-small "
                                          r"reported job 100, but .*cancelled job 101 it had submitted"):
        await asyncio.wait_for(alice.start(), 3)
    assert fake.cancelled == ["101"]  # alice's own job, found by its name; the other job untouched
    assert fake.jobs["100"].state is JobState.RUNNING and fake.jobs["101"].user == "alice"
    assert alice.job_id == "" and porthandler.waiting_for(alice.api_token) is None
    assert runtime_of(fake).poller.watches("100", user, f"{user}/{server}")  # still the other server's
    await alice.stop()  # what JupyterHub does after a failed spawn
    assert await other.poll() is None and fake.cancelled == ["101"]
    await other.stop()
    assert fake.cancelled == ["101", "100"]


async def test_a_reported_job_id_the_scheduler_does_not_list_as_the_users_is_refused(fake):  # noqa: F811
    fake.jobs["55"] = JobStatus("55", JobState.RUNNING, "RUNNING", user="bob", nodes=("vm",))  # nobody watches it
    fake.names["55"] = "bobs-own-job"
    report_job_id(fake, "55")
    alice = make_spawner(options={"profile": "small"})
    with pytest.raises(SpawnFailed, match="the scheduler lists no job 55 of alice's: that job is not adopted"):
        await asyncio.wait_for(alice.start(), 3)
    assert fake.cancelled == ["100"] and fake.jobs["55"].state is JobState.RUNNING
    assert "55" not in runtime_of(fake).poller.watched


async def test_a_watched_job_the_scheduler_lists_as_another_users_is_over_and_never_cancelled(fake):  # noqa: F811
    alice = make_spawner(options={"profile": "small"})
    await start_running(alice, fake)
    fake.jobs["100"] = replace(fake.jobs["100"], user="bob")  # the id now names bob's job
    fake.names["100"] = "hpchub-bob-small"
    assert await poll_until_ended(alice)
    await alice.stop()
    assert fake.cancelled == [] and fake.jobs["100"].state is JobState.RUNNING


@pytest.mark.parametrize("now", ["bob's job", "alice's other job"])
async def test_a_restored_job_whose_id_names_another_job_now_is_not_adopted(fake, now):  # noqa: F811
    alice = make_spawner(options={"profile": "small"})
    await start_running(alice, fake)
    state = alice.get_state()
    # While the hub was down, job 100 ended and its id was reused (Grid Engine wraps job ids).
    if now == "bob's job":
        fake.jobs["100"] = replace(fake.jobs["100"], user="bob")
        fake.names["100"] = "hpchub-bob-small"
    else:
        fake.names["100"] = "hpchub-alice-small.s-other"
        fake.jobs["201"] = JobStatus("201", JobState.RUNNING, "RUNNING", user="alice")
        fake.names["201"] = "hpchub-alice-small.e-100"  # that other server's engines: named after job 100
    restart_hub(fake)
    restored = make_spawner(options={"profile": "small"})
    restored.load_state(state)
    assert await restored.poll() == 1  # stopped
    await restored.stop()  # what JupyterHub does for a server that stopped while it was down
    assert fake.cancelled == []
    assert "100" not in runtime_of(fake).poller.watched


async def test_a_restored_job_is_adopted_once_the_scheduler_confirms_it(fake):  # noqa: F811
    alice = make_spawner(options={"profile": "small"})
    await start_running(alice, fake)
    state = alice.get_state()
    runtime = restart_hub(fake)
    names = fake.job_names

    async def names_failing(user):
        raise CommandError(["squeue"], 1, stderr="slurm_load_jobs error: Unable to contact slurm controller")

    fake.job_names = names_failing
    restored = make_spawner(options={"profile": "small"})
    restored.load_state(state)
    assert await restored.poll() is None  # unknown: never dropped, asked again
    assert "100" not in runtime.poller.watched
    fake.job_names = names
    assert await restored.poll() is None
    assert runtime.poller.watches("100", "alice", "alice/")
    await restored.stop()
    assert fake.cancelled == ["100"]


async def test_one_users_server_never_shares_or_closes_another_users_tunnel(fake, monkeypatch):  # noqa: F811
    class Forward:
        def __init__(self, port):
            self.port, self.closed = port, False

        def close(self):
            self.closed = True

    opened: list[tuple[str, Forward]] = []

    class Pool:
        async def open_local_forward(self, target, address, port, local_port=0):
            opened.append((target, Forward(40000 + len(opened))))
            return opened[-1][1]

    monkeypatch.setattr(runtime_module, "ssh_pool", Pool)
    runtime = runtime_of(fake)
    monkeypatch.setattr(runtime.client, "ssh_target", lambda user: user)
    assert await runtime.tunnel("100", "bob", "10.77.0.11", 8888) == 40000
    assert await runtime.tunnel("100", "alice", "10.77.0.11", 8888) == 40001  # her own, through her own login
    assert [target for target, _ in opened] == ["bob", "alice"]
    runtime.close_tunnel("100", "alice")
    assert opened[1][1].closed and not opened[0][1].closed
    assert runtime.has_tunnel("100", "bob") and not runtime.has_tunnel("100", "alice")
