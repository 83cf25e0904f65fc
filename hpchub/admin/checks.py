"""What ``hpchub check`` looks at beyond the schema.

Without a scheduler: who could change what jobs run (the site config and the templates must be
writable by their owner only, and owned by root or the account running the check), and whether
jobs would run as the hub's own account (``submit.via: local``). With ``--live``: whether each
cluster's scheduler answers, has every configured queue up with limits at most the scheduler's,
lets the hub see every job and hides users' jobs from each other (Slurm PrivateData), whether the
commands of the submit mode can be run (sudo, ssh; as a probe user), and (a probe job per profile
environment, hpchub.admin.doctor) whether the environment loads where the jobs run. Each finding names
the line of the config key it is about. The accounts, QoS and reservations profiles name must exist
and be open to the users the profiles are for.

Over 500 lines because it is a list of independent findings, each a short function; one file is
the list an admin reads to know what ``hpchub check`` covers.
"""

from __future__ import annotations

import asyncio
import glob
import grp
import json
import os
import pwd
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.accounts import unix_groups
from ..core.config import PODMAN_ARCHIVE_PREFIXES, Identity, Profile, SiteConfig, hub_identity_refusal, profile_allows
from ..core.options import ALLOCATION_FIELDS, allocation_word, made_by_trusted
from ..schedulers import ParseError, SchedulerQueueLimits, backend_for, slurm
from ..schedulers.base import Allocations, Reservation
from ..transports.cluster import (
    AccountRefused,
    AllocationsUnavailable,
    ClusterClient,
    client_for,
    default_jobfiles_command,
    user_allocations,
)
from ..transports.runner import CommandError

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level  # error: check exits 1; warning and info: reported, exit 0
    message: str
    line: int | None = None  # the line of the site config key the finding is about

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def _at(site: SiteConfig, level: Level, loc: tuple[str | int, ...], message: str) -> Finding:
    """A finding about the key at ``loc``: its readable name starts the message, its line goes along."""
    name, line = site.key(*loc)
    return Finding(level, f"{name}: {message}", line)


def site_findings(site: SiteConfig, internal_ssl: bool = False) -> list[Finding]:
    """Everything ``hpchub check`` reports about a valid site config without asking a scheduler;
    ``internal_ssl``: the hub runs with ``c.JupyterHub.internal_ssl = True`` (``--internal-ssl``)."""
    return (_file_findings(site) + _trust_file_findings(site) + _submission_findings(site)
            + _network_findings(site, internal_ssl) + container_findings(site))


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --- who can change what jobs run ------------------------------------------------------------

def _file_findings(site: SiteConfig) -> list[Finding]:
    findings: list[Finding] = []
    if site.source is not None:
        findings += _trust(site.source, "site config")
        findings += _trust(site.source.parent, "site config directory", sticky_is_enough=True)
    templates = site.templates_path()
    if templates is None:
        return findings
    if not templates.is_dir():
        what = "does not exist" if not templates.exists() else "is not a directory"
        findings.append(Finding("warning", f"templates_dir {templates} {what}: only the packaged templates are used"))
        return findings
    findings += _trust(templates, "templates_dir")
    for directory, subdirectories, files in os.walk(templates):
        for name in sorted(subdirectories + files):
            findings += _trust(Path(directory) / name, "template")
    return findings


def _trust(path: Path, what: str, sticky_is_enough: bool = False) -> list[Finding]:
    """Warnings when someone other than root or the account running the check can change ``path``:
    whoever can change the config or a template decides what every user's job runs.
    ``sticky_is_enough``: in a directory with the sticky bit others cannot replace existing files."""
    try:
        info = path.stat()  # follows a symlink: what is read is the target
    except OSError as error:
        return [Finding("warning", f"{what} {path}: cannot check its permissions: {error.strerror}")]
    findings: list[Finding] = []
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (sticky_is_enough and info.st_mode & stat.S_ISVTX):
        who = " and ".join(w for w, bit in (("its group", stat.S_IWGRP), ("everyone", stat.S_IWOTH)) if writable & bit)
        findings.append(Finding(
            "warning",
            f"{what} {path} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}): "
            "whoever can write it decides what jobs run; chmod go-w",
        ))
    trusted = {0, os.geteuid()}
    if info.st_uid not in trusted:
        findings.append(Finding(
            "warning",
            f"{what} {path} is owned by {_account_name(info.st_uid)}, not by root or {_account_name(os.geteuid())}: "
            "its owner decides what jobs run",
        ))
    return findings


# --- the files that decide whom the hub trusts and what runs as the users -------------------

_KNOWN_HOSTS_WHY = ("whoever can change it can make the hub take their host for the login node and hand it "
                    "the users' job files and tokens")
_KEY_WHY = "whoever can change it can put in a key of their own, and whoever can read a key logs in as its account"
_JOBFILES_WHY = ("the hub runs hpchub-job for every job (as its user with via: sudo): whoever can change what it "
                 "runs, runs code as them")


def _trust_file_findings(site: SiteConfig) -> list[Finding]:
    """Errors for the files behind the hub's trust in the cluster: (via: ssh) known_hosts, the key
    files and their directory; (via: sudo, local) hpchub-job and the environment it runs from. Each
    must be changeable only by root or the account running the check, like every directory above
    it, and a key readable by nobody else."""
    findings: list[Finding] = []
    jobfiles: list[str] | None = None  # one environment for every cluster that runs hpchub-job here
    for name, cluster in site.clusters.items():
        submit, at = cluster.submit, ("clusters", name, "submit")
        if submit.via == "ssh":
            assert submit.known_hosts is not None and submit.key is not None
            findings += [_at(site, "error", at + ("known_hosts",), problem)
                         for problem in _path_problems(Path(submit.known_hosts), "known_hosts", _KNOWN_HOSTS_WHY)]
            findings += [_at(site, "error", at + ("key",), problem) for problem in _key_problems(submit.key)]
        else:
            if jobfiles is None:
                jobfiles = jobfiles_problems(default_jobfiles_command())
            findings += [_at(site, "error", at + ("via",), problem) for problem in jobfiles]
    return findings


def _looseness(info: os.stat_result, secret: bool = False, sticky_is_enough: bool = False) -> str | None:
    """Why someone other than root or the account running the check could change (``secret``: or
    read) what ``info`` describes; None if nobody can. ``sticky_is_enough``: a directory with the
    sticky bit, in which others cannot replace entries they do not own."""
    reasons = []
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (sticky_is_enough and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
        reasons.append(f"writable by {_whom(writable)}")
    readable = info.st_mode & (stat.S_IRGRP | stat.S_IROTH)
    if secret and readable:
        reasons.append(f"readable by {_whom(readable)}")
    if info.st_uid not in (0, os.geteuid()):
        reasons.append(f"owned by {_account_name(info.st_uid)}, not by root or {_account_name(os.geteuid())}")
    if not reasons:
        return None
    return f"{' and '.join(reasons)} (mode {stat.S_IMODE(info.st_mode):04o})"


def _whom(bits: int) -> str:
    return " and ".join(whom for whom, mask in (("its group", stat.S_IWGRP | stat.S_IRGRP),
                                                ("everyone", stat.S_IWOTH | stat.S_IROTH)) if bits & mask)


def _path_problems(path: Path, what: str, why: str, secret: bool = False, strict_parent: bool = False) -> list[str]:
    """``path`` (if it exists) and every directory above it, also above the file a link leads to.
    ``strict_parent``: the sticky bit does not make its own directory safe (others could add a file)."""
    problems = []
    try:
        looseness = _looseness(path.stat(), secret=secret)
    except FileNotFoundError:
        looseness = None
    except OSError as error:
        return [f"cannot check {what} {path}: {error.strerror}"]
    if looseness:
        problems.append(f"{what} {path} is {looseness}: {why}")
    for directory in dict.fromkeys([*path.parents, *path.resolve().parents]):
        try:
            info = directory.stat()
        except OSError:
            continue  # missing: nothing in it to replace
        looseness = _looseness(info, sticky_is_enough=not (strict_parent and directory == path.parent))
        if looseness:
            problems.append(f"{directory}, a directory above {what} {path}, is {looseness}: whoever can change it can "
                            f"replace what is in it; {why}")
    return problems


def _key_problems(key: str) -> list[str]:
    """A fixed key file, or for ``/dir/{user}.key`` the directory and every key file in it now."""
    if "{user}" not in key:
        return _path_problems(Path(key), "key file", _KEY_WHY, secret=True)
    prefix = key.split("{user}", 1)[0]
    directory = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
    problems = _path_problems(directory, "key directory", _KEY_WHY, strict_parent=True)
    for found in sorted(glob.glob(glob.escape(key).replace(glob.escape("{user}"), "*"))):
        if found.endswith(".pub"):
            continue  # a public key beside its private key (key: /dir/{user}) is no secret
        path = Path(found)
        problems += _path_problems(path, "key file", _KEY_WHY, secret=True)[:1]  # its directories: above
        for between in path.parents:
            if between == directory:
                break
            problems += _path_problems(between, "key directory", _KEY_WHY)[:1]
    return list(dict.fromkeys(problems))


# At most this many loose files or directories of one environment are named.
MAX_NAMED = 3


def jobfiles_problems(jobfiles: str) -> list[str]:
    """``jobfiles`` (hpchub-job beside the hub's Python, which the sudoers rule names), the directories
    above it, and the virtual environment it runs from: every directory in it (a module or .pth file
    added anywhere runs as the users), and the files Python reads before hpchub: pyvenv.cfg, bin/,
    the top of site-packages (.pth files run code at start-up) and the hpchub package."""
    found = shutil.which(jobfiles)
    if found is None:
        return []  # check --live reports a missing hpchub-job
    command = Path(found)
    problems = _path_problems(command, "hpchub-job", _JOBFILES_WHY)
    venv = command.parent.parent
    if not (venv / "pyvenv.cfg").is_file():
        return problems
    loose: list[str] = []
    for directory, _subdirectories, files in os.walk(venv):
        here = Path(directory)
        read_files = (here == venv or here.name in ("bin", "site-packages") or "hpchub" in here.relative_to(venv).parts)
        for path in [here, *(here / name for name in files if read_files)]:
            try:
                looseness = _looseness(path.stat())
            except OSError:
                continue  # a dangling link: nothing runs from it
            if looseness:
                loose.append(f"{path} is {looseness}")
    if loose:
        more = f" and {len(loose) - MAX_NAMED} more" if len(loose) > MAX_NAMED else ""
        problems.append(f"the environment {venv} of hpchub-job has what others can change: "
                        f"{'; '.join(loose[:MAX_NAMED])}{more}: {_JOBFILES_WHY}; chmod -R go-w {venv}")
    return problems


# --- container images -------------------------------------------------------------------------

_IMAGE_WHY = "whoever can change it decides what runs in every job that uses it, as that job's user"


def container_findings(site: SiteConfig) -> list[Finding]:
    """Each container image file of a profile (a podman archive, a .sif): where this host sees it, it
    and the directories above it must be changeable only by root or the account running the check
    (warnings); where it does not, an info that the nodes must have it (`hpchub doctor` tries)."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for index, profile in enumerate(site.profiles):
        cluster = site.clusters[profile.cluster]
        container = cluster.environment.extended_by(profile.environment).container
        if container is None:
            continue
        own = profile.environment.container if profile.environment is not None else None
        at: tuple[str | int, ...] = (("profiles", index, "environment", "container")
                                     if own is not None and {"image", "images"} & own.model_fields_set
                                     else ("clusters", profile.cluster, "environment", "container"))
        images = [(at + ("image",), container.image)] if container.image is not None else []
        images += [(at + ("images", number, "image"), offered.image) for number, offered in enumerate(container.images)]
        for loc, image in images:
            path = image_file(container.runtime, image)
            if path is None or path in seen:
                continue
            seen.add(path)
            if not os.path.exists(path):
                findings.append(_at(site, "info", loc, f"{path} is not on this host: every node must have it "
                                                       f"(hpchub doctor --profile {profile.slug} runs a probe job in it)"))
                continue
            findings += [_at(site, "warning", loc, problem)
                         for problem in _path_problems(Path(path), "container image", _IMAGE_WHY)]
    return findings


def image_file(runtime: str | None, image: str) -> str | None:
    """The file behind a container image reference (None: a name or a remote reference)."""
    if runtime == "podman" and image.startswith(PODMAN_ARCHIVE_PREFIXES):
        return image.split(":", 1)[1]
    return image if image.startswith("/") else None


# --- as whom jobs run ------------------------------------------------------------------------

def local_submission_refusal(cluster_name: str) -> str:
    return (f"clusters.{cluster_name}.submit.via: refused: local submission as root would run every user's job "
            "as root; use via: sudo")


def _submission_findings(site: SiteConfig) -> list[Finding]:
    findings: list[Finding] = []
    uid = os.geteuid()
    for name, cluster in site.clusters.items():
        submit = cluster.submit
        if submit.via == "ssh" and "{user}" not in submit.user and not submit.sudo:
            findings.append(Finding("warning", f"clusters.{name}.submit.user: {submit.user} without sudo: all users' "
                                               f"jobs run as {submit.user} on the login node"))
        if submit.via != "local":
            continue
        if uid == 0:
            findings.append(Finding("error", local_submission_refusal(name)))
        else:
            findings.append(Finding("warning", f"clusters.{name}.submit.via: local: all users' jobs run as "
                                               f"{_account_name(uid)}"))
    return findings


# --- the hub off the cluster: who could answer the jobs' calls, descriptors for forwards ------

def _network_findings(site: SiteConfig, internal_ssl: bool) -> list[Finding]:
    findings: list[Finding] = []
    forwards = False
    for name, cluster in site.clusters.items():
        network = cluster.network
        forwards = forwards or network.to_hub == "reverse" or network.to_servers == "tunnel"
        refusal = hub_identity_refusal(name, network.to_hub, internal_ssl)
        if refusal is not None:
            line = site.key("clusters", name, "network", "to_hub")[1]
            findings.append(Finding("error", f"{refusal} (the hub refuses to start servers there; give --internal-ssl "
                                             "if jupyterhub_config.py has it)", line))
    if forwards:
        from ..transports.sshpool import descriptor_limit_problem  # paramiko: only for sites that forward over SSH

        problem = descriptor_limit_problem()
        if problem is not None:
            findings.append(Finding("warning", f"tunnels and reverse forwards: {problem} (this is the limit of the "
                                               "process running the check: run it as the hub runs)"))
    return findings


# --- asking the schedulers (check --live) ----------------------------------------------------

_SLURM_USER_RE = re.compile(r"^\s*SlurmUser\s*=\s*\S*?\((\d+)\)\s*$", re.MULTILINE)

PRIVATE_DATA_JOBS = ("Slurm PrivateData=jobs: the hub's account sees only its own jobs; run the hub's status "
                     "queries as SlurmUser or an operator, or remove jobs from PrivateData")


def slurm_private_data_jobs(text: str) -> bool:
    """Whether ``scontrol show config`` output says users see only their own jobs."""
    return slurm.parse_private_data(text)


def slurm_private_data_finding(text: str, uid: int) -> Finding | None:
    """PrivateData=jobs is an error unless ``uid`` (the account running the check, normally the
    hub's) is root or SlurmUser, which see every job anyway; then a warning, for the day the hub
    runs as another account."""
    if not slurm_private_data_jobs(text):
        return None
    slurm_user = _SLURM_USER_RE.search(text)
    exempt = uid == 0 or (slurm_user is not None and int(slurm_user.group(1)) == uid)
    if exempt:
        seen_by = _account_name(uid)
        return Finding("warning", f"{PRIVATE_DATA_JOBS} ({seen_by} sees every job, another account would not)")
    return Finding("error", PRIVATE_DATA_JOBS)


PRIVATE_DATA_MISSING = ("Slurm PrivateData does not include jobs: every user can list every other user's jobs (their "
                        "names, nodes and times, and so who runs a server where); set PrivateData=jobs in slurm.conf "
                        "(the hub, as root or SlurmUser, still sees every job)")


async def live_findings(site: SiteConfig, probe_user: str | None = None, probe: bool = True) -> list[Finding]:
    """Ask each cluster's scheduler, as the hub: does it answer, are the configured queues there
    and up with limits within the scheduler's, which queues are not configured (info), (Slurm) may
    the hub see every job and are users' jobs hidden from each other; can the submit mode's commands
    run (as ``probe_user``, if given); and, with ``probe`` and a ``probe_user``, does each profile
    environment load where its jobs run (a probe job each, run at the same time)."""
    findings: list[Finding] = []
    for name in site.clusters:
        findings += await _cluster_findings(site, name, probe_user)
    if not probe:
        findings.append(Finding("info", "environments not probed (--no-probe)"))
    elif probe_user is None:
        findings.append(Finding("info", "environments not probed: give --probe-user USER to run a probe job per "
                                        "profile environment as USER (or --no-probe)"))
    else:
        findings += await environment_findings(site, probe_user)
    return findings


async def _cluster_findings(site: SiteConfig, name: str, probe_user: str | None) -> list[Finding]:
    cluster = site.clusters[name]
    client = client_for(site, name)
    findings = _command_findings(site, name, client)
    try:
        queues = {queue.name: queue for queue in await client.queue_info()}
    except (CommandError, ParseError) as error:
        return findings + [_at(site, "error", ("clusters", name),
                               f"the {cluster.scheduler} scheduler does not answer: {error}")]
    for queue_name in cluster.queues:
        queue = queues.get(queue_name)
        at = ("clusters", name, "queues", queue_name)
        if queue is None:
            findings.append(_at(site, "error", at, f"the scheduler has no such queue "
                                                   f"(it has: {', '.join(sorted(queues)) or 'none'})"))
            continue
        if not queue.available:
            findings.append(_at(site, "error", at, "the queue is not up"))
        try:
            limits = client.backend.parse_queue_limits(
                (await client.run(client.backend.queue_limits_argv(queue_name))).stdout)
        except (CommandError, ParseError) as error:
            findings.append(_at(site, "warning", at, f"cannot read the queue's limits: {error}"))
            continue
        findings += queue_limit_findings(site, name, queue_name, limits)
    findings += await allocation_findings(site, name, client, probe_user)
    unconfigured = sorted(set(queues) - set(cluster.queues))
    if unconfigured:
        findings.append(_at(site, "info", ("clusters", name, "queues"),
                            f"queues not in the site config: {', '.join(unconfigured)}"))
    private_data_argv = client.backend.private_data_argv()
    if private_data_argv is not None:
        try:
            config = (await client.run(private_data_argv)).stdout
        except CommandError as error:
            findings.append(_at(site, "warning", ("clusters", name), f"cannot read the Slurm configuration: {error}"))
        else:
            private_data = slurm_private_data_finding(config, os.geteuid())
            if private_data is not None:
                findings.append(_at(site, private_data.level, ("clusters", name), private_data.message))
            else:
                findings.append(_at(site, "warning", ("clusters", name), PRIVATE_DATA_MISSING))
    if probe_user is not None:
        findings += await _as_user_findings(site, name, client, probe_user)
    if not any(finding.level == "error" for finding in findings):
        findings.append(Finding("info", f"clusters.{name}: {cluster.scheduler} answers; queues "
                                        f"{', '.join(cluster.queues)} are up"))
    return findings


# --- accounts, QoS and reservations ---------------------------------------------------------

# At most this many users of a profile (its unix_users: and the members of its unix_groups:) are asked about.
MAX_USERS_ASKED = 50


async def allocation_findings(site: SiteConfig, cluster_name: str, client: ClusterClient,
                              probe_user: str | None) -> list[Finding]:
    """Every account/QoS/reservation a profile of the cluster names must exist there (errors at the
    key), a pinned reservation that is not open yet is reported with its start (info), and each unix
    account a profile is open to (its ``unix_users``, the members of its ``unix_groups``, and
    ``probe_user`` if the profile admits it) must be allowed the names it cannot change (errors) and at least one of a list
    (errors; some of a list: warning), and must have an account where it comes from the scheduler."""
    profiles = [(index, profile) for index, profile in enumerate(site.profiles) if profile.cluster == cluster_name
                and any(profile.allocation(field).choices or profile.allocation(field).from_scheduler
                        for field in ALLOCATION_FIELDS)]
    if not profiles:
        return []
    try:
        known = await client.cluster_allocations()
    except (CommandError, ParseError) as error:
        return [_at(site, "warning", ("clusters", cluster_name),
                    f"cannot read the scheduler's accounts and reservations: {error}")]
    existing = _names(known)
    findings: list[Finding] = []
    for index, profile in profiles:
        findings += _named_allocation_findings(site, index, profile, known, existing)
    asked: dict[str, Allocations | Exception] = {}
    for index, profile in profiles:
        users, more = _profile_users(profile, probe_user)
        if more:
            findings.append(_at(site, "info", ("profiles", index), f"allocations checked for {len(users)} of "
                                                                   f"{len(users) + more} users"))
        for user in users:
            if user not in asked:
                try:
                    asked[user] = await user_allocations(client, user)
                except AllocationsUnavailable as error:
                    asked[user] = error
            answer = asked[user]
            if isinstance(answer, Exception):
                findings.append(_at(site, "warning", ("profiles", index), str(answer)))
                continue
            findings += _user_allocation_findings(site, index, profile, user, answer, existing)
    return findings


def _names(allocations: Allocations) -> dict[str, tuple[str, ...]]:
    """Field -> the names ``allocations`` has for it."""
    return {"account": allocations.accounts, "qos": allocations.qos,
            "reservation": tuple(reservation.name for reservation in allocations.reservations)}


def _named_allocation_findings(site: SiteConfig, index: int, profile: Profile, known: Allocations,
                               existing: dict[str, tuple[str, ...]]) -> list[Finding]:
    findings = []
    scheduler = site.clusters[profile.cluster].scheduler
    for field in ALLOCATION_FIELDS:
        at = ("profiles", index, field)
        for name in profile.allocation(field).choices:
            if name not in existing[field]:
                findings.append(_at(site, "error", at, f"the scheduler has no {allocation_word(field, scheduler)} "
                                                       f"{name!r} (it has: {_some(existing[field])})"))
            elif field == "reservation":
                trust, pinned = _pinned_trust(site, profile, name, known)
                if trust is not None:
                    findings.append(_at(site, trust.level, at, trust.message))
                if pinned is not None and not pinned.active:
                    start = pinned.start
                    findings.append(_at(site, "info", at, f"reservation {name!r} is not open yet"
                                                          + (f"; it opens {start:%Y-%m-%d %H:%M}" if start else "")))
    accounts, qos_names = profile.allocation("account").choices, profile.allocation("qos").choices
    for account in accounts:
        allowed = known.qos_by_account.get(account)
        for qos in qos_names:
            if allowed and qos in known.qos and qos not in allowed:
                findings.append(_at(site, "error" if len(accounts) == 1 and len(qos_names) == 1 else "warning",
                                    ("profiles", index, "qos"),
                                    f"no association of account {account!r} allows QoS {qos!r} "
                                    f"(it allows: {', '.join(allowed)})"))
    return findings


def _pinned_trust(site: SiteConfig, profile: Profile, name: str,
                  known: Allocations) -> tuple[Finding | None, Reservation | None]:
    """(a finding, the reservation hpchub uses) for a reservation a profile names: it must be one made by
    the scheduler's admins or the site's reservation owners (options.made_by_trusted). None or several
    is an error (hpchub refuses every spawn), users' namesakes beside it a warning (hpchub ignores them;
    someone may be trying to catch the profile's jobs)."""
    cluster = site.clusters[profile.cluster]
    named = [reservation for reservation in known.reservations if reservation.name == name]
    trusted = [reservation for reservation in named if made_by_trusted(reservation, known, cluster)]
    others = ", ".join(f"{reservation.reservation_id} (made by {reservation.owner})" for reservation in named
                       if reservation not in trusted)
    if not trusted:
        return Finding("error", f"reservation {name!r} was made by an account that is neither a Grid Engine manager "
                                f"or operator nor in clusters.{profile.cluster}.sge.reservation_owners ({others}): "
                                "hpchub refuses every spawn of this profile"), None
    if len(trusted) > 1:
        ids = ", ".join(reservation.reservation_id for reservation in trusted)
        return Finding("error", f"{len(trusted)} reservations are named {name!r} ({ids}): hpchub cannot tell which "
                                "is meant and refuses every spawn of this profile"), None
    if others:
        return Finding("warning", f"reservation {name!r} has namesakes made by users: {others}; hpchub ignores them "
                                  f"and uses {trusted[0].reservation_id} (someone may be trying to catch this "
                                  "profile's jobs)"), trusted[0]
    return None, trusted[0]


def _user_allocation_findings(site: SiteConfig, index: int, profile: Profile, user: str,
                              allocations: Allocations, existing: dict[str, tuple[str, ...]]) -> list[Finding]:
    findings = []
    if profile.allocation("account").from_scheduler and not allocations.accounts:
        what = allocation_word("account", site.clusters[profile.cluster].scheduler)
        findings.append(_at(site, "error", ("profiles", index, "account"),
                            f"{user} has no {what} on the scheduler: hpchub refuses every spawn of theirs"))
    allowed = _names(allocations)
    for field in ALLOCATION_FIELDS:
        # A name the scheduler lacks is reported once (above), not once per user.
        choices = [name for name in profile.allocation(field).choices if name in existing[field]]
        missing = [name for name in choices if name not in allowed[field]]
        if not missing:
            continue
        level: Level = "error" if len(missing) == len(choices) else "warning"
        usable = [name for name in choices if name not in missing]
        findings.append(_at(site, level, ("profiles", index, field),
                            f"{user} may not use {', '.join(missing)}"
                            + (f" (only {', '.join(usable)})" if usable else
                               ", so the scheduler refuses every job of theirs with this profile")))
    return findings


def _profile_users(profile: Profile, probe_user: str | None) -> tuple[list[str], int]:
    """(the unix accounts to ask about, how many more there are): ``unix_users``, the members of
    ``unix_groups`` as the group database lists them, and ``probe_user`` when the profile admits that
    account. ``hub_users``/``hub_groups`` are hub names: which accounts they run as only the hub knows."""
    names = list(profile.unix_users)
    for group in profile.unix_groups:
        try:
            names += grp.getgrnam(group).gr_mem
        except KeyError:
            pass
    if probe_user is not None and profile_allows(profile, Identity(unix_user=probe_user,
                                                                   unix_groups=frozenset(unix_groups(probe_user)))):
        names.append(probe_user)
    unique = list(dict.fromkeys(names))
    return unique[:MAX_USERS_ASKED], max(0, len(unique) - MAX_USERS_ASKED)


def _some(names: Sequence[str], most: int = 12) -> str:
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# --- a queue's limits against the scheduler's ------------------------------------------------

def queue_limit_findings(site: SiteConfig, cluster_name: str, queue_name: str,
                         limits: SchedulerQueueLimits) -> list[Finding]:
    """Errors for every limit of ``clusters.C.queues.Q`` above what the scheduler lets one job have
    there: the form would offer what the scheduler refuses (or holds forever)."""
    cluster = site.clusters[cluster_name]
    queue = cluster.queues[queue_name]
    at = ("clusters", cluster_name, "queues", queue_name)
    findings: list[Finding] = []

    def above(key: str, value: object, limit: object, text: str, what: str = "") -> None:
        findings.append(_at(site, "error", at + (key,), (
            f"{value} is above the scheduler's limit for queue {queue_name} ({text}){what}: users would be offered "
            "jobs the scheduler refuses or never starts; lower it, or raise the queue's limit")))

    if queue.max_walltime is not None and limits.walltime_seconds is not None \
            and queue.max_walltime.seconds > limits.walltime_seconds:
        above("max_walltime", queue.max_walltime, limits.walltime_seconds, limits.texts.get("walltime", ""))
    if queue.max_cores is not None and limits.cores_per_node is not None and queue.max_cores > limits.cores_per_node:
        above("max_cores", queue.max_cores, limits.cores_per_node, limits.texts.get("cores", ""))
    if queue.max_memory is not None:
        megabytes = queue.max_memory.megabytes
        if limits.memory_mb_per_node is not None and megabytes > limits.memory_mb_per_node:
            above("max_memory", queue.max_memory, limits.memory_mb_per_node, limits.texts.get("memory", ""))
        if limits.memory_mb_per_slot is not None:
            # The least cores a job can have is one: all of max_memory on one slot.
            per_slot = backend_for(cluster.scheduler).memory_per_request_mb(megabytes, 1, cluster.sge.memory_per_slot)
            if per_slot > limits.memory_mb_per_slot:
                above("max_memory", queue.max_memory, limits.memory_mb_per_slot, limits.texts.get("memory", ""),
                      f"; a one-core job with it asks {per_slot}M per slot")
    if queue.max_nodes is not None:
        if limits.nodes is not None and queue.max_nodes > limits.nodes:
            above("max_nodes", queue.max_nodes, limits.nodes, limits.texts.get("nodes", "") or "one host per job")
        elif limits.nodes_total is not None and queue.max_nodes > limits.nodes_total:
            above("max_nodes", queue.max_nodes, limits.nodes_total, limits.texts.get("nodes_total", ""),
                  ", the nodes it has")
    return findings


# --- the commands of the submit mode ---------------------------------------------------------

def _command_findings(site: SiteConfig, name: str, client: ClusterClient) -> list[Finding]:
    """Where the hub runs the commands itself (via sudo or local): sudo, hpchub-job and the
    scheduler's commands must be there. Over SSH the login node has them (checked as the user)."""
    spec = client.spec
    if spec.via == "ssh":
        return []
    findings: list[Finding] = []
    at = ("clusters", name, "submit", "via")
    if spec.via == "sudo" and shutil.which(spec.sudo_command) is None:
        findings.append(_at(site, "error", at, f"sudo: {spec.sudo_command!r} is not found, so no job can be "
                                               "submitted as its user; install sudo or set submit.sudo_command"))
    if shutil.which(spec.jobfiles) is None:
        findings.append(_at(site, "error", at, f"{spec.jobfiles} is not found next to the hub's Python nor on the "
                                               "PATH: install hpchub into the hub's environment"))
    backend = client.backend
    commands = {backend.submit_argv()[0], backend.cancel_argv(["1"])[0], backend.status_argv()[0]}
    for command in sorted(commands):
        where = spec.commands_dir if spec.commands_dir and command != backend.submit_argv()[0] else None
        if shutil.which(command, path=where) is None:
            findings.append(_at(site, "error", at, f"the scheduler command {command} is not found"
                                                   f"{' in ' + where if where else ' on the PATH'}"))
    return findings


PROBE_KEY = "hpchub-check-probe"  # a job directory no job has: removing it changes nothing


async def _as_user_findings(site: SiteConfig, name: str, client: ClusterClient, user: str) -> list[Finding]:
    """hpchub-job as ``user`` through the submit mode (sudo -n -u USER, or ssh as USER)."""
    at = ("clusters", name, "submit", "via")
    try:
        await client.run([client.spec.jobfiles, "remove", PROBE_KEY], user=user)
    except AccountRefused as error:
        return [_at(site, "error", at, f"probe user: {error}")]
    except (CommandError, OSError) as error:
        return [_at(site, "error", at, f"cannot run {client.spec.jobfiles} as {user} through {client.spec.via}: "
                                       f"{error}; check the sudoers rule (or the login node's keys and sudoers)")]
    return [_at(site, "info", at, f"{client.spec.jobfiles} runs as {user} through {client.spec.via}")]


# --- the environments, where the jobs run ----------------------------------------------------

async def environment_findings(site: SiteConfig, user: str) -> list[Finding]:
    """One probe job (hpchub.admin.doctor) as ``user`` per profile environment and queue (the first profile
    of each), all at once: does the environment load, has it JupyterHub's singleuser server and
    jupyter_server in the supported range, can the hub reach a port on the node."""
    from .doctor import (
        EXIT_ENVIRONMENT,
        EXIT_JUPYTERHUB,
        EXIT_NO_REPORT,
        EXIT_NODE_UNREACHABLE,
        EXIT_NOT_STARTED,
        diagnose,
        record_kernels,
    )

    chosen: dict[str, int] = {}
    for index, profile in enumerate(site.profiles):
        cluster = site.clusters[profile.cluster]
        environment = cluster.environment.extended_by(profile.environment)
        chosen.setdefault(json.dumps([profile.cluster, profile.queue, environment.model_dump()], sort_keys=True,
                                     default=str), index)
    indexes = list(chosen.values())
    outcomes = await asyncio.gather(*(diagnose(site, site.profiles[index].slug, user, None) for index in indexes),
                                    return_exceptions=True)
    findings: list[Finding] = []
    for index, outcome in zip(indexes, outcomes, strict=True):
        profile = site.profiles[index]
        environment_at = (("profiles", index, "environment") if profile.environment is not None
                          else ("clusters", profile.cluster, "environment"))
        if isinstance(outcome, BaseException):
            findings.append(_at(site, "warning", ("profiles", index), f"the probe job could not run: {outcome}"))
            continue
        if not outcome.problems:
            findings.append(_at(site, "info", environment_at, f"loads on {outcome.node} (profile {profile.slug}, "
                                                              f"probe job {outcome.job_id} as {user})"))
        if outcome.kernels is not None:
            names = ", ".join(kernel.display_name for kernel in outcome.kernels) or "none"
            recorded = record_kernels(site, outcome)
            findings.append(_at(site, "info", environment_at, f"kernels: {names}" + (f" ({recorded})" if recorded
                                                                                      else "")))
        for problem in outcome.problems:
            if problem.code in (EXIT_ENVIRONMENT, EXIT_JUPYTERHUB):
                findings.append(_at(site, "error", environment_at, problem.message))
            elif problem.code == EXIT_NODE_UNREACHABLE:
                findings.append(_at(site, "error", ("clusters", profile.cluster, "network"), problem.message))
            elif problem.code in (EXIT_NOT_STARTED, EXIT_NO_REPORT):
                findings.append(_at(site, "warning", ("profiles", index), f"not probed: {problem.message}"))
            else:
                findings.append(_at(site, "error", ("profiles", index), problem.message))
    return findings
