"""``hpchub doctor SITE.yaml --profile P --user U``: why would this user's server not start?

It submits a probe job AS the user, built like the profile's server job (the same directives and
environment block: modules, venv, prologue), that runs hpchub/job/probe.py with the environment's
``python3`` instead of the server. The probe reports the node's Python, the ``jupyterhub`` and
``jupyter_server`` it can import (judged by the server job's own check, hpchub.job.requirements;
hpchub itself is not needed there, the job side travels with the job), and whether it reaches the
hub's API; then it listens on a free port and the doctor connects to it at the node's address as
the hub resolves it. Each failure has its own plain-words message with the fix and its own exit
code (EXIT_CODES). The probe job is cancelled if it still runs and its files are removed, whatever
happened; the probe removes its own log when it ends (a log kept because the environment failed
before Python ran is named in the message).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import jobs, lifecycle
from ..core import kernels as kernel_cache
from ..core.config import SiteConfig
from ..core.jobs import PreparedJob
from ..core.kernels import Kernel, parse_kernelspecs
from ..core.options import JobRequest, OptionsError, allocation_word, needs_allocations, resolve_request
from ..core.poller import Presence
from ..core.render import UserAccount
from ..core.runtime import ClusterRuntime
from ..job import probe, requirements
from ..job.probe import GREETING, REPORT_MARK
from ..schedulers import JobState, backend_for
from ..transports.cluster import ClusterSpec, user_allocations
from ..transports.runner import CommandError

EXIT_OK = 0
EXIT_CANNOT_RUN = 1  # the doctor itself could not run: the site config, the profile, the account, a command
EXIT_ENVIRONMENT = 3
EXIT_JUPYTERHUB = 4
EXIT_HUB_UNREACHABLE = 5
EXIT_NODE_UNREACHABLE = 6
EXIT_NOT_STARTED = 7
EXIT_NO_REPORT = 9

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "the probe job ran and every check passed",
    EXIT_CANNOT_RUN: "the doctor could not run (site config, profile, user account, scheduler command)",
    EXIT_ENVIRONMENT: "the job's environment did not load (module, venv, conda env, no python3)",
    EXIT_JUPYTERHUB: "jupyterhub-singleuser missing on the node, JupyterHub or jupyter_server outside the supported "
                     "range, or what the profile's environment turns on (collaboration, jupytext) missing",
    EXIT_HUB_UNREACHABLE: "the node cannot reach the hub's API",
    EXIT_NODE_UNREACHABLE: "the hub cannot reach a port opened on the node",
    EXIT_NOT_STARTED: "the scheduler refused the job, or it did not start in time",
    EXIT_NO_REPORT: "the job started but the probe reported nothing",
}
# Several failures at once: the exit code is the one that comes first in a server's start.
_ORDER = (EXIT_NOT_STARTED, EXIT_ENVIRONMENT, EXIT_NO_REPORT, EXIT_JUPYTERHUB, EXIT_HUB_UNREACHABLE,
          EXIT_NODE_UNREACHABLE)
# What a server job's environment needs (hpchub.job.requirements), in words.
SUPPORTED_TEXT = " with ".join(f"{name} {requirements.supported_range(lowest, newest)}"
                               for name, _, lowest, newest in requirements.SUPPORTED)

POLL_INTERVAL = 2.0
CONNECT_TIMEOUT = 10.0
# The probe waits this long for the doctor's connection, then ends on its own (and removes its log).
PROBE_WAIT = 20.0
DEFAULT_HUB_PORT = 8081  # JupyterHub's hub_port

# What the job script prints when its environment block fails (hpchub/templates/partials/environment.sh.j2)
_ENVIRONMENT_FAILURES = ("hpchub: module load", "hpchub: the 'module' command", "hpchub: cannot activate",
                         "hpchub: your environment", "python3: command not found", "python3: not found",
                         "exec: python3")
# What it prints when the profile's container cannot start (hpchub/templates/partials/container-*.sh.j2)
_CONTAINER_FAILURES = ("hpchub: container image", "hpchub: podman is not on the PATH", "hpchub: apptainer is not on",
                       "hpchub: singularity is not on", "hpchub: no runtime directory for podman",
                       # The image has no python3 (runc, crun, apptainer say it so).
                       '"python3": executable file not found', "python3: executable file not found",
                       "executable file `python3` not found", "executable file 'python3' not found")
# How many of the log's last lines a problem quotes.
LOG_LINES = 12


@dataclass(frozen=True)
class Problem:
    code: int
    message: str  # plain words, with the fix


@dataclass
class Diagnosis:
    facts: list[str] = field(default_factory=list)  # what the probe found, line by line
    problems: list[Problem] = field(default_factory=list)
    report: dict[str, Any] | None = None
    job_id: str | None = None
    node: str | None = None
    kernels: list[Kernel] | None = None  # None: the probe could not list them
    request: JobRequest | None = None  # what was probed (the profile, its image, a user's own env)
    user: str | None = None  # as whom

    @property
    def exit_code(self) -> int:
        codes = {problem.code for problem in self.problems}
        return next((code for code in _ORDER if code in codes), EXIT_OK)


def default_hub_api_url(site: SiteConfig, cluster_name: str) -> str:
    """The hub API URL jobs use: the cluster's ``network.to_hub`` when it names a URL, else JupyterHub's
    default for a hub on this host (its hub_port 8081 on the address this host's name resolves to)."""
    to_hub = site.clusters[cluster_name].network.to_hub
    if to_hub.startswith(("http://", "https://")):
        return to_hub.rstrip("/")
    name = socket.getfqdn()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = name
    return f"http://{address}:{DEFAULT_HUB_PORT}/hub/api"


def hub_jupyterhub_version() -> str | None:
    try:
        import jupyterhub
    except ImportError:
        return None
    return str(jupyterhub.__version__)


def probe_source() -> str:
    return Path(probe.__file__).read_text()


async def diagnose(site: SiteConfig, profile_slug: str, user_name: str, hub_api_url: str | None,
                   options: Mapping[str, str] | None = None, start_timeout: float = 120.0,
                   report_timeout: float = 90.0, say: Callable[[str], None] | None = None,
                   connect_timeout: float = CONNECT_TIMEOUT) -> Diagnosis:
    """Submit the probe job for ``profile_slug`` as ``user_name`` and diagnose what it reports.
    ``hub_api_url`` None or "": the node's way to the hub is not checked. ``say``: progress lines.
    ``connect_timeout``: how long a connection either way (hub to node, node to hub) may go unanswered."""
    try:
        profile = site.profile(profile_slug)
    except KeyError:
        slugs = ", ".join(p.slug for p in site.profiles)
        raise OptionsError({"profile": f"no profile {profile_slug!r} (profiles: {slugs})"}) from None
    user = UserAccount.lookup(user_name)
    spec = ClusterSpec.from_site(site, profile.cluster)
    runtime = ClusterRuntime.get(spec, interval=POLL_INTERVAL, min_interval=POLL_INTERVAL / 2)
    runtime.client.check_account(user.name)  # AccountRefused before anything is submitted
    # The user's accounts/QoS/reservations, as the spawn form has them (AllocationsUnavailable: exit 1).
    allocations = await user_allocations(runtime.client, user.name) if needs_allocations(site, profile) else None
    request = resolve_request(site, profile, dict(options or {}), allocations)
    diagnosis = Diagnosis(request=request, user=user.name)
    jobs_hub = hub_api_url or ""
    if jobs_hub and spec.to_hub != "direct":  # the hub as jobs reach it: a URL, or a reverse forward
        found = await runtime.hub_api_for_jobs(jobs_hub)
        if found is not None:
            jobs_hub = found[0]
    probe_args = ["--hub-api", jobs_hub, "--node-variable", backend_for(spec.scheduler).NODE_NAME_VARIABLE,
                  "--wait", f"{PROBE_WAIT:.0f}", "--connect-timeout", f"{connect_timeout:g}"]
    job = jobs.probe_job(site, request, user, probe_args)
    charged = [f"{allocation_word(field, spec.scheduler)} {value}" for field, value in
               (("account", request.account), ("qos", request.qos), ("reservation", request.reservation_name)) if value]
    where = f"profile {profile.slug!r} (cluster {request.cluster_name}, queue {', '.join([request.queue, *charged])})"
    try:
        job_id = await lifecycle.submit_and_watch(runtime, job, {jobs.PROBE_SCRIPT: probe_source()})
    except CommandError as error:
        first = next((line for line in (error.stderr or "").splitlines() if line.strip()), str(error)).strip()
        if any(word in first.lower() for word in ("unable to contact", "connect failure", "cannot connect")):
            fix = "the scheduler does not answer: start its controller (or wait for it) and try again."
        else:
            fix = (f"make the profile's request fit what the queue and {user.name}'s account allow (`hpchub render` "
                   "shows the job script; `hpchub check --live` compares the site config with the scheduler).")
        diagnosis.problems.append(Problem(EXIT_NOT_STARTED, f"The scheduler refused the probe job of {where}: "
                                                            f"{first}. Fix: {fix}"))
        return diagnosis
    except lifecycle.SubmitOutcomeUnknown as error:
        diagnosis.problems.append(Problem(EXIT_NOT_STARTED, f"Submitting the probe job of {where} failed: {error}. "
                                                            "Fix: see whether the scheduler answers, then try again."))
        return diagnosis
    diagnosis.job_id = job_id
    if say:
        say(f"probe job {job_id} submitted as {user.name} ({where})")
    ended, reached = False, True
    try:
        host, ended = await _wait_until_started(runtime, job, job_id, start_timeout, diagnosis)
        if host is None and not ended:
            return diagnosis
        diagnosis.node = host
        if say and host:
            say(f"probe job {job_id} runs on {host}")
        report, log, ended = await _wait_for_report(runtime, job, job_id, report_timeout)
        if report is None:
            diagnosis.problems.append(_no_report_problem(site, request, job, job_id, log, host, ended))
            return diagnosis
        diagnosis.report = report
        environment = request.cluster.environment.extended_by(request.profile.environment)
        _judge_report(diagnosis, report, request.cluster_name, jobs_hub,
                      jobs.environment_server_args(environment, job.job_dir))
        if not ended:
            address = await runtime.node_address(host or str(report.get("node", "")))
            reached = await _connect_to_probe(diagnosis, address, int(report["port"]),
                                              host or str(report.get("node", "")), connect_timeout)
    finally:
        await _clean_up(runtime, job, job_id, ended, wait_for_its_end=reached)
    return diagnosis


async def _wait_until_started(runtime: ClusterRuntime, job: PreparedJob, job_id: str, timeout: float,
                              diagnosis: Diagnosis) -> tuple[str | None, bool]:
    """(the job's node, whether it already ended); a problem and (None, False) when it did not start."""
    deadline = time.monotonic() + timeout
    while True:
        view = await runtime.poller.get(job_id, max_age=POLL_INTERVAL)
        status = view.status
        if lifecycle.has_ended(view):
            return (status.host if status else None), True
        if view.presence is Presence.KNOWN and status is not None:
            if status.state is JobState.RUNNING and status.host:
                return status.host, False
            if lifecycle.is_stuck(view) or time.monotonic() >= deadline:
                reason = await _scheduler_reason(runtime, job_id, status.reason)
                what = ("is held or in an error state" if lifecycle.is_stuck(view)
                        else f"did not start within {timeout:.0f} s")
                diagnosis.problems.append(Problem(EXIT_NOT_STARTED, (
                    f"The probe job {job_id} {what} ({status.scheduler_state}{': ' + reason if reason else ''}). "
                    "Fix: servers of this profile would wait the same way: free the queue or pick another "
                    "(`hpchub queues`), release a hold, or give the doctor more time (--start-timeout).")))
                return None, False
        elif time.monotonic() >= deadline:
            diagnosis.problems.append(Problem(EXIT_NOT_STARTED, (
                f"The scheduler has not answered about probe job {job_id} for {timeout:.0f} s ({view.error}). "
                "Fix: check that the scheduler's status command works for the hub's account.")))
            return None, False
        await asyncio.sleep(POLL_INTERVAL)


async def _scheduler_reason(runtime: ClusterRuntime, job_id: str, reason: str | None) -> str:
    try:
        explained = await runtime.client.explain(job_id)
    except CommandError:
        explained = None
    return explained or (runtime.client.backend.REASON_TEXT.get(reason, reason) if reason else "")


async def _wait_for_report(runtime: ClusterRuntime, job: PreparedJob, job_id: str,
                           timeout: float) -> tuple[dict[str, Any] | None, str, bool]:
    """(the probe's report or None, the log's tail, whether the job ended)."""
    deadline = time.monotonic() + timeout
    log, ended = "", False
    while True:
        try:
            log = await runtime.client.read_log_tail(job.user.name, job.log_name(job_id), 200)
        except CommandError:
            pass  # not written yet
        for line in log.splitlines():
            if line.startswith(REPORT_MARK):
                try:
                    return json.loads(line[len(REPORT_MARK):]), log, ended
                except ValueError:
                    break
        if ended or time.monotonic() >= deadline:
            return None, log, ended
        view = await runtime.poller.get(job_id, max_age=POLL_INTERVAL)
        ended = lifecycle.has_ended(view)  # one more read of the log after the end: it may just have come
        if not ended:
            await asyncio.sleep(1.0)


def _environment_where(site: SiteConfig, request: Any) -> str:
    """FILE:LINE of the environment block the job used (the profile's, else its cluster's)."""
    index = site.profiles.index(request.profile)
    if request.profile.environment is not None:
        name, line = site.key("profiles", index, "environment")
    else:
        name, line = site.key("clusters", request.cluster_name, "environment")
    return f"{site.source or 'the site config'}{f':{line}' if line else ''} ({name})"


def _no_report_problem(site: SiteConfig, request: Any, job: PreparedJob, job_id: str, log: str, host: str | None,
                       ended: bool) -> Problem:
    if host is None:  # ended before the doctor saw it run: the job script's first line names the host
        started = re.search(r"^hpchub: job \S+ for \S+ started on (\S+) at ", log, re.MULTILINE)
        host = started.group(1) if started else None
    on = f" on {host}" if host else ""
    kept = f"The job's log {job.log_path(job_id)} is kept; it ends:\n{_log_tail(log)}"
    failed = [line.strip() for line in log.splitlines() if any(mark in line for mark in _CONTAINER_FAILURES)]
    if failed:
        return Problem(EXIT_ENVIRONMENT, (
            f"The job's container did not start{on}: {failed[0]}. Fix: the container of "
            f"{_environment_where(site, request)} needs its runtime on the nodes' PATH (a module in "
            f"environment.modules) and its image readable by {job.user.name} on every node (an image name: stored "
            f"in {job.user.name}'s podman storage there, or pullable), with python3 and jupyterhub in it. {kept}"))
    failed = [line.strip() for line in log.splitlines() if any(mark in line for mark in _ENVIRONMENT_FAILURES)]
    if failed and request.user_env is not None and "hpchub: your environment" in failed[0]:
        return Problem(EXIT_ENVIRONMENT, (
            f"The user's own environment did not load{on}: {failed[0]}. Fix: the user makes ~/{request.user_env} a "
            f"venv or conda env with python3 and jupyterhub in it, readable on the compute nodes. {kept}"))
    if failed:
        return Problem(EXIT_ENVIRONMENT, (
            f"The job's environment did not load{on}: {failed[0]}. Fix: make every module and the venv of "
            f"{_environment_where(site, request)} exist on the compute nodes and be readable by {job.user.name} "
            f"(try `module avail` / `ls VENV/bin/activate` on a node), or correct that block. {kept}"))
    tail = " | ".join(line.strip() for line in log.splitlines()[-5:] if line.strip()) or "(empty)"
    what = "ended" if ended else "ran"
    return Problem(EXIT_NO_REPORT, (
        f"The probe job {job_id} {what}{on} but the probe reported nothing; its log ends: {tail}. Fix: read "
        f"{job.log_path(job_id)}: the profile's prologue or directives may end the job early, or the node is "
        "overloaded (try --report-timeout)."))


def _log_tail(log: str) -> str:
    lines = [line.rstrip() for line in log.splitlines() if line.strip()][-LOG_LINES:]
    return "\n".join(f"  | {line}" for line in lines) or "  | (empty)"


def _judge_report(diagnosis: Diagnosis, report: Mapping[str, Any], cluster_name: str, hub_api_url: str,
                  server_args: Sequence[str] = ()) -> None:
    """What the probe's ``report`` means for a server of the profile; ``server_args``: what the profile's
    environment turns on in the server (hpchub.core.jobs.environment_server_args)."""
    node = str(report.get("node", "the node"))
    python = report.get("python", {})
    diagnosis.facts.append(f"python: {python.get('version')} at {python.get('executable')} on {node}")
    hub_version = hub_jupyterhub_version()
    # The range a server job needs is the job's own check (hpchub.job.requirements), read from the report.
    versions = {name: str(report[name].get("version")) for name in ("jupyterhub", "jupyter_server")
                if isinstance(report.get(name), dict) and report[name].get("importable")}
    jupyterhub = report.get("jupyterhub", {})
    if "jupyterhub" in versions:
        node_version = versions["jupyterhub"]
        diagnosis.facts.append(f"jupyterhub: {node_version} on the node, {hub_version or 'none'} on the hub")
        if hub_version and node_version.split(".")[:2] != hub_version.split(".")[:2]:
            diagnosis.facts.append("  (another version than the hub's: works within the supported range, but "
                                   "JupyterHub logs a warning at each start)")
    else:
        diagnosis.facts.append(f"jupyterhub: not importable ({jupyterhub.get('error')})")
    if "jupyter_server" in versions:
        diagnosis.facts.append(f"jupyter_server: {versions['jupyter_server']} on the node")
    errors, warnings = requirements.problems(versions.get, str(python.get("executable")))
    for warning in warnings:
        diagnosis.facts.append(f"  (warning: {warning})")
    for error in errors:
        diagnosis.problems.append(Problem(EXIT_JUPYTERHUB, (
            f"{error} (on {node}). Fix: install jupyterhub (best the hub's {hub_version or 'version'}; "
            f"{SUPPORTED_TEXT} work) into the environment the profile's jobs use.")))
    # What the profile turns on (collaboration, a jupytext pairing), judged as the job's own check does;
    # the formats string itself was checked when the site config was loaded.
    optional = report.get("optional")
    optional = optional if isinstance(optional, dict) else {}
    found = {name: str(version) for name, version in (optional.get("versions") or {}).items() if version}
    modules = {name for name, present in (optional.get("modules") or {}).items() if present}
    for error in requirements.server_arg_problems(server_args, found.get, modules.__contains__, lambda formats: None,
                                                  str(python.get("executable"))):
        diagnosis.problems.append(Problem(EXIT_JUPYTERHUB, (
            f"{error} (on {node}). Fix: install it into the environment the profile's jobs use, or take the key out "
            "of the profile's environment.")))
    if "jupyterhub" in versions and not report.get("singleuser_command"):
        diagnosis.problems.append(Problem(EXIT_JUPYTERHUB, (
            f"jupyterhub-singleuser is not on the PATH on {node} after the environment loaded. Fix: install "
            "jupyterhub into the jobs' environment (its bin directory must be on the PATH the job gets).")))
    kernels = parse_kernelspecs(report)
    if kernels is not None:
        diagnosis.kernels = kernels
        names = ", ".join(f"{kernel.display_name} [{kernel.name}]" for kernel in kernels)
        diagnosis.facts.append(f"kernels: {names or 'none'}")
    elif isinstance(report.get("kernelspecs"), dict):
        diagnosis.facts.append(f"kernels: not listed ({report['kernelspecs'].get('error')})")
    hpchub = report.get("hpchub", {})
    # Not needed on the node: the job side travels with every server job (hpchub.core.bundle).
    diagnosis.facts.append(f"hpchub: {hpchub.get('version')} on the node (not needed there)" if hpchub.get("importable")
                           else "hpchub: not installed on the node (not needed: the job side travels with the job)")
    api = report.get("hub_api", {})
    if not api.get("asked"):
        return
    if api.get("tcp") == "ok":
        answer = api.get("http")
        diagnosis.facts.append(f"hub API: {api.get('url')} reached from {node} (HTTP {answer}"
                               f"{', JupyterHub ' + api['hub_version'] if api.get('hub_version') else ''})")
        return
    diagnosis.facts.append(f"hub API: {api.get('url')} NOT reached from {node}: {api.get('tcp')}")
    refused = "Refused" in str(api.get("tcp"))
    diagnosis.problems.append(Problem(EXIT_HUB_UNREACHABLE, (
        f"The node {node} cannot reach the hub's API at {api.get('url')} ({api.get('tcp')}"
        f"{': nothing listens there; is the hub running, on this address and port?' if refused else ''}): "
        f"servers there would never report their port. Fix: let the compute nodes connect to {api.get('host')}:{api.get('port')} "
        "(firewall), make the hub listen on an address the nodes reach (c.JupyterHub.hub_ip or hub_connect_url), "
        f"or set clusters.{cluster_name}.network.to_hub (reverse, or a URL the nodes reach). If the hub listens "
        "elsewhere, give the doctor its API URL with --hub-api.")))


async def _connect_to_probe(diagnosis: Diagnosis, address: str, port: int, node: str, timeout: float) -> bool:
    """Connect to the probe's port as the hub would connect to a server there; whether it connected."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, asyncio.TimeoutError) as error:
        why = f"no answer within {timeout:g} s" if isinstance(error, asyncio.TimeoutError) else str(error)
        diagnosis.facts.append(f"node port: {address}:{port} NOT reached from the hub: {why}")
        diagnosis.problems.append(Problem(EXIT_NODE_UNREACHABLE, (
            f"The hub cannot connect to port {port} on {node} ({address}): {why}. Servers listen on a free port "
            "there, so the hub could never reach one. Fix: let the hub host connect to the compute nodes' ports "
            "1024-65535 (their firewall), check that the hub resolves the node to an address it can route to, "
            "or use network.to_servers: tunnel (with submit via: ssh).")))
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), timeout)
        writer.write(b"done\n")
        await writer.drain()
    except (OSError, asyncio.TimeoutError):
        greeting = b""
    finally:
        writer.close()
    if greeting == GREETING:
        diagnosis.facts.append(f"node port: the hub reached the probe at {address}:{port}")
    else:
        diagnosis.problems.append(Problem(EXIT_NODE_UNREACHABLE, (
            f"Something at {address}:{port} answered, but not the probe on {node} (the hub resolves {node} to "
            f"{address}). Fix: make the node's name resolve, for the hub, to the node itself (DNS, /etc/hosts, "
            "Slurm NodeAddr).")))
    return True


async def _clean_up(runtime: ClusterRuntime, job: PreparedJob, job_id: str, ended: bool,
                   wait_for_its_end: bool) -> None:
    """A probe the doctor reached ends on its own once the doctor is done with it (``wait_for_its_end``),
    and removes its log then; one it could not reach, or that still runs 10 s later, is cancelled (it
    removes its log on the scheduler's SIGTERM too). Remove its job files."""
    user = job.user.name
    deadline = time.monotonic() + (10 if wait_for_its_end else 0)
    while not ended and time.monotonic() < deadline:
        ended = lifecycle.has_ended(await runtime.poller.get(job_id, max_age=1.0))
        if not ended:
            await asyncio.sleep(1.0)
    if not ended:
        await lifecycle.cancel_and_wait(runtime, user, job_id, job.name, timeout=30, interval=1.0)
    await lifecycle.remove_files(runtime, user, job.key)


def record_kernels(site: SiteConfig, diagnosis: Diagnosis) -> str | None:
    """Put the kernels the probe listed into the hub's cache (hpchub.core.kernels), for the profile's card:
    a line saying where, or why not; None when there is nothing to record (no list, or a user's own
    environment: the card shows the profile's)."""
    request = diagnosis.request
    if diagnosis.kernels is None or request is None or request.user_env is not None:
        return None
    try:
        path = kernel_cache.record(site, request.profile, diagnosis.kernels, request.image,
                                   user=diagnosis.user or "", node=diagnosis.node or "")
    except OSError as error:
        return f"kernels not recorded for the card: {error}"
    return f"kernels recorded for the card in {path}" if path is not None else None


def format_diagnosis(diagnosis: Diagnosis) -> str:
    lines = [*diagnosis.facts]
    for problem in diagnosis.problems:
        lines.append(f"PROBLEM ({problem.code}): {problem.message}")
    if not diagnosis.problems:
        lines.append("ok: a server of this profile can start for this user")
    return "\n".join(lines)
