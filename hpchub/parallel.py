"""ipyparallel on the cluster: engines as batch jobs described by the same site config.

In a notebook whose server hpchub started::

    import ipyparallel as ipp
    cluster = ipp.Cluster(engines="hpchub", n=8)   # or:
    cluster = hpchub.parallel.Cluster(profile="multi", n=8, options={"nodes": 3})

The engine job is rendered from the site's templates (``slurm-engines.sh.j2``: one job with n
srun tasks; ``sge-engines.sh.j2``: an array job), submitted as the notebook's user, and watched
through the shared status poller: when it ends, fails or is cancelled, ipyparallel hears of it
(``notify_stop``). The controller listens on an address the compute nodes can reach: inside
hpchub's jobs it is ipyparallel's default there (the package's ``etc/ipython/ipcluster_config.py``),
elsewhere ``controller="hpchub"`` asks for it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from urllib.parse import urlparse

import ipyparallel
from ipyparallel.cluster.launcher import EngineLauncher, LocalControllerLauncher
from traitlets import Dict, Float, Integer, Unicode, default
from traitlets.config import Config

from .core import jobs, lifecycle
from .core.config import Profile, SiteConfig, load_site_config
from .core.jobs import (
    ENV_ENGINE_PROFILE,
    ENV_PARENT_ALLOCATIONS,
    ENV_PARENT_IMAGE,
    ENV_PARENT_USER_ENV,
    ENV_SITE_CONFIG,
    PreparedJob,
)
from .core.options import JobRequest, OptionsError, image_choices, needs_allocations, resolve_request
from .core.render import UserAccount
from .core.runtime import ClusterRuntime
from .schedulers import JobState
from .schedulers.base import Allocations
from .transports.cluster import ClusterClient, ClusterSpec, user_allocations

# Set by hpchub's server jobs (see hpchub.core.jobs), so that a notebook needs no configuration.
# ENV_SITE_CONFIG also marks an hpchub job for the packaged etc/ipython/ipcluster_config.py.
ENV_PARENT_JOB = "HPCHUB_PARENT_JOB"


def reachable_address() -> str:
    """This node's address on the network the compute nodes share: the local end of a route to
    the hub (inside an hpchub server), else the address of this host's name."""
    hub_url = os.environ.get("JUPYTERHUB_API_URL")
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


class HPCEngineSetLauncher(EngineLauncher):
    """n ipengines as one batch job (Slurm: srun tasks; Grid Engine: an array job)."""

    site_config = Unicode(config=True, help=f"The hpchub site config (default: ${ENV_SITE_CONFIG}).")
    profile = Unicode(config=True, help=f"Profile slug for the engine job (default: ${ENV_ENGINE_PROFILE}).")
    options = Dict(
        config=True,
        help="User choices for the engine job (cores per engine, nodes, walltime, queue...), "
        "validated against the profile like the spawn form.",
    )
    poll_interval = Float(2.0, config=True, help="Seconds between status checks of the engine job (shared per cluster).")
    job_id = Unicode("").tag(to_dict=True)
    cluster_name = Unicode("").tag(to_dict=True)
    job_name = Unicode("").tag(to_dict=True)
    job_key = Unicode("").tag(to_dict=True)
    log_file = Unicode("").tag(to_dict=True)

    @default("site_config")
    def _site_config_default(self):
        return os.environ.get(ENV_SITE_CONFIG, "")

    @default("profile")
    def _profile_default(self):
        return os.environ.get(ENV_ENGINE_PROFILE, "")

    def find_args(self):
        return list(self.engine_cmd) + self.cluster_args + list(self.engine_args)

    def _site(self) -> SiteConfig:
        if not self.site_config:
            raise ValueError(f"no site config: set HPCEngineSetLauncher.site_config or ${ENV_SITE_CONFIG}")
        return load_site_config(self.site_config)

    def _profile(self, site: SiteConfig) -> Profile:
        slug = self.profile or site.profiles[0].slug
        try:
            return site.profile(slug)
        except KeyError:
            raise ValueError(f"no profile {slug!r} in {self.site_config}") from None

    def _runtime(self, site: SiteConfig, cluster_name: str) -> ClusterRuntime:
        # The notebook already runs as the user: commands run directly, never via sudo.
        spec = ClusterSpec.from_site(site, cluster_name).as_current_user()
        return ClusterRuntime.get(spec, interval=self.poll_interval, min_interval=min(1.0, self.poll_interval))

    def prepare(self, n: int, user: str | None = None, allocations: Allocations | None = None) -> PreparedJob:
        """The engine job for n engines (as ``user``, default: this process's user). ``allocations``: for a
        profile whose account, QoS or reservation comes from the scheduler (see options.needs_allocations);
        ``prepare_asking`` fetches them."""
        site = self._site()
        request = self._resolve(site, self._profile(site), allocations)
        self.cluster_name = request.cluster_name
        account = UserAccount.lookup(user or _current_user())
        parent = os.environ.get(ENV_PARENT_JOB) or os.environ.get("SLURM_JOB_ID") or os.environ.get("JOB_ID") or "none"
        return jobs.engine_job(site, request, account, n, parent, self.find_args())

    async def prepare_asking(self, n: int, client: ClusterClient, user: str | None = None) -> PreparedJob:
        """``prepare`` with the user's allocations asked through ``client`` when the profile needs them:
        what ``start`` submits (``client`` runs as the notebook's user) and `hpchub render --engines`
        prints (as the hub asks). AllocationsUnavailable when the scheduler does not answer."""
        site = self._site()
        user = user or _current_user()
        allocations = None
        if needs_allocations(site, self._profile(site)):
            allocations = await user_allocations(client, user)
        return self.prepare(n, user, allocations)

    def _resolve(self, site: SiteConfig, profile: Profile, allocations: Allocations | None) -> JobRequest:
        """The user's options checked like the form's; where they leave the account, QoS, reservation or
        container image or their own environment out and the profile lets users choose it, the notebook's own
        job's value (its environment: jobs.ENV_PARENT_ALLOCATIONS, ENV_PARENT_IMAGE, ENV_PARENT_USER_ENV). A
        parent's value the profile or the scheduler refuses gives way to the profile's default: the engines still
        start, as the profile says."""
        given = {field for field, value in self.options.items() if value is not None and str(value).strip()}
        inherited = {field: value for field, variable in ENV_PARENT_ALLOCATIONS.items()
                     if field not in given and (value := os.environ.get(variable, "").strip())
                     and profile.allocation(field).adjustable}
        # The container image the notebook's user picked: the engines run in the same one.
        parent_image = os.environ.get(ENV_PARENT_IMAGE, "")
        if "image" not in given and parent_image and image_choices(profile, site.clusters[profile.cluster]):
            inherited["image"] = parent_image
        # The user's own environment the notebook runs in: the engines run in it too.
        parent_user_env = os.environ.get(ENV_PARENT_USER_ENV, "")
        if "user_env" not in given and parent_user_env:
            inherited["user_env"] = parent_user_env
        while True:
            try:
                return resolve_request(site, profile, {**self.options, **inherited}, allocations)
            except OptionsError as error:
                refused = inherited.keys() & error.problems.keys()
                if not refused:
                    raise
                for field in sorted(refused):
                    self.log.warning("engines of profile %s: not the notebook's %s %r (%s): the profile's default",
                                     profile.slug, field, inherited.pop(field), error.problems[field])

    async def start(self, n):
        self.n = n
        self._check_controller_reachable()
        site = self._site()
        runtime = self._runtime(site, self._profile(site).cluster)
        job = await self.prepare_asking(n, runtime.client)
        # The connection info (with its key) reaches the engines only through the job's user-only files.
        # Watched as this engine set's own (its key is unique): another launcher never takes its job.
        job_id = await lifecycle.submit_and_watch(runtime, job, {"env": jobs.env_file(self.get_env())}, watcher=job.key)
        self.job_id, self.job_name, self.job_key = job_id, job.name, job.key
        self.log_file = job.log_path(job_id)
        self.notify_start({"job_id": job_id, "cluster": self.cluster_name})
        self._monitor = asyncio.ensure_future(self._watch(runtime))
        return job_id

    def _check_controller_reachable(self) -> None:
        controller = getattr(self.parent, "controller", None)
        args = getattr(controller, "controller_args", None) or []
        listens_everywhere = any(arg.startswith("--ip") and not arg.endswith(("127.0.0.1", "localhost")) for arg in args)
        if controller is not None and not isinstance(controller, HPCControllerLauncher) and not listens_everywhere:
            self.log.warning(
                "The controller listens on localhost only; engines on other nodes cannot reach it. "
                "Use ipp.Cluster(engines='hpchub', controller='hpchub') or hpchub.parallel.Cluster()."
            )

    async def _watch(self, runtime: ClusterRuntime) -> None:
        """Tell ipyparallel when the engine job ends (its own batch launchers never look)."""
        while self.state == "running":
            view = await runtime.poller.get(self.job_id, max_age=self.poll_interval)
            if lifecycle.has_ended(view):
                status = view.status
                state = status.scheduler_state if status else "gone"
                failed = status is not None and status.state in (JobState.FAILED, JobState.CANCELLED, JobState.ERROR)
                self.log.info("engine job %s ended (%s)", self.job_id, state)
                runtime.poller.unwatch(self.job_id, _current_user(), self.job_key)
                await lifecycle.remove_files(runtime, _current_user(), self.job_key)
                self.notify_stop({"job_id": self.job_id, "state": state, "exit_code": 1 if failed else 0})
                return
            await asyncio.sleep(self.poll_interval)

    async def stop(self):
        """Cancel the engine job and return once the scheduler no longer runs it."""
        if not self.job_id or self.state == "after":
            return
        runtime = self._runtime(self._site(), self.cluster_name)
        user = _current_user()
        await lifecycle.cancel_and_wait(runtime, user, self.job_id, self.job_name, timeout=self.stop_timeout, interval=0.5,
                                        watcher=self.job_key)
        runtime.poller.unwatch(self.job_id, user, self.job_key)
        await lifecycle.remove_files(runtime, user, self.job_key)
        monitor = getattr(self, "_monitor", None)
        # ipyparallel's *_sync calls each run their own event loop: only cancel in our own.
        if monitor is not None and not monitor.done() and monitor.get_loop() is asyncio.get_running_loop():
            monitor.cancel()
        self.notify_stop({"job_id": self.job_id, "state": "cancelled", "exit_code": 0})

    def signal(self, sig):
        self.log.warning("signals to engine jobs are not supported; use stop()")

    def get_output(self, remove=False):
        try:
            with open(self.log_file) as output:
                return output.read()
        except OSError:
            return ""


def _current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def Cluster(
    profile: str | None = None,
    n: int | None = None,
    *,
    site_config: str | None = None,
    options: dict | None = None,
    **kwargs,
) -> ipyparallel.Cluster:
    """An ipyparallel Cluster whose engines are a batch job of ``profile`` (with user ``options``
    such as ``{"nodes": 3}``) and whose controller listens where those engines can reach it.
    Other keyword arguments go to ``ipyparallel.Cluster``."""
    launcher: dict[str, object] = {"options": dict(options or {})}
    if profile:
        launcher["profile"] = profile
    if site_config:
        launcher["site_config"] = str(site_config)
    config = kwargs.pop("config", None) or Config()
    config.HPCEngineSetLauncher.update(launcher)
    return ipyparallel.Cluster(engines="hpchub", controller="hpchub", n=n, config=config, **kwargs)
