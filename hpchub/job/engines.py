"""ipyparallel in a notebook of an hpchub server job: the engines are asked of the hub, and the
controller listens where they reach it. Runs in the user's kernel, as the user, on the compute node.

``ipyparallel.Cluster(engines="hpchub", n=8)`` in a kernel whose server hpchub started needs nothing
of hpchub installed in the kernel's environment (nor sbatch, qsub, munge or the site config: it may
run in a container image). ``HPCEngineSetLauncher`` does not render or submit anything: it posts
"n engines of this profile, with these options, this command and this connection info" to the hub
(``POST {JUPYTERHUB_API_URL}/hpchub/engines``) with the server's own API token
(``JUPYTERHUB_API_TOKEN``, which the hub gave this server's job). The hub checks the request like
the spawn form, submits the engine job as the server's user through the cluster's transport, and
watches it with its shared status poller; the launcher asks the hub for its state
(``GET .../engines/JOB``) and stops it (``DELETE .../engines/JOB``).

ipyparallel's default controller listens on localhost, which engines on other nodes cannot reach:
``HPCControllerLauncher`` listens on all interfaces and advertises this node's address toward the
hub. When a Cluster started ipyparallel's default controller anyway (no hpchub config in this
environment says otherwise), the engine launcher restarts it as ``HPCControllerLauncher`` before
it asks for engines: the controller is chosen by the launcher, not by a config file.

Imports: the standard library, ipyparallel and the traitlets its launchers are made of, and this
package's ``extension`` (for internal_ssl's client context; it imports only the standard library
until a server loads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ipyparallel.cluster.launcher import EngineLauncher, LocalControllerLauncher
from traitlets import Dict, Float, Integer, Unicode, default

from .extension import client_ssl_context

# What an hpchub server job exports to its notebooks (hpchub.core.jobs sets them; the job side cannot
# import it, tests/test_parallel.py checks they agree).
ENV_ENGINE_PROFILE = "HPCHUB_ENGINE_PROFILE"
ENV_PARENT_ALLOCATIONS = {"account": "HPCHUB_ACCOUNT", "qos": "HPCHUB_QOS", "reservation": "HPCHUB_RESERVATION"}
ENV_PARENT_IMAGE = "HPCHUB_IMAGE"  # the label of the container image the server runs in
ENV_PARENT_USER_ENV = "HPCHUB_USER_ENV"  # the user's own env the server runs in (environment.user_envs)
ENV_API_URL = "JUPYTERHUB_API_URL"
ENV_API_TOKEN = "JUPYTERHUB_API_TOKEN"
ROUTE = "hpchub/engines"  # below the hub's API URL


def in_server_job(environ: Mapping[str, str] = os.environ) -> bool:
    """Is this process in (a kernel of) a server job hpchub started: does the hub submit its engines?"""
    return all(environ.get(name) for name in (ENV_API_URL, ENV_API_TOKEN, ENV_ENGINE_PROFILE))


def reachable_address() -> str:
    """This node's address on the network the compute nodes share: the local end of a route to
    the hub (inside an hpchub server), else the address of this host's name."""
    hub_url = os.environ.get(ENV_API_URL)
    host = urlparse(hub_url).hostname if hub_url else None
    if host and host not in ("localhost", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((host, 9))  # no packet is sent for UDP connect
                return probe.getsockname()[0]
            except OSError:
                pass
    return socket.gethostbyname(socket.gethostname())


class HPCControllerLauncher(LocalControllerLauncher):
    """ipcontroller in the notebook's own job, listening where engines on other nodes reach it."""

    entrypoint_name = "hpchub"  # ipyparallel's name for it in cluster files, whichever module defines it

    location = Unicode(
        config=True,
        help="Address engines and clients use to reach the controller (default: this node's address toward the hub).",
    )

    heartbeat_period = Integer(
        1000,
        config=True,
        help="""Controller heartbeat period in ms. The controller counts an engine as registered
        only after heartbeats; ipyparallel's 3000 ms default makes engines take about 6 s to
        appear, 1000 ms about 2.5 s (see bench/engines.py).""",
    )

    @default("location")
    def _location_default(self):
        return reachable_address()

    def find_args(self):
        args = super().find_args()
        if self.heartbeat_period and not any(arg.startswith("--HeartMonitor.period") for arg in args):
            args.append(f"--HeartMonitor.period={self.heartbeat_period}")
        if not any(arg.startswith("--ip") for arg in args):
            args.append("--ip=*")
        if not any(arg.startswith("--location") for arg in args):
            args.append(f"--location={self.location}")
        return args


def listens_on_localhost_only(controller: Any) -> bool:
    """Does ``controller`` (a launcher) listen where only this node reaches it (ipyparallel's default)?"""
    if isinstance(controller, HPCControllerLauncher):
        return False
    args = getattr(controller, "controller_args", None) or []
    return not any(arg.startswith("--ip") and not arg.endswith(("127.0.0.1", "localhost")) for arg in args)


class HubRefused(RuntimeError):
    """The hub answered with an error (``status``: its HTTP status)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"the hub refused ({status}): {message}")
        self.status = status


def ask_hub(method: str, path: str = "", body: Mapping[str, Any] | None = None, timeout: float = 300.0,
            environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """One request to the hub's engines endpoint with the server's own token (blocking); its JSON
    answer. HubRefused on an HTTP error, OSError when the hub does not answer."""
    url = f"{environ[ENV_API_URL].rstrip('/')}/{ROUTE}{path}"
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {environ[ENV_API_TOKEN]}",
                                              "Content-Type": "application/json"})
    context: ssl.SSLContext | None = client_ssl_context(environ.get("JUPYTERHUB_SSL_KEYFILE"),
                                                        environ.get("JUPYTERHUB_SSL_CERTFILE"),
                                                        environ.get("JUPYTERHUB_SSL_CLIENT_CA"))
    # The hub is reached directly, as the server's own extension reaches it: never through an HTTP proxy.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            message = json.loads(raw).get("message") or raw.decode("utf-8", "replace")
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")[:500]
        raise HubRefused(error.code, str(message)) from None
    return json.loads(text) if text else {}


class HPCEngineSetLauncher(EngineLauncher):
    """n ipengines as one batch job that the hub submits as this server's user (Slurm: srun tasks;
    Grid Engine: an array job)."""

    # The same class name as the installed package's subclass (hpchub.parallel), so that
    # ``c.HPCEngineSetLauncher.options = ...`` configures whichever ipyparallel found.
    entrypoint_name = "hpchub"

    profile = Unicode(config=True, help="""Profile slug for the engine job (default: the server's own profile;
        outside hpchub's server jobs $HPCHUB_ENGINE_PROFILE, else the site's first profile).""")
    options = Dict(
        config=True,
        help="User choices for the engine job (cores per engine, nodes, walltime, queue...), "
        "validated against the profile like the spawn form.",
    )
    poll_interval = Float(2.0, config=True, help="""Seconds between checks of the engine job's state: questions
        to the hub, which answers from its shared status poller (the scheduler is asked at most once per the hub's
        poll interval, whatever the notebooks ask); outside hpchub's server jobs, the interval of this process's own
        shared poller.""")
    hub_timeout = Float(300.0, config=True, help="Seconds a request to the hub (submitting, cancelling) may take.")
    job_id = Unicode("").tag(to_dict=True)
    log_file = Unicode("").tag(to_dict=True)

    def find_args(self):
        return list(self.engine_cmd) + self.cluster_args + list(self.engine_args)

    async def _ask(self, method: str, path: str = "", body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, ask_hub, method, path, body, self.hub_timeout)

    async def start(self, n):
        self.n = n
        await self._listen_where_engines_reach()
        parent = {**ENV_PARENT_ALLOCATIONS, "image": ENV_PARENT_IMAGE, "user_env": ENV_PARENT_USER_ENV}
        inherit = {field: os.environ[variable] for field, variable in parent.items() if os.environ.get(variable)}
        answer = await self._ask("POST", body={"n": n, "profile": self.profile, "options": dict(self.options),
                                               "inherit": inherit, "command": self.find_args(),
                                               "env": self.get_env()})
        self.job_id, self.log_file = str(answer["job_id"]), str(answer.get("log", ""))
        self.log.info("engine job %s (%s) submitted by the hub", self.job_id, answer.get("name", ""))
        self.notify_start({"job_id": self.job_id, "cluster": answer.get("cluster", "")})
        self._monitor = asyncio.ensure_future(self._watch())
        return self.job_id

    async def _listen_where_engines_reach(self) -> None:
        """Restart ipyparallel's default controller (localhost only) as HPCControllerLauncher, and
        give the engines its connection info instead."""
        cluster = self.parent
        controller = getattr(cluster, "controller", None)
        if controller is None or not hasattr(cluster, "start_controller") or not listens_on_localhost_only(controller):
            return
        self.log.info("the controller listens on localhost only, which engines on other nodes cannot reach: "
                      "restarting it as hpchub's (controller='hpchub' avoids this)")
        stale = list((getattr(controller, "connection_files", None) or {}).values())
        await cluster.stop_controller()
        # The new controller writes its files where the old one did: read no stale ports or key.
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        cluster.controller_launcher_class = HPCControllerLauncher
        await cluster.start_controller()
        info = cluster.controller.get_connection_info()
        if asyncio.iscoroutine(info) or isinstance(info, asyncio.Future):
            info = await info
        self.environment["IPP_CONNECTION_INFO"] = json.dumps(info["engine"])

    async def _watch(self) -> None:
        """Tell ipyparallel when the engine job ends (its own batch launchers never look)."""
        while self.state == "running":
            await asyncio.sleep(self.poll_interval)
            if self.state != "running":
                return
            try:
                status = await self._ask("GET", f"/{self.job_id}")
            except HubRefused as error:
                if error.status != 404:
                    self.log.warning("engine job %s: %s", self.job_id, error)
                    continue
                status = {"state": "ended", "scheduler_state": "gone"}  # not this server's engine job any more
            except OSError as error:  # the hub restarting: ask again
                self.log.debug("engine job %s: the hub does not answer: %s", self.job_id, error)
                continue
            if status.get("state") == "ended":
                state = status.get("scheduler_state") or "gone"
                self.log.info("engine job %s ended (%s)", self.job_id, state)
                self.notify_stop({"job_id": self.job_id, "state": state, "exit_code": 1 if status.get("failed") else 0})
                return

    async def stop(self):
        """Have the hub cancel the engine job; return once the scheduler no longer runs it."""
        if not self.job_id or self.state == "after":
            return
        try:
            await self._ask("DELETE", f"/{self.job_id}")
        except HubRefused as error:
            if error.status != 404:  # 404: already over and forgotten
                raise
        monitor = getattr(self, "_monitor", None)
        # ipyparallel's *_sync calls each run their own event loop: only cancel in our own.
        if monitor is not None and not monitor.done() and monitor.get_loop() is asyncio.get_running_loop():
            monitor.cancel()
        if self.state != "after":
            self.notify_stop({"job_id": self.job_id, "state": "cancelled", "exit_code": 0})

    def signal(self, sig):
        self.log.warning("signals to engine jobs are not supported; use stop()")

    def get_output(self, remove=False):
        try:
            with open(self.log_file) as output:
                return output.read()
        except OSError:
            return ""
