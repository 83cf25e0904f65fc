"""End to end on the real local Grid Engine: a real JupyterHub and configurable-http-proxy,
servers spawned through the REST API as the users' own qsub jobs."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers.hub import jobs_of, run_hub, spawn, spawn_failure_message, stop
from helpers.profiles import broken_profile, local_site_text, unwritable_output_profile

pytestmark = [pytest.mark.e2e, pytest.mark.sge]

USERS = ("alice", "bob")
POLL_INTERVAL = 2  # short: the tests wait for what the poller notices


@pytest.fixture(scope="module")
def hub(sge_cluster, tmp_path_factory):
    site_text = local_site_text("sge", broken_profile("sge") + unwritable_output_profile("stuck", memory="1G"))
    yield from run_hub(tmp_path_factory.mktemp("hub-sge"), site_text, USERS, poll_interval=POLL_INTERVAL)


def test_spawn_as_the_users_own_job_reach_it_and_stop(hub, client):
    server = spawn(hub, "alice", {"profile": "small", "cores": 2, "queue": "long.q"})
    job_id = server["state"]["job_id"]
    job = jobs_of(client, "alice")[job_id]
    assert job.user == "alice" and job.queue == "long.q" and job.name == "hpchub-alice-small"
    assert hub.get_user_url("alice", "api/status").status_code == 200
    stop(hub, "alice")
    assert job_id not in jobs_of(client, "alice")


def test_bad_options_are_refused_with_400(hub, client):
    response = hub.api("POST", "/users/bob/server", json={"profile": "small", "queue": "all.q"})
    assert response.status_code == 400 and "all.q is not one of short.q, long.q" in response.json()["message"]
    assert jobs_of(client, "bob") == {}


def test_a_job_deleted_outside_the_hub_is_noticed_within_a_poll_interval(hub):
    server = spawn(hub, "bob", {"profile": "smp"})
    subprocess.run(["sudo", "-n", "-u", "bob", "qdel", server["state"]["job_id"]], check=True, capture_output=True)
    started = time.monotonic()
    hub.wait_for_server("bob", ready=False, timeout=3 * POLL_INTERVAL + 10)
    assert time.monotonic() - started <= POLL_INTERVAL + 5


def test_a_job_that_fails_at_start_fails_the_spawn_in_seconds_with_the_reason(hub):
    started = time.monotonic()
    message = spawn_failure_message(hub, "alice", {"profile": "broken"})
    assert time.monotonic() - started < 20
    assert "cannot activate the virtual environment" in message and "/nonexistent/venv" in message
    hub.wait_for_server("alice", ready=False, timeout=10)


def test_a_job_in_error_state_fails_the_spawn_with_the_schedulers_reason(hub, client):
    started = time.monotonic()
    message = spawn_failure_message(hub, "bob", {"profile": "stuck"})
    assert time.monotonic() - started < 30
    assert "error state" in message and "can't open output file" in message
    hub.wait_for_server("bob", ready=False, timeout=10)
    assert jobs_of(client, "bob") == {}
