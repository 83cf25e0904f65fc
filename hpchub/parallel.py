"""ipyparallel on the cluster: engines as batch jobs described by the same site config.

In a notebook whose server hpchub started::

    import ipyparallel as ipp
    cluster = ipp.Cluster(engines="hpchub", n=8)   # or:
    cluster = hpchub.parallel.Cluster(profile="multi", n=8, options={"nodes": 3})

Inside a server job hpchub started, the hub submits the engines (hpchub.job.engines, which is what
a kernel without hpchub installed uses too). Elsewhere (a login node with hpchub and a site config)
this launcher renders the engine job from the site's templates (``slurm-engines.sh.j2``: one job
with n srun tasks; ``sge-engines.sh.j2``: an array job), submits it as the notebook's user, and
watches it through the shared status poller: when it ends, fails or is cancelled, ipyparallel
hears of it (``notify_stop``). The controller listens on an address the compute nodes can reach:
inside hpchub's jobs it is ipyparallel's default there (the package's
``etc/ipython/ipcluster_config.py``, or the engine launcher restarts it so), elsewhere
``controller="hpchub"`` asks for it.
"""

from __future__ import annotations

import asyncio
import os
import pwd

import ipyparallel
from traitlets import Unicode, default
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
from .core.options import JobRequest, needs_allocations, resolve_inheriting
from .core.render import UserAccount
from .core.runtime import ClusterRuntime
from .job import engines as job_engines
from .job.engines import HPCControllerLauncher, in_server_job, listens_on_localhost_only, reachable_address
from .schedulers import JobState
from .schedulers.base import Allocations
from .transports.cluster import ClusterClient, ClusterSpec, user_allocations

__all__ = ["Cluster", "HPCControllerLauncher", "HPCEngineSetLauncher", "reachable_address"]

# Set by hpchub's server jobs (see hpchub.core.jobs), so that a notebook needs no configuration.
# ENV_SITE_CONFIG also marks an hpchub job for the packaged etc/ipython/ipcluster_config.py.
ENV_PARENT_JOB = "HPCHUB_PARENT_JOB"


class HPCEngineSetLauncher(job_engines.HPCEngineSetLauncher):
    """n ipengines as one batch job (Slurm: srun tasks; Grid Engine: an array job): inside a server
    job hpchub started, the hub submits it (hpchub.job.engines); elsewhere this process does, as its
    user, from ``site_config``."""

    site_config = Unicode(config=True, help=f"""The hpchub site config, outside hpchub's server jobs (default:
        ${ENV_SITE_CONFIG}). Inside them the hub's own site config applies.""")
    cluster_name = Unicode("").tag(to_dict=True)
    job_name = Unicode("").tag(to_dict=True)
    job_key = Unicode("").tag(to_dict=True)

    @default("site_config")
    def _site_config_default(self):
        return os.environ.get(ENV_SITE_CONFIG, "")

    def _site(self) -> SiteConfig:
        if not self.site_config:
            raise ValueError(f"no site config: set HPCEngineSetLauncher.site_config or ${ENV_SITE_CONFIG}")
        return load_site_config(self.site_config)

    def _profile(self, site: SiteConfig) -> Profile:
        slug = self.profile or os.environ.get(ENV_ENGINE_PROFILE) or site.profiles[0].slug
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
        """The user's options checked like the form's, with the notebook's own job's account, QoS,
        reservation, container image and user environment (its environment: jobs.ENV_PARENT_ALLOCATIONS,
        ENV_PARENT_IMAGE, ENV_PARENT_USER_ENV) where they leave them out (options.resolve_inheriting)."""
        inherited = {field: os.environ.get(variable, "") for field, variable in ENV_PARENT_ALLOCATIONS.items()}
        inherited["image"] = os.environ.get(ENV_PARENT_IMAGE, "")
        inherited["user_env"] = os.environ.get(ENV_PARENT_USER_ENV, "")

        def refused(field: str, value: str, why: str) -> None:
            self.log.warning("engines of profile %s: not the notebook's %s %r (%s): the profile's default",
                             profile.slug, field, value, why)

        return resolve_inheriting(site, profile, self.options, inherited, allocations, refused)

    async def start(self, n):
        if in_server_job():
            return await super().start(n)
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
        self._monitor = asyncio.ensure_future(self._watch_job(runtime))
        return job_id

    def _check_controller_reachable(self) -> None:
        controller = getattr(self.parent, "controller", None)
        if controller is not None and listens_on_localhost_only(controller):
            self.log.warning(
                "The controller listens on localhost only; engines on other nodes cannot reach it. "
                "Use ipp.Cluster(engines='hpchub', controller='hpchub') or hpchub.parallel.Cluster()."
            )

    async def _watch_job(self, runtime: ClusterRuntime) -> None:
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
        if not self.job_key:  # the hub submitted it
            return await super().stop()
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
