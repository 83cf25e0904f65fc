"""What one spawn costs, counted rather than timed: hpchub against batchspawner, each behind a real
JupyterHub and configurable-http-proxy on the local Slurm or Grid Engine, one user (hpcbench10).

Counted from the POST until the server answers through the proxy (the spawn), then from the
DELETE until the server is gone (the stop):
- processes the hub forks, by program (``strace -f -e trace=execve`` on the hub: sudo, and what
  runs under it: hpchub-job, sbatch, squeue, ...); ``sudo``/``ssh`` calls are the round trips;
- scheduler RPCs by type as slurmctld counts them (``sdiag``; Slurm only, all users, so run it on
  an otherwise idle cluster);
- the hub's database commits (sqlite's ``fdatasync``/``fsync`` calls by the hub) and its requests to
  the proxy's REST API (connections to the proxy's API port);
- CPU seconds of the hub process itself (its one event loop: what bounds the spawns per second a
  hub can start) and with the children it waited for;
- in the job: the programs the job script runs before the server (from the script the spawner
  submitted, read back from the scheduler: ``scontrol write batch_script`` / ``qstat -j``), and
  Python interpreters among them.

    /opt/hpchub/venv/bin/python bench/cost.py [--scheduler slurm|sge] [--rounds 3]

Needs ``strace`` (apt-get install strace). Writes bench/results/cost-SCHEDULER.json. Cleans up as
bench/storm.py does (its hub helpers are reused).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import storm  # noqa: E402  (bench/, first on sys.path when run as a script)
from helpers.hub import Hub  # noqa: E402

USER = "hpcbench10"
EXEC_RE = re.compile(r'^(\d+)\s+execve\("([^"]+)"')
CONNECT_RE = re.compile(r'^(\d+)\s+connect\(.*sin_port=htons\((\d+)\)')
SYNC_RE = re.compile(r'^(\d+)\s+f(?:data)?sync\(')


def sdiag_counts() -> dict[str, int]:
    """slurmctld's RPC counts by message type since the last reset."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = text.split("statistics by message type", 1)[-1].split("statistics by user")[0]
    pattern = r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)"
    return {name: int(count) for name, count in re.findall(pattern, section, re.M)}


def traced_counts(trace: Path, proxy_api_port: int) -> dict:
    """Programs executed, database syncs and proxy API connections in an strace -f output."""
    programs: collections.Counter[str] = collections.Counter()
    syncs = proxy_connections = 0
    for line in trace.read_text(errors="replace").splitlines():
        if match := EXEC_RE.match(line):
            if "= -1 ENOENT" not in line:  # PATH lookups that missed
                programs[os.path.basename(match.group(2))] += 1
        elif match := CONNECT_RE.match(line):
            proxy_connections += int(match.group(2)) == proxy_api_port
        elif SYNC_RE.match(line):
            syncs += 1
    # a python entry point shows as its script name, its interpreter's exec as python3.11
    return {"programs": dict(programs.most_common()), "db_syncs": syncs, "proxy_api_connections": proxy_connections}


def submitted_script(scheduler: str, job_id: str) -> str:
    if scheduler == "slurm":
        done = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True)
        return done.stdout
    done = subprocess.run(["qstat", "-j", job_id], capture_output=True, text=True)
    script = Path(f"/var/spool/gridengine/execd/{os.uname().nodename}/job_scripts/{job_id}")
    return script.read_text() if script.exists() else done.stdout


def before_server(script: str) -> dict:
    """Commands the job script runs before it execs the server (comments and directives skipped)."""
    commands = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("exec "):
            continue
        commands.append(stripped)
    pythons = [command for command in commands if re.search(r"\bpython[0-9.]*\b", command)]
    return {"shell_lines": len(commands), "python_interpreters": len(pythons), "python_lines": pythons}


class Traced:
    """strace -f on a running process, into a file, until closed."""

    def __init__(self, pid: int, output: Path):
        self.output = output
        self.process = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=execve,connect,fsync,fdatasync",
                                         "-p", str(pid), "-o", str(output)], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def one_round(kind: str, scheduler: str, hub: Hub, work: Path, index: int) -> dict:
    options = {"profile": "storm"} if kind == "hpchub" else {}
    result: dict = {}
    for phase in ("spawn", "stop"):
        if scheduler == "slurm":
            subprocess.run(["sdiag", "--reset"], check=True, capture_output=True)
        trace = work / f"{kind}-{phase}-{index}.strace"
        tracer = Traced(hub.hub.pid, trace)
        cpu, own_cpu = storm.cpu_seconds(hub.hub.pid), storm.cpu_seconds(hub.hub.pid, children=False)
        started = time.monotonic()
        try:
            if phase == "spawn":
                response = hub.api("POST", f"/users/{USER}/server", json=options)
                if response.status_code not in (201, 202):
                    raise RuntimeError(f"POST {response.status_code}: {response.text[:300]}")
                deadline = time.monotonic() + 180
                while USER not in storm.routed_users(hub) or not storm.answers(
                        f"{hub.url}/user/{USER}/api", {"Authorization": f"token {hub.admin_token}"}):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not answering after 180 s\n{hub.log_tail(30)}")
                    time.sleep(0.2)
            else:
                hub.api("DELETE", f"/users/{USER}/server")
                hub.wait_for_server(USER, ready=False, timeout=120)
        finally:
            seconds = time.monotonic() - started
            tracer.close()
        counts = traced_counts(trace, hub.proxy_api_port)
        counts.update(seconds=seconds, hub_cpu_s=storm.cpu_seconds(hub.hub.pid) - cpu,
                      hub_process_cpu_s=storm.cpu_seconds(hub.hub.pid, children=False) - own_cpu)
        if scheduler == "slurm":
            counts["scheduler_rpcs"] = sdiag_counts()
        if phase == "spawn":
            jobs = storm.bench_jobs(scheduler, [USER])
            if jobs:
                counts["job_script"] = before_server(submitted_script(scheduler, max(jobs, key=int)))
        result[phase] = counts
    return result


def run(kind: str, scheduler: str, rounds: int) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix=f"hpchub-cost-{kind}-"))  # the strace outputs
    since = time.time()
    try:
        with storm.bench_hub(kind, scheduler, [USER], timeout=180) as hub:
            return [one_round(kind, scheduler, hub, work, index) for index in range(rounds)]
    finally:
        storm.cancel_jobs(scheduler, storm.bench_jobs(scheduler, [USER]), [USER])
        storm.remove_job_logs([USER], since)
        shutil.rmtree(work, ignore_errors=True)


def summarise(rounds: list[dict]) -> dict:
    """Per phase: the median of each count over the rounds (programs and RPC types one by one)."""
    out: dict = {}
    for phase in ("spawn", "stop"):
        phase_rounds = [r[phase] for r in rounds]
        summary: dict = {key: statistics.median(r[key] for r in phase_rounds)
                         for key in ("seconds", "hub_cpu_s", "hub_process_cpu_s", "db_syncs", "proxy_api_connections")}
        for group in ("programs", "scheduler_rpcs"):
            names = {name for r in phase_rounds for name in r.get(group, {})}
            if names:
                summary[group] = {name: statistics.median(r.get(group, {}).get(name, 0) for r in phase_rounds)
                                  for name in sorted(names)}
        if phase == "spawn" and "job_script" in phase_rounds[0]:
            summary["job_script"] = phase_rounds[0]["job_script"]
        out[phase] = summary
    return out


def report(data: dict) -> None:
    print(f"\nper spawn and per stop, median of {data['rounds']} rounds, local {data['scheduler']}:")
    for kind, phases in data["results"].items():
        for phase, summary in phases.items():
            programs = summary.get("programs", {})
            round_trips = sum(count for name, count in programs.items() if name in ("sudo", "ssh"))
            print(f"  {kind:12} {phase:5} {summary['seconds']:5.1f} s; hub CPU {summary['hub_cpu_s']:.2f} s; "
                  f"{round_trips:g} sudo/ssh calls; programs {programs}; {summary['db_syncs']:g} db syncs; "
                  f"{summary['proxy_api_connections']:g} proxy API connections")
            if "scheduler_rpcs" in summary:
                rpcs = {name: count for name, count in summary["scheduler_rpcs"].items() if count}
                print(f"  {'':12} {'':5} slurmctld RPCs: {rpcs}")
            if "job_script" in summary:
                script = summary["job_script"]
                print(f"  {'':12} {'':5} job script before the server: {script['shell_lines']} shell lines, "
                      f"{script['python_interpreters']} Python interpreters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=sorted(storm.SCHEDULERS), default="slurm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="hpchub,batchspawner")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("bench/cost.py needs strace (apt-get install strace)")
    storm.ensure_users(10)
    results = {kind: summarise(run(kind, args.scheduler, args.rounds)) for kind in args.variants.split(",")}
    data = {"scheduler": args.scheduler, "rounds": args.rounds, "results": results}
    storm.RESULTS.mkdir(exist_ok=True)
    path = storm.RESULTS / f"cost-{args.scheduler}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    report(data)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
