"""End to end on the real local Slurm: a real JupyterHub and configurable-http-proxy, servers
spawned through the REST API as batch jobs of the users' own accounts."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from helpers.hub import active_job_names, job_info_rpcs, jobs_of, run_hub, spawn, spawn_failure_message, stop
from helpers.jobs import accounted_as
from helpers.kernel_env import engine_logs, kernel_environment, kernel_in_server_job
from helpers.profiles import begins_in_an_hour_profile, broken_profile, kernel_engines_profile, local_site_text
from helpers.support import CLUSTER_SCRIPTS, REPO, run_as_user, run_hpchub, user_readable

from hpchub.schedulers import JobState

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

USERS = ("alice", "bob", "carol")
POLL_INTERVAL = 2  # short: the tests wait for what the poller notices


@pytest.fixture(scope="module")
def hub(slurm_cluster, tmp_path_factory):
    site_text = local_site_text("slurm", broken_profile("slurm") + kernel_engines_profile("slurm"))
    yield from run_hub(tmp_path_factory.mktemp("hub-slurm"), site_text, USERS, poll_interval=POLL_INTERVAL,
                       leftover_slurm_profiles=("small", "multi", "kernel-engines"))


def test_spawn_as_the_users_own_job_reach_it_through_the_proxy_and_stop(hub, client):
    started = time.monotonic()
    server = spawn(hub, "alice", {"profile": "small", "cores": 2, "memory": "2G"})
    spawn_seconds = time.monotonic() - started
    job_id = server["state"]["job_id"]
    jobs = jobs_of(client, "alice")
    assert job_id in jobs and jobs[job_id].user == "alice" and jobs[job_id].state is JobState.RUNNING
    assert asyncio.run(client.job_names("alice"))[job_id] == "hpchub-alice-small"
    status = hub.get_user_url("alice", "api/status")
    assert status.status_code == 200 and "last_activity" in status.json()
    # What the scheduler got is exactly what `hpchub render` prints for the same choices.
    script = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True).stdout
    rendered = run_hpchub("render", str(hub.site_config), "--profile", "small", "--user", "alice",
                          "--set", "cores=2", "--set", "memory=2G")
    assert rendered.returncode == 0 and script == rendered.stdout
    # The token reached the job in a file only alice can read, in a directory only she can enter.
    secrets = Path(f"/home/alice/.hpchub/jobs/{server['state']['job_key']}/env")
    assert secrets.stat().st_mode & 0o777 == 0o600 and secrets.owner() == "alice"
    assert secrets.parent.stat().st_mode & 0o777 == 0o700 and secrets.parent.owner() == "alice"
    token = re.search(r"^JUPYTERHUB_API_TOKEN=(\S+)$", secrets.read_text(), re.M).group(1)
    assert len(token) >= 32 and token not in script
    stop(hub, "alice")
    assert job_id not in jobs_of(client, "alice")
    assert not secrets.parent.exists()
    print(f"spawn to ready: {spawn_seconds:.1f} s")


@pytest.mark.multinode
def test_spawn_on_a_namespace_compute_node(hub, client):
    server = spawn(hub, "bob", {"profile": "multi", "nodes": 3})
    job = jobs_of(client, "bob")[server["state"]["job_id"]]
    assert job.nodes == ("node1", "node2", "node3") and server["state"]["job_host"] == "node1"
    routes = requests.get(f"http://127.0.0.1:{hub.proxy_api_port}/api/routes",
                          headers={"Authorization": f"token {hub.proxy_token}"}, timeout=10).json()
    (target,) = [route["target"] for path, route in routes.items() if path.rstrip("/") == "/user/bob"]
    assert target.startswith("http://10.77.0.11:"), routes
    assert hub.get_user_url("bob", "api/status").status_code == 200
    stop(hub, "bob")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "small", "cores": 99}, "99 is above the maximum 4"),
        ({"profile": "small", "nodes": 2}, "does not let users change nodes"),
        ({"profile": "small", "memory": "4G; rm -rf ~"}, "is not a memory size"),
        ({"profile": "small", "shoe_size": 44}, "unknown option"),
        ({"profile": "no-such-profile"}, "is not available to you"),
    ],
)
def test_bad_user_options_are_refused_with_400_and_no_job(hub, client, options, message):
    before = hub.submissions()
    response = hub.api("POST", "/users/carol/server", json=options)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert hub.submissions() == before and hub.server("carol") is None


def test_a_job_cancelled_outside_the_hub_is_noticed_within_a_poll_interval(hub, client):
    server = spawn(hub, "carol", {"profile": "small"})
    subprocess.run(["sudo", "-n", "-u", "carol", "scancel", server["state"]["job_id"]], check=True)
    started = time.monotonic()
    hub.wait_for_server("carol", ready=False, timeout=3 * POLL_INTERVAL + 10)
    assert time.monotonic() - started <= POLL_INTERVAL + 5


def test_a_job_that_fails_at_start_fails_the_spawn_in_seconds_with_the_reason(hub, client):
    started = time.monotonic()
    message = spawn_failure_message(hub, "alice", {"profile": "broken"})
    seconds = time.monotonic() - started
    assert seconds < 20, f"the failed spawn took {seconds:.0f} s"
    assert "module" in message and "Last lines of" in message
    hub.wait_for_server("alice", ready=False, timeout=10)


def test_hub_restart_reattaches_to_running_servers(hub, client):
    server = spawn(hub, "bob", {"profile": "small"})
    job_id = server["state"]["job_id"]
    hub.restart_hub()
    after = hub.wait_for_server("bob", timeout=30)
    assert after["state"]["job_id"] == job_id
    assert hub.get_user_url("bob", "api/status").status_code == 200
    assert job_id in jobs_of(client, "bob")
    stop(hub, "bob")


def test_a_scheduler_outage_stops_no_server(hub, client):
    server = spawn(hub, "alice", {"profile": "small"})
    job_id = server["state"]["job_id"]
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "slurm.sh"), "stop-controller"], check=True)
    try:
        # Until the hub has seen a status query fail (squeue gives up on a controller that is down
        # after 10-25 s), the server must stay; then it must still be reachable.
        deadline = time.monotonic() + 90
        while hub.poller_failures() < 1:
            assert time.monotonic() < deadline, "no status query failed during a 90 s outage"
            assert hub.server("alice") is not None, "the hub dropped a running server during a scheduler outage"
            time.sleep(1)
        assert hub.server("alice") is not None, "the hub dropped a running server during a scheduler outage"
        assert hub.get_user_url("alice", "api/status").status_code == 200
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "slurm.sh"), "start-controller"], check=True)
    hub.wait_for_poller_answer()  # the first answer after the outage still lists the server's job
    assert hub.wait_for_server("alice", timeout=10)["state"]["job_id"] == job_id
    # The poller's own lines are in the hub's log, in its format, the all-clear (INFO) too.
    log = hub.hub_log.read_text(errors="replace")
    assert re.search(r"^\[W [^\]]+ poller:\d+\] status query failed \(1 in a row; next try in \d+ s\): command `squeue",
                     log, re.M), hub.log_tail()
    assert re.search(r"^\[I [^\]]+ poller:\d+\] status query answers again after \d+ failures", log, re.M)
    assert job_id in jobs_of(client, "alice")
    stop(hub, "alice")


def test_port_endpoint_takes_only_a_port_and_only_from_the_servers_own_token(hub):
    server = spawn(hub, "alice", {"profile": "small"})
    env = Path(f"/home/alice/.hpchub/jobs/{server['state']['job_key']}/env").read_text()
    server_token = re.search(r"^JUPYTERHUB_API_TOKEN=(\S+)$", env, re.M).group(1)
    bob_token = hub.api("POST", "/users/bob/tokens", json={"note": "test"}).json()["token"]
    alice_token = hub.api("POST", "/users/alice/tokens", json={"note": "test"}).json()["token"]
    url = f"{hub.url}/hub/api/hpchub/port"

    def report(token, body):
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.post(url, json=body, headers=headers, timeout=10).status_code

    assert report(None, {"port": 1234}) == 403
    assert report(bob_token, {"port": 1234}) == 403
    assert report(alice_token, {"port": 1234}) == 403  # alice's, but not this server's token
    assert report(server_token, {"port": 1234, "exec_prefix": "rm -rf /"}) == 400
    assert report(server_token, {"port": "1234"}) == 400
    assert report(server_token, {"port": 70000}) == 400
    assert report(server_token, {"port": 1234, "ends": 10**20}) == 400  # no job ends then (it broke the home page)
    assert report(server_token, {"port": 1234}) == 403  # running: no longer a starting server
    assert hub.get_user_url("alice", "api/status").status_code == 200
    stop(hub, "alice")


def test_one_status_query_per_interval_for_all_users(hub):
    for user in USERS:
        assert hub.api("POST", f"/users/{user}/server", json={"profile": "small"}).status_code in (201, 202)
    for user in USERS:
        hub.wait_for_server(user)
    subprocess.run(["sdiag", "--reset"], check=True, capture_output=True)
    intervals = 3
    time.sleep(intervals * POLL_INTERVAL)
    queries = job_info_rpcs()
    # One squeue per interval for the three servers together (jitter may add one).
    assert 1 <= queries <= intervals + 1, f"{queries} squeue calls in {intervals} intervals for {len(USERS)} users"
    for user in USERS:
        stop(hub, user)


def test_a_person_logs_in_picks_a_profile_in_the_form_and_gets_jupyterlab(hub, client):
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login")
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    login = browser.post(f"{hub.url}/hub/login", data={"username": "bob", "password": "hpchub-test", "_xsrf": xsrf})
    assert login.status_code == 200 and login.url.endswith("/hub/spawn")
    form = login.text
    xsrf = browser.cookies.get("_xsrf", path="/hub/")  # a new one, tied to the logged-in user
    for text in ('name="profile"', 'value="small"', 'value="multi"', 'name="small--cores"', 'max="4"', 'name="multi--nodes"'):
        assert text in form
    # Fields of other profiles in the same form are ignored; the chosen profile's are validated.
    data = {"profile": "small", "small--cores": "3", "small--memory": "2G", "small--walltime": "00:30:00",
            "multi--nodes": "3", "_xsrf": xsrf}
    browser.post(f"{hub.url}/hub/spawn", data=data)
    server = hub.wait_for_server("bob")
    assert server["user_options"] == {"profile": "small", "cores": "3", "memory": "2G", "walltime": "00:30:00"}
    assert active_job_names(client, "bob")[server["state"]["job_id"]] == "hpchub-bob-small"
    lab = browser.get(f"{hub.url}/user/bob/lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    stop(hub, "bob")


def test_an_out_of_bounds_form_value_is_shown_and_nothing_is_submitted(hub, client):
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login")
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    browser.post(f"{hub.url}/hub/login", data={"username": "carol", "password": "hpchub-test", "_xsrf": xsrf})
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    before = hub.submissions()
    page = browser.post(f"{hub.url}/hub/spawn", data={"profile": "small", "small--cores": "64", "_xsrf": xsrf})
    assert "64 is above the maximum 4" in page.text
    assert hub.submissions() == before and hub.server("carol") is None


@pytest.fixture(scope="module")
def impatient_hub(slurm_cluster, tmp_path_factory):
    """A hub that gives up on a spawn after 12 s, with a profile whose job may not start for an hour."""
    site_text = local_site_text("slurm", begins_in_an_hour_profile("queued", memory="512M"))
    yield from run_hub(tmp_path_factory.mktemp("hub-slurm-timeout"), site_text, ("alice",),
                       poll_interval=POLL_INTERVAL, start_timeout=12, leftover_slurm_profiles=("queued",))


def test_queue_wait_shows_in_progress_and_the_start_timeout_cancels_the_job(impatient_hub, client):
    hub = impatient_hub
    started = time.monotonic()
    assert hub.api("POST", "/users/alice/server", json={"profile": "queued"}).status_code == 202
    events = requests.get(f"{hub.url}/hub/api/users/alice/server/progress",
                          headers={"Authorization": f"token {hub.admin_token}"}, timeout=60).text
    assert "is waiting in queue debug (not allowed to start yet (begin time))" in events
    assert "estimated start" in events
    assert "Spawn failed" in events and time.monotonic() - started < 30
    hub.wait_for_server("alice", ready=False, timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "hpchub-alice-queued" in active_job_names(client, "alice").values():
        time.sleep(1)
    assert "hpchub-alice-queued" not in active_job_names(client, "alice").values()


def test_engine_jobs_never_outlive_their_notebook_server(hub, client):
    server = spawn(hub, "carol", {"profile": "multi", "nodes": 2})
    server_job = server["state"]["job_id"]
    # What hpchub.parallel does in carol's notebook: an engine job named after the server's job.
    engines = run_as_user("carol", f"""
        import asyncio, os
        from hpchub.parallel import HPCEngineSetLauncher
        os.environ["HPCHUB_PARENT_JOB"] = {server_job!r}
        launcher = HPCEngineSetLauncher(site_config={str(hub.site_config)!r}, profile="multi", engine_set_id="e2e",
                                        engine_cmd=["sleep", "600"])

        async def main():
            print(await launcher.start(2), flush=True)
            os._exit(0)  # like a kernel that goes on running: the watcher stays with the process

        asyncio.run(main())
    """)
    assert active_job_names(client, "carol")[engines] == f"hpchub-carol-multi.e-{server_job}"
    subprocess.run(["sudo", "-n", "-u", "carol", "scancel", server_job], check=True)
    hub.wait_for_server("carol", ready=False, timeout=3 * POLL_INTERVAL + 10)
    deadline = time.monotonic() + 2 * POLL_INTERVAL + 10
    while engines in jobs_of(client, "carol") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engines not in jobs_of(client, "carol"), "the engine job outlived its notebook server"


def test_example_notebook_runs_engines_from_inside_a_server_job(hub, client):
    """examples/parallel.ipynb, executed by a kernel inside carol's server job (an srun step of
    it, with the environment the server job exports): engines on several nodes, then stopped."""
    server = spawn(hub, "carol", {"profile": "multi", "nodes": 1})
    server_job = server["state"]["job_id"]
    notebook = user_readable("parallel.ipynb", (REPO / "examples" / "parallel.ipynb").read_text())
    env = ",".join([
        "ALL",
        f"HPCHUB_SITE_CONFIG={hub.site_config}",
        "HPCHUB_ENGINE_PROFILE=multi",
        f"JUPYTERHUB_API_URL=http://10.77.0.1:{hub.hub_port}/hub/api",
        "HOME=/home/carol",
    ])
    executed = run_as_user("carol", f"""
        import os, subprocess, sys
        output = os.path.join(os.getcwd(), "executed.ipynb")
        out = subprocess.run(["srun", "--jobid={server_job}", "--overlap", "-N1", "-n1", "--export={env}",
                              "/opt/hpchub/venv/bin/jupyter", "execute", "--output=" + output, {str(notebook)!r}],
                             capture_output=True, text=True, timeout=240)
        import nbformat
        nb = nbformat.read(output, 4) if os.path.exists(output) else nbformat.v4.new_notebook()
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        print(repr((out.returncode, out.stderr[-2000:], text)))
    """, timeout=300)
    returncode, stderr, text = eval(executed)
    assert returncode == 0, stderr
    assert "4 engines from engine profile 'multi'" in text
    assert "engines run on: ['node1', 'node2', 'node3']" in text and "pi is about 3.1" in text
    assert not [job for job in jobs_of(client, "carol").values() if job.name.endswith(f"-engines-p{server_job}")]
    stop(hub, "carol")


def _server_token(server: dict) -> str:
    env = Path(f"/home/carol/.hpchub/jobs/{server['state']['job_key']}/env").read_text()
    return re.search(r"^JUPYTERHUB_API_TOKEN=(\S+)$", env, re.M).group(1)


@pytest.mark.multinode
def test_a_kernel_without_hpchub_gets_engines_on_two_nodes_from_the_hub(hub, client):
    """ipp.Cluster(engines="hpchub") in a kernel of carol's server job (an srun step of it, with the
    job's environment) whose Python has ipyparallel but no hpchub, only the job side as it travels with
    the job: the hub submits the engines as carol, on two nodes; stop_cluster cancels them."""
    started = time.time()
    server = spawn(hub, "carol", {"profile": "kernel-engines", "nodes": 1})
    server_job = server["state"]["job_id"]
    argv, env, top = kernel_environment(job_side=False)
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-kernel-"))
    shutil.chown(scratch, "carol")
    command = kernel_in_server_job(
        "carol", f"/home/carol/.hpchub/jobs/{server['state']['job_key']}/env", argv,
        {**env, "HPCHUB_ENGINE_PROFILE": "kernel-engines"}, scratch, 4, {"nodes": 2},
        prefix=("srun", f"--jobid={server_job}", "--overlap", "-N1", "-n1", "--export=ALL"))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + engine_logs("carol", server_job)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["kernel"] == "node1" and found["launcher"] == "hpchub_job.engines"
    assert found["controller"] == "HPCControllerLauncher" and found["engines"] == 4
    assert len(found["hosts"]) == 2 and set(found["hosts"]) <= {"node1", "node2", "node3"}
    expected = [f"carol|hpchub-carol-kernel-engines.e-{server_job}"]
    assert accounted_as(found["job_id"], since=started, expected=expected) == expected  # submitted by the hub, as carol
    assert found["job_id"] not in jobs_of(client, "carol")  # stop_cluster cancelled it
    stop(hub, "carol")


def test_the_engines_endpoint_takes_only_the_running_servers_token_and_its_engines_end_with_it(hub, client):
    server = spawn(hub, "carol", {"profile": "kernel-engines", "nodes": 1})
    server_job, token = server["state"]["job_id"], _server_token(server)
    url = f"{hub.url}/hub/api/hpchub/engines"
    request = {"n": 2, "command": ["sleep", "600"], "env": {"IPP_CONNECTION_INFO": "{}"}}

    def ask(token, body=request, method="POST", path=""):
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.request(method, url + path, json=body, headers=headers, timeout=60)

    bob = hub.api("POST", "/users/bob/tokens", json={"note": "test"}).json()["token"]
    carols_other = hub.api("POST", "/users/carol/tokens", json={"note": "test"}).json()["token"]
    assert ask(None).status_code == 403
    assert ask(bob).status_code == 403
    assert ask(carols_other).status_code == 403  # carol's, but not her server's token
    assert ask(token, {**request, "n": 0}).status_code == 400
    refused = ask(token, {**request, "options": {"nodes": 9}})
    assert refused.status_code == 400 and "above the maximum 3" in refused.json()["message"]
    assert ask(token, {**request, "profile": "small", "options": {"nodes": 2}}).status_code == 400
    assert not [name for name in active_job_names(client, "carol").values() if ".e-" in name]
    answer = ask(token)
    assert answer.status_code == 201, answer.text
    engines = answer.json()["job_id"]
    assert active_job_names(client, "carol")[engines] == f"hpchub-carol-kernel-engines.e-{server_job}"
    assert ask(token, None, "GET", f"/{engines}").json()["state"] in ("unknown", "pending", "running")
    assert ask(token, None, "GET", f"/{server_job}").status_code == 404  # only its engine jobs
    assert ask(bob, None, "DELETE", f"/{engines}").status_code == 403
    subprocess.run(["sudo", "-n", "-u", "carol", "scancel", server_job], check=True)
    hub.wait_for_server("carol", ready=False, timeout=3 * POLL_INTERVAL)
    deadline = time.monotonic() + 2 * POLL_INTERVAL
    while engines in jobs_of(client, "carol") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engines not in jobs_of(client, "carol"), "the engine job outlived its notebook server"
    assert ask(token).status_code == 403  # a stopped server's token
