"""Scheduler load: what a hub asks the scheduler while N servers run and N more spawns wait in the
queue, hpchub against batchspawner, on the local Slurm or Grid Engine.

For each spawner and each N (default 10 and 25), through a real JupyterHub and configurable-http-proxy
(bench/storm.py's hub, the same poll interval for both spawners: JupyterHub's ``Spawner.poll_interval``,
which is also the interval of hpchub's shared status poller):

1. N servers are spawned (REST, profile ``storm``) and waited for until ready;
2. window "running": the scheduler commands the hub runs are counted for ``--window`` seconds;
3. N more spawns whose jobs cannot start for two hours (Slurm ``--begin=now+2hours``, Grid Engine
   ``-a`` two hours ahead: pending, not held, so neither spawner gives up on them; the queue and the
   cluster's configuration stay as they are, others use them);
4. after ``--settle`` seconds (default 60: a queue that stays full is what matters, and hpchub's
   waiting spawns check less often as they wait, ``HPCSpawner.startup_poll_backoff``), window
   "running+pending": counted again, while the N spawns wait.

What is counted:

- every scheduler command the hub's process tree executes in the window (``strace -f -e trace=execve``
  attached to the hub: exact, whoever else uses the cluster), by command and options. "Status calls"
  are the squeue/qstat calls that ask about jobs; the spawn form's queue numbers (sinfo, squeue
  --states=PENDING,RUNNING, qstat -f) are listed apart;
- Slurm: slurmctld's own count of RPCs by message type and by user (``sdiag``, read at the window's
  start and end, never reset: other benchmarks and tests read it too). sdiag counts every client of
  the cluster, so these counts include whatever else ran; hpchub's status queries run as the hub's
  account (root here), batchspawner's as each user (sudo -u USER squeue), so the "by user" figures
  separate batchspawner's from the rest and hpchub's are within root's.
- Grid Engine: only the hub's commands (qmaster's own request statistics, qmaster_params
  MONITOR_TIME, are a global configuration change).

Accounts hpcbench11..hpcbench60 (created where missing, left in place): the first N run, the next N
wait. Run as root with the cluster up:

    /opt/hpchub/venv/bin/python bench/load.py [--scheduler slurm|sge] [--users 10 25] [--window 120]
        [--settle 60] [--poll-interval 10] [--spawners hpchub batchspawner]

Writes bench/results/load-SCHEDULER.json and, where matplotlib imports, load-SCHEDULER.png. Re-plot:

    python bench/load.py --plot-only bench/results/load-slurm.json

Stops its hubs and proxies and its strace, cancels the jobs of the bench users it recorded, removes
their job logs and its hubs' state and site configs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import storm  # bench/, first on sys.path when run as a script; puts tests/ on sys.path
from helpers.hub import Hub

RESULTS = storm.RESULTS
FIRST_ACCOUNT = 11  # hpcbench11..hpcbench60: hpcbench01..10 are left to other runs of the benchmarks
ACCOUNTS = 50
SPAWNERS = ("hpchub", "batchspawner")
PENDING_HOURS = 2

# Scheduler commands counted in the hub's process tree (the final exec, not the sudo in front of it).
SCHEDULER_COMMANDS = {
    "slurm": {"squeue", "sinfo", "scontrol", "sbatch", "scancel", "sacct", "sprio", "sshare"},
    "sge": {"qstat", "qsub", "qdel", "qhost", "qselect", "qconf", "qacct", "qalter", "qmod"},
}

PENDING_PROFILE = """
  - slug: pending
    name: "Pending: starts in {hours} hours"
    cluster: {cluster}
    queue: {queue}
    resources: {{cores: 1, memory: {memory}, walltime: "{walltime}"}}
    directives: [{directive!r}]
"""


def begin_later(scheduler: str) -> str:
    """The job option that keeps a job pending (not held) for PENDING_HOURS."""
    if scheduler == "slurm":
        return f"--begin=now+{PENDING_HOURS}hours"
    return "-a " + (datetime.now() + timedelta(hours=PENDING_HOURS)).strftime("%Y%m%d%H%M")


def pending_options(kind: str, scheduler: str) -> dict:
    """The REST spawn options of a spawn that stays pending: hpchub's ``pending`` profile; batchspawner
    takes user options as its template's variables (``options``: the job's extra scheduler options)."""
    if kind == "hpchub":
        return {"profile": "pending"}
    spec = storm.SCHEDULERS[scheduler]
    if scheduler == "slurm":
        return {"options": begin_later(scheduler)}
    # GridengineSpawner's req_options carries the queue and limits: keep them.
    return {"options": f"-q {spec['queue']} -l h_vmem={spec['memory']} -l h_rt={storm.WALLTIME} "
                       f"{begin_later(scheduler)}"}


# -- counting -------------------------------------------------------------------------------------
class ExecTrace:
    """``strace -f -e trace=execve`` attached to a process for a window: the commands its tree ran."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.output = Path(tempfile.mkstemp(prefix="hpchub-load-strace-")[1])
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ExecTrace:
        self.process = subprocess.Popen(
            ["strace", "-f", "-qq", "-z", "-s", "256", "-e", "trace=execve", "-e", "signal=none",
             "-o", str(self.output), "-p", str(self.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._attached():  # count from the moment the tracer holds the hub
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strace did not attach to {self.pid}: {self.process.stderr.read().decode()}")
            time.sleep(0.05)
        return self

    def _attached(self) -> bool:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^TracerPid:\s*(\d+)", status, re.M).group(1)) == self.process.pid

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # detaches, the hub runs on
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def commands(self) -> list[list[str]]:
        """argv of every command run, in order (sudo and its target both appear). A process that execs
        the same command name again counts once: Debian's Grid Engine commands are a wrapper script
        (/usr/bin/qstat) that execs the real binary in the same process."""
        argvs = []
        seen: set[tuple[str, str]] = set()
        for line in self.output.read_text(errors="replace").splitlines():
            match = re.match(r"(\d+)\s+execve\(\"[^\"]*\", \[(.*?)\](?:\.\.\.)?, ", line)
            if match:
                argv = re.findall(r"\"((?:[^\"\\]|\\.)*)\"", match.group(2))
                key = (match.group(1), os.path.basename(argv[0]) if argv else "")
                if key not in seen:
                    seen.add(key)
                    argvs.append(argv)
        return argvs

    def remove(self) -> None:
        self.output.unlink(missing_ok=True)


def signature(argv: list[str]) -> str:
    """The command and the options it was given, without their values (job ids, user lists, formats)."""
    name = os.path.basename(argv[0])
    flags = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")]
    return " ".join([name, *flags])


def is_queue_listing(argv: list[str]) -> bool:
    """The spawn form's / waiting page's queue numbers (hpchub's queue_info), not a job's status."""
    name = os.path.basename(argv[0])
    return (name in ("sinfo", "qhost", "qselect") or (name == "squeue" and "--states=PENDING,RUNNING" in argv)
            or (name == "qstat" and "-f" in argv))


def is_status_call(argv: list[str]) -> bool:
    """A squeue/qstat that asks about jobs (a status poll, or why one job waits)."""
    return os.path.basename(argv[0]) in ("squeue", "qstat") and not is_queue_listing(argv)


def scheduler_calls(scheduler: str, argvs: Iterable[list[str]]) -> list[list[str]]:
    return [argv for argv in argvs if argv and os.path.basename(argv[0]) in SCHEDULER_COMMANDS[scheduler]]


def sdiag() -> dict:
    """slurmctld's RPC counts since its statistics were last reset: by message type, by user."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    since = int(re.search(r"^Data since .*\((\d+)\)", text, re.M).group(1))
    by_type_text = text.split("by message type", 1)[1].split("by user", 1)[0]
    by_user_text = text.split("by user", 1)[1].split("Pending RPC", 1)[0]
    pattern = re.compile(r"^\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", re.M)
    return {"since": since, "by_type": {name: int(count) for name, count in pattern.findall(by_type_text)},
            "by_user": {name: int(count) for name, count in pattern.findall(by_user_text)}}


def sdiag_window(before: dict, after: dict, started: float, ended: float) -> dict:
    """RPCs per minute in the window. If someone reset the statistics meanwhile (tests do), only the
    part of the window after the reset is counted."""
    reset = after["since"] != before["since"]
    seconds = ended - max(started, after["since"]) if reset else ended - started
    base = {"by_type": {}, "by_user": {}} if reset else before

    def per_minute(section: str) -> dict[str, float]:
        counts = {name: count - base[section].get(name, 0) for name, count in after[section].items()}
        return {name: round(60 * count / seconds, 1) for name, count in
                sorted(counts.items(), key=lambda item: -item[1]) if count > 0}

    return {"reset_during_window": reset, "seconds": round(seconds, 1), "by_type_per_min": per_minute("by_type"),
            "by_user_per_min": per_minute("by_user")}


# -- one hub --------------------------------------------------------------------------------------
def post_spawns(hub: Hub, users: list[str], options: dict) -> dict[str, str]:
    """POST every user's spawn at once; user -> why it was refused."""
    def post(user: str) -> tuple[str, str | None]:
        response = hub.api("POST", f"/users/{user}/server", json=options)
        if response.status_code in (201, 202):
            return user, None
        return user, f"POST {response.status_code}: {response.text[:200]}"

    with ThreadPoolExecutor(len(users)) as pool:
        return {user: reason for user, reason in pool.map(post, users) if reason}


def servers(hub: Hub, users: list[str]) -> dict[str, dict]:
    return {model["name"]: model.get("servers", {}).get("", {}) for model in hub.api("GET", "/users").json()
            if model["name"] in users}


def wait_until(what: str, done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(1)
    print(f"    not {what} after {timeout:.0f} s", flush=True)
    return False


def measure(hub: Hub, scheduler: str, window: float, poll_interval: float) -> dict:
    """The hub's scheduler commands (and, on Slurm, slurmctld's RPCs) for ``window`` seconds."""
    trace = ExecTrace(hub.hub.pid)
    try:
        with trace:
            before = sdiag() if scheduler == "slurm" else None
            started = time.time()
            time.sleep(window)
            ended = time.time()
            after = sdiag() if scheduler == "slurm" else None
        calls = scheduler_calls(scheduler, trace.commands())
    finally:
        trace.remove()
    seconds = ended - started
    intervals = seconds / poll_interval
    by_command = Counter(signature(argv) for argv in calls)
    status = sum(1 for argv in calls if is_status_call(argv))
    result = {
        "window_s": round(seconds, 1),
        "status_calls": status,
        "status_per_interval": round(status / intervals, 2),
        "status_per_min": round(60 * status / seconds, 1),
        "calls_per_min": round(60 * len(calls) / seconds, 1),
        "by_command_per_min": {command: round(60 * count / seconds, 1) for command, count in by_command.most_common()},
    }
    if before is not None and after is not None:
        result["sdiag"] = sdiag_window(before, after, started, ended)
    return result


def run_spawner(kind: str, scheduler: str, n: int, window: float, poll_interval: int, ready_timeout: float,
                jobs: dict[str, str], settle: float) -> dict:
    """One hub: N running, window; N pending more, window. ``jobs`` collects the job ids seen."""
    running = storm.bench_users(FIRST_ACCOUNT, n)
    pending = storm.bench_users(FIRST_ACCOUNT + ACCOUNTS // 2, n)
    users = running + pending
    spec = storm.SCHEDULERS[scheduler]
    profile = PENDING_PROFILE.format(hours=PENDING_HOURS, cluster=spec["cluster"], queue=spec["queue"],
                                     memory=spec["memory"], walltime=storm.WALLTIME, directive=begin_later(scheduler))
    # start_timeout: the pending spawns must outlast the run (both spawners give up after it).
    hub_context = contextlib.ExitStack()
    hub = hub_context.enter_context(storm.bench_hub(kind, scheduler, users, timeout=4 * 3600,
                                                    poll_interval=poll_interval, profiles=profile, name="load"))
    result: dict = {"spawner": kind, "n": n, "running_users": running, "pending_users": pending}
    try:
        started = time.monotonic()
        refused = post_spawns(hub, running, {"profile": "storm"} if kind == "hpchub" else {})
        wait_until("all ready", lambda: sum(bool(s.get("ready")) for s in servers(hub, running).values())
                   + len(refused) >= n, ready_timeout)
        jobs.update(storm.bench_jobs(scheduler, users))
        ready = sum(bool(s.get("ready")) for s in servers(hub, running).values())
        result["running_ready"] = ready
        result["running_ready_s"] = round(time.monotonic() - started, 1)
        result["refused"] = refused
        print(f"  {kind} N={n}: {ready}/{n} servers ready in {result['running_ready_s']:.0f} s; "
              f"measuring {window:.0f} s ...", flush=True)
        result["running"] = measure(hub, scheduler, window, poll_interval)

        pending_refused = post_spawns(hub, pending, pending_options(kind, scheduler))
        result["refused"] = refused | pending_refused

        def pending_jobs() -> int:
            found = storm.bench_jobs(scheduler, pending)
            jobs.update(found)
            return len(set(found.values()))

        wait_until("all pending jobs submitted", lambda: pending_jobs() + len(pending_refused) >= n, ready_timeout)
        # The spawners' first looks at their new jobs are not what the window measures: a queue that
        # stays full for hours is (hpchub's waiting spawns check less often as they wait).
        time.sleep(max(2.0, settle))
        still_waiting = sum(1 for s in servers(hub, pending).values() if s and not s.get("ready"))
        result["pending_waiting"] = still_waiting
        print(f"  {kind} N={n}: {still_waiting}/{n} spawns waiting in the queue; measuring {window:.0f} s ...",
              flush=True)
        result["running+pending"] = measure(hub, scheduler, window, poll_interval)
        # Ended here, not by start_timeout: some spawns may have failed meanwhile (then the count is low).
        result["pending_waiting_at_end"] = sum(1 for s in servers(hub, pending).values() if s and not s.get("ready"))
        if result["refused"] or result["pending_waiting_at_end"] < n or ready < n:
            result["hub_log_tail"] = hub.log_tail(40)
    finally:
        try:
            with ThreadPoolExecutor(len(users)) as pool:
                list(pool.map(lambda user: hub.api("DELETE", f"/users/{user}/server"), users))
            if not wait_until("all servers stopped", lambda: not any(servers(hub, users).values()), 120):
                left = {user: server for user, server in servers(hub, users).items() if server}
                result["not_stopped"] = {user: server.get("pending") for user, server in left.items()}
                result["stop_log_tail"] = hub.log_tail(40)
            jobs.update(storm.bench_jobs(scheduler, users))
        finally:
            hub_context.close()
    return result


# -- report ---------------------------------------------------------------------------------------
PHASES = ("running", "running+pending")


def rows(data: dict) -> list[str]:
    interval = data["poll_interval_s"]
    lines = [f"{'spawner':13} {'N':>3} {'phase':16} {'status/interval':>15} {'status/min':>10} {'all/min':>8}  "
             f"scheduler commands per minute (hub's process tree)"]
    for result in data["results"]:
        for phase in PHASES:
            if phase not in result:
                continue
            measured = result[phase]
            commands = ", ".join(f"{command} {rate:g}" for command, rate in measured["by_command_per_min"].items())
            lines.append(f"{result['spawner']:13} {result['n']:>3} {phase:16} {measured['status_per_interval']:>15.1f} "
                         f"{measured['status_per_min']:>10.1f} {measured['calls_per_min']:>8.1f}  {commands}")
    lines.append(f"(poll interval {interval} s; status/interval = status calls per {interval} s)")
    return lines


def ratios(data: dict) -> dict[str, float]:
    """hpchub / batchspawner status calls, per N and phase."""
    by_key = {(result["spawner"], result["n"], phase): result[phase]["status_per_min"]
              for result in data["results"] for phase in PHASES if phase in result}
    out = {}
    for (kind, n, phase), ours in by_key.items():
        theirs = by_key.get(("batchspawner", n, phase))
        if kind == "hpchub" and theirs:
            out[f"N={n} {phase}"] = round(ours / theirs, 3)
    return out


def sdiag_rows(data: dict) -> list[str]:
    lines = []
    for result in data["results"]:
        users = set(result["running_users"]) | set(result["pending_users"])
        for phase in PHASES:
            window = result.get(phase, {}).get("sdiag")
            if not window:
                continue
            types = ", ".join(f"{name} {rate:g}" for name, rate in list(window["by_type_per_min"].items())[:8])
            by_user = window["by_user_per_min"]
            bench = sum(rate for user, rate in by_user.items() if user in users)
            others = {user: rate for user, rate in by_user.items() if user not in users}
            note = ""
            if window["reset_during_window"]:
                note = f" (statistics reset by someone: last {window['seconds']:.0f} s only)"
            lines.append(f"  {result['spawner']:13} N={result['n']:<3} {phase:16} per minute{note}: {types}; "
                         f"by user: the run's users {bench:g}, "
                         + ", ".join(f"{user} {rate:g}" for user, rate in others.items()))
    return lines


def plot(data: dict, path: Path) -> bool:
    plt = storm.pyplot()
    if plt is None:
        return False

    figure, axes = plt.subplots(figsize=(7, 4.2))
    styles = {"hpchub": "o-", "batchspawner": "s--"}
    for kind in SPAWNERS:
        for phase, fill in zip(PHASES, ("full", "none"), strict=True):
            points = sorted((result["n"], result[phase]["status_per_interval"]) for result in data["results"]
                            if result["spawner"] == kind and phase in result)
            if points:
                axes.plot([n for n, _ in points], [value for _, value in points], styles[kind], fillstyle=fill,
                          label=f"{kind}: N running" + (" + N pending" if phase != "running" else ""))
    axes.set_yscale("log")
    axes.set_xlabel("N (servers running; spawns pending as many)")
    axes.set_ylabel(f"status calls per {data['poll_interval_s']} s poll interval")
    axes.set_title(f"Scheduler status calls, local {data['scheduler']} ({data['window_s']:.0f} s windows)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def report(data: dict, path: Path) -> None:
    print(f"\nScheduler load on local {data['scheduler']} ({data['cpus']}-core machine), "
          f"{data['window_s']:.0f} s windows:")
    for line in rows(data):
        print("  " + line)
    for key, ratio in data["ratios_hpchub_to_batchspawner"].items():
        print(f"  hpchub / batchspawner status calls, {key}: {ratio:.3f}")
    if data["scheduler"] == "slurm":
        print("  slurmctld (sdiag, every client of the cluster, not only the hub):")
        for line in sdiag_rows(data):
            print("  " + line)
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


def run(scheduler: str, sizes: list[int], kinds: list[str], window: float, poll_interval: int,
        ready_timeout: float, settle: float) -> dict:
    free = storm.capacity(scheduler)
    if max(sizes) > min(free, ACCOUNTS // 2):
        raise SystemExit(f"N at most {min(free, ACCOUNTS // 2)}: {ACCOUNTS // 2} accounts each for running and "
                         f"pending servers, {free} free slots in {storm.SCHEDULERS[scheduler]['queue']}")
    created = storm.ensure_accounts(storm.bench_users(FIRST_ACCOUNT, ACCOUNTS))
    if created:
        print(f"created unix accounts {', '.join(created)}", flush=True)
    users = storm.bench_users(FIRST_ACCOUNT, ACCOUNTS)
    since = time.time()
    results = []
    try:
        for n in sizes:
            for kind in kinds:
                jobs: dict[str, str] = {}
                try:
                    results.append(run_spawner(kind, scheduler, n, window, poll_interval, ready_timeout, jobs,
                                               settle))
                finally:
                    storm.cancel_jobs(scheduler, jobs, users)
    finally:
        storm.remove_job_logs(users, since)
    data = {"scheduler": scheduler, "poll_interval_s": poll_interval, "window_s": window, "settle_s": settle,
            "cpus": os.cpu_count(),
            "queue_capacity": free, "users_created": created, "pending_by": begin_later(scheduler).split()[0],
            "results": results}
    data["ratios_hpchub_to_batchspawner"] = ratios(data)
    return data


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=sorted(storm.SCHEDULERS), default="slurm")
    parser.add_argument("--users", type=int, nargs="+", default=[10, 25], metavar="N",
                        help="N servers running and N pending, one hub per N (default: 10 25)")
    parser.add_argument("--spawners", nargs="+", choices=SPAWNERS, default=list(SPAWNERS))
    parser.add_argument("--window", type=float, default=120, help="seconds counted per phase (default 120)")
    parser.add_argument("--poll-interval", type=int, default=10, help="both spawners' poll interval (default 10)")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds between submitting the pending spawns and counting (default 60)")
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds N servers may take to be ready")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(json.loads(args.plot_only.read_text()), args.plot_only)
        return
    data = run(args.scheduler, args.users, args.spawners, args.window, args.poll_interval, args.ready_timeout,
               args.settle)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"load-{args.scheduler}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    report(data, path)


if __name__ == "__main__":
    main()
