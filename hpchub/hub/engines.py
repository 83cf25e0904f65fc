"""The hub endpoint where a notebook asks for ipyparallel engines: ``/hub/api/hpchub/engines``.

A kernel of a running server (hpchub.job.engines, which needs nothing of hpchub installed) posts
``{"n": N, "profile": SLUG, "options": {...}, "inherit": {...}, "command": [...], "env": {...}}``
with its server's own API token. The hub

- finds the running server that token belongs to (only a running server's own token: not another
  user's, not the same user's other tokens, not a stopped or starting server's);
- checks the request like the spawn form: a profile the server's user may use (default: the
  server's own), on the server's cluster, the options within its bounds; ``inherit`` (the server job's
  account, QoS, reservation) fills the fields the options leave out, and gives way to the profile's
  default where refused;
- builds the engine job with the one job path (core.jobs.engine_job: named after the server's job,
  so it never outlives it) and submits it as the server's user through the cluster's transport
  (core.lifecycle), its connection info in the job's user-only env file;
- answers its state from the shared status poller (``GET .../engines/JOB``: no scheduler query of
  its own) and cancels it (``DELETE .../engines/JOB``).

The command and environment come from the user's own kernel and run as that user in that user's
job, exactly as if the kernel had submitted it: they give the token's holder nothing it did not have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..core import jobs, lifecycle
from ..core.options import INHERITED_FIELDS, OptionsError, needs_allocations, resolve_inheriting
from ..core.render import RenderError, UserAccount
from ..core.runtime import ClusterRuntime
from ..schedulers import JobState
from ..transports.cluster import AccountRefused, ClusterSpec
from ..transports.runner import CommandError
from ..transports.sshpool import LoginUnreachable

log = logging.getLogger("hpchub.engines")

ROUTE = "/api/hpchub/engines"  # below the hub prefix: /hub/api/hpchub/engines
JOB_ROUTE = ROUTE + r"/([0-9][0-9.]{0,63})"

MAX_ENGINES = 10_000
MAX_COMMAND_ARGS = 256
MAX_ENV = 64
MAX_TEXT = 64 * 1024  # one argument or value (ipyparallel's connection info is about 1 KiB)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
BODY_KEYS = frozenset({"n", "profile", "options", "inherit", "command", "env"})


@dataclass(frozen=True)
class EngineRequest:
    n: int
    profile: str
    options: dict[str, str | int | float | None]
    inherit: dict[str, str]
    command: list[str]
    env: dict[str, str]


@dataclass
class EngineSet:
    """An engine job the hub submitted (or found again after a restart) for one server."""

    job_id: str
    name: str
    key: str  # its files' key ("" when found again after a hub restart: the files are left to `hpchub-job clean`)
    user: str
    runtime: ClusterRuntime
    log_path: str = ""

    @property
    def watcher(self) -> str:
        return self.key or f"{self.name}#{self.job_id}"


@dataclass
class _Server:
    spawner: Any  # the HPCSpawner of a running server
    sets: dict[str, EngineSet]


# sha256(server token) -> the running server and its engine sets. Hashes, so the table holds no tokens.
_servers: dict[str, _Server] = {}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def serve(digest: str, spawner: Any) -> None:
    """A running server (its token's digest) may ask for engines from now on."""
    server = _servers.get(digest)
    if server is None or server.spawner is not spawner:
        _servers[digest] = _Server(spawner, server.sets if server is not None else {})


def forget(digest: str) -> list[EngineSet]:
    """The server stopped or ended: its token asks for nothing more. Its engine sets (the spawner
    cancels their jobs by name, see HPCSpawner._cancel_engine_jobs) are no longer watched."""
    server = _servers.pop(digest, None)
    sets = list(server.sets.values()) if server is not None else []
    for engine_set in sets:
        engine_set.runtime.poller.unwatch(engine_set.job_id, engine_set.user, engine_set.watcher)
    return sets


def running_server(token: str | None, user: str | None) -> _Server:
    """The running server whose own API token ``token`` is (``user``: the token's owner, as the hub
    authenticated it); 403 for any other token, and for the token of a server that is not running."""
    server = _servers.get(token_digest(token)) if token else None
    if server is None or user is None or getattr(server.spawner.user, "name", None) != user:
        raise web.HTTPError(403, "only a running hpchub server's own API token may ask for engines")
    if not server.spawner.ready or not server.spawner.running_job():
        raise web.HTTPError(403, "this token's server is not running")
    return server


def read_request(body: bytes) -> EngineRequest:
    """The engine request in a body, checked for shape and size (HTTP 400 otherwise); its values are
    checked against the profile later, like the spawn form's."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise web.HTTPError(400, "body must be JSON") from None
    if not isinstance(data, dict) or not set(data) <= BODY_KEYS or "n" not in data or "command" not in data:
        raise web.HTTPError(400, f"body must be an object with n and command, and only {', '.join(sorted(BODY_KEYS))}")
    n = data["n"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ENGINES:
        raise web.HTTPError(400, f"n must be an integer from 1 to {MAX_ENGINES}")
    profile = data.get("profile") or ""
    if not isinstance(profile, str) or len(profile) > 128:
        raise web.HTTPError(400, "profile must be a profile's name")
    options = data.get("options") or {}
    if not isinstance(options, dict) or len(options) > 64 or not all(
            isinstance(key, str) and (value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)
                                                        and len(str(value)) <= 256))
            for key, value in options.items()):
        raise web.HTTPError(400, "options must map option names to numbers or short texts")
    inherit = data.get("inherit") or {}
    if not isinstance(inherit, dict) or not all(key in INHERITED_FIELDS and isinstance(value, str) and len(value) <= 256
                                                for key, value in inherit.items()):
        raise web.HTTPError(400, f"inherit must map {', '.join(INHERITED_FIELDS)} to names")
    command = data["command"]
    if (not isinstance(command, list) or not 1 <= len(command) <= MAX_COMMAND_ARGS
            or not all(isinstance(arg, str) and _plain_text(arg) for arg in command) or not command[0]):
        raise web.HTTPError(400, f"command must be a list of 1 to {MAX_COMMAND_ARGS} texts (no control characters)")
    env = data.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV or not all(
            isinstance(name, str) and ENV_NAME_RE.match(name) and isinstance(value, str) and _plain_text(value)
            for name, value in env.items()):
        raise web.HTTPError(400, f"env must map at most {MAX_ENV} variable names to texts (no control characters)")
    return EngineRequest(n, profile, dict(options), dict(inherit), list(command), dict(env))


def _plain_text(text: str) -> bool:
    return len(text) <= MAX_TEXT and not any(ord(char) < 32 or ord(char) == 127 for char in text)


class _EngineHandler(APIHandler):
    # The caller is a kernel, not a browser: token auth only, no XSRF cookie dance.
    def check_xsrf_cookie(self):
        return

    def _server(self) -> _Server:
        return running_server(self.get_auth_token(), getattr(self.current_user, "name", None))

    def _reply(self, status: int, answer: Mapping[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))


class EnginesHandler(_EngineHandler):
    @web.authenticated
    async def post(self):
        server = self._server()
        request = read_request(self.request.body)
        engine_set = await start_engines(server, request)
        self._reply(201, {"job_id": engine_set.job_id, "name": engine_set.name, "log": engine_set.log_path,
                          "cluster": engine_set.runtime.name})


class EngineJobHandler(_EngineHandler):
    @web.authenticated
    async def get(self, job_id: str):
        self._reply(200, await engine_state(self._server(), job_id))

    @web.authenticated
    async def delete(self, job_id: str):
        self._reply(200, await stop_engines(self._server(), job_id))


async def start_engines(server: _Server, request: EngineRequest) -> EngineSet:
    """Check ``request`` for the server's user, then build and submit its engine job as that user."""
    spawner = server.spawner
    server_job, user_name = spawner.running_job(), spawner.job_user
    profiles = await spawner.visible_profiles()
    slug = request.profile or spawner.job_profile
    profile = next((profile for profile in profiles if profile.slug == slug), None)
    if profile is None:
        raise web.HTTPError(403, f"profile {slug!r} is not available to you")
    server_cluster = str(spawner.job_cluster.get("name", ""))
    if profile.cluster != server_cluster:
        raise web.HTTPError(400, f"profile {slug!r} runs on cluster {profile.cluster!r}: engines run on this server's "
                                 f"cluster {server_cluster!r}")
    site = spawner.site
    runtime = spawner.runtime_for(ClusterSpec.from_site(site, profile.cluster))
    allocations = (await spawner.allocations_on(profile.cluster)).allocations if needs_allocations(site, profile) else None

    def refused(field: str, value: str, why: str) -> None:
        log.warning("engines of %s's server job %s, profile %s: not the server's %s %r (%s): the profile's default",
                    user_name, server_job, profile.slug, field, value, why)

    try:
        job_request = resolve_inheriting(site, profile, request.options, request.inherit, allocations, refused)
        runtime.client.check_account(user_name)
        job = jobs.engine_job(site, job_request, UserAccount.lookup(user_name), request.n, server_job, request.command)
    except OptionsError as error:
        raise web.HTTPError(400, f"Invalid options for profile {profile.slug!r}: {error}") from None
    except RenderError as error:
        raise web.HTTPError(400, str(error)) from None
    except (AccountRefused, KeyError) as error:
        raise web.HTTPError(403, f"hpchub refuses to submit engines as {user_name!r}: {error}") from None
    try:
        job_id = await lifecycle.submit_and_watch(runtime, job, {"env": jobs.env_file(request.env)}, watcher=job.key)
    except CommandError as error:
        raise web.HTTPError(502, f"the scheduler refused the engine job: {error.stderr.strip() or error}") from None
    except LoginUnreachable as error:  # nothing was submitted
        raise web.HTTPError(503, f"hpchub cannot reach the cluster's login node: {error}") from None
    except lifecycle.SubmitOutcomeUnknown as error:
        raise web.HTTPError(502, str(error)) from None
    engine_set = server.sets[job_id] = EngineSet(job_id, job.name, job.key, user_name, runtime, job.log_path(job_id))
    log.info("engine job %s (%s, %s engines) submitted for %s's server job %s", job_id, job.name, request.n, user_name,
             server_job)
    return engine_set


async def engine_state(server: _Server, job_id: str) -> dict[str, Any]:
    """The engine job's state from the shared poller (a query only when its answer is older than the
    hub's poll interval, one for every job of the cluster): pending, running, ended (then its files
    are removed) or unknown (the scheduler does not answer)."""
    engine_set = await _engine_set(server, job_id)
    view = await engine_set.runtime.poller.get(job_id, max_age=float(server.spawner.poll_interval))
    answer: dict[str, Any] = {"job_id": job_id, "state": "unknown"}
    if lifecycle.has_ended(view):
        status = view.status
        failed = status is not None and status.state in (JobState.FAILED, JobState.CANCELLED, JobState.ERROR)
        answer.update(state="ended", scheduler_state=status.scheduler_state if status else "gone", failed=failed)
        await _done(server, engine_set)
    elif view.status is not None:
        answer.update(state="running" if view.status.state is JobState.RUNNING else "pending",
                      scheduler_state=view.status.scheduler_state)
    return answer


async def stop_engines(server: _Server, job_id: str) -> dict[str, Any]:
    """Cancel the engine job as the server's user (if it is still that job) and wait until the
    scheduler no longer runs it (at most the spawner's stop_wait_timeout); remove its files."""
    engine_set = await _engine_set(server, job_id)
    spawner = server.spawner
    gone = await lifecycle.cancel_and_wait(engine_set.runtime, engine_set.user, job_id, engine_set.name,
                                           timeout=float(spawner.stop_wait_timeout),
                                           interval=float(spawner.startup_poll_interval), watcher=engine_set.watcher)
    await _done(server, engine_set)
    return {"job_id": job_id, "state": "ended" if gone else "cancelling"}


async def _engine_set(server: _Server, job_id: str) -> EngineSet:
    """This server's engine set of ``job_id``; after a hub restart, found again when the scheduler
    lists it as the user's engine job of this server's job. 404 otherwise."""
    engine_set = server.sets.get(job_id)
    if engine_set is not None:
        return engine_set
    spawner = server.spawner
    user, server_job = spawner.job_user, spawner.running_job()
    runtime = spawner.runtime_for(ClusterSpec.from_state(dict(spawner.job_cluster)))
    try:
        name = (await runtime.client.job_names(user)).get(job_id)
    except CommandError as error:
        raise web.HTTPError(503, f"cannot look up job {job_id}: {error}") from None
    if name is None or not jobs.is_engine_job_of(name, user, server_job):
        raise web.HTTPError(404, f"job {job_id} is not an engine job of this server")
    engine_set = EngineSet(job_id, name, "", user, runtime)
    try:
        runtime.poller.watch(job_id, user, engine_set.watcher)
    except ValueError:
        raise web.HTTPError(404, f"job {job_id} is not an engine job of this server") from None
    server.sets[job_id] = engine_set
    return engine_set


async def _done(server: _Server, engine_set: EngineSet) -> None:
    """The engine job is over: stop watching it and remove its files (as the user)."""
    if server.sets.pop(engine_set.job_id, None) is None:
        return
    engine_set.runtime.poller.unwatch(engine_set.job_id, engine_set.user, engine_set.watcher)
    if engine_set.key:
        await lifecycle.remove_files(engine_set.runtime, engine_set.user, engine_set.key)


HANDLERS = [(ROUTE, EnginesHandler), (JOB_ROUTE, EngineJobHandler)]
