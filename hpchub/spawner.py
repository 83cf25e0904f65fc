"""HPCSpawner: single-user servers as Slurm or Grid Engine batch jobs, from a site config.

What it does differently from batchspawner (see README): user choices never override admin
values and are validated per profile; the job's status is read from one shared poller per
cluster; a failed status query means "unknown", never "gone"; a job that dies, is held or
errs while starting fails the spawn at once with the scheduler's reason and the log's tail;
the job reports only its port, with its own token; secrets reach the job in a user-only file.
"""

from __future__ import annotations

import asyncio
import grp
import html
import pwd
import shlex
import socket
import time
from dataclasses import replace
from pathlib import Path

from jupyterhub.spawner import Spawner, SpawnException
from tornado import web
from traitlets import Float, Integer, List, Unicode, default

from . import porthandler
from .config import Profile, SiteConfig, SiteConfigError, load_site_config
from .form import options_from_form, render_spawn_form
from .options import OptionsError, resolve_request
from .poller import CachedQuery, Presence, StatusPoller
from .render import UserAccount, job_context, job_name, render_job_script, server_launch, template_name
from .runner import CommandError
from .runtime import ClusterRuntime
from .schedulers import JobState
from .schedulers import slurm as _slurm
from .tls import node_alt_names, tls_env, tls_files

porthandler.register_at_import()

# Environment variables from the hub that carry secrets or per-spawn settings: they go into the
# user-only file, never into the script or the scheduler's environment.
_SECRET_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_")


class SpawnFailed(SpawnException):
    """The job cannot become a server; the message (with the job's last output) is shown to the user."""

    def __init__(self, message: str):
        super().__init__(message, reason="hpc-job", status_code=500,
                         message_html=f"<pre style='white-space: pre-wrap'>{html.escape(message)}</pre>")


class HPCSpawner(Spawner):
    """Start single-user servers as batch jobs on an HPC cluster described by a site config."""

    site_config = Unicode(
        "",
        config=True,
        help="Path of the hpchub site config (YAML): clusters, queues, profiles. Required.",
    )
    profile = Unicode(
        "",
        config=True,
        help="""Use this profile (slug) and ignore the user's profile choice. Meant for
        wrapspawner.ProfilesSpawner entries that each stand for one hpchub profile.""",
    )
    startup_poll_interval = Float(
        1.0,
        config=True,
        help="""Seconds between job status checks while a server starts (shared: however many
        servers start, the cluster sees at most one status query per this interval).""",
    )
    job_output_tail_lines = Integer(
        20,
        config=True,
        help="Lines of the job's output shown to the user when a spawn fails.",
    )
    stop_wait_timeout = Float(
        60.0,
        config=True,
        help="Seconds stop() waits for the scheduler to report the job gone after cancelling it.",
    )
    queue_info_ttl = Float(
        60.0,
        config=True,
        help="""Seconds the live queue numbers shown in the spawn form are reused (one sinfo/qstat
        per cluster per this interval, however many users open the form).""",
    )
    server_command = List(
        Unicode(),
        default_value=["jupyterhub-singleuser"],
        config=True,
        help="The single-user server command run inside the job (after the site's environment block).",
    )

    # batchspawner compatibility: same name, same meaning.
    @default("start_timeout")
    def _start_timeout_default(self):
        return 300  # queue waits are normal on a cluster

    @default("http_timeout")
    def _http_timeout_default(self):
        return 120

    @default("poll_interval")
    def _poll_interval_default(self):
        return 30

    @default("ssl_alt_names")
    def _ssl_alt_names_default(self):
        return self._queue_alt_names  # internal_ssl: JupyterHub calls it before start()

    # -- state ------------------------------------------------------------------------------
    job_id = Unicode("")
    job_cluster = Unicode("")
    job_host = Unicode("")
    job_profile = Unicode("")
    job_log = Unicode("")
    secrets_file = Unicode("")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._port_event: asyncio.Event | None = None
        self._reported_port: int | None = None
        self._progress: asyncio.Queue = asyncio.Queue()
        self._site: SiteConfig | None = None
        self._ended_job: str | None = None
        porthandler.ensure_registered_in_running_hub()

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for key in ("job_id", "job_cluster", "job_host", "job_profile", "job_log", "secrets_file"):
            setattr(self, key, state.get(key, "") or "")

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:
            state.update(
                job_id=self.job_id, job_cluster=self.job_cluster, job_host=self.job_host,
                job_profile=self.job_profile, job_log=self.job_log, secrets_file=self.secrets_file,
            )
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = self.job_cluster = self.job_host = self.job_profile = self.job_log = self.secrets_file = ""

    # -- site config and profiles -----------------------------------------------------------
    @property
    def site(self) -> SiteConfig:
        if self._site is None:
            if not self.site_config:
                raise web.HTTPError(500, "HPCSpawner.site_config is not set")
            try:
                self._site = load_site_config(self.site_config)
            except SiteConfigError as error:
                self.log.error("hpchub site config is broken:\n%s", error.format())
                raise web.HTTPError(500, "the site config is broken; the admins have the details in the hub log") from None
        return self._site

    def _user_groups(self) -> set[str]:
        groups = {group.name for group in getattr(self.user, "groups", [])}
        try:
            account = pwd.getpwnam(self.user.name)
            groups.add(grp.getgrgid(account.pw_gid).gr_name)
            groups.update(g.gr_name for g in grp.getgrall() if self.user.name in g.gr_mem)
        except KeyError:
            pass
        return groups

    def visible_profiles(self) -> list[Profile]:
        """The profiles this user may use: no ``groups``, or the user or one of their groups listed."""
        if self.profile:
            return [self.site.profile(self.profile)]
        mine = self._user_groups() | {self.user.name}
        return [p for p in self.site.profiles if not p.groups or mine & set(p.groups)]

    def _profile_for(self, options: dict) -> Profile:
        visible = self.visible_profiles()
        if not visible:
            raise web.HTTPError(403, "no profile of this site is available to you")
        if self.profile:
            return visible[0]
        slug = options.get("profile") or visible[0].slug
        for profile in visible:
            if profile.slug == slug:
                return profile
        raise web.HTTPError(400, f"profile {slug!r} is not available to you")

    # -- form and user options --------------------------------------------------------------
    @default("options_form")
    def _options_form_default(self):
        return self._render_form

    async def _render_form(self, spawner=None) -> str:
        profiles = self.visible_profiles()
        live = {}
        for cluster_name in dict.fromkeys(p.cluster for p in profiles):
            runtime = self._runtime(cluster_name)
            if runtime.queues is None:
                runtime.queues = CachedQuery(runtime.client.queue_info, ttl=self.queue_info_ttl)
            for queue in await runtime.queues.get() or []:
                live[(cluster_name, queue.name)] = queue
        return render_spawn_form(self.site, profiles, self.site.templates_path(), live)

    @default("options_from_form")
    def _options_from_form_default(self):
        return options_from_form

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return self._validate_user_options

    def _validate_user_options(self, spawner, user_options: dict) -> None:
        # Refuse bad options before anything is submitted; start() checks again (wrapspawner
        # children never see this hook).
        self._request_from(user_options)

    def _request_from(self, options: dict):
        profile = self._profile_for(options or {})
        try:
            return resolve_request(self.site, profile, options or {})
        except OptionsError as error:
            raise web.HTTPError(400, f"Invalid options for profile {profile.slug!r}: {error}") from None

    # -- the job ----------------------------------------------------------------------------
    def _runtime(self, cluster_name: str) -> ClusterRuntime:
        return ClusterRuntime.get(self.site, cluster_name, self.poll_interval, self.startup_poll_interval)

    def accept_port(self, port: int) -> bool:
        """Called by the port endpoint; True if this server was waiting for its port."""
        if self._port_event is None or self._port_event.is_set():
            return False
        self._reported_port = port
        self._port_event.set()
        return True

    def _emit(self, progress: int, message: str) -> None:
        self.log.info("%s: %s", self._log_name, message)
        self._progress.put_nowait({"progress": progress, "message": message})

    def _job_env(self) -> dict[str, str]:
        env = self.get_env()
        return {key: value for key, value in env.items() if key.startswith(_SECRET_ENV_PREFIXES) or key in self.environment}

    async def start(self):
        request = self._request_from(self.user_options)
        profile = request.profile
        runtime = self._runtime(request.cluster_name)
        client = runtime.client
        user = UserAccount.lookup(self.user.name)
        server_suffix = f"-{self.name}" if self.name else ""
        name = job_name(user, profile.slug, suffix=server_suffix)
        launch = server_launch(user, name, server_command=self.server_command)
        # What ipyparallel's hpchub launchers in the notebook need to know (see hpchub.parallel).
        launch = replace(launch, env={"HPCHUB_SITE_CONFIG": str(Path(self.site_config).resolve()),
                                      "HPCHUB_ENGINE_PROFILE": profile.slug})
        secrets_file = launch.secrets_file
        context = job_context(self.site, request, user, launch, name=name)
        script = render_job_script(self.site, context, template_name(request))

        self._port_event = asyncio.Event()
        self._reported_port = None
        job_env = self._job_env()
        try:
            if self.cert_paths:  # internal_ssl: the server's key and certificate, user-only like the token
                tls_dir = _tls_dir(secrets_file)
                for file_name, text in tls_files(self.cert_paths).items():
                    await client.write_user_file(user.name, f"{tls_dir}/{file_name}", text)
                job_env.update(tls_env(tls_dir))
            env_text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(job_env.items()))
            await client.write_user_file(user.name, secrets_file, env_text)
            job_id = await client.submit(user.name, script, log_dir=context["job"]["log_dir"])
        except CommandError as error:
            raise SpawnFailed(f"The scheduler refused the job: {_first_line(error.stderr) or error}") from None
        self.job_id, self.job_cluster, self.job_profile = job_id, request.cluster_name, profile.slug
        self.job_log = str(context["job"]["output"]).replace("%j", job_id).replace("$JOB_ID", job_id)
        self.secrets_file = secrets_file
        runtime.poller.watch(job_id, user.name)
        self._emit(10, f"Submitted job {job_id} to {request.queue} on {request.cluster_name}")
        try:
            host = await self._wait_until_running(runtime)
            port = await self._wait_for_port(runtime)
        except BaseException:
            await self._cancel_quietly(runtime)
            raise
        address = await self._address_of(runtime, host)
        runtime.poller.on_end(self.job_id, self._ended_callback(self.job_id))
        self._emit(90, f"Server on {host}:{port} reported; connecting")
        return address, port

    async def _wait_until_running(self, runtime: ClusterRuntime) -> str:
        last_message = None
        while True:
            view = await runtime.poller.get(self.job_id, max_age=self.startup_poll_interval)
            if view.presence is Presence.GONE:
                raise SpawnFailed(await self._failure_text(runtime, "the job ended before the server started"))
            if view.presence is Presence.KNOWN:
                status = view.status
                if status.state is JobState.RUNNING and status.host:
                    self.job_host = status.host
                    self._emit(50, f"Job {self.job_id} running on {status.host}; starting the server")
                    return status.host
                if status.state is JobState.HELD:
                    raise SpawnFailed(f"Job {self.job_id} is held by the scheduler ({status.reason or 'held'}); it was cancelled.")
                if status.state is JobState.ERROR:
                    why = await self._explain(runtime) or status.scheduler_state
                    raise SpawnFailed(await self._failure_text(runtime, f"the job is in an error state ({why})"))
                if not status.state.is_active:
                    raise SpawnFailed(await self._failure_text(runtime, f"the job ended ({status.scheduler_state}{', ' + status.reason if status.reason else ''})"))
                message = self._pending_message(runtime, status)
            else:
                message = f"Job {self.job_id} submitted; the scheduler is not answering ({view.error or 'no answer yet'})"
            if message != last_message:
                self._emit(20, message)
                last_message = message
            await asyncio.sleep(self.startup_poll_interval)

    def _pending_message(self, runtime: ClusterRuntime, status) -> str:
        text = f"Job {self.job_id} is waiting in queue {status.queue}"
        if status.reason:
            text += f" ({_reason_text(runtime.client.backend, status.reason)})"
        position = _queue_position(runtime.poller, status)
        if position:
            text += f", position {position}"
        if status.estimated_start:
            text += f", estimated start {status.estimated_start:%Y-%m-%d %H:%M}"
        return text

    async def _wait_for_port(self, runtime: ClusterRuntime) -> int:
        while True:
            try:
                await asyncio.wait_for(self._port_event.wait(), timeout=self.startup_poll_interval)
                return self._reported_port
            except asyncio.TimeoutError:
                pass
            # Keep watching the job: a server that dies at start ends the spawn now.
            view = await runtime.poller.get(self.job_id, max_age=self.startup_poll_interval)
            if view.presence is Presence.GONE or (view.presence is Presence.KNOWN and not view.status.state.is_active):
                raise SpawnFailed(await self._failure_text(runtime, "the job ended before the server reported its port"))
            if view.presence is Presence.KNOWN and view.status.state is JobState.ERROR:
                raise SpawnFailed(await self._failure_text(runtime, "the job is in an error state"))

    async def _queue_alt_names(self, spawner=None) -> list[str]:
        """internal_ssl: the server's certificate is made before the job has a node, so it names
        every node of the queue by the address the hub will connect to (as _address_of finds it:
        Slurm's NodeAddr, else DNS of the node name)."""
        request = self._request_from(self.user_options)
        runtime = self._runtime(request.cluster_name)
        if runtime.client.backend is _slurm:
            argv = ["sinfo", "--noheader", "--Node", "--partition", request.queue, "--format", "%N %o"]
        else:
            argv = ["qselect", "-q", request.queue]  # one queue@host line per node
        try:
            lines = (await runtime.client.run(argv)).stdout.split("\n")
        except CommandError as error:
            self.log.warning("no node list for queue %s: %s", request.queue, error)
            lines = []
        addresses = []
        for fields in (line.split() for line in lines if line.strip()):
            host = fields[0].rpartition("@")[2]
            address = fields[1] if len(fields) > 1 else host
            if address == host:
                try:
                    address = socket.gethostbyname(host)
                except OSError:
                    pass
            addresses.append(address)
        return list(self.trusted_alt_names) + node_alt_names(addresses)

    async def _address_of(self, runtime: ClusterRuntime, host: str) -> str:
        """The address the hub connects to: from the scheduler's node name (never from the job)."""
        if host not in runtime.node_addresses:
            address = host
            lookup = getattr(runtime.client.backend, "node_address_argv", None)
            if lookup is not None:
                try:
                    result = await runtime.client.run(lookup(host))
                    address = runtime.client.backend.parse_node_address(result.stdout) or host
                except Exception as error:
                    self.log.warning("no address for node %s from the scheduler: %s", host, error)
            if address == host:
                try:
                    address = socket.gethostbyname(host)
                except OSError:
                    pass
            runtime.node_addresses[host] = address
        return runtime.node_addresses[host]

    async def _explain(self, runtime: ClusterRuntime) -> str | None:
        """The scheduler's own words for a job in error, where the backend can ask (SGE: qstat -j)."""
        explain = getattr(runtime.client.backend, "explain_argv", None)
        if explain is None:
            return None
        try:
            result = await runtime.client.run(explain(self.job_id))
        except CommandError:
            return None
        return runtime.client.backend.parse_explain(result.stdout)

    async def _failure_text(self, runtime: ClusterRuntime, what: str) -> str:
        text = f"Job {self.job_id}: {what}."
        if self.job_log:
            try:
                tail = await runtime.client.read_tail(self.user.name, self.job_log, self.job_output_tail_lines)
                if tail.strip():
                    text += f"\nLast lines of {self.job_log}:\n{tail.rstrip()}"
            except CommandError:
                text += f" (no output in {self.job_log})"
        return text

    async def _cancel_engine_jobs(self, runtime: ClusterRuntime, server_job: str) -> None:
        """Engine jobs never outlive their notebook: cancel the user's jobs started from it
        (hpchub.parallel names them ...-engines-p<server job id>), from the shared status."""
        await runtime.poller.refresh(max_age=self.startup_poll_interval)
        suffix = f"-engines-p{server_job}"
        orphans = [job.job_id for job in runtime.poller.snapshot().values()
                   if job.user == self.user.name and job.name.startswith(f"hpchub-{self.user.name}-")
                   and job.name.endswith(suffix) and job.state.is_active]
        if orphans:
            self.log.info("cancelling engine jobs %s of %s's server job %s", orphans, self.user.name, server_job)
            try:
                await runtime.client.cancel(self.user.name, orphans)
            except CommandError as error:
                self.log.warning("cancelling engine jobs %s: %s", orphans, error)

    def _ended_callback(self, job_id: str):
        async def job_ended():
            # Only for the job this spawner still runs: not one it has since stopped or replaced.
            if self.job_id == job_id and not self._spawn_pending and not self._stop_pending:
                await self.poll_and_notify()

        return job_ended

    async def _cancel_quietly(self, runtime: ClusterRuntime) -> None:
        if not self.job_id:
            return
        try:
            await runtime.client.cancel(self.user.name, [self.job_id])
        except CommandError as error:
            self.log.warning("cancelling job %s: %s", self.job_id, error)

    async def poll(self):
        if not self.job_id:
            return 0
        if self.job_id == self._ended_job:
            return 1
        runtime = self._runtime(self.job_cluster)
        if self.job_id not in runtime.poller.watched:  # e.g. reattaching after a hub restart
            runtime.poller.watch(self.job_id, self.user.name)
            runtime.poller.on_end(self.job_id, self._ended_callback(self.job_id))
        # The shared poller refreshes every interval; JupyterHub's own per-server poll reads
        # that cache (with slack for jitter) instead of adding one query per server.
        view = await runtime.poller.get(self.job_id, max_age=1.5 * self.poll_interval)
        if view.presence is Presence.UNKNOWN:
            return None  # a scheduler hiccup never stops a server
        if view.presence is Presence.GONE or not view.status.state.is_active:
            self._job_ended(runtime)
            return 1
        return None

    def _job_ended(self, runtime: ClusterRuntime) -> None:
        """The job is over without stop() (JupyterHub does not call stop() for an ended server):
        remember it, stop watching it, and cancel the engine jobs it left behind."""
        job_id = self.job_id
        self._ended_job = job_id
        runtime.poller.unwatch(job_id)
        asyncio.get_running_loop().create_task(self._cancel_engine_jobs(runtime, job_id))

    async def stop(self, now: bool = False):
        if not self.job_id:
            return
        runtime = self._runtime(self.job_cluster)
        runtime.poller.on_end(self.job_id, None)  # a stop we asked for is no news
        await self._cancel_quietly(runtime)
        await self._cancel_engine_jobs(runtime, self.job_id)
        deadline = time.monotonic() + self.stop_wait_timeout
        while not now and time.monotonic() < deadline:
            view = await runtime.poller.get(self.job_id, max_age=self.startup_poll_interval)
            if view.presence is Presence.GONE or (view.presence is Presence.KNOWN and not view.status.state.is_active):
                break
            await asyncio.sleep(self.startup_poll_interval)
        else:
            if not now:
                self.log.warning("job %s still listed %.0f s after cancelling it", self.job_id, self.stop_wait_timeout)
        runtime.poller.unwatch(self.job_id)
        if self.secrets_file:
            try:
                await runtime.client.run(["rm", "-f", self.secrets_file], user=self.user.name)
                await runtime.client.run(["rm", "-rf", _tls_dir(self.secrets_file)], user=self.user.name)  # internal_ssl
            except CommandError as error:
                self.log.warning("removing %s: %s", self.secrets_file, error)

    async def progress(self):
        while True:
            event = await self._progress.get()
            yield event


def _tls_dir(secrets_file: str) -> str:
    """internal_ssl files of the job whose secrets are ``~/.hpchub/NAME.env``: ``~/.hpchub/jobs/NAME``."""
    path = Path(secrets_file)
    return str(path.parent / "jobs" / path.stem)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def _reason_text(backend, reason: str) -> str:
    table = getattr(backend, "REASON_TEXT", {})
    return table.get(reason, reason)


def _queue_position(poller: StatusPoller, status) -> int | None:
    """1 + pending jobs in the same queue with a higher priority, among those the poller sees."""
    if status.priority is None:
        return None
    snapshot = poller.snapshot()
    ahead = sum(
        1
        for other in snapshot.values()
        if other.state is JobState.PENDING and other.queue == status.queue and other.job_id != status.job_id
        and other.priority is not None and other.priority > status.priority
    )
    return ahead + 1
