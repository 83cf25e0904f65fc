"""The floor the spawn benchmarks compare against: the notebook server hpchub's job runs
(``jupyterhub-singleuser``, JupyterHub's own server command, the same one batchspawner runs)
submitted with bare sbatch/qsub, on a port chosen by the benchmark, timed until it answers.

``jupyterhub-singleuser`` does not serve before it has reached its hub's API (it retries for about
half a minute, then exits), so the floor gives it the least hub there is: ``StubHubAPI``, a thread
that answers every request with the hub's version. What remains is the scheduler and the server's
own start, which no spawner can avoid; what hpchub or batchspawner adds on top is what the ratios
to the floor show.
"""

from __future__ import annotations

import json
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _VersionHandler(BaseHTTPRequestHandler):
    """Every request (version check, activity reports) gets 200 and the hub's version."""

    def _answer(self) -> None:
        import jupyterhub  # here: re-plotting a result (--plot-only) needs no JupyterHub

        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"version": jupyterhub.__version__}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: the floor is timed, not logged
        pass


class StubHubAPI:
    """``with StubHubAPI() as api: api.url``: a hub API on 127.0.0.1 that answers with its version."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubHubAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_environment(user: str, port: int, hub_api_url: str, venv: Path | None = None) -> dict[str, str]:
    """The environment a hub gives its servers (``PATH``: ``venv``'s bin first, when given)."""
    prefix = f"/user/{user}/"
    environment = {
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_API_TOKEN": "floor",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
    }
    if venv is not None:
        environment["PATH"] = f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    return environment


def server_command(venv: Path, user: str, port: int, hub_api_url: str) -> str:
    """The shell command a floor job runs: ``jupyterhub-singleuser`` with the environment a hub gives
    its servers, listening on ``port`` on 127.0.0.1 (the bench's jobs run on the head node)."""
    environment = server_environment(user, port, hub_api_url, venv)
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
    return f"exec env {assignments} {venv}/bin/jupyterhub-singleuser --ServerApp.ip=127.0.0.1 --ServerApp.port={port}"


def api_url(port: int, user: str) -> str:
    """Where a floor server answers (unauthenticated) with its version once it serves."""
    return f"http://127.0.0.1:{port}/user/{user}/api"
