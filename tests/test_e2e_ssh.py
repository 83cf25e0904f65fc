"""The hub off the cluster: a real JupyterHub submits, polls and cancels over SSH (paramiko, one
pooled connection per account) through the real login node (tests/clusters/login.sh, sshd in its
own network namespace at 10.77.0.20) in front of the real multi-node Slurm."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import pwd
import re
import shlex
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from helpers import holding
from helpers.hub import TLS_CONFIG, HubWithItsOwnProxy, jobs_of, run_hub, spawn, spawn_failure_message, stop
from helpers.profiles import kernel_engines_profile, local_site_text
from helpers.support import OLD_JOBFILES_USAGE, REPO, run_as_user, run_hpchub, user_readable
from prometheus_client import REGISTRY

from hpchub.core.config import parse_site_config
from hpchub.core.poller import StatusPoller
from hpchub.core.runtime import ClusterRuntime
from hpchub.transports import cluster
from hpchub.transports import cluster as cluster_module
from hpchub.transports.cluster import USER_MAX_OUTPUT, ClusterClient, ClusterSpec, client_for, ssh_pool
from hpchub.transports.runner import OutputTooLarge
from hpchub.transports.sshpool import SSHPool, SSHTarget

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.ssh]

USERS = ("alice", "bob", "carol")
POLL_INTERVAL = 2  # short: the tests wait for what the poller notices
LOCAL_SUBMIT = "submit: {via: sudo}"


def ssh_site_text(login_node, network: str = "", known_hosts: str | None = None, scheduler: str = "slurm",
                  service_account: bool = False, jobfiles: str = "/opt/hpchub/venv/bin/hpchub-job",
                  extra_profiles: str = "") -> str:
    """site-configs/local-SCHEDULER.yaml submitting through the login node: each user's own account
    and key, the hub's queries as the service account (or everything as the service account, which
    sudo's to the user on the login node)."""
    keys = str(login_node.keys["alice"]).replace("alice", "{user}")
    account = (f"user: {login_node.service_account}, sudo: true" if service_account
               else f"user: '{{user}}', query_user: {login_node.service_account}")
    submit = (f"submit: {{via: ssh, host: {login_node.host}, port: {login_node.port}, {account}, "
              f"key: '{keys}', known_hosts: {known_hosts or login_node.known_hosts}, "
              f"jobfiles: {jobfiles}}}")
    text = local_site_text(scheduler, kernel_engines_profile(scheduler) + extra_profiles).replace(
        LOCAL_SUBMIT, submit + (f"\n    network: {network}" if network else ""))
    assert submit in text
    return text


@pytest.fixture(scope="module")
def client(slurm_cluster):
    """The scheduler as the test sees it: locally, so the test's own checks add no SSH logins."""
    site = parse_site_config(local_site_text("slurm"))
    return client_for(site, "slurm")


# Choices whose start estimate does not start now, whatever else the cluster runs: Slurm's answer for
# a job that may begin only in an hour, and its refusal of a feature no node has.
ESTIMATE_PROFILES = """
  - slug: in-an-hour
    name: "Debug, from an hour from now"
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 1G, walltime: "00:10:00"}
    directives: ["--begin=now+1hour"]
  - slug: no-such-node
    name: "Debug, on a node with a feature none has"
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 1G, walltime: "00:10:00"}
    directives: ["--constraint=hpchub-no-such-feature"]
"""


@pytest.fixture(scope="module")
def hub(slurm_cluster, login_node, tmp_path_factory):
    yield from run_hub(tmp_path_factory.mktemp("hub-ssh"), ssh_site_text(login_node, extra_profiles=ESTIMATE_PROFILES),
                       USERS,
                       poll_interval=POLL_INTERVAL, leftover_slurm_profiles=("small", "multi", "kernel-engines"))


@pytest.fixture(scope="module")
def tunnel_hub(slurm_cluster, login_node, tmp_path_factory):
    """A hub with a tunnel to each server and a reverse forward for the jobs' calls: with
    internal_ssl, which to_hub: reverse needs (the jobs verify the hub's certificate, so whoever
    binds the login node's port while the hub does not hold it learns nothing). Jobs call the
    hub at the login node's address: its certificate names that address too."""
    state = tmp_path_factory.mktemp("hub-ssh-tunnel")
    config = state / "jupyterhub_config.py"
    config.write_text(TLS_CONFIG.format(example=str(REPO / "examples" / "jupyterhub_config.py"))
                      + f"c.JupyterHub.trusted_alt_names.append('IP:{login_node.host}')\n")
    text = ssh_site_text(login_node, network="{to_servers: tunnel, to_hub: reverse}")
    yield from run_hub(state, text, USERS, hub_class=HubWithItsOwnProxy, config_file=config,
                       poll_interval=POLL_INTERVAL, leftover_slurm_profiles=("small", "multi"))


def logged_proxy_target(hub, user: str) -> str:
    """The target the hub last gave the proxy for ``user``'s server (from the hub's log: a proxy the
    hub starts itself, as with internal_ssl, has its API on TLS)."""
    targets = re.findall(rf"Adding user {user} to proxy /user/{user}/ => (\S+)", hub.hub_log.read_text(errors="replace"))
    assert targets, hub.log_tail()
    return targets[-1]


def proxy_target(hub, user: str) -> str:
    routes = requests.get(f"http://127.0.0.1:{hub.proxy_api_port}/api/routes",
                          headers={"Authorization": f"token {hub.proxy_token}"}, timeout=10).json()
    (target,) = [route["target"] for path, route in routes.items() if path.rstrip("/") == f"/user/{user}"]
    return target


def test_spawn_poll_and_stop_over_one_ssh_login_per_account(hub, client, login_node):
    since = login_node.log_offset()
    server = spawn(hub, "alice", {"profile": "multi", "nodes": 2})
    job_id = server["state"]["job_id"]
    assert server["state"]["job_cluster"]["via"] == "ssh"
    job = jobs_of(client, "alice")[job_id]
    assert job.user == "alice" and job.nodes == ("node1", "node2")
    assert proxy_target(hub, "alice").startswith("http://10.77.0.11:")  # direct: the node's address
    assert hub.get_user_url("alice", "api/status").status_code == 200
    time.sleep(3 * POLL_INTERVAL)  # status polls over the service account's connection
    stop(hub, "alice")
    assert job_id not in jobs_of(client, "alice")
    # One login as alice (files + submit, cancel, names) and one as the service account (every
    # status poll): never a login per command.
    assert login_node.accepted_logins(since, "alice") == 1
    assert login_node.accepted_logins(since, login_node.service_account) <= 1


def test_an_outside_cancel_is_noticed_over_ssh(hub, client):
    server = spawn(hub, "carol", {"profile": "small"})
    subprocess.run(["sudo", "-n", "-u", "carol", "scancel", server["state"]["job_id"]], check=True)
    started = time.monotonic()
    hub.wait_for_server("carol", ready=False, timeout=3 * POLL_INTERVAL + 10)
    assert time.monotonic() - started <= POLL_INTERVAL + 5


def signed_in(hub, user: str) -> requests.Session:
    """A browser's session of ``user`` (the hub's pages take its cookie, not an API token)."""
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login", timeout=30)
    login = browser.post(f"{hub.url}/hub/login", allow_redirects=False, timeout=30,
                         data={"username": user, "password": "hpchub-test",
                               "_xsrf": browser.cookies.get("_xsrf", path="/hub/")})
    assert login.status_code == 302, (login.status_code, login.text[:300])
    return browser


def start_estimate(hub, browser: requests.Session, profile: str, **values: str) -> dict:
    """The form's question for one card: GET /hub/hpchub/estimate with the form's own field names."""
    params = {"profile": profile, **{f"{profile}--{name}": value for name, value in values.items()}}
    response = browser.get(f"{hub.url}/hub/hpchub/estimate", params=params, timeout=60, allow_redirects=False)
    assert response.status_code == 200, (response.status_code, response.text[:300], hub.log_tail())
    return response.json()


@pytest.mark.empty_queue
def test_the_forms_start_estimate_is_the_schedulers_answer_asked_over_ssh(hub, login_node):
    """sbatch --test-only through the login node, as alice over her pooled connection: a small job on
    debug starts now, one that may begin only in an hour is expected then, one Slurm refuses is "no
    estimate"; nothing is submitted. After the lanes (marker `empty_queue`): their jobs would change
    the answers."""
    holding.queue_emptied("slurm")
    browser = signed_in(hub, "alice")
    submitted, since = hub.submissions(), login_node.log_offset()
    asked_at = datetime.now()
    now = start_estimate(hub, browser, "small", cores="1")
    assert (now["text"], now["starts_now"]) == ("starts now", True), now
    assert re.match(r"sbatch: Job \d+ to start at \S+ using 1 processors on nodes vm in partition debug", now["words"])
    job_id = now["words"].split()[2]
    assert not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()

    later = start_estimate(hub, browser, "in-an-hour")
    assert later["starts_now"] is False, later
    expected = asked_at + timedelta(hours=1)
    assert later["text"] in {f"expected to start at {clock:%H:%M}" if clock.date() == asked_at.date() else
                             f"expected to start at {clock:%Y-%m-%d %H:%M}"
                             for clock in (expected, expected + timedelta(minutes=1))}, later

    refused = start_estimate(hub, browser, "no-such-node")
    assert (refused["text"], refused["starts_now"]) == ("no estimate", None), refused

    assert hub.submissions() == submitted
    assert login_node.accepted_logins(since, "alice") <= 1  # at most one login for all three questions


def older_jobfiles() -> Path:
    """An hpchub-job from before start estimates, for the login node: the estimate subcommand is
    unknown to it (its usage, exit 2); everything else is the installed one's."""
    stub = user_readable("hpchub-job-without-estimate", f"""#!/bin/sh
if [ "$1" = estimate ]; then
    cat >&2 <<'USAGE'
{OLD_JOBFILES_USAGE}
USAGE
    exit 2
fi
exec /opt/hpchub/venv/bin/hpchub-job "$@"
""")
    stub.chmod(0o755)
    return stub


def test_a_login_node_whose_hpchub_job_cannot_estimate_gives_no_estimate_and_one_log_line(
        slurm_cluster, login_node, tmp_path_factory):
    """An older hpchub on the login node (no ``hpchub-job estimate``): every card, value and hint is
    "no estimate" at once, the hub says so in one log line (not one per question, no traceback)."""
    text = ssh_site_text(login_node, jobfiles=str(older_jobfiles()))
    for hub in run_hub(tmp_path_factory.mktemp("hub-ssh-old-jobfiles"), text, ("alice",), poll_interval=POLL_INTERVAL):
        browser = signed_in(hub, "alice")
        answers = [start_estimate(hub, browser, "small", cores=str(cores)) for cores in (1, 2, 1)]
        answers.append(start_estimate(hub, browser, "multi", nodes="2"))
        hinted = browser.get(f"{hub.url}/hub/hpchub/estimate", params={"profile": "small", "small--cores": "3",
                                                                      "hint": "1"}, timeout=60).json()
        for answer in [*answers, hinted]:
            assert (answer["text"], answer["starts_now"]) == ("no estimate", None), answer
            assert "estimate" in answer["words"] and "older" in answer["words"], answer
        assert hinted["hint"] == ""
        log = hub.hub_log.read_text(errors="replace")
        said = [line for line in log.splitlines() if "hpchub-job" in line and "estimate" in line]
        assert len(said) == 1, "\n".join(said)
        assert "Traceback" not in log and "usage:" not in log, hub.log_tail()
        assert hub.submissions() == 0


def test_the_login_node_down_for_a_while_stops_no_server(hub, client, login_node):
    server = spawn(hub, "bob", {"profile": "small"})
    job_id = server["state"]["job_id"]
    subprocess.run(["bash", str(login_node.script), "cut"], check=True, capture_output=True)
    try:
        # Until the hub has seen a status query fail, and after: "unknown", never "gone".
        deadline = time.monotonic() + 90
        while hub.poller_failures() < 1:
            assert time.monotonic() < deadline, "no status query failed while the login node was cut off"
            assert hub.server("bob") is not None, "the hub dropped a running server while the login node was down"
            time.sleep(1)
        time.sleep(POLL_INTERVAL)  # one more interval of "unknown"
        assert hub.server("bob") is not None and hub.server("bob")["ready"]
    finally:
        subprocess.run(["bash", str(login_node.script), "mend"], check=True, capture_output=True)
    hub.wait_for_poller_answer()  # the first answer after the outage still lists the server's job
    assert hub.wait_for_server("bob", timeout=10)["state"]["job_id"] == job_id
    assert job_id in jobs_of(client, "bob")
    stop(hub, "bob")


def test_a_wrong_host_key_is_refused_and_nothing_is_submitted(slurm_cluster, login_node, client, tmp_path_factory):
    text = ssh_site_text(login_node, known_hosts=str(login_node.wrong_known_hosts))
    for hub in run_hub(tmp_path_factory.mktemp("hub-ssh-wrong-key"), text, ("alice",), poll_interval=POLL_INTERVAL):
        message = spawn_failure_message(hub, "alice", {"profile": "small"})
        assert login_node.host in message and re.search(r"SHA256:[A-Za-z0-9+/]{43}", message), message
        assert hub.submissions() == 0


def test_through_a_tunnel_and_a_reverse_forward(tunnel_hub, client, login_node):
    server = spawn(tunnel_hub, "alice", {"profile": "multi", "nodes": 1})
    state = server["state"]
    # The proxy reaches the server on the hub's loopback, through the login node (over TLS).
    assert re.match(r"https://127\.0\.0\.1:\d+$", logged_proxy_target(tunnel_hub, "alice")), state
    assert state["job_tunnel"].startswith("10.77.0.11:") and state["job_hub_port"]
    # The job reached the hub through the login node's port, not the hub's own address, over TLS.
    env = (login_node_home("alice") / ".hpchub" / "jobs" / state["job_key"] / "env").read_text()
    assert f"JUPYTERHUB_API_URL=https://{login_node.host}:{state['job_hub_port']}/hub/api" in env
    assert tunnel_hub.get_user_url("alice", "api/status").status_code == 200
    # The hub cut off from the compute node (a blackhole route on the hub's side; the login node still
    # reaches it over the bridge): the server is still reached, through the login node.
    node_address, node_port, _ = state["job_tunnel"].rsplit(":", 2)
    subprocess.run(["ip", "route", "add", "blackhole", f"{node_address}/32"], check=True)
    try:
        with pytest.raises(requests.RequestException):
            requests.get(f"http://{node_address}:{node_port}/", timeout=3)
        assert tunnel_hub.get_user_url("alice", "api/status").status_code == 200
    finally:
        subprocess.run(["ip", "route", "del", "blackhole", f"{node_address}/32"], check=True)
    # The login node's connection dropped (its sshd child killed): the route works again after reconnect.
    for pid in login_node.session_pids("alice"):
        subprocess.run(["kill", str(pid)], check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and tunnel_hub.get_user_url("alice", "api/status").status_code != 200:
        time.sleep(1)
    assert tunnel_hub.get_user_url("alice", "api/status").status_code == 200
    assert tunnel_hub.server("alice")["ready"]
    # A hub restart re-creates the tunnel on the port the route names (the restarted proxy gets it again).
    target = logged_proxy_target(tunnel_hub, "alice")
    tunnel_hub.restart_hub()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and tunnel_hub.get_user_url("alice", "api/status").status_code != 200:
        time.sleep(1)
    assert logged_proxy_target(tunnel_hub, "alice") == target
    assert tunnel_hub.get_user_url("alice", "api/status").status_code == 200
    stop(tunnel_hub, "alice")


def login_node_home(user: str):
    import pwd
    from pathlib import Path

    return Path(pwd.getpwnam(user).pw_dir)


async def test_fifty_status_polls_use_one_login(slurm_cluster, login_node):
    """The hub's status queries over the pooled connection: one login for all of them."""
    site = parse_site_config(ssh_site_text(login_node))
    client = client_for(site, "slurm")
    since = login_node.log_offset()
    for _ in range(50):
        await client.status(["alice", "bob"])
    assert login_node.accepted_logins(since) == 1


def test_the_command_line_works_over_ssh(slurm_cluster, login_node, client):
    site = user_readable("ssh-cli.yaml", ssh_site_text(login_node))
    assert run_hpchub("check", "--live", str(site)).returncode == 0
    queues = run_hpchub("queues", str(site))
    assert queues.returncode == 0 and "multi" in queues.stdout and "debug" in queues.stdout
    submitted = run_hpchub("submit", str(site), "--profile", "small", "--user", "bob", "--command", "sleep 300")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    try:
        status = run_hpchub("status", str(site), job_id)
        assert status.returncode == 0 and "hpchub-bob-small" in status.stdout and "bob" in status.stdout
        assert job_id in jobs_of(client, "bob")
    finally:
        assert run_hpchub("cancel", str(site), job_id, "--user", "bob").returncode == 0
    deadline = time.monotonic() + 30
    while job_id in jobs_of(client, "bob") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job_id not in jobs_of(client, "bob")


def test_engine_jobs_of_a_server_started_over_ssh_die_with_it(hub, client):
    """hpchub.parallel in carol's notebook reads the site config copy the job got (the hub's own
    file is not on the cluster) and submits engines on the cluster itself; stopping the server
    over SSH cancels them."""
    server = spawn(hub, "carol", {"profile": "multi", "nodes": 1})
    server_job, key = server["state"]["job_id"], server["state"]["job_key"]
    site_copy = login_node_home("carol") / ".hpchub" / "jobs" / key / "site.yaml"
    engines = run_as_user("carol", f"""
        import asyncio, os
        from hpchub.parallel import HPCEngineSetLauncher
        os.environ["HPCHUB_PARENT_JOB"] = {server_job!r}
        launcher = HPCEngineSetLauncher(site_config={str(site_copy)!r}, profile="multi", engine_set_id="ssh",
                                        engine_cmd=["sleep", "600"])

        async def main():
            print(await launcher.start(1), flush=True)
            os._exit(0)

        asyncio.run(main())
    """)
    assert engines in jobs_of(client, "carol")
    stop(hub, "carol")
    deadline = time.monotonic() + 2 * POLL_INTERVAL + 10
    while engines in jobs_of(client, "carol") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engines not in jobs_of(client, "carol"), "the engine job outlived its notebook server"


def test_the_hub_submits_a_kernels_engines_over_ssh_as_the_servers_user(hub, client):
    """What a kernel's launcher (hpchub.job.engines) asks with its server's token: the hub submits
    the engine job through the login node as carol, named after her server's job; stopping the
    server cancels it."""
    server = spawn(hub, "carol", {"profile": "kernel-engines", "nodes": 1})
    server_job, key = server["state"]["job_id"], server["state"]["job_key"]
    env = (login_node_home("carol") / ".hpchub" / "jobs" / key / "env").read_text()
    token = re.search(r"^JUPYTERHUB_API_TOKEN=(\S+)$", env, re.M).group(1)
    answer = requests.post(f"{hub.url}/hub/api/hpchub/engines", headers={"Authorization": f"token {token}"},
                           json={"n": 1, "command": ["sleep", "600"], "env": {"IPP_CONNECTION_INFO": "{}"}}, timeout=60)
    assert answer.status_code == 201, answer.text
    engines = answer.json()["job_id"]
    assert asyncio.run(client.job_names("carol"))[engines] == f"hpchub-carol-kernel-engines.e-{server_job}"
    assert jobs_of(client, "carol")[engines].user == "carol"
    stop(hub, "carol")
    deadline = time.monotonic() + 2 * POLL_INTERVAL
    while engines in jobs_of(client, "carol") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engines not in jobs_of(client, "carol"), "the engine job outlived its notebook server"


def test_grid_engine_over_ssh(sge_cluster, login_node, tmp_path_factory):
    site = parse_site_config(local_site_text("sge"))
    local = client_for(site, "sge")
    text = ssh_site_text(login_node, scheduler="sge")
    for hub in run_hub(tmp_path_factory.mktemp("hub-ssh-sge"), text, ("bob",), poll_interval=POLL_INTERVAL):
        # The form's start estimate: qsub -w p through the login node as bob (short.q may be full meanwhile).
        answer = start_estimate(hub, signed_in(hub, "bob"), "small")
        assert answer["words"].startswith("verification: ") and answer["text"] in (
            "starts now", "would wait: no queue can take it now"), answer
        server = spawn(hub, "bob", {"profile": "small"})
        job_id = server["state"]["job_id"]
        assert server["state"]["job_cluster"]["via"] == "ssh" and job_id in jobs_of(local, "bob")
        assert hub.get_user_url("bob", "api/status").status_code == 200
        stop(hub, "bob")
        assert job_id not in jobs_of(local, "bob")


def test_a_service_account_that_sudos_on_the_login_node(slurm_cluster, login_node, client, tmp_path_factory):
    """`sudo: true`: the hub holds one key, the service account's, and the login node's sudoers
    lets that account run hpchub-job, scancel and qdel as the users: the job is still alice's."""
    text = ssh_site_text(login_node, service_account=True)
    since = login_node.log_offset()
    for hub in run_hub(tmp_path_factory.mktemp("hub-ssh-sudo"), text, ("alice",), poll_interval=POLL_INTERVAL):
        # The form's start estimate too: the login node's sudoers rule lets hpchub-job estimate as alice.
        assert start_estimate(hub, signed_in(hub, "alice"), "small", cores="1")["text"] == "starts now"
        server = spawn(hub, "alice", {"profile": "small"})
        job_id = server["state"]["job_id"]
        assert jobs_of(client, "alice")[job_id].user == "alice"
        assert hub.get_user_url("alice", "api/status").status_code == 200
        stop(hub, "alice")
        assert job_id not in jobs_of(client, "alice")
    assert login_node.accepted_logins(since, "alice") == 0  # alice's own key was never used


# --- to_hub: reverse under a hostile login-node user -------------------------------------------

class _HubAPI(http.server.BaseHTTPRequestHandler):
    """Stands in for the hub's API on the hub's side of the reverse forward."""

    def do_GET(self) -> None:
        body = f"the hub at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hub_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def reverse_runtime(login_node):
    """The cluster's runtime of a hub with to_hub: reverse (no status poller running: the only
    connections to the login node are the ones the test makes); its own SSH pool, closed after."""
    site = parse_site_config(ssh_site_text(login_node, network="{to_hub: reverse}"))
    client = ClusterClient(ClusterSpec.from_site(site, "slurm"))
    yield ClusterRuntime(client, StatusPoller(client.status, interval=60, min_interval=1, cluster="slurm"))
    await _close_ssh_pool()


async def _close_ssh_pool() -> None:
    """This loop's SSH pool, as a hub's process ends (the login node forgets its forwards)."""
    pool = cluster_module._pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.close()


def _login_node_listens(login_node, port: int) -> bool:
    sockets = subprocess.run(["ip", "netns", "exec", login_node.netns, "ss", "-ltnH", f"sport = :{port}"],
                             capture_output=True, text=True, check=True).stdout
    return bool(sockets.strip())


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def bashrc_line(user: str, line: str) -> Iterator[None]:
    """``line`` first in ``user``'s ~/.bashrc (before Debian's early return for a shell that is
    not interactive) meanwhile; afterwards that line alone is taken out again, the file's owner,
    mode and times kept."""
    account = pwd.getpwnam(user)
    path = Path(account.pw_dir) / ".bashrc"
    info = path.stat()

    def write(text: str) -> None:
        scratch = path.with_name(f".bashrc.hpchub-test-{uuid.uuid4().hex[:8]}")
        scratch.write_text(text)
        os.chown(scratch, account.pw_uid, account.pw_gid)
        scratch.chmod(stat.S_IMODE(info.st_mode))
        os.utime(scratch, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(scratch, path)

    write(line + path.read_text())
    try:
        yield
    finally:
        write(path.read_text().replace(line, "", 1))


def processes_with(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.1)


def _break_this_process_ssh_connections(login_node) -> None:
    """Reset this process's TCP connections to the login node (as a network blip would): its sshd
    sessions end, and the ports they forwarded are free on the login node."""
    mine = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"{login_node.host}:{login_node.port}"],
                          capture_output=True, text=True, check=True).stdout
    ports = [line.split()[2].rsplit(":", 1)[1] for line in mine.splitlines() if f"pid={os.getpid()}," in line]
    assert ports, mine
    for port in ports:
        subprocess.run(["ss", "-K", "dst", f"{login_node.host}:{login_node.port}", "src", f":{port}"],
                       capture_output=True, check=True)


async def _from_the_login_node(login_node, url: str) -> str:
    """What a job (here: alice on the login node) gets from ``url``."""
    fetched = await asyncio.to_thread(subprocess.run, login_node.ssh_argv("alice", "python3", "-c", shlex.quote(
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"), url),
        capture_output=True, text=True, timeout=30)
    return fetched.stdout.strip() or fetched.stderr


@contextlib.asynccontextmanager
async def _bob_listens(login_node, port: int) -> AsyncIterator[int]:
    """bob, a user of the login node, listens on its network address at ``port`` (0: any free port)
    with a plain socket, as anyone there may (sshd's GatewayPorts does not come into it); yields the
    port and lets go (his program ends when its input closes). SO_REUSEADDR, as a squatter would:
    the jobs' last connections to the port may still be in TIME_WAIT."""
    code = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()")
    argv = [arg for arg in login_node.ssh_argv("bob", "python3", "-c", shlex.quote(code), login_node.host, str(port))
            if arg != "-n"]
    squatter = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
    try:
        assert squatter.stdout is not None and squatter.stdin is not None
        line = await asyncio.wait_for(squatter.stdout.readline(), 20)
        assert line.strip().isdigit(), (line, await squatter.stderr.read() if squatter.stderr else b"")
        bound = int(line)
        assert port in (0, bound)
        yield bound
    finally:
        if squatter.stdin is not None:
            squatter.stdin.close()
        try:
            await asyncio.wait_for(squatter.wait(), 10)
        except asyncio.TimeoutError:
            squatter.kill()
            await squatter.wait()
    await _until(lambda: asyncio.sleep(0, not _login_node_listens(login_node, bound)), 10, "bob's port to be free")


def _forward_metric(state: str) -> float | None:
    return REGISTRY.get_sample_value("hpchub_reverse_forwards", {"cluster": "slurm", "state": state})


async def test_a_reverse_forward_port_taken_during_a_reconnect_is_never_handed_out(
        login_node, reverse_runtime, hub_api, caplog):
    """The hub's connection to the login node breaks; bob binds the forward's port before the hub
    asks for it again. New jobs get another port the hub does hold, the taken one is dead (logged,
    counted) and asked for again, and once bob lets go the hub holds it again."""
    runtime = reverse_runtime
    url, port = await runtime.hub_api_for_jobs(hub_api)
    assert url == f"http://{login_node.host}:{port}/hub/api"
    assert await _from_the_login_node(login_node, f"{url}/first") == "the hub at /hub/api/first"

    _break_this_process_ssh_connections(login_node)
    await _until(lambda: asyncio.sleep(0, not _login_node_listens(login_node, port)), 10, "the port to be free")
    async with _bob_listens(login_node, port):
        new_url, new_port = await runtime.hub_api_for_jobs(hub_api)  # logs in again: the old port is refused
        assert new_port != port, "a new job was told a port bob holds"
        assert await _from_the_login_node(login_node, f"{new_url}/new") == "the hub at /hub/api/new"
        assert not await runtime.keep_hub_forward(hub_api, port)  # the running jobs' port: dead, not given out
        assert runtime.hub_forward_counts()[:2] == (1, 1) and runtime.hub_forward_counts()[2] >= 1
        assert (_forward_metric("held"), _forward_metric("dead")) == (1, 1)
        assert REGISTRY.get_sample_value("hpchub_reverse_forward_refusals_total", {"cluster": "slurm"}) >= 1
        assert f"remote forward {login_node.host}:{port} on hpchub-svc@{login_node.host}:22 refused by the login " \
               "node" in caplog.text
    await _until(lambda: runtime.keep_hub_forward(hub_api, port), 15, "the hub to hold its port again")
    assert await _from_the_login_node(login_node, f"{url}/again") == "the hub at /hub/api/again"
    assert (_forward_metric("held"), _forward_metric("dead")) == (2, 0)


async def test_after_a_hub_restart_a_taken_port_is_not_handed_out(login_node, reverse_runtime, hub_api):
    """A restarted hub asks for the port its running jobs call it at (the spawner's state): bob
    holds it. It is dead, not given to new jobs, and held again once bob lets go."""
    async with _bob_listens(login_node, 0) as port:
        assert not await reverse_runtime.keep_hub_forward(hub_api, port)
        _, new_port = await reverse_runtime.hub_api_for_jobs(hub_api)
        assert new_port != port
    await _until(lambda: reverse_runtime.keep_hub_forward(hub_api, port), 15, "the hub to hold the port")
    url = f"http://{login_node.host}:{port}/hub/api/restored"
    assert await _from_the_login_node(login_node, url) == "the hub at /hub/api/restored"


async def test_a_bashrc_that_prints_forever_is_stopped_at_the_output_limit(slurm_cluster, login_node):
    """bob's ~/.bashrc prints forever (only for this test's command: other tests use bob meanwhile).
    The hub's call as bob fails within seconds with the output error, having kept no more than the
    user-side limit; the remote shell is stopped; bob's pooled connection still works."""
    marker = f"hpchub-flood-{uuid.uuid4().hex[:12]}"
    flood = f'case "$BASH_EXECUTION_STRING" in *{marker}*) while :; do echo "{marker} from ~/.bashrc"; done;; esac\n'
    client = client_for(parse_site_config(ssh_site_text(login_node)), "slurm")
    client.timeout = 10
    try:
        with bashrc_line("bob", flood):
            started = time.monotonic()
            with pytest.raises(OutputTooLarge) as caught:
                await client.read_log_tail("bob", f"{marker}.log", 10)
            assert time.monotonic() - started < 5, "stopped by the timeout, not by the output limit"
            error = caught.value
            assert (error.stream, error.limit) == ("stdout", USER_MAX_OUTPUT)
            assert "wrote more than 1 MiB to stdout" in str(error) and "hpchub-job tail" in str(error)
            assert error.stdout.startswith(f"{marker} from ~/.bashrc\n") and len(error.stdout) <= 2000
            await wait_until(lambda: not processes_with(marker), 10, "the flooding shell on the login node to end")
        assert (await client.run(["id", "-un"], user="bob")).stdout == "bob\n"
        assert ssh_pool().logins(client.ssh_target("bob")) == 1
    finally:
        await cluster._pools.pop(id(asyncio.get_running_loop())).close()


def established(login_node, port: int) -> bool:
    """The login node's side of the hub's connection from local port ``port`` is still open."""
    found = subprocess.run(["nsenter", f"--net=/run/netns/{login_node.netns}", "ss", "-Htn", "state", "established",
                            f"( dport = :{port} )"], capture_output=True, text=True, check=True)
    return bool(found.stdout.strip())


def connections_metric(node: str) -> float:
    return REGISTRY.get_sample_value("hpchub_ssh_connections", {"login_node": node}) or 0.0


async def test_an_idle_connection_is_closed_unless_a_forward_uses_it(slurm_cluster, login_node):
    """submit.idle_timeout: 1. A connection that ran a command is closed a second later (on the
    login node too) and the next command logs in again; one that carries a tunnel (bob's) or a
    reverse forward (the service account's) stays, until the forward is closed."""
    text = ssh_site_text(login_node).replace("jobfiles: ", "idle_timeout: 1, jobfiles: ")
    client = client_for(parse_site_config(text), "slurm")
    bob, service = client.ssh_target("bob"), client.ssh_target(None)
    assert bob.idle_timeout == 1 and service.idle_timeout == 1
    node = f"{login_node.host}:{login_node.port}"
    pool = SSHPool()  # its own default (300 s) is overridden by the cluster's setting

    def local_port(target: SSHTarget) -> int:
        client = pool._targets[target].client
        assert client is not None
        return client.get_transport().sock.getsockname()[1]

    others = connections_metric(node)  # other tests' pools in this process
    try:
        await pool.run(bob, ["true"], timeout=20)
        first = local_port(bob)
        assert established(login_node, first) and pool.connections() == {node: 1}
        assert connections_metric(node) == others + 1
        await wait_until(lambda: not pool.connections() and not established(login_node, first), 10,
                         "the idle connection to close")
        assert connections_metric(node) == others
        await pool.run(bob, ["true"], timeout=20)
        assert pool.logins(bob) == 2

        tunnel = await pool.open_local_forward(bob, login_node.host, login_node.port)
        reverse = await pool.open_remote_forward(service, "127.0.0.1", 0, "127.0.0.1", 9)
        ports = (local_port(bob), local_port(service))
        await asyncio.sleep(3)  # three idle timeouts: nothing may happen meanwhile
        assert pool.connections() == {node: 2} and all(established(login_node, port) for port in ports)
        assert (pool.logins(bob), pool.logins(service)) == (2, 1)
        tunnel.close()
        await reverse.close()
        await wait_until(lambda: not pool.connections() and not any(established(login_node, port) for port in ports),
                         10, "the connections to close once their forwards are gone")
    finally:
        await pool.close()
