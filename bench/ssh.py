"""The hub off the cluster: hpchub's pooled SSH connection (paramiko) against a new `ssh` process
per command (what batchspawner users get with ``exec_prefix = "ssh login ..."``), in the same run,
through the real login node of tests/clusters/login.sh (sshd at 10.77.0.20 in front of the local
multi-node Slurm).

a) Status polls: ``--polls`` squeue status queries (the shared poller's query, all users' jobs)
   through ``ClusterClient.status()`` of a ``via: ssh`` site in one event loop, interleaved one by
   one with the same squeue argv run as ``ssh hpchub-svc@login -- squeue ...`` (a new process and
   login each time, no local shell: batchspawner adds `sh -c`; the answer parsed the same way) and,
   for reference, run locally (a hub on a submit host). Per poll: latency (median, p90) and CPU
   seconds of this process plus its children; and the SSH logins each made (``Accepted publickey``
   lines in the sshd log during its polls).
b) Spawn to ready: a real JupyterHub and configurable-http-proxy (tests/helpers/hub.py) with the
   local site (``submit: {via: sudo}``) and one submitting over SSH (each user's own account and
   key, the hub's queries as the service account); REST spawns for alice, bob and carol one after
   another, then stops, ``--repeat`` times, the two hubs taking turns. Medians and ratios.

Run as root with Slurm and the login node up (tests/clusters/slurm.sh up; tests/clusters/login.sh up):

    /opt/hpchub/venv/bin/python bench/ssh.py [--polls 50] [--repeat 3] [--skip-spawn]

Writes bench/results/ssh.json. Cancels the jobs it submitted and removes their logs, its hubs' state
and its site configs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.hub import Hub, spawn, stop  # noqa: E402
from helpers.profiles import local_site_text  # noqa: E402
from helpers.support import user_readable  # noqa: E402

from hpchub.core.config import parse_site_config  # noqa: E402
from hpchub.transports.cluster import client_for, scheduler_env, ssh_pool  # noqa: E402

USERS = ("alice", "bob", "carol")
RESULTS = REPO / "bench" / "results" / "ssh.json"

# The login node of tests/clusters/login.sh (fixed paths there; tests/conftest.py's LoginNode).
TEST_STATE = Path(os.environ.get("HPCHUB_TEST_STATE", "/var/lib/hpchub-test"))
LOGIN_HOST = "10.77.0.20"
LOGIN_PORT = 22
SERVICE_ACCOUNT = "hpchub-svc"
KEYS = TEST_STATE / "keys"
KNOWN_HOSTS = TEST_STATE / "known_hosts"
SSHD_LOG = TEST_STATE / "login" / "sshd.log"
LOGIN_SCRIPT = REPO / "tests" / "clusters" / "login.sh"
LOCAL_SUBMIT = "submit: {via: sudo}"


def ssh_site_text() -> str:
    """site-configs/local-slurm.yaml submitting through the login node, as the e2e tests do: each
    user's own account and key, the hub's status and queue queries as the service account."""
    submit = (f"submit: {{via: ssh, host: {LOGIN_HOST}, port: {LOGIN_PORT}, user: '{{user}}', "
              f"key: '{KEYS}/{{user}}.key', known_hosts: {KNOWN_HOSTS}, query_user: {SERVICE_ACCOUNT}, "
              "jobfiles: /opt/hpchub/venv/bin/hpchub-job}")
    text = local_site_text("slurm")
    assert LOCAL_SUBMIT in text
    return text.replace(LOCAL_SUBMIT, submit)


def ssh_argv(account: str, command: list[str]) -> list[str]:
    """The system client as a script would use it: a new connection and login per command, the
    same key, strict host key checking against the same known_hosts, no connection sharing."""
    return ["ssh", "-F", "none", "-n", "-p", str(LOGIN_PORT), "-i", str(KEYS / f"{account}.key"),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
            f"{account}@{LOGIN_HOST}", "--", shlex.join(command)]


def sshd_log_size() -> int:
    return SSHD_LOG.stat().st_size


def accepted_logins(start: int, end: int, account: str) -> int:
    """``Accepted publickey for ACCOUNT`` lines sshd wrote between two offsets of its log."""
    with SSHD_LOG.open("rb") as log:
        log.seek(start)
        text = log.read(end - start).decode(errors="replace")
    return text.count(f"Accepted publickey for {account} ")


def cpu_seconds() -> float:
    """CPU time of this process (all threads: paramiko's included) and of its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(seconds: list[float], cpu: list[float], logins: int) -> dict[str, Any]:
    return {"polls": len(seconds), "median_ms": 1000 * statistics.median(seconds),
            "p90_ms": 1000 * percentile(seconds, 0.9), "first_ms": 1000 * seconds[0],
            "cpu_ms_per_poll": 1000 * sum(cpu) / len(cpu), "sshd_logins": logins,
            "seconds": seconds, "cpu_seconds": cpu}


# -- a) status polls ----------------------------------------------------------------------------
async def measure_polls(polls: int) -> dict[str, Any]:
    client = client_for(parse_site_config(ssh_site_text()), "slurm")
    local_client = client_for(parse_site_config(local_site_text("slurm")), "slurm")
    backend = client.backend
    status_argv = backend.status_argv(None)

    async def pooled() -> int:
        return len(await client.status())

    async def ssh_per_command() -> int:
        process = await asyncio.create_subprocess_exec(
            *ssh_argv(SERVICE_ACCOUNT, status_argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=scheduler_env())
        stdout, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"ssh squeue failed ({process.returncode}): {stderr.decode(errors='replace')}")
        return len(backend.parse_status(stdout.decode()))

    async def local() -> int:
        return len(await local_client.status())

    kinds: dict[str, Callable[[], Awaitable[int]]] = {
        "pooled": pooled, "ssh_per_command": ssh_per_command, "local": local}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    logins = dict.fromkeys(kinds, 0)
    try:
        for _ in range(polls):
            for kind, poll in kinds.items():  # interleaved, so drift and other load hit all alike
                log_before, cpu_before, started = sshd_log_size(), cpu_seconds(), time.perf_counter()
                await poll()
                seconds[kind].append(time.perf_counter() - started)
                cpu[kind].append(cpu_seconds() - cpu_before)
                logins[kind] += accepted_logins(log_before, sshd_log_size(), SERVICE_ACCOUNT)
        pool_logins = ssh_pool().logins(client.ssh_target(None))
    finally:
        await ssh_pool().close()
    results = {kind: summary(seconds[kind], cpu[kind], logins[kind]) for kind in kinds}
    results["pooled"]["pool_logins"] = pool_logins
    return results


def print_polls(results: dict[str, Any]) -> None:
    pooled, forked, local = results["pooled"], results["ssh_per_command"], results["local"]
    n = pooled["polls"]
    print(f"\na) {n} squeue status polls each, interleaved (ms per poll; CPU = this process + children)")
    print(f"{'':34}{'median':>9}{'p90':>9}{'first':>9}{'CPU':>9}{'sshd logins':>13}")
    for label, row in (("hpchub pooled connection", pooled), ("ssh per command", forked),
                       ("local squeue (hub on the cluster)", local)):
        print(f"{label:34}{row['median_ms']:9.1f}{row['p90_ms']:9.1f}{row['first_ms']:9.1f}"
              f"{row['cpu_ms_per_poll']:9.2f}{row['sshd_logins']:13d}")
    print(f"(the pool counted {pooled['pool_logins']} login(s) of its own)")
    print(f"ratios pooled / ssh per command (lower is better): latency {pooled['median_ms'] / forked['median_ms']:.2f} "
          f"(p90 {pooled['p90_ms'] / forked['p90_ms']:.2f}), CPU per poll "
          f"{pooled['cpu_ms_per_poll'] / forked['cpu_ms_per_poll']:.2f}, "
          f"logins {pooled['sshd_logins']}:{forked['sshd_logins']}")


# -- b) spawn to ready --------------------------------------------------------------------------
class SpawnRun:
    """One hub (local or ssh) with the jobs it submitted, so that only those are cancelled."""

    def __init__(self, kind: str, site_text: str, poll_interval: int, scratch: Path):
        self.kind = kind
        self.state = scratch / kind
        self.state.mkdir()
        self.site = user_readable(f"bench-ssh-{kind}-{os.getpid()}.yaml", site_text)
        self.hub = Hub(self.site, self.state, poll_interval=poll_interval)
        self.spawn_seconds: list[float] = []
        self.stop_seconds: list[float] = []
        self.jobs: list[tuple[str, str, str]] = []  # (user, job id, log path)
        self.logins: dict[str, int] = {}

    def round(self) -> None:
        log_before = sshd_log_size()
        for user in USERS:
            started = time.monotonic()
            server = spawn(self.hub, user, {"profile": "small"})
            self.spawn_seconds.append(time.monotonic() - started)
            state = server["state"]
            self.jobs.append((user, state["job_id"], state.get("job_log", "")))
            print(f"  {self.kind:5} {user:5} spawn to ready {self.spawn_seconds[-1]:5.2f} s (job {state['job_id']})",
                  flush=True)
        for user in USERS:
            started = time.monotonic()
            stop(self.hub, user)
            self.stop_seconds.append(time.monotonic() - started)
        log_after = sshd_log_size()
        for account in (*USERS, SERVICE_ACCOUNT):
            self.logins[account] = self.logins.get(account, 0) + accepted_logins(log_before, log_after, account)

    def clean_up(self) -> None:
        """Stop the servers and the hub, cancel what is left of our jobs (by id, as their user),
        remove their logs."""
        for user in USERS:
            try:
                self.hub.api("DELETE", f"/users/{user}/server")
            except Exception:  # the hub may be gone: the jobs are cancelled below
                pass
        self.hub.close()
        for user, job_id, _ in self.jobs:
            subprocess.run(["sudo", "-n", "-u", user, "scancel", job_id], capture_output=True)
        for _, _, log in self.jobs:
            if log:
                Path(log).unlink(missing_ok=True)
        self.site.unlink(missing_ok=True)

    def summary(self) -> dict[str, Any]:
        return {"spawn_median_s": statistics.median(self.spawn_seconds), "spawn_seconds": self.spawn_seconds,
                "stop_median_s": statistics.median(self.stop_seconds), "stop_seconds": self.stop_seconds,
                "sshd_logins": self.logins}


def measure_spawns(repeat: int, poll_interval: int) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-bench-ssh-"))
    runs = [SpawnRun("local", local_site_text("slurm"), poll_interval, scratch),
            SpawnRun("ssh", ssh_site_text(), poll_interval, scratch)]
    try:
        for run in runs:
            run.hub.start()
        for number in range(repeat):
            for run in runs if number % 2 == 0 else reversed(runs):  # taking turns: neither always goes first
                run.round()
    finally:
        for run in runs:
            run.clean_up()
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            runs[0].site.parent.rmdir()  # helpers.support's directory of this process: only our files were in it
        except OSError:
            pass
    return {run.kind: run.summary() for run in runs}


def print_spawns(results: dict[str, Any], repeat: int) -> None:
    local, ssh = results["local"], results["ssh"]
    print(f"\nb) REST spawn to ready, profile small, {len(USERS)} users one after another, {repeat} round(s)")
    for label, row in (("local (via: sudo)", local), ("over SSH (via: ssh)", ssh)):
        print(f"{label:22} spawn median {row['spawn_median_s']:5.2f} s "
              f"({', '.join(f'{s:.2f}' for s in row['spawn_seconds'])}); stop median {row['stop_median_s']:5.2f} s")
    logins = ", ".join(f"{account} {count}" for account, count in ssh["sshd_logins"].items())
    print(f"sshd logins during the SSH hub's rounds: {logins}")
    print(f"ratio ssh / local (lower is better): spawn {ssh['spawn_median_s'] / local['spawn_median_s']:.2f}, "
          f"stop {ssh['stop_median_s'] / local['stop_median_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="spawn rounds per hub")
    parser.add_argument("--poll-interval", type=int, default=10, help="the hubs' Spawner.poll_interval")
    parser.add_argument("--skip-spawn", action="store_true", help="status polls only")
    args = parser.parse_args()
    status = subprocess.run(["bash", str(LOGIN_SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    if status.returncode != 0:
        raise SystemExit(f"the login node is not up (tests/clusters/login.sh up): {status.stderr}")
    results: dict[str, Any] = {"host": os.uname().nodename, "cores": os.cpu_count(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "polls": args.polls,
                               "status_polls": asyncio.run(measure_polls(args.polls))}
    print_polls(results["status_polls"])
    if not args.skip_spawn:
        results["repeat"] = args.repeat
        results["spawn"] = measure_spawns(args.repeat, args.poll_interval)
        print_spawns(results["spawn"], args.repeat)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)} (no plot: matplotlib is not in the venv)")


if __name__ == "__main__":
    main()
