"""End to end on the real local Slurm with ``c.JupyterHub.internal_ssl = True``: the hub starts its
own configurable-http-proxy (with the proxy's TLS client certificate), the server's key and
certificate reach the job in user-only files, and hub and proxy reach the server over TLS.
Also where the server listens: on the node's address, on the port it reported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
from helpers.hub import TLS_CONFIG, VENV, Hub, HubWithItsOwnProxy, jobs_of, run_hub, spawn, stop
from helpers.kernel_env import engine_logs, kernel_environment, kernel_in_server_job
from helpers.profiles import kernel_engines_profile, local_site_text
from helpers.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

USERS = ("carol", "bob")  # not alice: other suites give her jobs with odd names

@pytest.fixture(scope="module")
def hub(slurm_cluster, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-slurm-tls")
    config = state / "jupyterhub_config.py"
    config.write_text(TLS_CONFIG.format(example=str(REPO / "examples" / "jupyterhub_config.py")))
    # The jobs run the hpchub under test (HPCHUB_VENV), not necessarily the shared one.
    site_text = local_site_text("slurm", kernel_engines_profile("slurm")).replace("venv: /opt/hpchub/venv", f"venv: {VENV}")
    yield from run_hub(state, site_text, USERS, hub_class=HubWithItsOwnProxy, config_file=config,
                       leftover_slurm_profiles=("small", "multi", "kernel-engines"))


def listening(addresses_and_ports: str, port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` in ``ss -ltnH`` output."""
    found = []
    for line in addresses_and_ports.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1] == str(port):
            found.append(fields[3].rsplit(":", 1)[0])
    return found


def server_target(hub: Hub, user: str) -> tuple[str, str, int]:
    """(scheme, address, port) the hub gave the proxy for the user's server."""
    log = hub.hub_log.read_text(errors="replace")
    targets = re.findall(rf"Adding user {user} to proxy /user/{user}/ => (\S+)", log)
    assert targets, hub.log_tail()
    match = re.match(r"(https?)://([^:/]+):(\d+)", targets[-1])
    return match.group(1), match.group(2), int(match.group(3))


def test_internal_ssl_server_on_the_head_node_through_the_proxy(hub, client):
    server = spawn(hub, "carol", {"profile": "small"})
    job_id = server["state"]["job_id"]
    assert job_id in jobs_of(client, "carol")
    proto, address, port = server_target(hub, "carol")
    assert (proto, address) == ("https", "127.0.0.1")  # the vm node's NodeAddr, over TLS
    status = hub.get_user_url("carol", "api/status")
    assert status.status_code == 200 and "last_activity" in status.json()
    # The server's key reached the job in carol's own files, never in the script.
    env = Path(f"/home/carol/.hpchub/jobs/{server['state']['job_key']}/env").read_text()
    keyfile = Path(re.search(r"^JUPYTERHUB_SSL_KEYFILE=(\S+)$", env, re.M).group(1))
    assert keyfile.parent == Path("/home/carol/.hpchub/jobs/hpchub-carol-small")
    for name in ("tls.key", "tls.crt", "ca.crt"):
        path = keyfile.parent / name
        assert path.owner() == "carol" and path.stat().st_mode & 0o777 == 0o600
    assert "BEGIN" in keyfile.read_text() and "PRIVATE KEY" in keyfile.read_text()
    script = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True).stdout
    assert "PRIVATE KEY" not in script
    # The reported port is the one carol's server listens on, on the node's address only.
    sockets = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    assert listening(sockets, port) == ["127.0.0.1"], sockets
    # Plain HTTP to the server is refused: TLS only.
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/user/carol/api/status", timeout=5).raise_for_status()
    stop(hub, "carol")
    assert not keyfile.parent.exists()


@pytest.mark.multinode
def test_internal_ssl_server_on_a_compute_node_listens_on_its_node_address(hub, client):
    server = spawn(hub, "bob", {"profile": "multi", "nodes": 1})
    assert server["state"]["job_host"] in ("node1", "node2", "node3")
    node = server["state"]["job_host"]
    proto, address, port = server_target(hub, "bob")
    node_address = {"node1": "10.77.0.11", "node2": "10.77.0.12", "node3": "10.77.0.13"}[node]
    assert (proto, address) == ("https", node_address)
    assert hub.get_user_url("bob", "api/status").status_code == 200
    sockets = subprocess.run(["ip", "netns", "exec", f"hpchub-{node}", "ss", "-ltnH"], capture_output=True, text=True,
                             check=True).stdout
    assert listening(sockets, port) == [node_address], sockets  # not 0.0.0.0
    stop(hub, "bob")



@pytest.mark.multinode
def test_a_kernel_without_hpchub_asks_the_hub_for_engines_over_tls(hub, client):
    """The kernel's request carries the server's client certificate and verifies the hub's, as the
    server's own port report does (internal_ssl's files and variables from the job's env file)."""
    server = spawn(hub, "carol", {"profile": "kernel-engines"})
    env_file = f"/home/carol/.hpchub/jobs/{server['state']['job_key']}/env"
    assert "JUPYTERHUB_SSL_CERTFILE=" in Path(env_file).read_text()
    argv, env, top = kernel_environment(job_side=False)
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-kernel-"))
    shutil.chown(scratch, "carol")
    command = kernel_in_server_job("carol", env_file, argv, {**env, "HPCHUB_ENGINE_PROFILE": "kernel-engines"}, scratch,
                                   2, {}, prefix=("srun", f"--jobid={server['state']['job_id']}", "--overlap", "-N1",
                                                  "-n1", "--export=ALL"))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + engine_logs("carol", server["state"]["job_id"])
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["launcher"] == "hpchub_job.engines" and found["engines"] == 2
    assert found["job_id"] not in jobs_of(client, "carol")
    stop(hub, "carol")
