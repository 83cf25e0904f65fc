"""End to end on the real local Grid Engine: a real JupyterHub and configurable-http-proxy,
servers spawned through the REST API as the users' own qsub jobs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers.hub import active_job_names, jobs_of, run_hub, spawn, spawn_failure_message, stop
from helpers.kernel_env import engine_logs, kernel_environment, kernel_in_server_job
from helpers.profiles import broken_profile, kernel_engines_profile, local_site_text, unwritable_output_profile

pytestmark = [pytest.mark.e2e, pytest.mark.sge]

USERS = ("alice", "bob")
POLL_INTERVAL = 2  # short: the tests wait for what the poller notices


@pytest.fixture(scope="module")
def hub(sge_cluster, tmp_path_factory):
    site_text = local_site_text("sge", broken_profile("sge") + unwritable_output_profile("stuck", memory="1G")
                                + kernel_engines_profile("sge"))
    yield from run_hub(tmp_path_factory.mktemp("hub-sge"), site_text, USERS, poll_interval=POLL_INTERVAL)


def test_spawn_as_the_users_own_job_reach_it_and_stop(hub, client):
    server = spawn(hub, "alice", {"profile": "small", "cores": 2, "queue": "long.q"})
    job_id = server["state"]["job_id"]
    job = jobs_of(client, "alice")[job_id]
    assert job.user == "alice" and job.queue == "long.q" and job.name == "hpchub-alice-small"
    assert hub.get_user_url("alice", "api/status").status_code == 200
    stop(hub, "alice")
    assert job_id not in jobs_of(client, "alice")


def test_bad_options_are_refused_with_400(hub):
    response = hub.api("POST", "/users/bob/server", json={"profile": "small", "queue": "all.q"})
    assert response.status_code == 400 and "all.q is not one of short.q, long.q" in response.json()["message"]
    # Nothing was started; bob's jobs are not compared: the SSH tests submit some meanwhile (tests/run.sh)
    assert hub.server("bob") is None


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
    assert "hpchub-bob-stuck" not in active_job_names(client, "bob").values()


def test_a_kernel_without_hpchub_gets_engines_as_an_array_job_from_the_hub(hub, client):
    """ipp.Cluster(engines="hpchub") in a kernel with alice's server job's environment, whose Python
    has ipyparallel but no hpchub (only the job side as it travels with the job): the hub submits
    the engines as alice, an array job; stop_cluster cancels it."""
    server = spawn(hub, "alice", {"profile": "kernel-engines"})
    server_job = server["state"]["job_id"]
    argv, env, top = kernel_environment(job_side=False)
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-kernel-"))
    shutil.chown(scratch, "alice")
    command = kernel_in_server_job("alice", f"/home/alice/.hpchub/jobs/{server['state']['job_key']}/env", argv,
                                   {**env, "HPCHUB_ENGINE_PROFILE": "kernel-engines"}, scratch, 2, {})
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + engine_logs("alice", server_job)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["launcher"] == "hpchub_job.engines" and found["controller"] == "HPCControllerLauncher"
    assert found["engines"] == 2 and found["hosts"] == ["vm"]
    assert found["job_id"] not in jobs_of(client, "alice")  # stop_cluster cancelled it
    # Submitted by the hub as alice, named after her server's job (Grid Engine's accounting says so).
    deadline, accounted = time.monotonic() + 15, ""
    while time.monotonic() < deadline and "jobname" not in accounted:
        accounted = subprocess.run(["qacct", "-j", found["job_id"]], capture_output=True, text=True).stdout
        time.sleep(0.5)
    fields = dict(line.split(None, 1) for line in accounted.splitlines() if len(line.split(None, 1)) == 2)
    assert fields.get("owner", "").strip() == "alice"
    assert fields.get("jobname", "").strip() == f"hpchub-alice-kernel-engines.e-{server_job}"
    stop(hub, "alice")
