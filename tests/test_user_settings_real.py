"""A user's own scheduler settings cannot change a job the hub submits for them, on the real
schedulers and through both ways the hub reaches them: sudo on the hub's host, and SSH to the
login node (tests/clusters/login.sh), whose bash reads the user's ~/.bashrc for every command.

carol's shell exports SBATCH_* variables (sbatch lets them override the script's #SBATCH lines)
and her ~/.sge_request asks Grid Engine for another queue, walltime, memory, slots, name and a
start in 2030 (qsub reads it before the script). Her `held` job must still have exactly the
profile's queue, walltime, core count and name. Her files are restored afterwards; no other test
uses carol's real home."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.jobs import scheduler_output, submit
from helpers.profiles import REAL_SCHEDULER_TEST_PROFILES, local_site_text

from hpchub.core.config import SiteConfig, parse_site_config

USER = "carol"
LOCAL_SUBMIT = "submit: {via: sudo}"
SHELL_SETTINGS = ("export SBATCH_PARTITION=multi SBATCH_TIMELIMIT=7 SBATCH_JOB_NAME=mine SBATCH_MEM_PER_NODE=300M "
                  "SBATCH_REQUEUE=1 SBATCH_EXCLUSIVE=user\n")
SGE_REQUEST = "-q long.q -l h_rt=0:07:00,h_vmem=3G -N mine -pe smp 2 -a 203001010000 -p -100\n"


def _replace(path: Path, text: str | None, owner: pwd.struct_passwd, like: os.stat_result | None = None) -> None:
    """``path`` with ``text`` (None: removed), owned by the user as their own files are (with the
    mode and times of ``like``, when it is given)."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    scratch = path.with_name(path.name + ".hpchub-test")
    scratch.write_text(text)
    os.chown(scratch, owner.pw_uid, owner.pw_gid)
    scratch.chmod(0o644 if like is None else stat.S_IMODE(like.st_mode))
    if like is not None:
        os.utime(scratch, ns=(like.st_atime_ns, like.st_mtime_ns))
    os.replace(scratch, path)


@pytest.fixture
def own_settings() -> Iterator[None]:
    account = pwd.getpwnam(USER)
    home = Path(account.pw_dir)
    bashrc, request = home / ".bashrc", home / ".sge_request"
    saved = {path: (path.read_text(), path.stat()) if path.exists() else (None, None) for path in (bashrc, request)}
    try:
        # First in ~/.bashrc: Debian's returns early for a shell that is not interactive.
        _replace(bashrc, SHELL_SETTINGS + (saved[bashrc][0] or ""), account)
        _replace(request, SGE_REQUEST, account)
        yield
    finally:
        for path, (text, info) in saved.items():
            _replace(path, text, account, like=info)
        shutil.rmtree(home / ".hpchub" / "jobs" / f"hpchub-{USER}-held", ignore_errors=True)  # the job's files


def _site(scheduler: str, transport: str, login_node) -> SiteConfig:
    text = local_site_text(scheduler, REAL_SCHEDULER_TEST_PROFILES[scheduler])
    if transport == "ssh":
        keys = str(login_node.keys[USER]).replace(USER, "{user}")
        text = text.replace(LOCAL_SUBMIT, (
            f"submit: {{via: ssh, host: {login_node.host}, user: '{{user}}', query_user: {login_node.service_account}, "
            f"key: '{keys}', known_hosts: {login_node.known_hosts}, jobfiles: /opt/hpchub/venv/bin/hpchub-job}}"))
    return parse_site_config(text)


@pytest.fixture(params=["sudo", pytest.param("ssh", marks=pytest.mark.ssh)])
def transport(request) -> str:
    return request.param


async def test_the_users_own_settings_do_not_change_a_hub_job(scheduler, transport, request, own_settings, cleanup):
    login_node = request.getfixturevalue("login_node") if transport == "ssh" else None
    site = _site(scheduler, transport, login_node)
    job_id, log = await submit(site, "held", USER, "sleep 300")  # held: it never starts
    cleanup.append((job_id, USER, log))
    if scheduler == "slurm":
        job = dict(re.findall(r"(\S+?)=(\S*)", scheduler_output(["scontrol", "show", "job", job_id, "--oneliner"])))
        assert (job["Partition"], job["TimeLimit"], job["JobName"]) == ("debug", "00:10:00", f"hpchub-{USER}-held")
        assert (job["MinMemoryNode"], job["Requeue"], job["OverSubscribe"]) == ("100M", "0", "OK")
    else:
        shown = scheduler_output(["qstat", "-j", job_id])
        job = dict(line.split(":", 1) for line in shown.splitlines() if ":" in line)
        assert job["hard_queue_list"].strip() == "short.q"
        assert job["job_name"].strip() == f"hpchub-{USER}-held"
        assert set(job["hard resource_list"].strip().split(",")) == {"h_vmem=100M", "h_rt=600"}
        assert "parallel environment" not in job and "execution_time" not in job
        assert job.get("priority", "0").strip() == "0"
