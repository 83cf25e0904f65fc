"""hpchub.job.extension, the server extension in every server job (as hpchub_job.extension, from the
job's bundle): a real jupyterhub-singleuser
against a small stand-in hub on 127.0.0.1, and the address choice on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.fakehub import HUB_VERSION, HubAPIHandler, ServedHubAPI
from helpers.support import write_job_side

from hpchub.core.jobs import AUTH_CACHE_SECONDS, SERVER_ARGS
from hpchub.job.extension import ALL_INTERFACES, bind_address, scheduler_node_address

TOKEN = "s3cret-server-token"
GUEST_TOKEN = "bobs-own-api-token"
SINGLEUSER = Path(sys.executable).with_name("jupyterhub-singleuser")


def listening_sockets(port: int) -> dict[int, str]:
    """Socket inode -> local IPv4 address of the TCP sockets listening on ``port`` (/proc/net/tcp)."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port_hex = fields[1].split(":")
        if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            ip = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            found[int(fields[9])] = ip
    return found


def socket_inodes_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


class StandInHub(ServedHubAPI):
    """Answers what jupyterhub-singleuser asks at start, and records the port report together
    with who listened on that port at the moment the report arrived."""

    def __init__(self, answer: int = 204):
        self.answer = answer
        self.reports: list[dict] = []
        # Another user's token that holds a share of alice's server until the test revokes it, and
        # how often the server asked about it.
        self.shared = True
        self.asked_about_guest = 0
        self.server_pid: int | None = None
        hub = self

        class Handler(HubAPIHandler):
            def do_GET(self):
                if self.path.startswith("/hub/api/user") and self.headers.get("Authorization") == f"token {TOKEN}":
                    # the server's own token, as the hub describes it to the server's auth check
                    self.reply(200, {"kind": "user", "name": "alice", "admin": False, "groups": [],
                                     "scopes": ["access:servers!user=alice"]})
                    return
                if self.path.startswith("/hub/api/user") and self.headers.get("Authorization") == f"token {GUEST_TOKEN}":
                    hub.asked_about_guest += 1
                    shared = ["access:servers!server=alice/"] if hub.shared else []
                    self.reply(200, {"kind": "user", "name": "bob", "admin": False, "groups": [], "scopes": shared})
                    return
                self.reply(200, {"version": HUB_VERSION})

            def do_POST(self):
                body = self.read_body()
                if self.path == "/hub/api/hpchub/port":
                    report = {"token": self.headers.get("Authorization"), "body": json.loads(body)}
                    port = report["body"].get("port")
                    listeners = listening_sockets(port) if isinstance(port, int) else {}
                    report["listening_on"] = sorted(set(listeners.values()))
                    report["held_by_server"] = bool(set(listeners) & socket_inodes_of(hub.server_pid))
                    hub.reports.append(report)
                    self.reply(hub.answer, {} if hub.answer < 300 else {"message": "not waiting for a port"})
                else:
                    self.reply(200, {})

        super().__init__(Handler)


def start_server(hub: StandInHub, tmp_path: Path, node_name: str, **job_env: str) -> subprocess.Popen:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JUPYTER", "HPCHUB_"))}
    env.update(
        HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERHUB_API_URL=hub.url, JUPYTERHUB_API_TOKEN=TOKEN, JUPYTERHUB_USER="alice",
        JUPYTERHUB_CLIENT_ID="jupyterhub-user-alice", JUPYTERHUB_BASE_URL="/",
        JUPYTERHUB_SERVICE_PREFIX="/user/alice/", JUPYTERHUB_OAUTH_CALLBACK_URL="/user/alice/oauth_callback",
        JUPYTERHUB_ACTIVITY_URL=f"{hub.url}/users/alice/activity",
        # What the hub puts in the job's environment: its own idea of ip and port, both overridden.
        JUPYTERHUB_SERVICE_URL="http://127.0.0.1:0/user/alice/",
        HPCHUB_SCHEDULER="sge", HPCHUB_NODE_NAME=node_name,
        # The job side as the job gets it: its bundle first on the paths (hpchub.core.bundle).
        **write_job_side(tmp_path / "job"),
        **job_env,
    )
    as_root = ["--allow-root"] if os.geteuid() == 0 else []  # the tests run as root; jobs never do
    process = subprocess.Popen([str(SINGLEUSER), *SERVER_ARGS, *as_root], env=env, cwd=home, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    hub.server_pid = process.pid
    return process


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


@pytest.fixture
def hub():
    stand_in = StandInHub()
    yield stand_in
    stand_in.close()


def test_the_port_is_reported_once_the_server_holds_it_on_the_nodes_address(hub, tmp_path):
    server = start_server(hub, tmp_path, node_name="localhost")
    try:
        wait_for(lambda: hub.reports or server.poll() is not None)
        assert server.poll() is None, stop(server)
        (report,) = hub.reports
        assert report["token"] == f"token {TOKEN}"
        assert set(report["body"]) == {"port"} and report["body"]["port"] > 0
        # At report time the port is already listening, in the server's own process, and only on
        # the node's address, not on every interface.
        assert report["held_by_server"], report
        assert report["listening_on"] == ["127.0.0.1"], report
    finally:
        stop(server)


def test_a_node_address_that_is_not_local_falls_back_to_all_interfaces_with_a_log_line(hub, tmp_path):
    server = start_server(hub, tmp_path, node_name="203.0.113.7")  # TEST-NET-3: never this host's
    try:
        wait_for(lambda: hub.reports or server.poll() is not None)
        (report,) = hub.reports
        assert report["listening_on"] == [ALL_INTERFACES] and report["held_by_server"]
    finally:
        output = stop(server)
    assert "listening on all interfaces: the hub's address 203.0.113.7 for node 203.0.113.7 is not an address" in output


def test_a_refused_report_stops_the_server_with_status_1(tmp_path):
    hub = StandInHub(answer=409)
    server = start_server(hub, tmp_path, node_name="localhost")
    try:
        started = time.monotonic()
        server.wait(timeout=60)
        assert time.monotonic() - started < 60
    finally:
        output = stop(server)
        hub.close()
    assert server.returncode == 1, output
    assert len(hub.reports) == 1  # a 4xx is final: no retries
    assert "the hub refused port" in output and "409" in output and "stopping the server" in output


def test_the_jobs_end_is_reported_and_served_to_jupyterlab_with_auth_only(hub, tmp_path):
    import requests

    ends = int(time.time()) + 3600
    # The hub names the scopes that give access to this server (the stand-in's user model has one).
    scopes = json.dumps(["access:servers!server=alice/", "access:servers!user=alice"])
    server = start_server(hub, tmp_path, node_name="localhost", HPCHUB_JOB_END=str(ends), HPCHUB_WALLTIME_WARNING="300",
                          JUPYTERHUB_OAUTH_ACCESS_SCOPES=scopes)
    try:
        wait_for(lambda: hub.reports or server.poll() is not None)
        assert server.poll() is None, stop(server)
        (report,) = hub.reports
        assert report["body"] == {"port": report["body"]["port"], "ends": ends}
        url = f"http://127.0.0.1:{report['body']['port']}/user/alice/hpchub/walltime"
        answer = requests.get(url, headers={"Authorization": f"token {TOKEN}"}, timeout=10)
        assert answer.status_code == 200, answer.text + stop(server)
        assert answer.json()["ends"] == ends and answer.json()["warning"] == 300
        assert abs(answer.json()["now"] - time.time()) < 5
        assert requests.get(url, timeout=10).status_code == 403  # no token, no cookie
    finally:
        stop(server)


def test_a_revoked_share_is_refused_within_the_auth_cache_interval(hub, tmp_path):
    """The server asks the hub about a caller again after AUTH_CACHE_SECONDS (jupyterhub-singleuser's
    default keeps its answer 300 s): bob's token, shared and then revoked, is refused within seconds."""
    import requests

    scopes = json.dumps(["access:servers!server=alice/", "access:servers!user=alice"])
    server = start_server(hub, tmp_path, node_name="localhost", JUPYTERHUB_OAUTH_ACCESS_SCOPES=scopes)
    try:
        wait_for(lambda: hub.reports or server.poll() is not None)
        assert server.poll() is None, stop(server)
        url = f"http://127.0.0.1:{hub.reports[0]['body']['port']}/user/alice/api/status"
        as_bob = {"Authorization": f"token {GUEST_TOKEN}"}
        assert requests.get(url, headers=as_bob, timeout=10).status_code == 200
        hub.shared = False
        revoked = time.monotonic()
        while requests.get(url, headers=as_bob, timeout=10).status_code == 200:
            assert time.monotonic() - revoked < AUTH_CACHE_SECONDS + 3, "the server still lets bob in"
            time.sleep(0.2)
        print(f"refused {time.monotonic() - revoked:.1f} s after the revoke")
        assert hub.asked_about_guest == 2
    finally:
        stop(server)


def test_a_revoked_callers_open_websocket_is_closed_and_the_owners_kept(hub, tmp_path):
    """The server checks access only when a websocket opens; hpchub's sweep closes the open ones of
    a caller who lost it (a kernel, terminal or collaboration room a revoked guest had open)."""
    import asyncio

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    scopes = json.dumps(["access:servers!server=alice/", "access:servers!user=alice"])
    server = start_server(hub, tmp_path, node_name="localhost", JUPYTERHUB_OAUTH_ACCESS_SCOPES=scopes)

    async def connect(url: str, token: str):
        return await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))

    async def revoke_with_sockets_open(url: str) -> float:
        bobs, alices = await connect(url, GUEST_TOKEN), await connect(url, TOKEN)
        hub.shared = False
        revoked = time.monotonic()
        assert await asyncio.wait_for(bobs.read_message(), AUTH_CACHE_SECONDS + 5) is None  # closed by the server
        assert bobs.close_code == 1008
        took = time.monotonic() - revoked
        assert alices.close_code is None and alices.protocol is not None  # the owner's stays open
        alices.close()
        return took

    try:
        wait_for(lambda: hub.reports or server.poll() is not None)
        assert server.poll() is None, stop(server)
        url = f"ws://127.0.0.1:{hub.reports[0]['body']['port']}/user/alice/api/events/subscribe"
        print(f"bob's websocket closed {asyncio.run(revoke_with_sockets_open(url)):.1f} s after the revoke")
    finally:
        output = stop(server)
    assert "closing a websocket (/user/alice/api/events/subscribe) of a caller who lost access" in output


def slurm_node(address: str):
    def run(argv):
        assert argv == ["scontrol", "show", "node", "cn17", "--oneliner"]
        return f"NodeName=cn17 Arch=x86_64 NodeAddr={address} NodeHostName=cn17 State=IDLE\n"

    return run


def test_the_address_is_the_hubs_slurm_nodeaddr_or_dns_of_the_node_name():
    assert scheduler_node_address("slurm", "cn17", slurm_node("10.1.2.17")) == "10.1.2.17"

    def scontrol_fails(argv):
        raise subprocess.CalledProcessError(1, argv, stderr="Invalid node name")

    assert scheduler_node_address("slurm", "localhost", scontrol_fails) == "127.0.0.1"
    assert scheduler_node_address("sge", "localhost") == "127.0.0.1"


def test_bind_address_is_local_or_all_interfaces_with_a_reason():
    assert bind_address("slurm", "cn17", slurm_node("127.0.0.1")) == ("127.0.0.1", "the hub's address for node cn17")
    ip, why = bind_address("slurm", "cn17", slurm_node("198.51.100.17"))
    assert ip == ALL_INTERFACES and "198.51.100.17 for node cn17 is not an address of this host" in why
    ip, why = bind_address("sge", "no-such-host.invalid")
    assert ip == ALL_INTERFACES and "does not resolve" in why
    assert bind_address("", "")[0] == ALL_INTERFACES
