"""Single spawn: one user's server, started again and again on an idle queue, timed from the request
until it answers, with where the time goes. Three variants on the local Slurm or Grid Engine:

- floor: the server command both spawners' jobs run (bench/floor.py) submitted with bare
  sbatch/qsub, timed from the submission until the server answers on its port;
- hpchub: ``POST /hub/api/users/USER/server`` through a real hub and proxy (bench/storm.py's),
  timed until the server answers through the proxy;
- batchspawner: the same with batchspawner configured as bench/storm.py does.

Each variant's hub is started once, before the first round, and serves all its rounds (the hub's own
start is not timed). Then ``--rounds`` rounds (default 10), each one spawn of every variant in turn,
one spawn at a time: the machine's other load, which changes over minutes, falls on all variants
alike. After each spawn the server is stopped and the bench waits until the scheduler no longer
lists its job. Each spawn is split into phases between these moments:

  submit        request (POST, or sbatch/qsub for the floor) -> the hub knows the job id
  queue         job id known -> the scheduler starts the job
  job start     the job started -> its script runs (a marker line the bench adds to every variant's script)
  server start  the script runs -> the Jupyter server logs "Jupyter Server ... is running at"
  port report   the server listens -> the spawner has its port (start() returned; floor: 0, the bench chose it)
  proxy route   the spawner has the port -> the server answers through the proxy (floor: on its port)

SOURCES says where each moment comes from and at what resolution. A moment that comes before the
previous one (batchspawner reports its port before its server listens) makes its phase 0 and the
next phase starts at the later moment; the phases of a spawn add up to its total.

Run as root with the cluster up; uses the account hpcbench61 only (created if missing, left in place):

    /opt/hpchub/venv/bin/python bench/single.py [--scheduler slurm|sge] [--rounds 10] [--variants floor,hpchub,batchspawner]

Writes bench/results/single-SCHEDULER.json and, where matplotlib imports, single-SCHEDULER.png
(stacked phase medians per variant). Re-plot with any Python that has matplotlib and requests:

    python bench/single.py --plot-only bench/results/single-slurm.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import floor  # noqa: E402  (bench/, first on sys.path when run as a script)
from helpers.hub import VENV, Hub, free_port  # noqa: E402
from storm import (  # noqa: E402
    SCHEDULERS,
    answers,
    bench_hub,
    bench_jobs,
    cancel_jobs,
    ensure_accounts,
    names_argument,
    pyplot,
    remove_job_logs,
    save_result,
    submit_floor_job,
)

USER = "hpcbench61"  # this bench's own account: other benches use other hpcbench accounts at the same time
VARIANTS = ("floor", "hpchub", "batchspawner")
POLL_SECONDS = 0.05  # how often the bench looks for the route and the answer: the resolution of "answered"

# Every variant's job script echoes this first (hpchub: from the site's environment prologue, after
# its own start line and the venv's activation): the script's start with the clock's full resolution.
MARKER = "bench: script start"
MARK_COMMAND = f'echo "{MARKER} $(date +%s.%N)"'

# batchspawner's prologue as bench/storm.py configures it, with the marker in front.
BATCHSPAWNER_MARK = {
    "slurm": f"c.SlurmSpawner.req_prologue = {MARK_COMMAND + '; source ' + str(VENV) + '/bin/activate'!r}\n",
    "sge": f"c.GridengineSpawner.req_prologue = {MARK_COMMAND + '; source ' + str(VENV) + '/bin/activate'!r}\n",
}

# The moments that bound the phases, in order; (phase, from, to).
CHAIN = ("posted", "submitted", "running", "script", "listening", "port_known", "answered")
PHASES = (("submit", "posted", "submitted"), ("queue", "submitted", "running"), ("job start", "running", "script"),
          ("server start", "script", "listening"), ("port report", "listening", "port_known"),
          ("proxy route", "port_known", "answered"))
# More moments, for the timeline (not phase bounds).
DETAILS = ("received", "launched", "hub_saw_running", "python_logging", "job_reported_port", "hub_port_request",
           "hub_up", "route_added")

# Finer steps between those moments, as medians per spawn (a negative one: the order was the other way).
STEPS = (("posted", "received"), ("received", "submitted"), ("received", "running"), ("running", "launched"),
         ("launched", "script"), ("script", "python_logging"), ("python_logging", "listening"),
         ("listening", "hub_port_request"), ("hub_port_request", "port_known"), ("port_known", "hub_up"),
         ("hub_up", "route_added"), ("route_added", "answered"), ("listening", "answered"))

SOURCES = {
    "posted": "bench clock before POST / sbatch / qsub (time.time)",
    "submitted": "hpchub: hub log 'Submitted job N' (ms); batchspawner: hub log 'Job submitted' (ms); "
                 "floor: bench clock when sbatch/qsub returned",
    "received": "Slurm: slurmctld log '_slurm_rpc_submit_batch_job: JobId=N' (ms); SGE: qacct qsub_time (1 s)",
    "running": "Slurm: slurmctld log 'sched: Allocate JobId=N' or 'Started JobId=N' (ms); "
               "SGE: qacct start_time (1 s)",
    "launched": "Slurm: slurmd log 'Launching batch job N' (ms); SGE: none",
    "hub_saw_running": "hpchub: hub log 'Job N running on HOST' (ms; the shared poller's view, 1 s interval)",
    "script": "the job's output: the bench's marker line, date +%s.%N (ns)",
    "python_logging": "the job's output: the server's first log line (ms)",
    "listening": "the job's output: 'Jupyter Server ... is running at' (ms; logged just before the socket binds)",
    "job_reported_port": "hpchub: the job's output 'hpchub: server port N reported' (ms)",
    "hub_port_request": "hub log: the port report's request line, hpchub /hpchub/port, batchspawner /batchspawner "
                        "(ms, logged when the request finishes)",
    "port_known": "hpchub: hub log 'Server on HOST:PORT reported' (ms); batchspawner: hub log "
                  "'Notebook server job N started at' (ms); floor: = listening",
    "hub_up": "hub log 'User U took S seconds to start' (ms; after the hub's own HTTP check of the server)",
    "route_added": "hub log 'Adding user U to proxy' (ms)",
    "answered": f"bench clock: the proxy lists the route, then GET /user/U/api answers (floor: on its port); "
                f"polled every {POLL_SECONDS} s",
}

LOG_LINE = re.compile(r"^\[([DIWEC]) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\]\s?(.*)$")
SLURM_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- reading timestamps ---------------------------------------------------------------------------
def epoch(text: str, layout: str) -> float:
    """Seconds since the epoch of a local-time stamp (the hub, the jobs and the schedulers share this
    machine's clock and zone)."""
    return datetime.strptime(text, layout).timestamp()


def jupyter_lines(text: str) -> Iterable[tuple[float, str]]:
    """(time, message) of the log lines JupyterHub and Jupyter Server write: ``[I 2026-01-02 03:04:05.678 ...]``."""
    for raw in text.splitlines():
        match = LOG_LINE.match(ANSI.sub("", raw))
        if match:
            yield epoch(match.group(2), "%Y-%m-%d %H:%M:%S.%f"), match.group(3)


def first(lines: Iterable[tuple[float, str]], pattern: str) -> tuple[float, re.Match] | None:
    expression = re.compile(pattern)
    for moment, message in lines:
        found = expression.search(message)
        if found:
            return moment, found
    return None


class LogTail:
    """What a growing file gets after the moment this was made (the scheduler's and the hub's logs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> str:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                return file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def slurm_log_files() -> list[Path]:
    """slurmctld's log and every slurmd's (SlurmdLogFile with %n for each node)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    values = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config, re.MULTILINE))
    files = [Path(values["SlurmctldLogFile"])]
    slurmd = values.get("SlurmdLogFile", "")
    if slurmd:
        files += sorted(Path(slurmd).parent.glob(Path(slurmd).name.replace("%n", "*").replace("%h", "*")))
    return files


class SchedulerClock:
    """When the scheduler received, started and launched a job: Slurm's logs have milliseconds;
    Grid Engine's accounting (qacct, once the job ended) has seconds."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self.tails = [LogTail(path) for path in slurm_log_files()] if scheduler == "slurm" else []

    def mark(self) -> None:
        """Read only what the logs get from now on."""
        for tail in self.tails:
            tail.offset = tail.path.stat().st_size if tail.path.exists() else 0

    def moments(self, job_id: str) -> dict[str, float]:
        return self._slurm(job_id) if self.scheduler == "slurm" else self._sge(job_id)

    def _slurm(self, job_id: str) -> dict[str, float]:
        found: dict[str, float] = {}
        patterns = {"received": rf"_slurm_rpc_submit_batch_job: JobId={job_id}\b",
                    "running": rf"(sched: Allocate|Started) JobId={job_id}\b",
                    "launched": rf"Launching batch job {job_id}\b"}
        for tail in self.tails:
            for raw in tail.read().splitlines():
                match = SLURM_LOG_LINE.match(raw)
                if not match:
                    continue
                for name, pattern in patterns.items():
                    if name not in found and re.search(pattern, match.group(2)):
                        found[name] = epoch(match.group(1), "%Y-%m-%dT%H:%M:%S.%f")
        return found

    def _sge(self, job_id: str) -> dict[str, float]:
        """qacct's qsub_time and start_time (the job must have ended; qmaster writes the record a
        moment later, so ask a few times)."""
        for _ in range(20):
            done = subprocess.run(["qacct", "-j", job_id], capture_output=True, text=True)
            if done.returncode == 0 and "start_time" in done.stdout:
                fields = dict(re.findall(r"^(qsub_time|start_time)\s+(.+?)\s*$", done.stdout, re.MULTILINE))
                found = {}
                for field, name in (("qsub_time", "received"), ("start_time", "running")):
                    moment = sge_time(fields.get(field, ""))
                    if moment is not None:
                        found[name] = moment
                return found
            time.sleep(0.5)
        return {}


def sge_time(text: str) -> float | None:
    """qacct's times: ``11/26/2026 17:03:08.611`` (SGE 8.1.9) or ``Thu Nov 26 17:03:08 2026``."""
    for layout in ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%a %b %d %H:%M:%S %Y"):
        try:
            return epoch(text, layout)
        except ValueError:
            pass
    return None


def job_output_moments(text: str) -> dict[str, float]:
    """The moments the job's own output shows: the marker, the server's first log line, its "is
    running at", hpchub's port report."""
    found: dict[str, float] = {}
    marker = re.search(rf"^{re.escape(MARKER)} (\d+\.\d+)\s*$", text, re.MULTILINE)
    if marker:
        found["script"] = float(marker.group(1))
    lines = list(jupyter_lines(text))
    if lines:
        found["python_logging"] = lines[0][0]
    for name, pattern in (("listening", r"Jupyter Server \S+ is running at"),
                          ("job_reported_port", r"hpchub: server port \d+ reported")):
        hit = first(lines, pattern)
        if hit:
            found[name] = hit[0]
    return found


def hub_log_moments(kind: str, user: str, text: str) -> tuple[dict[str, float], str | None]:
    """The moments of one spawn in the hub's log (the lines written since the POST); the job id."""
    lines = list(jupyter_lines(text))
    found: dict[str, float] = {}
    job_id = None
    if kind == "hpchub":
        patterns = {"submitted": r"Submitted job (\d+) to", "hub_saw_running": r"Job \d+ running on ",
                    "hub_port_request": r"\b2\d\d POST /hub/api/hpchub/port\b",
                    "port_known": r"Server on \S+ reported; connecting"}
    else:
        patterns = {"submitted": r"Job submitted\. output: \D*(\d+)",
                    "hub_port_request": r"\b2\d\d POST /hub/api/batchspawner\b",
                    "port_known": r"Notebook server job \d+ started at"}
    patterns |= {"hub_up": rf"User {re.escape(user)}\S* took [\d.]+ seconds to start",
                 "route_added": rf"Adding user {re.escape(user)} to proxy"}
    for name, pattern in patterns.items():
        hit = first(lines, pattern)
        if hit:
            found[name] = hit[0]
            if name == "submitted":
                job_id = hit[1].group(1)
    return found, job_id


# -- one round ------------------------------------------------------------------------------------
def phases(moments: dict[str, float], table: tuple[tuple[str, str, str], ...] = PHASES) -> dict[str, float | None]:
    """Seconds per phase of ``table``. A moment missing: its phase is None and the next one starts at
    the last known moment; a moment before the previous one (overlap) counts from the previous one."""
    result: dict[str, float | None] = {}
    last = moments["posted"]
    for phase, _, end in table:
        value = moments.get(end)
        if value is None:
            result[phase] = None
            continue
        value = max(value, last)
        result[phase] = value - last
        last = value
    return result


def wait_until_gone(scheduler: str, job_id: str | None, timeout: float = 90, user: str = USER) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_id is None or job_id not in bench_jobs(scheduler, [user]):
            return True
        time.sleep(0.25)
    return False


def floor_round(scheduler: str, hub_api: floor.StubHubAPI, logs: Path, index: int, timeout: float,
                clock: SchedulerClock) -> dict:
    port = free_port()
    log = logs / f"round-{index}.log"
    script = "#!/bin/bash\n" + MARK_COMMAND + "\n" + floor.server_command(VENV, USER, port, hub_api.url) + "\n"
    clock.mark()
    moments: dict[str, float] = {"posted": time.time()}
    job_id, error = submit_floor_job(scheduler, USER, script, log, name="single-floor")
    moments["submitted"] = time.time()
    if job_id is None:
        return {"error": f"submit: {error}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(floor.api_url(port, USER)):
            moments["answered"] = time.time()
            break
        time.sleep(POLL_SECONDS)
    subprocess.run(["sudo", "-n", "-u", USER, "scancel" if scheduler == "slurm" else "qdel", job_id],
                   capture_output=True)
    gone = wait_until_gone(scheduler, job_id)
    moments |= clock.moments(job_id)
    moments |= job_output_moments(log.read_text(errors="replace") if log.exists() else "")
    if "listening" in moments:
        moments["port_known"] = moments["listening"]  # the bench chose the port: nothing to report
    return finish_round(job_id, moments, None if "answered" in moments else f"not answering after {timeout:.0f} s",
                        gone)


def hub_round(kind: str, scheduler: str, hub: Hub, timeout: float, clock: SchedulerClock, user: str = USER,
              options: dict | None = None, more_moments: Callable[[str], dict[str, float]] | None = None,
              table: tuple[tuple[str, str, str], ...] = PHASES) -> dict:
    """One spawn of ``user`` through ``hub`` (``options``: the spawn's; default hpchub's profile
    ``storm``), timed until it answers through the proxy, then stopped until its job is gone.
    ``more_moments``: more moments of the job (its id given); ``table``: the phases."""
    hub_log = LogTail(hub.hub_log)
    clock.mark()
    if options is None:
        options = {"profile": "storm"} if kind == "hpchub" else {}
    moments: dict[str, float] = {"posted": time.time()}
    response = hub.api("POST", f"/users/{user}/server", json=options)
    if response.status_code not in (201, 202):
        return {"error": f"POST {response.status_code}: {response.text[:300]}"}
    error = wait_through_proxy(hub, timeout, moments, user)
    job_id = hub_log_moments(kind, user, hub_log.read())[1]
    hub.api("DELETE", f"/users/{user}/server")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and hub.server(user) is not None:
        time.sleep(0.25)
    gone = wait_until_gone(scheduler, job_id, user=user)
    found, job_id = hub_log_moments(kind, user, hub_log.read())
    moments |= found
    if job_id is not None:
        moments |= clock.moments(job_id)
        moments |= job_output_moments(read_job_output(kind, scheduler, job_id, user))
        if more_moments is not None:
            moments |= more_moments(job_id)
    if error:
        return finish_round(job_id, moments, error, gone, table) | {"hub_log_tail": hub.log_tail(30)}
    return finish_round(job_id, moments, None, gone, table)


def wait_through_proxy(hub: Hub, timeout: float, moments: dict[str, float], user: str = USER) -> str | None:
    """Watch the proxy's routing table (not the hub: asking the hub would load what is measured)
    until the user's route is there, then the server through the proxy until it answers. Every
    2 s the hub's model tells whether the spawn failed."""
    routes_url = f"http://127.0.0.1:{hub.proxy_api_port}/api/routes"
    headers = {"Authorization": f"token {hub.proxy_token}"}
    started = time.monotonic()
    checked = started
    while time.monotonic() - started < timeout:
        try:
            routes = requests.get(routes_url, headers=headers, timeout=5).json()
        except (requests.RequestException, ValueError):
            routes = {}
        if any(route.rstrip("/") == f"/user/{user}" for route in routes):
            if answers(f"{hub.url}/user/{user}/api"):
                moments["answered"] = time.time()
                return None
        elif time.monotonic() - checked > 2:
            checked = time.monotonic()
            if hub.server(user) is None:
                return "spawn failed (server gone)"
        time.sleep(POLL_SECONDS)
    return f"not answering through the proxy after {timeout:.0f} s"


def read_job_output(kind: str, scheduler: str, job_id: str, user: str = USER) -> str:
    home = Path(f"/home/{user}")
    if kind == "hpchub":
        paths = sorted((home / ".hpchub" / "logs").glob(f"hpchub-*.{job_id}.log"))
    elif scheduler == "slurm":
        paths = [home / f"jupyterhub_slurmspawner_{job_id}.log"]
    else:  # GridengineSpawner: one stdout and one stderr file per user, appended to by every job
        paths = [home / ".jupyterhub.sge.out", home / ".jupyterhub.sge.err"]
    text = ""
    for path in paths:
        if path.exists():
            text += path.read_text(errors="replace")
            path.unlink()  # the next round's job appends to the same Grid Engine files
    return text


def finish_round(job_id: str | None, moments: dict[str, float], error: str | None, gone: bool,
                 table: tuple[tuple[str, str, str], ...] = PHASES) -> dict:
    posted = moments["posted"]
    result: dict = {"job_id": job_id, "moments_s": {name: round(value - posted, 4) for name, value in
                                                    sorted(moments.items(), key=lambda item: item[1])}}
    if error:
        result["error"] = error
    else:
        result["total_s"] = moments["answered"] - posted
        result["phases_s"] = phases(moments, table)
    if not gone:
        result["note"] = "the job was still listed 90 s after the stop"
    return result


# -- variants -------------------------------------------------------------------------------------
def run_rounds(scheduler: str, variants: list[str], rounds: int, timeout: float, jobs: set[str]) -> dict[str, list[dict]]:
    """All variants' hubs (and the floor's stub hub API) started first; then round by round one spawn
    of each variant in turn, so a change in the machine's other load falls on all of them alike.
    Job ids go into ``jobs`` as they become known (for the cleanup)."""
    clock = SchedulerClock(scheduler)
    results: dict[str, list[dict]] = {kind: [] for kind in variants}
    with contextlib.ExitStack() as stack:
        spawns: dict[str, Callable[[int], dict]] = {}
        for kind in variants:
            if kind == "floor":
                logs = Path(tempfile.mkdtemp(prefix="hpchub-single-floor-"))
                logs.chmod(0o1777)
                stack.callback(shutil.rmtree, logs, ignore_errors=True)
                hub_api = stack.enter_context(floor.StubHubAPI())
                spawns[kind] = lambda index, hub_api=hub_api, logs=logs: floor_round(
                    scheduler, hub_api, logs, index, timeout, clock)
            else:
                hub = stack.enter_context(bench_hub(
                    kind, scheduler, [USER], timeout, prologue=MARK_COMMAND if kind == "hpchub" else None,
                    extra_config=BATCHSPAWNER_MARK[scheduler] if kind == "batchspawner" else ""))
                spawns[kind] = lambda index, kind=kind, hub=hub: hub_round(kind, scheduler, hub, timeout, clock)
        print(f"started: {', '.join(variants)}; {rounds} rounds of one spawn each", flush=True)
        for index in range(rounds):
            for kind in variants:
                load = os.getloadavg()[0]
                result = spawns[kind](index) | {"load_1min": load}
                results[kind].append(result)
                if result.get("job_id"):
                    jobs.add(result["job_id"])
                text = f"{result['total_s']:.2f} s" if "total_s" in result else result["error"]
                print(f"  round {index + 1}/{rounds} {kind:12} job {result.get('job_id')}: {text} "
                      f"(load {load:.1f})", flush=True)
    return results


def summarize(rounds: list[dict], table: tuple[tuple[str, str, str], ...] = PHASES,
              moments: tuple[str, ...] = (*CHAIN, *DETAILS), steps: tuple[tuple[str, str], ...] = STEPS) -> dict:
    """Medians of the answered spawns: total, each phase of ``table``, each of ``moments`` after the
    request and each of ``steps``."""
    good = [result for result in rounds if "total_s" in result]
    summary: dict = {"rounds": len(rounds), "ok": len(good),
                     "failures": [result["error"] for result in rounds if "error" in result]}
    if not good:
        return summary
    totals = [result["total_s"] for result in good]
    summary |= {"median_s": statistics.median(totals), "min_s": min(totals), "max_s": max(totals)}
    summary["phases_median_s"] = {}
    for phase, _, _ in table:
        values = [result["phases_s"][phase] for result in good if result["phases_s"][phase] is not None]
        summary["phases_median_s"][phase] = statistics.median(values) if values else None
    timeline = {}
    for name in moments:
        values = [result["moments_s"][name] for result in good if name in result["moments_s"]]
        if values:
            timeline[name] = statistics.median(values)
    summary["timeline_median_s"] = dict(sorted(timeline.items(), key=lambda item: item[1]))
    summary["steps_median_s"] = {}
    for start, end in steps:
        values = [result["moments_s"][end] - result["moments_s"][start] for result in good
                  if start in result["moments_s"] and end in result["moments_s"]]
        if values:
            summary["steps_median_s"][f"{start} -> {end}"] = statistics.median(values)
    return summary


def comparisons(summaries: dict[str, dict]) -> dict:
    """hpchub and batchspawner against the floor, hpchub against batchspawner; the issue's targets."""
    def median(kind: str) -> float | None:
        return summaries.get(kind, {}).get("median_s")

    out: dict = {}
    for kind in ("hpchub", "batchspawner"):
        if median(kind) is not None and median("floor") is not None:
            out[f"{kind}_minus_floor_s"] = median(kind) - median("floor")
            out[f"{kind}_over_floor"] = median(kind) / median("floor")
    if median("hpchub") is not None and median("batchspawner") is not None:
        out["hpchub_minus_batchspawner_s"] = median("hpchub") - median("batchspawner")
        out["hpchub_over_batchspawner"] = median("hpchub") / median("batchspawner")
    if "hpchub_minus_floor_s" in out:
        out["target_within_floor_plus_0.5_s"] = out["hpchub_minus_floor_s"] <= 0.5
    if "hpchub_minus_batchspawner_s" in out:
        out["target_below_batchspawner"] = out["hpchub_minus_batchspawner_s"] < 0
    return out


def run(scheduler: str, rounds: int, variants: list[str], timeout: float) -> dict:
    created = ensure_accounts([USER])
    if created:
        print(f"created unix account {USER}", flush=True)
    since = time.time()
    jobs: set[str] = set()
    try:
        results = run_rounds(scheduler, variants, rounds, timeout, jobs)
    finally:
        cancel_jobs(scheduler, {job_id: USER for job_id in jobs | set(bench_jobs(scheduler, [USER]))}, [USER])
        remove_job_logs([USER], since)
    summaries = {kind: summarize(rounds_) for kind, rounds_ in results.items()}
    return {"scheduler": scheduler, "queue": SCHEDULERS[scheduler]["queue"], "user": USER, "rounds": rounds,
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "sources": SOURCES,
            "phases": {phase: [start, end] for phase, start, end in PHASES},
            "summaries": summaries, "comparisons": comparisons(summaries), "results": results}


# -- report ---------------------------------------------------------------------------------------
def seconds(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def print_summaries(summaries: dict[str, dict], phases: tuple[tuple[str, str, str], ...]) -> None:
    """Each variant's answered spawns, median total, phases of ``phases``, timeline and steps."""
    width = max(len(phase) for phase, _, _ in phases) + 2
    for kind, summary in summaries.items():
        if not summary.get("ok"):
            print(f"\n{kind}: no spawn answered; failures: {summary['failures']}")
            continue
        print(f"\n{kind}: {summary['ok']}/{summary['rounds']} answered; median {summary['median_s']:.2f} s "
              f"(min {summary['min_s']:.2f}, max {summary['max_s']:.2f})"
              + (f"; failures: {summary['failures']}" if summary["failures"] else ""))
        for phase, start, end in phases:
            print(f"  {phase:{width}} {seconds(summary['phases_median_s'][phase])} s   {start} -> {end}")
        print("  timeline (median s after the request): " + ", ".join(
            f"{name} {value:.2f}" for name, value in summary["timeline_median_s"].items()))
        print("  steps (median s): " + ", ".join(
            f"{name} {value:.3f}" for name, value in summary.get("steps_median_s", {}).items()))


def report(data: dict, path: Path) -> None:
    print(f"\nsingle spawn on local {data['scheduler']} ({data['queue']}), {data['rounds']} rounds per variant, "
          f"{data['cpus']}-core machine (load {data['load_average_at_end'][0]:.1f} at the end)")
    print_summaries(data["summaries"], PHASES)
    compared = data["comparisons"]
    if compared:
        print()
        for kind in ("hpchub", "batchspawner"):
            if f"{kind}_minus_floor_s" in compared:
                print(f"{kind} - floor: {compared[f'{kind}_minus_floor_s']:+.2f} s "
                      f"(ratio {compared[f'{kind}_over_floor']:.2f})")
        if "hpchub_minus_batchspawner_s" in compared:
            print(f"hpchub - batchspawner: {compared['hpchub_minus_batchspawner_s']:+.2f} s "
                  f"(ratio {compared['hpchub_over_batchspawner']:.2f})")
        for target in ("target_within_floor_plus_0.5_s", "target_below_batchspawner"):
            if target in compared:
                print(f"{target}: {'met' if compared[target] else 'MISSED'}")
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


def plot(data: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False

    kinds = [kind for kind, summary in data["summaries"].items() if summary.get("ok")]
    names = [phase for phase, _, _ in PHASES]
    figure, axes = plt.subplots(figsize=(8, 2.2 + 0.6 * len(kinds)), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for index, phase in enumerate(names):
        medians = [data["summaries"][kind]["phases_median_s"] for kind in kinds]
        lefts = [sum(values[name] or 0 for name in names[:index]) for values in medians]
        axes.barh(kinds, [values[phase] or 0 for values in medians], left=lefts, color=colors[index], label=phase)
    ends = []
    for row, kind in enumerate(kinds):
        summary = data["summaries"][kind]
        ends.append(sum(value or 0 for value in summary["phases_median_s"].values()))
        axes.text(ends[-1] + 0.1, row, f"total: median {summary['median_s']:.2f} s "
                  f"({summary['min_s']:.2f}-{summary['max_s']:.2f})", va="center", fontsize=8)
    axes.set_xlim(0, max(ends, default=1) * 1.45)
    axes.invert_yaxis()
    axes.set_xlabel("seconds from the request: median of each phase")
    axes.set_title(f"One spawn at a time on local {data['scheduler']} ({data['queue']}), {data['rounds']} rounds per variant, "
                   f"{data['cpus']}-core machine", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncol=len(names), fontsize=8)
    figure.savefig(path, dpi=110)
    return True


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="slurm")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, in this order (default {','.join(VARIANTS)})")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one spawn may take (default 120)")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot and report a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(json.loads(args.plot_only.read_text()), args.plot_only)
        return
    variants = names_argument(parser, args.variants, VARIANTS, "variants")
    data = run(args.scheduler, args.rounds, variants, args.timeout)
    save_result(data, f"single-{args.scheduler}", report)


if __name__ == "__main__":
    main()
