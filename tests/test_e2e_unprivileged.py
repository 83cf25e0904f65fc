"""End to end with the hub as an unprivileged account on the real local Slurm: the sudoers rule
in the docs (docs/production.md, "Security: who runs what"), read from there and installed as it is, is all the
hub needs to spawn, reach, fail and stop users' servers, and it lets the hub do nothing else."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.hub import Hub, jobs_of, spawn, spawn_failure_message, stop
from helpers.profiles import broken_profile, local_site_text
from helpers.support import REPO, user_readable

from hpchub.schedulers import JobState

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

HUB_ACCOUNT = "hpchub-hub"
USERS_GROUP = "hpcusers"
USERS = ("alice", "bob", "carol")
SUDOERS_FILE = Path("/etc/sudoers.d/hpchub-test")  # no '.' in the name: sudo's includedir skips such files
JOBFILES = "/opt/hpchub/venv/bin/hpchub-job"
POLL_INTERVAL = 5

# What this module's servers submitted: (user, job id) and their job logs, so that cleanup
# touches only these (other sessions use the same test users on the same cluster).
SUBMITTED_JOBS: list[tuple[str, str]] = []
WRITTEN_LOGS: list[Path] = []


def readme_sudoers_rule() -> str:
    """The one sudoers line of the docs' section "Security: who runs what" (docs/production.md)."""
    readme = (REPO / "docs" / "production.md").read_text()
    section = readme.split("\n## Security: who runs what\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\n(.*?)\n```$", section, re.M | re.S)
    assert block, "no code block in docs/production.md's section 'Security: who runs what'"
    rule = block.group(1).strip()
    assert "\n" not in rule and rule.startswith("jupyterhub "), f"not the one-line rule for jupyterhub: {rule!r}"
    return rule


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)


def run_as_hub_account(argv: list[str], input: str = "") -> subprocess.CompletedProcess:
    """``argv`` run by the hub's account, as the hub runs its commands (no tty, no password)."""
    account = pwd.getpwnam(HUB_ACCOUNT)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "USER": HUB_ACCOUNT, "LOGNAME": HUB_ACCOUNT}
    return run(argv, input=input, cwd="/", env=env, user=account.pw_uid, group=account.pw_gid, extra_groups=[])


def exists(database: str, name: str) -> bool:
    return run(["getent", database, name]).returncode == 0


@pytest.fixture(scope="module")
def hub_account(slurm_cluster) -> Iterator[str]:
    """The hub's system account, the users' group and the documented sudoers rule for them; whatever
    was added here is removed at the end."""
    created_account = created_group = False
    added_members: list[str] = []
    try:
        if not exists("passwd", HUB_ACCOUNT):
            run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", HUB_ACCOUNT], check=True)
            created_account = True
        if not exists("group", USERS_GROUP):
            run(["groupadd", USERS_GROUP], check=True)
            created_group = True
        for user in USERS:
            if user not in grp.getgrnam(USERS_GROUP).gr_mem:
                run(["gpasswd", "-a", user, USERS_GROUP], check=True)
                added_members.append(user)
        rule = re.sub(r"^jupyterhub\b", HUB_ACCOUNT, readme_sudoers_rule())
        staged = SUDOERS_FILE.with_name(".hpchub-test.new")  # a name with '.' is never read by sudo
        staged.write_text(rule + "\n")
        staged.chmod(0o440)
        checked = run(["visudo", "-cf", str(staged)])
        assert checked.returncode == 0, f"visudo refused the documented rule {rule!r}: {checked.stdout}{checked.stderr}"
        os.replace(staged, SUDOERS_FILE)
        assert run(["visudo", "-c"]).returncode == 0
        yield HUB_ACCOUNT
    finally:
        SUDOERS_FILE.with_name(".hpchub-test.new").unlink(missing_ok=True)
        SUDOERS_FILE.unlink(missing_ok=True)
        for user in added_members:
            run(["gpasswd", "-d", user, USERS_GROUP])
        if created_group:
            run(["groupdel", USERS_GROUP])
        if created_account:
            run(["userdel", HUB_ACCOUNT])
        print(f"hub account: created={created_account}; group {USERS_GROUP}: created={created_group}, "
              f"members added={added_members}")


@pytest.fixture(scope="module")
def hub(hub_account: str) -> Iterator[Hub]:
    site_text = local_site_text("slurm", broken_profile("slurm"))
    site = user_readable("unprivileged-hub.yaml", site_text)  # the hub account and the jobs read it
    state = Path(tempfile.mkdtemp(prefix="hpchub-unprivileged-hub-"))  # pytest's tmp dirs are root-only
    hub = Hub(site, state, poll_interval=POLL_INTERVAL, user=hub_account)
    try:
        hub.start()
        yield hub
    finally:
        for user in USERS:
            if hub.hub is not None:
                hub.api("DELETE", f"/users/{user}/server")
        hub.close()
        for user, job_id in SUBMITTED_JOBS:  # whatever a failed test left running
            run(["sudo", "-n", "-u", user, "scancel", job_id])
        for log in WRITTEN_LOGS:
            log.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)


def test_the_hub_runs_as_its_own_account_under_readmes_rule(hub):
    uids = re.search(r"^Uid:\s+(.*)$", Path(f"/proc/{hub.hub.pid}/status").read_text(), re.M).group(1).split()
    assert set(uids) == {str(pwd.getpwnam(HUB_ACCOUNT).pw_uid)}, f"hub uids (real, effective, saved, fs): {uids}"
    assert SUDOERS_FILE.read_text() == readme_sudoers_rule().replace("jupyterhub", HUB_ACCOUNT, 1) + "\n"


def test_spawn_reach_and_stop_a_server_as_the_users_own_job(hub, client):
    server = spawn(hub, "alice", {"profile": "small"})
    state = server["state"]
    job_id, job_key = state["job_id"], state["job_key"]
    SUBMITTED_JOBS.append(("alice", job_id))
    WRITTEN_LOGS.append(Path(state["job_log"]))
    jobs = jobs_of(client, "alice")
    assert job_id in jobs and jobs[job_id].user == "alice" and jobs[job_id].state is JobState.RUNNING
    assert run(["squeue", "-h", "-j", job_id, "-o", "%u"]).stdout.strip() == "alice"
    job_dir = Path(f"/home/alice/.hpchub/jobs/{job_key}")
    assert job_dir.owner() == "alice" and (job_dir / "env").owner() == "alice"
    assert hub.get_user_url("alice", "api/status").status_code == 200
    stop(hub, "alice")
    assert job_id not in jobs_of(client, "alice")
    assert not job_dir.exists()


def test_a_failing_spawn_shows_the_jobs_log_tail(hub):
    message = spawn_failure_message(hub, "alice", {"profile": "broken"})
    found = re.search(r"Job (\d+):.*?Last lines of (\S+):", message, re.S)
    assert found, f"no log tail in the message:\n{message}\nhub log:\n{hub.log_tail()}"
    SUBMITTED_JOBS.append(("alice", found.group(1)))
    WRITTEN_LOGS.append(Path(found.group(2)))
    tail = message.split("Last lines of", 1)[1]  # read from alice's log by `hpchub-job tail`, as alice
    assert f"job {found.group(1)} for alice started" in tail and "module" in tail
    hub.wait_for_server("alice", ready=False, timeout=10)


def test_the_rule_lets_the_hub_account_cancel_as_a_user(hub_account):
    # The control for the refusals below: the same account, sudo and flags, a command the rule names.
    allowed = run_as_hub_account(["sudo", "-n", "-u", "bob", "--", "/usr/bin/scancel",
                                  "--name=hpchub-unprivileged-test-no-such-job"])
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("argv", [
    ["sudo", "-n", "-u", "alice", "tee", "{scratch}/written"],
    ["sudo", "-n", "-u", "alice", "rm", "-f", "{scratch}/victim"],
    ["sudo", "-n", "-u", "alice", "/bin/sh", "-c", "id"],
    ["sudo", "-n", "-u", "alice", "/usr/bin/sbatch", "--test-only", "--wrap", "id"],  # submits nothing if let through
    ["sudo", "-n", "-u", "root", JOBFILES, "clean", "0"],
    ["sudo", "-n", "-u", HUB_ACCOUNT, JOBFILES, "clean", "0"],
], ids=["tee", "rm", "shell", "sbatch", "root-helper", "hub-helper"])
def test_the_rule_lets_the_hub_account_do_nothing_else(hub_account, argv):
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-unprivileged-"))
    try:
        shutil.chown(scratch, "alice")  # alice could write here: only sudo stands in the way
        victim = scratch / "victim"
        victim.write_text("keep me\n")
        shutil.chown(victim, "alice")
        refused = run_as_hub_account([part.replace("{scratch}", str(scratch)) for part in argv], input="data\n")
        assert refused.returncode != 0, refused.stdout
        assert re.search(r"a password is required|not allowed to (execute|run)", refused.stderr), refused.stderr
        assert victim.exists() and not (scratch / "written").exists()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_hub_was_denied_nothing(hub):
    """After the spawns above: no sudo refusal and no file the hub account could not open."""
    log = hub.hub_log.read_text(errors="replace")
    denied = [line for line in log.splitlines()
              if re.search(r"Permission denied|password is required|not allowed to|PermissionError", line)]
    assert not denied, "\n".join(denied)
