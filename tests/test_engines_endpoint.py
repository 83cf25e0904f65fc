"""The hub's engines endpoint (hpchub.hub.engines) against a fake scheduler: who may ask (only a
running server's own token), what is checked (the request's shape, the profile and options like the
spawn form), what is submitted (as the server's user, named after the server's job) and that a
stopped server's engines are cancelled. Through a real hub and scheduler: tests/test_e2e_slurm.py and
tests/test_e2e_sge.py (..._from_a_kernel_without_hpchub)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from helpers.support import SITE_CONFIGS, user_readable
from test_spawner_lifecycle import TOKEN, fake, make_spawner, start_running  # noqa: F401 - fake is a fixture
from tornado import web

from hpchub.core.jobs import ENV_ENGINE_PROFILE, ENV_PARENT_ALLOCATIONS, ENV_PARENT_IMAGE, ENV_PARENT_USER_ENV
from hpchub.hub import engines
from hpchub.job import engines as job_engines
from hpchub.schedulers import JobState

CONNECTION = json.dumps({"key": "s3cret", "registration": 12345, "interface": "tcp://10.77.0.11"})


def body(**changes) -> bytes:
    request = {"n": 4, "options": {"nodes": 2}, "command": ["/usr/bin/python3", "-m", "ipyparallel.engine"],
               "env": {"IPP_CONNECTION_INFO": CONNECTION, "IPP_CLUSTER_ID": "abc"}}
    request.update(changes)
    return json.dumps({key: value for key, value in request.items() if value is not ...}).encode()


async def running(fake, user="alice", profile="multi", site=None):  # noqa: F811 - the fixture's value
    """A spawner whose server runs (as JupyterHub sees it once start() returned). The fake scheduler
    names jobs as their script does (an engine job's key is not its name)."""
    submit = fake.submit

    async def submit_named(user, key, script, files, keep_days=None):
        job_id = await submit(user, key, script, files, keep_days)
        fake.names[job_id] = re.search(r"^#SBATCH --job-name=(\S+)$", script, re.M).group(1).strip("'")
        return job_id

    fake.submit = submit_named
    spawner = make_spawner(user=user, options={"profile": profile}, **({"site": site} if site else {}))
    await start_running(spawner, fake)
    spawner._server = object()  # JupyterHub records the server once start() returns
    return spawner


async def until_state(server, job_id: str, state: str, timeout: float = 3.0) -> dict:
    for _ in range(int(timeout / 0.05)):
        answer = await engines.engine_state(server, job_id)
        if answer["state"] == state:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"engine job {job_id} never {state}: {answer}")


@pytest.mark.parametrize(("changes", "problem"), [
    ({"n": 0}, "n must be an integer"),
    ({"n": "4"}, "n must be an integer"),
    ({"n": True}, "n must be an integer"),
    ({"n": 10**6}, "n must be an integer"),
    ({"n": ...}, "body must be an object with n and command"),
    ({"command": []}, "command must be a list"),
    ({"command": "ipengine"}, "command must be a list"),
    ({"command": ["python", "a\nb"]}, "no control characters"),
    ({"env": {"BAD NAME": "x"}}, "env must map"),
    ({"env": {"A": 1}}, "env must map"),
    ({"options": {"nodes": [2]}}, "options must map"),
    ({"options": {"nodes": True}}, "options must map"),
    ({"inherit": {"queue": "multi"}}, "inherit must map"),
    ({"profile": 3}, "profile must be"),
    ({"job_id": "1"}, "only command, env, inherit, n, options, profile"),
])
def test_a_malformed_request_is_refused_with_400(changes, problem):
    with pytest.raises(web.HTTPError) as refused:
        engines.read_request(body(**changes))
    assert refused.value.status_code == 400 and problem in refused.value.log_message


def test_a_body_that_is_not_json_is_refused():
    with pytest.raises(web.HTTPError) as refused:
        engines.read_request(b"n=4")
    assert refused.value.status_code == 400


async def test_only_a_running_servers_own_token_may_ask(fake):  # noqa: F811
    with pytest.raises(web.HTTPError) as refused:
        engines.running_server(TOKEN, "alice")  # no server runs yet
    assert refused.value.status_code == 403
    spawner = await running(fake)
    assert engines.running_server(TOKEN, "alice").spawner is spawner
    for token, user in (("e" * 32, "alice"), (None, "alice"), (TOKEN, "bob"), (TOKEN, None)):
        with pytest.raises(web.HTTPError) as refused:
            engines.running_server(token, user)  # another token, or this token as someone else's
        assert refused.value.status_code == 403
    # The token is known by its hash only, and again from the saved state after a hub restart.
    state = spawner.get_state()
    assert state["job_token"] == engines.token_digest(TOKEN) and TOKEN not in json.dumps(state)
    await spawner.stop()
    with pytest.raises(web.HTTPError) as refused:
        engines.running_server(TOKEN, "alice")  # a stopped server's token
    assert refused.value.status_code == 403


async def test_a_server_that_is_stopping_or_whose_job_ended_gives_no_engines(fake):  # noqa: F811
    spawner = await running(fake)
    spawner._stop_pending = True
    with pytest.raises(web.HTTPError):
        engines.running_server(TOKEN, "alice")
    spawner._stop_pending = False
    fake.set("100", JobState.FINISHED)
    for _ in range(100):
        if await spawner.poll() == 1:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(web.HTTPError) as refused:
        engines.running_server(TOKEN, "alice")
    assert refused.value.status_code == 403


async def test_after_a_hub_restart_the_saved_token_asks_for_engines_again(fake):  # noqa: F811
    spawner = await running(fake)
    state = spawner.get_state()
    engines.forget(state["job_token"])  # the hub process ends: its table is gone
    restarted = make_spawner(options={"profile": "multi"})
    restarted.load_state(state)
    restarted._server = object()
    assert engines.running_server(TOKEN, "alice").spawner is restarted
    restarted.clear_state()
    with pytest.raises(web.HTTPError):
        engines.running_server(TOKEN, "alice")


async def test_the_hub_submits_the_engines_as_the_servers_user_named_after_its_job(fake):  # noqa: F811
    spawner = await running(fake)
    server = engines.running_server(TOKEN, "alice")
    engine_set = await engines.start_engines(server, engines.read_request(body()))
    user, script = fake.scripts[-1]
    assert user == "alice" and engine_set.user == "alice" and engine_set.job_id == "101"
    assert engine_set.name == "hpchub-alice-multi.e-100"  # the server's job: cancelled with it
    assert "#SBATCH --ntasks=4" in script and "#SBATCH --nodes=2" in script
    assert "/usr/bin/python3 -m ipyparallel.engine" in script
    # The connection info (its key) only in the job's user-only env file, never in the script.
    files_user, files = fake.files[engine_set.key]
    assert files_user == "alice" and "s3cret" in files["env"] and "s3cret" not in script
    assert "IPP_CLUSTER_ID=abc" in files["env"]
    # Watched by the shared poller; the server's stop cancels it (by name) and forgets the set.
    assert fake.jobs["101"].state is JobState.PENDING
    await spawner.stop()
    assert set(fake.cancelled) == {"100", "101"} and engine_set.key in fake.removed
    with pytest.raises(web.HTTPError):
        engines.running_server(TOKEN, "alice")


async def test_the_default_profile_is_the_servers_own_and_options_are_checked_like_the_form(fake):  # noqa: F811
    await running(fake, profile="small")
    server = engines.running_server(TOKEN, "alice")
    engine_set = await engines.start_engines(server, engines.read_request(body(options={"cores": 2})))
    assert engine_set.name == "hpchub-alice-small.e-100"
    for options, problem in (({"nodes": 2}, "does not let users change nodes"), ({"cores": 64}, "above the maximum"),
                             ({"queue": "nope"}, "does not let users change queue"), ({"color": "red"}, "unknown option")):
        with pytest.raises(web.HTTPError) as refused:
            await engines.start_engines(server, engines.read_request(body(options=options)))
        assert refused.value.status_code == 400 and problem in refused.value.log_message
    assert len(fake.scripts) == 2  # the server's and the one good engine job


RESTRICTED = """
  - slug: bobs
    name: "Bob's"
    cluster: slurm
    queue: multi
    resources: {cores: 1, memory: 512M, walltime: "01:00:00"}
    hub_users: [bob]
"""


async def test_a_profile_the_user_may_not_use_is_refused(fake):  # noqa: F811
    site = user_readable("engines-restricted.yaml", (SITE_CONFIGS / "local-slurm.yaml").read_text() + RESTRICTED)
    await running(fake, site=site)
    server = engines.running_server(TOKEN, "alice")
    for slug in ("bobs", "nonexistent"):
        with pytest.raises(web.HTTPError) as refused:
            await engines.start_engines(server, engines.read_request(body(profile=slug, options={})))
        assert refused.value.status_code == 403 and "is not available to you" in refused.value.log_message
    assert len(fake.scripts) == 1


async def test_an_inherited_account_the_profile_does_not_let_users_choose_is_left_out(fake):  # noqa: F811
    await running(fake)
    server = engines.running_server(TOKEN, "alice")
    engine_set = await engines.start_engines(server, engines.read_request(body(inherit={"account": "phys"})))
    assert "--account" not in fake.scripts[-1][1] and engine_set.job_id == "101"


def test_the_job_side_reads_what_server_jobs_export():
    assert job_engines.ENV_ENGINE_PROFILE == ENV_ENGINE_PROFILE
    assert job_engines.ENV_PARENT_ALLOCATIONS == ENV_PARENT_ALLOCATIONS
    assert job_engines.ENV_PARENT_IMAGE == ENV_PARENT_IMAGE
    assert job_engines.ENV_PARENT_USER_ENV == ENV_PARENT_USER_ENV
    assert job_engines.ROUTE == engines.ROUTE.removeprefix("/api/")


async def test_state_and_stop_come_from_the_shared_poller_and_the_server_s_own_jobs_only(fake):  # noqa: F811
    await running(fake)
    server = engines.running_server(TOKEN, "alice")
    engine_set = await engines.start_engines(server, engines.read_request(body()))
    # "unknown" until the poller's next query (one per the hub's poll interval, 1 s in make_spawner).
    assert (await engines.engine_state(server, "101"))["state"] in ("unknown", "pending")
    await until_state(server, "101", "pending")
    fake.set("101", JobState.RUNNING, nodes=("node1", "node2"))
    await until_state(server, "101", "running")
    answer = await engines.stop_engines(server, "101")
    assert answer == {"job_id": "101", "state": "ended"} and "101" in fake.cancelled
    assert engine_set.key in fake.removed
    # No job of another server or user, whatever id a kernel names.
    for job_id in ("100", "999"):  # the server's own job, a job that does not exist
        with pytest.raises(web.HTTPError) as refused:
            await engines.engine_state(server, job_id)
        assert refused.value.status_code == 404
    assert "100" not in fake.cancelled


async def test_an_engine_job_that_ends_by_itself_is_reported_ended_and_its_files_removed(fake):  # noqa: F811
    await running(fake)
    server = engines.running_server(TOKEN, "alice")
    engine_set = await engines.start_engines(server, engines.read_request(body()))
    fake.set("101", JobState.FAILED)
    assert await until_state(server, "101", "ended") == {"job_id": "101", "state": "ended", "scheduler_state": "FAILED",
                                                         "failed": True}
    assert engine_set.key in fake.removed and "101" not in fake.cancelled


async def test_after_a_hub_restart_the_engine_job_is_found_again_by_its_name(fake):  # noqa: F811
    spawner = await running(fake)
    server = engines.running_server(TOKEN, "alice")
    await engines.start_engines(server, engines.read_request(body()))
    state = spawner.get_state()
    engines.forget(state["job_token"])
    restarted = make_spawner(options={"profile": "multi"})
    restarted.load_state(state)
    restarted._server = object()
    server = engines.running_server(TOKEN, "alice")
    await until_state(server, "101", "pending")
    assert (await engines.stop_engines(server, "101"))["state"] == "ended" and "101" in fake.cancelled
