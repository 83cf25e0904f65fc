"""A kernel in a server job asks the hub for its engines, with or without hpchub installed in its
environment: ipyparallel finds the ``hpchub`` launchers through the job side's own entry points
(tests/helpers/kernel_env.py builds such an environment), and where hpchub is installed too the
installed one (listed last, so ipyparallel takes it) asks the hub all the same. A stand-in hub here
records what the kernel asks; through a real hub: tests/test_e2e_slurm.py and tests/test_e2e_sge.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.kernel_env import kernel_environment

KERNEL = """
import asyncio, json
import ipyparallel as ipp
from traitlets.config import Config

config = Config()
config.HPCEngineSetLauncher.options = {"nodes": 3}


async def main():
    cluster = ipp.Cluster(engines="hpchub", n=2, delay=0, config=config)
    await cluster.start_cluster()
    found = {"engines": type(cluster.engine_set).__module__, "controller": type(cluster.controller).__name__,
             "job_id": cluster.engine_set.job_id}
    await cluster.stop_cluster()
    print(json.dumps(found))

asyncio.run(main())
"""


class StandInHub(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str, dict]] = []

    def _answer(self, status: int, answer: dict) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        self.requests.append((self.command, self.path, self.headers.get("Authorization", ""), body))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self._answer(201, {"job_id": "7", "name": "hpchub-alice-multi.e-5", "log": "", "cluster": "slurm"})

    def do_GET(self):
        self._answer(200, {"job_id": "7", "state": "running"})

    def do_DELETE(self):
        self._answer(200, {"job_id": "7", "state": "ended"})

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    StandInHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api", StandInHub.requests
    server.shutdown()


@pytest.mark.parametrize(("with_hpchub", "launcher_module"), [(False, "hpchub_job.engines"), (True, "hpchub.parallel")])
def test_a_kernel_in_a_server_job_asks_the_hub_for_engines(hub, tmp_path, with_hpchub, launcher_module):
    api_url, requests = hub
    argv, env, top = kernel_environment(with_hpchub)
    outside = {key: value for key, value in os.environ.items() if not key.startswith(("HPCHUB_", "JUPYTERHUB_", "IPYTHON"))}
    server_job = {"JUPYTERHUB_API_URL": api_url, "JUPYTERHUB_API_TOKEN": "the-servers-token",
                  "HPCHUB_ENGINE_PROFILE": "multi", "HPCHUB_ACCOUNT": "phys", "IPYTHONDIR": str(tmp_path / "ipython")}
    try:
        if not with_hpchub:
            found = subprocess.run([*argv, "-c", "import importlib.util; print(importlib.util.find_spec('hpchub'))"],
                                   capture_output=True, text=True, cwd=tmp_path, env={**outside, **env})
            assert found.stdout.strip() == "None", found.stderr  # really no hpchub in this kernel
        result = subprocess.run([*argv, "-c", KERNEL], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                env={**outside, **env, **server_job})
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # ipyparallel's localhost-only default controller was replaced by one the engines' nodes reach.
    assert found == {"engines": launcher_module, "controller": "HPCControllerLauncher", "job_id": "7"}
    (method, path, auth, body), *rest = requests
    assert (method, path, auth) == ("POST", "/hub/api/hpchub/engines", "token the-servers-token")
    assert body["n"] == 2 and body["options"] == {"nodes": 3} and body["inherit"] == {"account": "phys"}
    assert body["profile"] == "" and "ipyparallel.engine" in body["command"]
    connection = json.loads(body["env"]["IPP_CONNECTION_INFO"])
    assert connection["interface"] == "tcp://*" and connection["key"]  # the controller listens on every interface
    assert ("DELETE", "/hub/api/hpchub/engines/7") in [(method, path) for method, path, _, _ in rest]
