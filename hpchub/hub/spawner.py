"""HPCSpawner: single-user servers as Slurm or Grid Engine batch jobs, from a site config.

This module is the JupyterHub glue: JupyterHub's hooks, delegating the rest. The job is built and
submitted by hpchub.core.spawn (jobs, render, lifecycle), the start is waited for by
hpchub.hub.waiting (its texts from hpchub.hub.progress), the form is hpchub.hub.form and the choices
of the form and of links are checked by hpchub.hub.choices, the home page's info comes from
hpchub.hub.pages; the job is watched and cancelled by hpchub.core.lifecycle through the cluster's
shared poller. What it does differently from batchspawner (see README): user choices never override
admin values and are validated per profile; a failed status query means "unknown", never "gone"; a
job that dies, is held or errs while starting fails the spawn at once with the scheduler's reason
and the log's tail; the job reports only its port, with its own token; secrets reach the job in a
user-only file written as the user; the state carries everything needed to find and cancel the job
without the site config.

Over 500 lines because its traitlets (each with its help text) and the server's saved state
(poll, stop, reattaching after a hub restart, forwards restored) belong to the one object
JupyterHub drives.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jupyterhub.spawner import Spawner
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Dict, Float, Integer, List, Unicode, Union, default, validate
from traitlets import Callable as CallableTrait

from ..core import accounts, jobs, lifecycle, metrics, spawn
from ..core.accounts import AccountMapError, check_template, unix_account_name
from ..core.config import (
    Profile,
    SiteConfig,
    SiteConfigError,
    SiteConfigFile,
)
from ..core.options import JobRequest, OptionsError, needs_allocations
from ..core.poller import JobView, JobWatchedElsewhere, Presence
from ..core.render import RenderError
from ..core.runtime import AllocationsAnswer, ClusterRuntime
from ..job import walltime as job_walltime
from ..schedulers import Allocations, JobStatus, QueueInfo
from ..transports import tls
from ..transports.cluster import AccountRefused, ClusterSpec
from ..transports.runner import CommandError
from . import choices, engines, estimate, pages, porthandler, progress, routes, sharing, walltime
from .form import Preselection, render_spawn_form
from .waiting import ProgressLog, SpawnFailed, StartupPolling, StartWait

routes.register_at_import()  # the port report, engines, class page, Share page, start estimates
sharing.install_group_share_fix()

# Environment variables from the hub that carry secrets or per-spawn settings: they go into the
# user-only file, never into the script or the scheduler's environment.
_SECRET_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_")


_site_files: dict[str, SiteConfigFile] = {}

def log_where_the_hub_logs(hub_log: logging.Logger | logging.LoggerAdapter) -> None:
    """hpchub's module loggers (the status poller, lifecycle, SSH pool...) write to the hub's own
    log handlers, in its format and at its level: without a handler Python prints only their
    warnings, bare, and drops the rest ("status query answers again")."""
    ours = logging.getLogger("hpchub")
    handlers = hub_log.logger.handlers if isinstance(hub_log, logging.LoggerAdapter) else hub_log.handlers
    if ours.handlers or not handlers:
        return
    for handler in handlers:
        ours.addHandler(handler)
    ours.setLevel(hub_log.getEffectiveLevel())
    ours.propagate = False  # the hub's handlers have it; a root handler would print it twice


class HPCSpawner(Spawner):
    """Start single-user servers as batch jobs on an HPC cluster described by a site config."""

    site_config = Unicode(
        "",
        config=True,
        help="""Path of the hpchub site config (YAML): clusters, queues, profiles. Required. Edits
        are picked up for new spawns without a restart; an invalid edit is logged and the last good
        config stays in use.""",
    )
    profile = Unicode(
        "",
        config=True,
        help="""Use this profile (slug) and ignore the user's profile choice. Meant for
        wrapspawner.ProfilesSpawner entries that each stand for one hpchub profile. The profile's
        `hub_users`/`hub_groups`/`unix_users`/`unix_groups` still decide who may start it.""",
    )
    startup_poll_interval = Float(
        1.0,
        config=True,
        help="""Seconds between job status checks while a server starts (shared: however many
        servers start, the cluster sees at most one status query per this interval). A spawn that
        keeps waiting checks less often, see `startup_poll_backoff`.""",
    )
    startup_poll_backoff = Float(
        0.1,
        config=True,
        help="""A waiting spawn checks its job every max(startup_poll_interval, this share of the time
        it has waited so far) seconds, at most every `poll_interval`: after a minute in the queue
        every 6 s, after five minutes as often as a running server. So spawns that wait long in a
        full queue cost the scheduler no more than running servers. The server's port report ends
        the wait at once whatever the interval; only noticing a job that ended early can take
        longer (at most this share of the wait). 0: always every startup_poll_interval.""",
    )
    job_output_tail_lines = Integer(
        20,
        config=True,
        help="Lines of the job's output shown to the user when a spawn fails.",
    )
    job_log_keep_days = Integer(
        14,
        config=True,
        help="""Days a user's job output (~/.hpchub/logs) is kept; older logs and job files are
        removed, as the user, at that user's next spawn.""",
    )
    stop_wait_timeout = Float(
        60.0,
        config=True,
        help="Seconds stop() waits for the scheduler to report the job gone after cancelling it.",
    )
    queue_info_ttl = Float(
        60.0,
        config=True,
        help="""Seconds the live queue numbers (spawn form, queue position while waiting) are
        reused: one sinfo/qstat per cluster per this interval, however many users look.""",
    )
    start_estimate_ttl = Float(
        30.0,
        config=True,
        help="""Seconds the scheduler's start estimate for one choice (user, profile and values) on the
        spawn form is reused ("starts now", "expected to start at 14:20": ``sbatch --test-only`` or
        ``qsub -w p``, run as the user). 0 asks again every time.""",
    )
    start_estimate_rate = Integer(
        20,
        config=True,
        help="""At most this many start estimates per user and minute go to the scheduler (answers
        reused from the cache do not count); beyond it the form says "no estimate". 0 turns the
        estimates off.""",
    )
    start_estimate_timeout = Float(
        10.0,
        config=True,
        help="""Seconds the form waits for one start estimate before it says "no estimate" (the
        answer is still kept for the next time the choice is asked).""",
    )
    server_command = List(
        Unicode(),
        default_value=list(jobs.SERVER_COMMAND),
        config=True,
        help="The single-user server command run inside the job (after the site's environment block).",
    )
    walltime_warning = Integer(
        job_walltime.DEFAULT_WARNING,
        config=True,
        help="""Seconds before a server's walltime ends at which JupyterLab shows the user a warning
        and saves every open document (the job's end is computed in the job: its start plus its
        walltime). The time left is shown all along, in JupyterLab and on the hub's home page.
        0: no warning and no automatic save.""",
    )
    sharing = Bool(
        False,
        config=True,
        help="""Let users share their running servers from the hub's home page ("Share": with a hub user or
        group, or a link with a share code that expires; list and revoke), through JupyterHub's own sharing
        and its scopes. Users also need the 'shares' scope, which JupyterHub's default 'user' role lacks:
        `c.JupyterHub.load_roles += hpchub.hub.sharing.sharing_roles()` (docs/sharing.md). Whoever
        joins a server runs code in it as its owner, with the owner's files and allocation.""",
    )
    unix_account = Union(
        [Unicode(), CallableTrait()],
        default_value="{username}",
        config=True,
        help="""The unix account a hub user's servers run as, for sites whose login names are not unix
        names (e.g. OAuth e-mail addresses). A template with the field {username} (the hub name without
        its e-mail domain, see `unix_account_domains`), or a callable that takes that name and returns the
        account name (or an awaitable of it; it runs on the hub's event loop, so it must not block).
        `unix_account_map` comes first. The account is what the cluster sees: the submission (sudo or
        ssh as it), the job's files in its home, the job's name, the profiles' `unix_groups` (its groups)
        and `unix_users` (its name), the scheduler queries about its jobs. A name that is no
        valid unix name, root, or an account that does not exist where jobs are submitted fails the spawn
        before anything is submitted. The hub's own name stays in the hub (URLs, the admin page).""",
    )
    unix_account_map = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Exceptions to `unix_account`: hub user name -> unix account, looked up first with the exact
        hub name, e.g. {"jdoe@uni.example": "john"} for a user whose address does not match their account.""",
    )
    unix_account_domains = List(
        Unicode(),
        config=True,
        help="""E-mail domains removed from hub user names before `unix_account` applies: with ["uni.example"],
        hub user dora@uni.example runs as unix account dora. A hub name with '@' in any other domain (or any
        '@' while this is empty) has no account and is refused, so that dora@elsewhere.example never gets
        the site's dora. Names without '@' are used as they are.""",
    )

    @validate("unix_account")
    def _check_unix_account(self, proposal):
        value = proposal["value"]
        return value if callable(value) else check_template(value)

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

    # -- state: enough to find, poll and cancel the job without the site config -----------------
    job_id = Unicode("")
    job_name = Unicode("")
    job_key = Unicode("")
    job_user = Unicode("")
    job_log = Unicode("")
    job_host = Unicode("")
    job_profile = Unicode("")
    job_cluster = Dict()  # ClusterSpec.to_state()
    job_tunnel = Unicode("")  # to_servers: tunnel: "ADDRESS:PORT:LOCALPORT", re-created after a hub restart
    job_hub_port = Unicode("")  # to_hub: reverse: the login node's port jobs reach the hub at
    job_ends = Integer(0)  # epoch seconds the walltime ends, as the job reported it (0: not known)
    # sha256 of the running server's API token: its kernels ask for engines with it (hpchub.hub.engines),
    # also after a hub restart (JupyterHub keeps no server's token in memory then).
    job_token = Unicode("")
    # Why the last job ended ("walltime reached", "the job ended (STATE)", "stopped"); kept by
    # clear_state, so the home page can say it after JupyterHub forgot the server.
    end_reason = Unicode("")

    PROGRESS_EVENTS_KEPT = 100

    _STATE_KEYS = ("job_id", "job_name", "job_key", "job_user", "job_log", "job_host", "job_profile", "job_tunnel",
                   "job_hub_port", "job_token")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._port: asyncio.Future[porthandler.PortReport] | None = None
        self._progress = ProgressLog(self.log, self._log_name, self.PROGRESS_EVENTS_KEPT)  # this spawn's events
        self._ended_job: str | None = None
        self._disowned_job: str | None = None  # a saved job id that now names another job (see _adopt_saved_job)
        self._state_warning_logged = False
        routes.ensure_registered_in_running_hub()
        log_where_the_hub_logs(self.log)
        choices.quiet_link_forms(self.log)
        # hpchub's metrics: this spawn's (cluster, profile) labels and its server's state, read at scrape time.
        self._metric_labels = ("", "")
        self._server_state: metrics.ServerState | None = None
        metrics.SERVERS.track(self)

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for key in self._STATE_KEYS:
            setattr(self, key, str(state.get(key) or ""))
        cluster = state.get("job_cluster")
        self.job_cluster = cluster if isinstance(cluster, dict) else {}
        if isinstance(cluster, str) and cluster:  # hpchub 0.1 kept only the cluster's name
            self.job_cluster = {"name": cluster}
        if self.job_id and not self.job_user:
            # State written before job_user existed (hpchub 0.1, batchspawner): those submitted as the hub name.
            self.job_user = self.user.name
        # An end no job can have (a state from before ends were bounded) is dropped: it would fail every page.
        self.job_ends = walltime.saved_end(state.get("job_ends")) or 0
        self.end_reason = str(state.get("end_reason") or "")
        if self.job_id and self.job_token:  # a server from before a hub restart: its kernels may ask for engines
            engines.serve(self.job_token, self)

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:
            state.update({key: getattr(self, key) for key in self._STATE_KEYS}, job_cluster=dict(self.job_cluster))
            if self.job_ends:
                state["job_ends"] = self.job_ends
        if self.end_reason:
            state["end_reason"] = self.end_reason
        return state

    def clear_state(self) -> None:
        super().clear_state()
        if self.job_token:
            engines.forget(self.job_token)
        for key in self._STATE_KEYS:
            setattr(self, key, "")
        self.job_cluster = {}
        self.job_ends = 0  # end_reason stays: JupyterHub clears the state of a server that just ended
        self._server_state = None

    # -- site config and profiles -----------------------------------------------------------
    @property
    def site(self) -> SiteConfig:
        if not self.site_config:
            raise web.HTTPError(500, "HPCSpawner.site_config is not set")
        source = _site_files.get(self.site_config)
        if source is None:
            source = _site_files[self.site_config] = SiteConfigFile(self.site_config)
        try:
            return source.current()
        except SiteConfigError as error:
            self.log.error("hpchub site config is broken:\n%s", error.format())
            raise web.HTTPError(500, "the site config is broken; the admins have the details in the hub log") from None

    async def unix_user_name(self) -> str:
        """The unix account this hub user's servers run as (``unix_account``); 403 if there is none."""
        try:
            return await unix_account_name(self.user.name, self.unix_account_map, self.unix_account_domains,
                                           self.unix_account)
        except AccountMapError as error:
            raise web.HTTPError(403, str(error)) from None

    async def visible_profiles(self) -> list[Profile]:
        """The profiles this user may use (a fixed ``profile`` too): those that name nobody, or name
        this hub user in ``hub_users``, one of its JupyterHub groups in ``hub_groups``, its unix
        account in ``unix_users`` or one of that account's unix groups in ``unix_groups``."""
        unix_name = await self.unix_user_name()
        hub_groups = frozenset(group.name for group in getattr(self.user, "groups", []))
        who = await asyncio.get_running_loop().run_in_executor(None, accounts.identity, self.user.name,
                                                               hub_groups, unix_name)
        try:
            return accounts.visible_profiles(self.site, who, self.profile or None)
        except KeyError:
            raise web.HTTPError(500, f"profile {self.profile!r} is not in the site config") from None

    async def _profile_for(self, options: dict) -> Profile:
        visible = await self.visible_profiles()
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
        profiles = await self.visible_profiles()
        site = self.site
        live: dict[tuple[str, str], QueueInfo] = {}
        ages: dict[str, float] = {}
        for cluster_name in dict.fromkeys(p.cluster for p in profiles):
            queues, age = await self._queue_numbers_and_age(self._runtime(ClusterSpec.from_site(site, cluster_name)))
            for queue in queues:
                live[(cluster_name, queue.name)] = queue
            if age is not None:
                ages[cluster_name] = age
        allocations, allocation_ages = {}, {}
        for cluster_name in dict.fromkeys(p.cluster for p in profiles if needs_allocations(site, p)):
            answer = await self._allocations_on(cluster_name)
            allocations[cluster_name], allocation_ages[cluster_name] = answer.allocations, answer.age
        preselection = self._preselection()
        hub_url = getattr(getattr(self, "hub", None), "base_url", "")
        estimate_url, estimates = "", {}
        if hub_url and self.start_estimate_rate > 0 and profiles:
            estimate_url = url_path_join(hub_url, "hpchub/estimate")
            slugs = [p.slug for p in profiles]
            chosen = preselection.profile if preselection.profile in slugs else slugs[0]
            values = preselection.values if chosen == preselection.profile else {}
            estimates[chosen] = (await estimate.first_load_estimate(self, chosen, values)).text
        return render_spawn_form(site, profiles, site.templates_path(), live, ages, preselection,
                                 allocations, allocation_ages, estimate_url, estimates)

    async def _allocations_on(self, cluster_name: str) -> AllocationsAnswer:
        """This user's accounts, QoS and reservations on the cluster (cached for ``queue_info_ttl``)."""
        unix_name = await self.unix_user_name()
        groups = await asyncio.get_running_loop().run_in_executor(None, accounts.unix_groups, unix_name)
        runtime = self._runtime(ClusterSpec.from_site(self.site, cluster_name))
        return await runtime.allocations(unix_name, sorted(groups), self.queue_info_ttl)

    async def _resolve(self, profile: Profile, options: dict) -> JobRequest:
        """The job request ``options`` make with ``profile`` (hpchub.core.spawn.resolve), with this
        user's allocations on the profile's cluster if it needs them."""
        async def allocations() -> Allocations | None:
            return (await self._allocations_on(profile.cluster)).allocations

        return await spawn.resolve(self.site, profile, options, allocations)

    def _preselection(self) -> Preselection:
        """The choice just refused (with its messages) or a link's, else this server's last choice."""
        orm_spawner = getattr(self, "orm_spawner", None)
        return choices.preselection(self.user.name, getattr(orm_spawner, "user_options", None) or self.user_options)

    @default("options_from_form")
    def _options_from_form_default(self):
        return self._options_from_submitted_form

    async def _options_from_submitted_form(self, formdata: dict[str, list[str]], spawner=None) -> dict[str, str]:
        """The form's choice as canonical user_options, checked now (hpchub.hub.choices.form_choice)."""
        return await choices.form_choice(self.user.name, formdata, self._profile_for, self._resolve)

    async def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, str]:
        """A link's ``opt-`` arguments never start a server by themselves: they are shown on the form,
        prefilled (hpchub.hub.choices.link_choice); the form's Start button starts it."""
        await choices.link_choice(self.user.name, query_data, self._profile_for, self._resolve)

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return self._validate_user_options

    async def _validate_user_options(self, spawner, user_options: dict) -> None:
        # Refuse bad options before anything is submitted; start() checks again (wrapspawner
        # children never see this hook).
        await self._request_from(user_options)

    async def _request_from(self, options: dict) -> JobRequest:
        profile = await self._profile_for(options or {})
        try:
            return await self._resolve(profile, options or {})
        except OptionsError as error:
            raise web.HTTPError(400, f"Invalid options for profile {profile.slug!r}: {error}") from None

    # -- the job ----------------------------------------------------------------------------
    async def _queue_alt_names(self, spawner=None) -> list[str]:
        """internal_ssl: the server's certificate is made before the job has a node, so it names
        every node of the queue by the address the hub will connect to."""
        request = await self._request_from(self.user_options)
        runtime = self._runtime(ClusterSpec.from_site(self.site, request.cluster_name))
        try:
            addresses = await runtime.queue_addresses(request.queue)
        except CommandError as error:
            self.log.warning("no node list for queue %s (the server's certificate names none): %s", request.queue, error)
            addresses = []
        return list(self.trusted_alt_names) + tls.node_alt_names(addresses)

    def _runtime(self, spec: ClusterSpec) -> ClusterRuntime:
        return ClusterRuntime.get(spec, self.poll_interval, self.startup_poll_interval)

    def runtime_for(self, spec: ClusterSpec) -> ClusterRuntime:
        """The cluster's shared client and poller in this hub (the engines endpoint submits through it)."""
        return self._runtime(spec)

    async def allocations_on(self, cluster_name: str) -> AllocationsAnswer:
        """This user's accounts, QoS and reservations on the cluster (cached for ``queue_info_ttl``)."""
        return await self._allocations_on(cluster_name)

    def running_job(self) -> str:
        """The job id of this server's running job; "" while none runs (starting, stopping, ended)."""
        if not self.job_id or self.job_id in (self._ended_job, self._disowned_job) or self._stop_pending:
            return ""
        return self.job_id

    async def _queue_numbers_and_age(self, runtime: ClusterRuntime) -> tuple[list[QueueInfo], float | None]:
        """The cluster's live queue numbers (cached queue_info_ttl; none while the scheduler does not
        answer) and their age in seconds."""
        cache = runtime.queue_numbers(self.queue_info_ttl)
        queues = await cache.get()
        return (list(queues) if isinstance(queues, list) else []), cache.age()

    def _job_env(self) -> dict[str, str]:
        env = self.get_env()
        return {key: value for key, value in env.items() if key.startswith(_SECRET_ENV_PREFIXES) or key in self.environment}

    async def start(self):
        """Submit the server's job and wait for its server (see _start_job); a failure is counted by
        its reason in hpchub's metrics."""
        began = time.monotonic()
        self._metric_labels = ("", "")
        try:
            return await self._start_job()
        except BaseException as error:
            self._server_state = None
            reason = _spawn_failure(error, time.monotonic() - began, self.start_timeout)
            metrics.spawn_failed(*self._metric_labels, reason)
            raise

    async def _start_job(self) -> tuple[str, int]:
        self._progress.clear()
        request = await self._request_from(self.user_options)
        self._metric_labels = (request.cluster_name, request.profile.slug)
        metrics.spawn_started(*self._metric_labels)
        site = self.site  # one reading of the config for the whole spawn (an edit may land meanwhile)
        spec = ClusterSpec.from_site(site, request.cluster_name)
        runtime = self._runtime(spec)
        self.job_hub_port = ""
        prepared = await self._server_job(site, runtime, request)
        job = prepared.job
        self.job_hub_port = prepared.hub_port
        self._port = porthandler.expect_port(self.api_token)
        submitting = time.monotonic()
        try:
            job_id = await spawn.submit(runtime, prepared, self.job_log_keep_days, self._watcher)
        except BaseException as error:
            porthandler.forget(self.api_token)
            if isinstance(error, spawn.JobRefused):
                raise SpawnFailed(str(error), error.failure) from None
            raise
        self.job_id, self.job_name, self.job_key, self.job_user = job_id, job.name, job.key, job.user.name
        self.job_log, self.job_profile, self.job_cluster = job.log_path(job_id), request.profile.slug, spec.to_state()
        self._ended_job = self._disowned_job = None
        self.job_ends, self.end_reason = 0, ""
        submitted, self._server_state = time.monotonic(), metrics.ServerState.WAITING
        self.log.info("%s: the submission took %.2f s", self._log_name, submitted - submitting)
        self._progress.emit(10, progress.submitted(job_id, request.queue, request.cluster_name),
                   progress.details(job_id, request.cluster_name, request.queue))
        wait = StartWait(runtime, job_id, self.job_user, self.job_log, self._port, self._progress,
                         StartupPolling(self.startup_poll_interval, self.startup_poll_backoff, float(self.poll_interval)),
                         self.queue_info_ttl, self.job_output_tail_lines)
        try:
            host = self.job_host = await wait.until_running(request.queue)
            self._server_state = metrics.ServerState.STARTING
            metrics.queue_waited(*self._metric_labels,
                                 _queue_wait(runtime.poller.view(job_id).status, time.monotonic() - submitted))
            report = await wait.for_port()
            port, self.job_ends = report.port, report.ends or 0
            address, connect_port = await runtime.node_address(host), port
            if spec.to_servers == "tunnel":  # the hub cannot route to the node: through the login node
                local_port = await runtime.tunnel(job_id, self.job_user, address, port)
                self.job_tunnel = f"{address}:{port}:{local_port}"
                address, connect_port = "127.0.0.1", local_port
        except BaseException:
            await self._abandon(runtime)
            raise
        finally:
            porthandler.forget(self.api_token)
        runtime.poller.on_end(job_id, self._ended_callback(job_id), self.job_user, self._watcher)
        self.job_token = engines.token_digest(self.api_token)
        engines.serve(self.job_token, self)  # from now on its kernels may ask for engines
        self._progress.emit(90, progress.server_reported(host, port),
                            dict(self._progress.details, state=progress.SERVER_STARTING))
        self._server_state = metrics.ServerState.RUNNING
        metrics.spawn_succeeded(*self._metric_labels, time.monotonic() - submitted)
        return address, connect_port

    async def _server_job(self, site: SiteConfig, runtime: ClusterRuntime, request: JobRequest) -> spawn.ServerJob:
        """The job ``request`` makes for this server, as the unix account the hub user runs as, and its files."""
        unix_name = await self.unix_user_name()
        # The hub's API URL only matters to a cluster whose jobs call the hub elsewhere (to_hub).
        hub = spawn.HubSide(env=self._job_env(), api_url=getattr(self.hub, "api_url", ""),
                            internal_ssl=bool(self.internal_ssl), cert_paths=self.cert_paths or None,
                            walltime_warning=self.walltime_warning)
        try:
            return await spawn.prepare_server_job(site, runtime, request, self.user.name, unix_name, self.name,
                                                  self.server_command, hub)
        except spawn.JobRefused as error:
            raise SpawnFailed(str(error), error.failure) from None
        except RenderError as error:
            raise web.HTTPError(400, str(error)) from None

    async def _restore_forwards(self, runtime: ClusterRuntime) -> None:
        """After a hub restart: the tunnel of a running server on the local port the proxy's route
        already names, and the reverse forward on the port its job calls the hub at. A login node
        that does not answer now is tried again at the next poll."""
        try:
            if self.job_tunnel and not runtime.has_tunnel(self.job_id, self.job_user):
                address, port, local_port = self.job_tunnel.rsplit(":", 2)
                await runtime.tunnel(self.job_id, self.job_user, address, int(port), local_port=int(local_port))
            if self.job_hub_port:  # its job calls the hub at this port: hold it (or keep asking for it)
                await runtime.keep_hub_forward(self.hub.api_url, int(self.job_hub_port))
        except (CommandError, OSError) as error:
            self.log.warning("%s: forwards through the login node not restored yet: %s", self._log_name, error)

    async def _abandon(self, runtime: ClusterRuntime) -> None:
        """A spawn that failed or was given up: cancel its job and remove its files."""
        if self.job_id:
            runtime.poller.on_end(self.job_id, None, self.job_user, self._watcher)
            other_owner = runtime.poller.view(self.job_id).other_owner
            if other_owner:  # the id now names another user's job: never cancelled by this server
                self.log.warning("%s: job %s is listed as %s's: not cancelling it", self._log_name, self.job_id, other_owner)
            else:
                await lifecycle.cancel(runtime, self.job_user, [self.job_id])
            runtime.poller.unwatch(self.job_id, self.job_user, self._watcher)
            runtime.close_tunnel(self.job_id, self.job_user)
        if self.job_key:
            await lifecycle.remove_files(runtime, self.job_user, self.job_key)

    async def _cancel_engine_jobs(self, runtime: ClusterRuntime, user: str, server_job: str) -> None:
        """Engine jobs never outlive their notebook: cancel the user's jobs that hpchub.parallel
        started from this server job (named ...ENGINE_MARK<server job id>)."""
        try:
            names = await runtime.client.job_names(user)
        except (CommandError, AccountRefused) as error:
            self.log.warning("listing %s's jobs to find engine jobs of %s: %s", user, server_job, error)
            return
        snapshot = runtime.poller.snapshot()
        orphans = [job_id for job_id, name in names.items() if jobs.is_engine_job_of(name, user, server_job)
                   and (job_id not in snapshot or snapshot[job_id].state.is_active)]
        if orphans:
            self.log.info("cancelling engine jobs %s of %s's server job %s", orphans, user, server_job)
            await lifecycle.cancel(runtime, user, orphans)

    def _ended_callback(self, job_id: str):
        async def job_ended():
            # Only for the job this spawner still runs: not one it has since stopped or replaced.
            if self.job_id == job_id and not self._spawn_pending and not self._stop_pending:
                await self.poll_and_notify()

        return job_ended

    def _saved_runtime(self) -> ClusterRuntime | None:
        """The runtime of the cluster the job was submitted to, from the saved state alone (the site
        config may have changed or broken since). None if the state does not say enough."""
        saved = dict(self.job_cluster)
        if "scheduler" not in saved:
            # hpchub 0.1 state names only the cluster: take the rest from the site config if it can.
            try:
                saved = ClusterSpec.from_site(self.site, saved.get("name", "")).to_state()
            except Exception:
                saved = {}
        if "scheduler" not in saved:
            if not self._state_warning_logged:
                self.log.warning(
                    "%s: saved state for job %s does not say which cluster it runs on (state from batchspawner "
                    "or an older hpchub?); hpchub cannot watch or cancel it: check it with `hpchub status` and cancel "
                    "it with `hpchub cancel` if it still runs", self._log_name, self.job_id)
                self._state_warning_logged = True
            return None
        self.job_cluster = saved
        return self._runtime(ClusterSpec.from_state(saved))

    async def poll(self):
        if not self.job_id:
            return 0
        if self.job_id == self._ended_job:
            return 1
        runtime = self._saved_runtime()
        if runtime is None:
            return None  # unknown: never drop a job we cannot see
        if not runtime.poller.watches(self.job_id, self.job_user, self._watcher):  # reattaching after a hub restart
            adopted = await self._adopt_saved_job(runtime)
            if not adopted:
                return None if adopted is None else 1
        # The shared poller refreshes every interval; JupyterHub's own per-server poll reads
        # that cache (with slack for jitter) instead of adding one query per server.
        view = await runtime.poller.get(self.job_id, max_age=1.5 * self.poll_interval)
        if lifecycle.has_ended(view):
            self._job_ended(runtime, view)
            return 1
        if self._server_state is None and not self._stop_pending:  # a server that runs since before a hub restart
            self._server_state = metrics.ServerState.RUNNING
        await self._restore_forwards(runtime)
        return None  # running, or unknown: a scheduler hiccup never stops a server

    async def _adopt_saved_job(self, runtime: ClusterRuntime) -> bool | None:
        """After a hub restart: watch the saved job again only if the scheduler lists it as the user's
        job under the name hpchub gave it (Grid Engine reuses job ids) and no other server watches it.
        Else the server counts as stopped and nothing of the job is cancelled: its id names another
        job now. None: the scheduler does not answer (asked again at the next poll)."""
        try:
            listed = (await runtime.client.job_names(self.job_user)).get(self.job_id)
        except CommandError as error:
            self.log.warning("%s: cannot check job %s from the saved state yet: %s", self._log_name, self.job_id, error)
            return None
        if listed is None:  # over while the hub was down (or never the user's)
            self._job_ended(runtime, JobView(Presence.GONE))
            return False
        problem = ""
        if self.job_name and listed != self.job_name:
            problem = f"the scheduler lists it as {self.job_user}'s job {listed!r}, not {self.job_name!r} (job id reused)"
        else:
            try:
                runtime.poller.watch(self.job_id, self.job_user, self._watcher)
            except JobWatchedElsewhere:
                problem = "another server watches it"
        if problem:
            self.log.warning("%s: job %s from the saved state is not this server's: %s; the server counts as stopped "
                             "and nothing is cancelled", self._log_name, self.job_id, problem)
            self._disowned_job = self.job_id
            self._job_ended(runtime, JobView(Presence.GONE))
            return False
        runtime.poller.on_end(self.job_id, self._ended_callback(self.job_id), self.job_user, self._watcher)
        return True

    @property
    def _watcher(self) -> str:
        """Which server watches a job (StatusPoller.watch): the hub user's, by server name."""
        return f"{self.user.name}/{self.name}"

    def _job_ended(self, runtime: ClusterRuntime, view: JobView) -> None:
        """The job is over without stop() (JupyterHub does not call stop() for an ended server):
        remember it and why, stop watching it, cancel the engine jobs it left and remove its files
        (a disowned job: its id names another job now, so only the files)."""
        job_id, user, key = self.job_id, self.job_user, self.job_key
        disowned = job_id == self._disowned_job
        self._ended_job = job_id
        self.end_reason = walltime.end_reason(view, self.job_ends)
        self.log.info("%s: job %s is over: %s", self._log_name, job_id, self.end_reason)
        runtime.poller.unwatch(job_id, user, self._watcher)
        engine_sets = engines.forget(self.job_token) if self.job_token else []
        if not disowned:
            runtime.close_tunnel(job_id, user)

        async def clean_up() -> None:
            if not disowned:
                await self._cancel_engine_jobs(runtime, user, job_id)
                await _remove_engine_files(engine_sets)
            if key:
                await lifecycle.remove_files(runtime, user, key)

        asyncio.get_running_loop().create_task(clean_up())

    async def stop(self, now: bool = False):
        if not self.job_id:
            return
        runtime = self._saved_runtime()
        if runtime is None:
            return
        job_id, user = self.job_id, self.job_user
        self._server_state = None
        # Its kernels ask for no more engines; those it has are cancelled below.
        engine_sets = engines.forget(self.job_token) if self.job_token else []
        if job_id != self._ended_job:  # JupyterHub also calls stop() for a job that ended by itself
            self.end_reason = walltime.STOPPED
        if job_id != self._disowned_job:  # a disowned id names another job now: nothing of it is touched
            runtime.poller.on_end(job_id, None, user, self._watcher)  # a stop we asked for is no news
            await lifecycle.cancel_and_wait(runtime, user, job_id, self.job_name, timeout=0 if now else self.stop_wait_timeout,
                                            interval=self.startup_poll_interval, watcher=self._watcher)
            await self._cancel_engine_jobs(runtime, user, job_id)
            await _remove_engine_files(engine_sets)
            runtime.poller.unwatch(job_id, user, self._watcher)
            runtime.close_tunnel(job_id, user)
        if self.job_key:
            await lifecycle.remove_files(runtime, user, self.job_key)

    def metrics_state(self) -> tuple[str, metrics.ServerState] | None:
        """(cluster, state) of this server's job for hpchub_servers; None while it has none."""
        if self._server_state is None or not self.job_id or self.job_id == self._ended_job:
            return None
        return str(self.job_cluster.get("name", "")), self._server_state

    # -- the hub's home page ----------------------------------------------------------------
    def page_info(self, now: float | None = None) -> dict[str, object]:
        """What the home page shows about this server, from cached data only (hpchub.hub.pages)."""
        running = bool(self.job_id) and self.job_id != self._ended_job
        status = pages.cached_status(self.job_cluster, self.job_id) if running else None
        return pages.server_info(self.job_id if running else "", self.end_reason, self.job_ends, status, now)

    def share_entry(self, parsed_scopes) -> dict[str, object] | None:
        """The home page's "Share" link of this server for the user looking (hpchub.hub.sharing)."""
        return sharing.home_page_entry(self, parsed_scopes)

    async def progress(self):
        """Every event of this spawn so far, then each new one (JupyterHub ends the stream when
        the spawn does)."""
        async for event in self._progress.follow():
            yield event

async def _remove_engine_files(engine_sets: list[engines.EngineSet]) -> None:
    """The files (connection info) of the engine jobs the hub submitted for a server that ended."""
    for engine_set in engine_sets:
        if engine_set.key:
            await lifecycle.remove_files(engine_set.runtime, engine_set.user, engine_set.key)


def _spawn_failure(error: BaseException, seconds: float, start_timeout: float) -> metrics.SpawnFailure:
    """The reason class of a failed start() that took ``seconds``."""
    if isinstance(error, SpawnFailed):
        return error.failure
    if isinstance(error, asyncio.CancelledError):
        # JupyterHub cancels start() both when start_timeout runs out and when the pending spawn is cancelled.
        return metrics.SpawnFailure.TIMEOUT if seconds >= start_timeout - 1 else metrics.SpawnFailure.CANCELLED
    if isinstance(error, web.HTTPError) and 400 <= error.status_code < 500:
        return metrics.SpawnFailure.OPTIONS_REFUSED
    return metrics.SpawnFailure.ERROR


def _queue_wait(status: JobStatus | None, measured: float) -> float:
    """Seconds the job waited: the scheduler's start minus submit time where it says both (no polling
    delay in it), else ``measured`` (from the submission until hpchub saw the job running)."""
    if status is not None and status.started is not None and status.submitted is not None:
        waited = (status.started - status.submitted).total_seconds()
        if waited >= 0:
            return waited
    return measured

