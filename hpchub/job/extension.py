"""The job side of a single-user server: a Jupyter server extension, loaded only inside the job.

hpchub starts the server as ``jupyterhub-singleuser --ServerApp.jpserver_extensions=hpchub_job.extension=True
--ServerApp.port=0`` (see ``hpchub.core.jobs.SERVER_ARGS``; ``hpchub_job`` is this package as it travels
with the job, see ``hpchub.job.BUNDLE_PACKAGE``). This extension then

- makes the server listen on the address the hub connects to: the scheduler's node
  (``HPCHUB_SCHEDULER``, ``HPCHUB_NODE_NAME``, set by the job script) resolved the way the hub
  resolves it; on all interfaces (0.0.0.0), with a log line, only where that address is not one
  of this host's;
- once the server listens, reports the port of its listening socket to the hub
  (``POST /hub/api/hpchub/port``, body ``{"port": N}``, with the server's own API token, over the
  singleuser app's TLS settings). The port the hub gets is one this process
  already holds, so no other process can take it in between. If the report fails, the server
  exits with status 1, so the job ends and the spawn fails at once with the job's output. The
  report also carries the job's end (``"ends"``, from ``HPCHUB_JOB_END``, set by the job script),
  which the hub keeps for its home page;
- answers ``GET {base_url}hpchub/walltime`` (authenticated like every server API) with
  ``{"ends": EPOCH or null, "warning": SECONDS, "now": EPOCH}``: what the JupyterLab extension hpchub-walltime
  (in the job's bundle, and installed with the package) shows as the time left, warning and saving before the end;
- closes the open websockets (kernels, terminals, collaboration) of callers who lost access (a share
  revoked): the server checks access only when a websocket opens (WebsocketSweep).

Nothing here runs in the hub. Like all of hpchub/job/, it imports only the standard library and,
here, ``jupyter_server`` and the ``tornado`` that jupyter_server's handler API is made of (its
handlers, ``web.authenticated``, its HTTP client on the server's own IO loop): not JupyterHub,
not the rest of hpchub (tests/test_job_side.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from .scheduler_commands import for_scheduler
from .walltime import DEFAULT_WARNING, ENV_JOB_END, ENV_WARNING, parse_end

ALL_INTERFACES = "0.0.0.0"
REPORT_ATTEMPTS = 5
REPORT_RETRY_SECONDS = 2.0
REPORT_TIMEOUT = 60.0  # seconds for one attempt, connecting included
SCHEDULER_QUERY_TIMEOUT = 15.0

log = logging.getLogger("hpchub.singleuser")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    # Loaded as hpchub_job.extension (the job's bundle) or as hpchub.job.extension (an installed hpchub).
    return [{"module": __name__}]


# -- the address --------------------------------------------------------------------------------
def scheduler_node_address(scheduler: str, node_name: str, run: Callable[[list[str]], str] | None = None) -> str:
    """The address the hub connects to for ``node_name``, found as the hub finds it: the
    scheduler's own address for the node where the backend has one (Slurm: NodeAddr), else DNS."""
    backend = for_scheduler(scheduler)
    address = node_name
    argv = backend.node_address_argv(node_name)
    if argv is not None:
        try:
            address = backend.parse_node_address((run or _run)(argv)) or node_name
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("hpchub: no address for node %s from the scheduler: %s", node_name, error)
    if address == node_name:
        try:
            address = socket.gethostbyname(node_name)
        except OSError:
            pass
    return address


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=SCHEDULER_QUERY_TIMEOUT).stdout


def is_local_address(address: str) -> bool:
    """True if a server on this host can listen on ``address`` (an IP address)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
        return True
    except (ValueError, OSError):
        return False


def bind_address(scheduler: str, node_name: str, run: Callable[[list[str]], str] | None = None) -> tuple[str, str]:
    """(IP address to listen on, why): the node's address if it is one of this host's, else all
    interfaces."""
    if not scheduler or not node_name:
        return ALL_INTERFACES, "the job script did not name the scheduler's node (HPCHUB_SCHEDULER, HPCHUB_NODE_NAME)"
    address = scheduler_node_address(scheduler, node_name, run)
    try:
        ip = str(ipaddress.ip_address(address))
    except ValueError:
        try:
            ip = socket.gethostbyname(address)
        except OSError as error:
            return ALL_INTERFACES, f"the hub's address {address!r} for node {node_name} does not resolve here ({error})"
    if not is_local_address(ip):
        return ALL_INTERFACES, f"the hub's address {ip} for node {node_name} is not an address of this host"
    return ip, f"the hub's address for node {node_name}"


# -- the port -----------------------------------------------------------------------------------
def listening_ports(serverapp: Any) -> set[int]:
    """The ports of the server's listening TCP sockets (read from the sockets, not from config)."""
    server = getattr(serverapp, "http_server", None)
    sockets = getattr(server, "_sockets", {}) or {}  # tornado's TCPServer keeps fd -> socket
    return {sock.getsockname()[1] for sock in sockets.values() if sock.family in (socket.AF_INET, socket.AF_INET6)}


class PortReportError(RuntimeError):
    pass


def _hub_client(serverapp: Any) -> tuple[str, str, ssl.SSLContext | None]:
    """(hub API URL, this server's token, TLS context or None): from the running jupyterhub
    singleuser app (its TLS context carries internal_ssl's client certificate), else from the
    environment the hub gave the job."""
    for apps in serverapp.extension_manager.extension_apps.values():
        for app in apps:
            hub_auth = getattr(app, "hub_auth", None)
            app_options = getattr(app, "hub_http_client_opts", None)
            if hub_auth is not None and app_options is not None:
                return hub_auth.api_url, hub_auth.api_token, app_options.get("ssl")
    context = client_ssl_context(os.environ.get("JUPYTERHUB_SSL_KEYFILE"), os.environ.get("JUPYTERHUB_SSL_CERTFILE"),
                                 os.environ.get("JUPYTERHUB_SSL_CLIENT_CA"))
    return os.environ.get("JUPYTERHUB_API_URL", ""), os.environ.get("JUPYTERHUB_API_TOKEN", ""), context


def client_ssl_context(keyfile: str | None, certfile: str | None, cafile: str | None) -> ssl.SSLContext | None:
    """internal_ssl's client context, made as jupyterhub-singleuser makes it (the hub's certificate
    and name verified, this server's certificate presented); None without a key and certificate."""
    if not keyfile or not certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_default_certs()
    context.load_cert_chain(certfile, keyfile)
    return context


async def report_port(url: str, token: str, port: int, ssl_context: ssl.SSLContext | None,
                      attempts: int = REPORT_ATTEMPTS, retry_seconds: float = REPORT_RETRY_SECONDS,
                      ends: int | None = None) -> None:
    """POST ``{"port": port}`` (with ``"ends": ends`` if known) to ``url`` with ``token``; retry
    while the hub is unreachable or answers 5xx; raise PortReportError when it refuses (4xx) or
    never answers."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    body = json.dumps({"port": port, **({"ends": ends} if ends else {})})
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            request = HTTPRequest(url, method="POST", body=body, headers=headers, ssl_options=ssl_context,
                                  request_timeout=REPORT_TIMEOUT)
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
            if response.code == 599 and response.error is not None:  # no answer: connection or timeout
                raise response.error
            if response.code < 300:
                return
            last_error = f"{response.code} {(response.body or b'').decode('utf-8', 'replace')[:300]!r}"
            if response.code < 500:
                raise PortReportError(f"the hub refused port {port} at {url}: {last_error}")
        except PortReportError:
            raise
        except Exception as error:  # tornado's and ssl's connection errors: try again
            last_error = f"{type(error).__name__}: {error}"
        log.warning("hpchub: reporting port %s to %s failed (attempt %s of %s): %s", port, url, attempt, attempts,
                    last_error)
        if attempt < attempts:
            await asyncio.sleep(retry_seconds)
    raise PortReportError(f"cannot report port {port} to the hub at {url}: {last_error}")


# -- the walltime -------------------------------------------------------------------------------
def walltime_info(environ: Any = os.environ, now: float | None = None) -> dict[str, int | None]:
    """``{"ends": epoch or None, "warning": seconds, "now": epoch}`` from the job's environment;
    ``now`` lets the browser correct for its own clock."""
    warning = str(environ.get(ENV_WARNING, "")).strip()
    return {"ends": parse_end(environ.get(ENV_JOB_END, "")), "warning": int(warning) if warning.isdigit() else DEFAULT_WARNING,
            "now": int(time.time() if now is None else now)}


def walltime_handler() -> type:
    """The handler of ``GET {base_url}hpchub/walltime`` (jupyter_server imported only in the job)."""
    from jupyter_server.base.handlers import APIHandler
    from tornado import web

    class WalltimeHandler(APIHandler):
        @web.authenticated
        def get(self) -> None:
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(walltime_info()))

    return WalltimeHandler


# -- websockets of callers who lost access -------------------------------------------------------
SWEEP_SECONDS = 1.0
REVOKED_CLOSE_CODE = 1008  # RFC 6455: policy violation


class WebsocketSweep:
    """Each open websocket's token is checked as a request's is, every SWEEP_SECONDS (through the
    auth cache: one hub call per caller per ``--HubOAuth.cache_max_age``); the hub's refusal closes it."""

    def __init__(self, hub_auth: Any):
        self.hub_auth = hub_auth
        self.sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None

    def track_websockets(self) -> None:
        """Every websocket handler upgrades through tornado's WebSocketHandler.get."""
        from tornado.websocket import WebSocketHandler

        upgrade = WebSocketHandler.get
        sockets = self.sockets

        async def get(handler: Any, *args: Any, **kwargs: Any) -> None:
            sockets.add(handler)
            await upgrade(handler, *args, **kwargs)

        WebSocketHandler.get = get  # type: ignore[method-assign,assignment]

    async def allowed(self, handler: Any) -> bool | None:
        """None: cannot tell (no token, no answer)."""
        try:
            token = self.hub_auth.get_token(handler)
            if not token:
                return None
            model = await self.hub_auth.user_for_token(token, session_id=self.hub_auth.get_session_id(handler),
                                                       sync=False)
        except Exception:  # the hub restarting or unreachable
            return None
        if model is None:
            return False
        return bool(self.hub_auth.check_scopes(self.hub_auth.access_scopes, model))

    async def sweep(self) -> None:
        for handler in list(self.sockets):
            if handler.ws_connection is None or handler.ws_connection.is_closing():
                self.sockets.discard(handler)
            elif await self.allowed(handler) is False:
                log.warning("hpchub: closing a websocket (%s) of a caller who lost access", handler.request.path)
                handler.close(REVOKED_CLOSE_CODE, "access to this server was revoked")
                self.sockets.discard(handler)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception:  # one bad round must not end the sweeping
                log.exception("hpchub: websocket sweep")


_sweep: WebsocketSweep | None = None


# -- the extension hooks ------------------------------------------------------------------------
def _load_jupyter_server_extension(serverapp: Any) -> None:
    # Runs after the singleuser app set ip from JUPYTERHUB_SERVICE_URL and before the server
    # binds, so the address chosen here is the one it listens on.
    ip, why = bind_address(os.environ.get("HPCHUB_SCHEDULER", ""), os.environ.get("HPCHUB_NODE_NAME", ""))
    if ip == ALL_INTERFACES:
        serverapp.log.warning("hpchub: listening on all interfaces: %s", why)
    else:
        serverapp.log.info("hpchub: listening on %s, %s", ip, why)
    serverapp.ip = ip
    from jupyter_server.utils import url_path_join

    serverapp.web_app.add_handlers(".*$", [(url_path_join(serverapp.base_url, "hpchub/walltime"), walltime_handler())])
    global _sweep
    hub_auth = getattr(getattr(serverapp, "identity_provider", None), "hub_auth", None)  # jupyterhub-singleuser's
    if hub_auth is not None and _sweep is None:
        _sweep = WebsocketSweep(hub_auth)
        _sweep.track_websockets()


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    # Runs once the IO loop has started, after the server's sockets were bound.
    ports = listening_ports(serverapp)
    try:
        if len(ports) != 1:
            raise PortReportError(f"the server should listen on one port, it listens on {sorted(ports) or 'none'}")
        (port,) = ports
        url, token, context = _hub_client(serverapp)
        await report_port(url.rstrip("/") + "/hpchub/port", token, port, context,
                          ends=parse_end(os.environ.get(ENV_JOB_END, "")))
    except Exception as error:
        message = f"hpchub: {error}; stopping the server"
        serverapp.log.critical(message)
        print(message, file=sys.stderr, flush=True)
        # Not caught by jupyter_server's extension loop: the process ends with status 1.
        raise SystemExit(1) from None
    serverapp.log.info("hpchub: server port %s reported to the hub", port)
    if _sweep is not None and _sweep.task is None:
        _sweep.task = asyncio.get_running_loop().create_task(_sweep.run())
