"""The SSH login node of tests/clusters/login.sh works as a hub outside the cluster needs it: with
the system ssh client (not paramiko) a user submits, queries and cancels jobs on the real Slurm
(partition multi, compute nodes in their own namespaces) and Grid Engine; a wrong host key is
refused before anything runs; the service account's sudo is limited to the hub's commands; and
the sshd log records each login (the issue's "one SSH login" tests count these lines)."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.slurm, pytest.mark.sge,
              pytest.mark.usefixtures("slurm_cluster", "sge_cluster")]

COMPUTE_NODES = {"node1", "node2", "node3"}


def ssh(login_node, user: str, *command: str, known_hosts: Path | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(login_node.ssh_argv(user, *command, known_hosts=known_hosts),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_commands_run_on_the_login_node_as_the_user(login_node):
    result = ssh(login_node, "alice", "hostname", ";", "id", "-un", ";", "squeue", "--noheader", "-u", "alice")
    assert result.returncode == 0, result.stderr
    hostname, user = result.stdout.splitlines()[:2]
    assert (hostname, user) == (login_node.hostname, "alice")


def test_sbatch_from_the_login_node_runs_on_a_compute_node_and_scancel_stops_it(login_node):
    result = ssh(login_node, "alice", "sbatch", "--parsable", "-p", "multi", "-N1", "-t", "2",
                 "-J", "hpchub-login-smoke", "-o", "/dev/null", "--wrap", "'sleep 120'")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    assert job_id.isdigit(), result.stdout
    try:
        def running_on() -> str | None:
            line = subprocess.run(["squeue", "--noheader", "-j", job_id, "-o", "%T %N %u %P"],
                                  capture_output=True, text=True).stdout.split()
            return line[1] if line[:1] == ["RUNNING"] else None

        node = wait_for(running_on, 60, f"job {job_id} to run")
        assert node in COMPUTE_NODES
        owner = subprocess.run(["squeue", "--noheader", "-j", job_id, "-o", "%u %P"],
                               capture_output=True, text=True).stdout.split()
        assert owner == ["alice", "multi"]
        cancel = ssh(login_node, "alice", "scancel", job_id)
        assert cancel.returncode == 0, cancel.stderr

        def gone_or_cancelled() -> bool:
            state = subprocess.run(["squeue", "--noheader", "-j", job_id, "-o", "%T"],
                                   capture_output=True, text=True).stdout.strip()
            return state in ("", "CANCELLED", "COMPLETING")

        wait_for(gone_or_cancelled, 30, f"job {job_id} to be cancelled")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)  # our own job only, if a check failed


def test_qsub_qstat_qdel_from_the_login_node(login_node):
    result = ssh(login_node, "alice", "qsub", "-terse", "-b", "y", "-q", "short.q", "-N", "hpchub-login-smoke",
                 "-o", "/dev/null", "-e", "/dev/null", "/bin/sleep", "120")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.isdigit(), result.stdout
    try:
        listed = ssh(login_node, "alice", "qstat", "-u", "alice")
        assert listed.returncode == 0, listed.stderr
        assert re.search(rf"^\s*{job_id}\s", listed.stdout, re.M), listed.stdout
        deleted = ssh(login_node, "alice", "qdel", job_id)
        assert deleted.returncode == 0, deleted.stderr
        wait_for(lambda: subprocess.run(["qstat", "-j", job_id], capture_output=True).returncode != 0,
                 30, f"SGE job {job_id} to be deleted")
    finally:
        subprocess.run(["qdel", job_id], capture_output=True)


@pytest.mark.parametrize("which", ["wrong", "empty"])
def test_an_unknown_or_changed_host_key_is_refused_before_anything_runs(login_node, tmp_path, which):
    known_hosts = login_node.wrong_known_hosts
    if which == "empty":
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
    marker = Path("/tmp") / f"hpchub-login-refused-{uuid.uuid4().hex}"
    offset = login_node.log_offset()
    result = ssh(login_node, "alice", "touch", str(marker), known_hosts=known_hosts)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert not marker.exists()
    assert login_node.accepted_logins(offset) == 0


def test_service_account_sudo_is_limited_to_the_hub_commands(login_node):
    svc = login_node.service_account
    allowed = ssh(login_node, svc, "sudo", "-n", "-u", "bob", "/usr/bin/scancel", "--help")
    assert allowed.returncode == 0, allowed.stderr
    # hpchub-job itself answers (its usage, exit 2), not sudo.
    helper = ssh(login_node, svc, "sudo", "-n", "-u", "bob", "/opt/hpchub/venv/bin/hpchub-job")
    assert helper.returncode == 2 and "hpchub-job: usage" in helper.stderr, helper.stderr
    for command in (["-u", "bob", "/bin/id"], ["-u", "root", "/usr/bin/scancel", "--help"],
                    ["-u", "bob", "/usr/bin/sbatch", "--version"]):
        refused = ssh(login_node, svc, "sudo", "-n", *command)
        assert refused.returncode == 1, (command, refused.stdout)
        assert "password is required" in refused.stderr or "not allowed" in refused.stderr, refused.stderr


def test_sshd_log_counts_each_login(login_node):
    offset = login_node.log_offset()
    for _ in range(2):
        assert ssh(login_node, "carol", "true").returncode == 0
    assert login_node.accepted_logins(offset, user="carol") == 2
    assert login_node.accepted_logins(offset) == 2


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _pid_of(cmdline: str) -> int | None:
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip() == cmdline.encode():
                return int(proc.name)
        except OSError:
            continue
    return None


def test_session_pids_find_an_open_connection(login_node):
    # A sleep no other test runs marks this connection: its parent is the session, whose parent
    # is the connection's monitor (other connections of bob's may be open meanwhile).
    marker = f"sleep 37.{uuid.uuid4().int % 10**6:06d}"
    held = subprocess.Popen(login_node.ssh_argv("bob", *marker.split()), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    sleeper = None
    try:
        sleeper = wait_for(lambda: _pid_of(marker), 10, "bob's command on the login node")
        session = _parent(sleeper)
        ours = [session, _parent(session)]
        assert set(ours) <= set(login_node.session_pids("bob"))
        # The connection's monitor and session, as a crash would end them: the client sees it dropped.
        subprocess.run(["kill", "-KILL", *map(str, ours)], check=True)
        assert held.wait(timeout=30) == 255
    finally:
        held.kill()
        held.wait()
        if sleeper is not None:  # the command outlives its killed session (reparented): ours to end
            subprocess.run(["kill", str(sleeper)], capture_output=True)
    wait_for(lambda: not set(ours) & set(login_node.session_pids("bob")), 10, "bob's session to end")


def test_cut_makes_the_login_node_unreachable_until_mended(login_node):
    subprocess.run(["bash", str(login_node.script), "cut"], check=True)
    try:
        argv = login_node.ssh_argv("alice", "true")
        argv[argv.index("ConnectTimeout=10")] = "ConnectTimeout=2"
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 255
    finally:
        subprocess.run(["bash", str(login_node.script), "mend"], check=True)
    assert ssh(login_node, "alice", "true").returncode == 0
