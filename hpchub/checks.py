"""What ``hpchub check`` looks at beyond the schema.

Without a scheduler: who could change what jobs run (the site config and the templates must be
writable by their owner only, and owned by root or the account running the check), and whether
jobs would run as the hub's own account (``submit.via: local``). With ``--live``: whether each
cluster's scheduler answers, has every configured queue up, and lets the hub see every job.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .cluster import client_for
from .config import SiteConfig
from .runner import CommandError
from .schedulers import ParseError, slurm

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level  # error: check exits 1; warning and info: reported, exit 0
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def site_findings(site: SiteConfig) -> list[Finding]:
    """Everything ``hpchub check`` reports about a valid site config without asking a scheduler."""
    return _file_findings(site) + _submission_findings(site)


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


async def live_findings(site: SiteConfig) -> list[Finding]:
    """Ask each cluster's scheduler, as the hub: does it answer, are the configured queues there
    and up, which queues are not configured (info), and (Slurm) may the hub see every job."""
    findings: list[Finding] = []
    for name in site.clusters:
        findings += await _cluster_findings(site, name)
    return findings


async def _cluster_findings(site: SiteConfig, name: str) -> list[Finding]:
    cluster = site.clusters[name]
    client = client_for(site, name)
    try:
        queues = {queue.name: queue for queue in await client.queue_info()}
    except (CommandError, ParseError) as error:
        return [Finding("error", f"clusters.{name}: the {cluster.scheduler} scheduler does not answer: {error}")]
    findings: list[Finding] = []
    for queue_name in cluster.queues:
        queue = queues.get(queue_name)
        if queue is None:
            findings.append(Finding("error", f"clusters.{name}.queues.{queue_name}: the scheduler has no such queue "
                                             f"(it has: {', '.join(sorted(queues)) or 'none'})"))
        elif not queue.available:
            findings.append(Finding("error", f"clusters.{name}.queues.{queue_name}: the queue is not up"))
    unconfigured = sorted(set(queues) - set(cluster.queues))
    if unconfigured:
        findings.append(Finding("info", f"clusters.{name}: queues not in the site config: {', '.join(unconfigured)}"))
    private_data_argv = client.backend.private_data_argv()
    if private_data_argv is not None:
        try:
            config = (await client.run(private_data_argv)).stdout
        except CommandError as error:
            findings.append(Finding("warning", f"clusters.{name}: cannot read the Slurm configuration: {error}"))
        else:
            private_data = slurm_private_data_finding(config, os.geteuid())
            if private_data is not None:
                findings.append(Finding(private_data.level, f"clusters.{name}: {private_data.message}"))
    if not any(finding.level == "error" for finding in findings):
        findings.append(Finding("info", f"clusters.{name}: {cluster.scheduler} answers; queues "
                                        f"{', '.join(cluster.queues)} are up"))
    return findings
