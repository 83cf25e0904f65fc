"""500 users at once on one hub: N REST spawns in the same second through a real JupyterHub and
configurable-http-proxy (tests/helpers/hub.py), each server a stand-in (bench/standin.py: listens,
reports its port the way the spawner expects, answers JupyterHub's check, about 20 ms of CPU to
start) so that 500 of them fit on the 2-core test VM and what is measured is the hub. Variants:

- floor: JupyterHub's own LocalProcessSpawner starts the stand-ins as each user on the hub's
  machine: what JupyterHub itself costs per spawn, with no scheduler;
- hpchub: HPCSpawner with a profile ``hub500`` (1 core, 100 MB, 10 minutes in Slurm's ``debug``)
  whose job is hpchub's own job script with the stand-in as the server command
  (``HPCSpawner.server_command``): the same submission as the user, bundle, secrets file, the job
  side's environment check (start-server.sh) and the port report to /hub/api/hpchub/port; only
  the server is replaced, as a site may replace ``jupyterhub-singleuser``;
- batchspawner: batchspawner's SlurmSpawner as bench/storm.py configures it, with the stand-in as its
  command reporting to /hub/api/batchspawner as batchspawner-singleuser does.

Per variant: failures, time until all N answer through the proxy, per-user latency (median, p90,
max), the hub's CPU (alone, and with the children it reaped: sudo), event-loop lag of the hub (a
sampler the bench's hub config starts on the hub's own loop: how late a 100 ms sleep wakes), and the
latency of ``GET /hub/health`` and ``GET /hub/api/users`` sampled during the storm; ratios to the floor.
``--profile DIR`` writes a cProfile of each hub (DIR/hub-VARIANT.prof) and prints its top entries.

N users are N unix accounts, hpcstorm001..hpcstormNNN by default (``--first NAME``: other names, e.g.
hpcbench55 for hpcbench55.., made with useradd as tests/clusters/users.sh does, left in place).
Slurm's variants need, for every one of them, an association slurmctld knows (it knows only those
made before it started, see tests/clusters/busy.sh) and room for N 1-CPU jobs in ``debug``. Before
the N=500 run of all three variants, as root, once (it stops the other tests' Slurm for a minute):

    /opt/hpchub/venv/bin/python bench/hub500.py --users 500 --accounts-only
    sacctmgr -i add user $(seq -f 'hpcstorm%03g' 1 500 | paste -sd,) account=bench defaultaccount=bench
    tests/clusters/slurm.sh down && HPCHUB_HEAD_SLOTS=512 tests/clusters/slurm.sh up
    /opt/hpchub/venv/bin/python bench/hub500.py --users 500

The floor needs neither (``--variants floor`` runs anywhere). Writes bench/results/hub500-slurm.json
and, where matplotlib imports, hub500-slurm.png (latency CDF, the hub's loop lag and GET /users
latency over the storm); ``--plot-only FILE`` redraws one. Stops its hubs and proxies, cancels the
jobs of its users it recorded, kills the stand-ins it started (by pid) and removes their job logs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import requests
import storm  # noqa: E402  (bench/, first on sys.path when run as a script; puts tests/ on sys.path)
from helpers.hub import Hub  # noqa: E402

RESULTS = storm.RESULTS
SCHEDULER = "slurm"
STANDIN = Path(__file__).resolve().parent / "standin.py"
# The Python of the venv the local sites' jobs activate (site-configs/local-slurm.yaml): the
# stand-in's #! line and the floor's command, so all three variants start the same interpreter.
JOB_PYTHON = "/opt/hpchub/venv/bin/python"
WALLTIME = "00:10:00"
MEMORY = "100M"
LAG_INTERVAL = 0.1  # the hub's loop sampler sleeps this long; lag = how much later it wakes
HEALTH_EVERY = 0.5  # seconds between the bench's GET /hub/health
USERS_EVERY = 2.0  # seconds between the bench's GET /hub/api/users (each lists all N users)

PROFILE = """
  - slug: hub500
    name: "hub500 stand-in: 1 core, {memory}"
    cluster: slurm
    queue: debug
    account: bench
    resources: {{cores: 1, memory: {memory}, walltime: "{walltime}"}}
"""

# In the hub's config, so it runs on the hub's own event loop (the config is read inside it): how
# late a LAG_INTERVAL sleep wakes, one line "MONOTONIC LAG" per sample (CLOCK_MONOTONIC is the bench's).
LOOP_LAG_CONFIG = """
import asyncio as _asyncio, time as _time
_lag_file = open({path!r}, "a", buffering=1)
async def _sample_loop_lag():
    while True:
        asked = _time.monotonic()
        await _asyncio.sleep({interval})
        woke = _time.monotonic()
        _lag_file.write(f"{{woke:.4f}} {{woke - asked - {interval}:.4f}}\\n")
_lag_task = _asyncio.get_running_loop().create_task(_sample_loop_lag())
"""

# cProfile of the hub's main thread from its start to its exit (JupyterHub's SIGTERM handler ends the
# loop and the process exits normally, so atexit runs).
PROFILE_CONFIG = """
import atexit as _atexit, cProfile as _cProfile
_profile = _cProfile.Profile()
_profile.enable()
_atexit.register(lambda: (_profile.disable(), _profile.dump_stats({path!r})))
"""

FLOOR_CONFIG = """
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = {command!r}
"""

HPCHUB_CONFIG = """
c.HPCSpawner.server_command = {command!r}
"""

# After bench/storm.py's batchspawner config: the stand-in instead of batchspawner-singleuser and the
# server (it makes batchspawner-singleuser's report itself), the bench's walltime, memory and account.
BATCHSPAWNER_CONFIG = """
c.SlurmSpawner.batchspawner_singleuser_cmd = ""
c.Spawner.cmd = {command!r}
c.SlurmSpawner.req_runtime = {walltime!r}
c.SlurmSpawner.req_memory = {memory!r}
c.SlurmSpawner.req_options = "--account=bench"  # its script template has no account line
"""


# -- accounts ---------------------------------------------------------------------------------------
def account_names(first: str, count: int) -> list[str]:
    """``count`` names from ``first`` on, keeping its digits' width: hpcstorm001 -> hpcstorm001..."""
    found = re.fullmatch(r"([a-z_][a-z0-9_-]*?)(\d+)", first)
    if found is None:
        raise SystemExit(f"--first {first!r}: a name ending in digits, such as hpcstorm001")
    prefix, digits = found.groups()
    return [f"{prefix}{index:0{len(digits)}d}" for index in range(int(digits), int(digits) + count)]


def slurm_knows(user: str) -> bool:
    """slurmctld has an association with a uid for ``user`` (what sbatch as that user needs)."""
    known = subprocess.run(["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc"], capture_output=True,
                           text=True).stdout
    return f"UserName={user}(" in known and f"UserName={user}(4294967294)" not in known


def check_slurm(users: list[str]) -> None:
    """Refuse to start the scheduler's variants without what they need (see the module's docstring)."""
    unknown = [user for user in users if not slurm_knows(user)]
    if unknown:
        raise SystemExit(f"slurmctld has no association for {len(unknown)} of the {len(users)} users "
                         f"({', '.join(unknown[:3])}...): add them to the Slurm account bench and restart Slurm "
                         "as this bench's docstring says, or pick users it knows with --first")
    free = storm.capacity(SCHEDULER)
    if free < len(users):
        raise SystemExit(f"the debug partition has {free} idle CPUs for {len(users)} stand-in jobs: restart Slurm "
                         f"with HPCHUB_HEAD_SLOTS={len(users) + 12} (see this bench's docstring) or use fewer users")


# -- the stand-in and its processes -----------------------------------------------------------------
def install_standin(directory: Path) -> Path:
    """A copy of the stand-in every user can run (the checkout may be root's alone)."""
    directory.chmod(0o755)
    copy = directory / STANDIN.name
    shutil.copy(STANDIN, copy)
    copy.chmod(0o755)
    return copy


def kill_standins(standin: Path) -> int:
    """SIGKILL the stand-ins still running from ``standin`` (this run's own copy), by pid: the
    floor's hub leaves its servers running when it stops (cleanup_servers is off in the example)."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(standin).encode() in command:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


# -- sampling during the storm -----------------------------------------------------------------------
class Sampler:
    """A thread that times ``GET /hub/health`` every HEALTH_EVERY s and ``GET /hub/api/users`` every
    USERS_EVERY s on ``hub`` until stopped: (seconds since ``started``, latency) pairs."""

    def __init__(self, hub: Hub, started: float):
        self.hub, self.started = hub, started
        self.health: list[tuple[float, float]] = []
        self.users: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def timed(self, series: list[tuple[float, float]], ask: Callable[[], object]) -> None:
        asked = time.monotonic()
        try:
            ask()
        except requests.RequestException:
            pass  # a hub too busy to answer in 30 s: recorded as such
        series.append((asked - self.started, time.monotonic() - asked))

    def run(self) -> None:
        next_users = 0.0
        while not self.stopped.is_set():
            self.timed(self.health, lambda: requests.get(f"{self.hub.url}/hub/health", timeout=30))
            if time.monotonic() - self.started >= next_users:
                next_users = time.monotonic() - self.started + USERS_EVERY
                self.timed(self.users, lambda: self.hub.api("GET", "/users"))
            self.stopped.wait(HEALTH_EVERY)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(60)


def command_counts(hub: Hub) -> dict[str, float]:
    """hpchub's commands on the cluster so far, by kind (its /hub/metrics; none for other spawners)."""
    try:
        response = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.admin_token}"},
                                timeout=30)
    except requests.RequestException:
        return {}
    counts: dict[str, float] = {}
    for text in response.text.splitlines():
        found = re.match(r'hpchub_cluster_command_duration_seconds_count\{.*kind="([^"]+)".*\} (\S+)', text)
        if found:
            counts[found.group(1)] = counts.get(found.group(1), 0) + float(found.group(2))
    return counts


def read_lag(path: Path, started: float) -> list[tuple[float, float]]:
    """The hub's loop-lag samples: (seconds since ``started``, lag)."""
    samples = []
    for text in path.read_text().splitlines() if path.exists() else ():
        woke, lag = (float(value) for value in text.split())
        if woke >= started:
            samples.append((woke - started, lag))
    return samples


def stats(values: Iterable[float]) -> dict | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return {"n": len(ordered), "median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "max": ordered[-1]}


def during(series: list[tuple[float, float]], end: float) -> list[float]:
    return [value for at, value in series if at <= end]


# -- one variant ---------------------------------------------------------------------------------------
def variant_config(kind: str, standin: Path, scratch: Path, profile_dir: Path | None) -> str:
    import jupyterhub  # the bench runs with the hub's venv: the version the stand-ins answer with

    arguments = ["--hub-version", jupyterhub.__version__]
    config = LOOP_LAG_CONFIG.format(path=str(scratch / f"lag-{kind}.txt"), interval=LAG_INTERVAL)
    if profile_dir is not None:
        config += PROFILE_CONFIG.format(path=str(profile_dir.resolve() / f"hub-{kind}.prof"))
    if kind == "floor":
        config += FLOOR_CONFIG.format(command=[JOB_PYTHON, str(standin), "--report", "none", *arguments])
    elif kind == "hpchub":
        config += HPCHUB_CONFIG.format(command=[str(standin), "--report", "hpchub", *arguments])
    else:
        config += BATCHSPAWNER_CONFIG.format(command=[str(standin), "--report", "batchspawner", *arguments],
                                             walltime=WALLTIME, memory=MEMORY)
    return config


def run_variant(kind: str, users: list[str], timeout: float, standin: Path, scratch: Path,
                profile_dir: Path | None) -> tuple[dict, dict[str, str]]:
    """One storm of ``users`` on a hub of ``kind``; its result and the batch jobs it saw."""
    config = variant_config(kind, standin, scratch, profile_dir)
    scheduler = None if kind == "floor" else SCHEDULER
    with storm.bench_hub(kind, SCHEDULER, users, timeout, extra_config=config, name="hub500",
                         profiles=PROFILE.format(memory=MEMORY, walltime=WALLTIME)) as hub:
        commands_before = command_counts(hub)
        started = time.monotonic()
        with Sampler(hub, started) as sampler:
            result, jobs = storm.spawn_storm(hub, kind, scheduler, users, timeout, profile="hub500")
        lag = read_lag(scratch / f"lag-{kind}.txt", started)
        commands = {name: count - commands_before.get(name, 0) for name, count in command_counts(hub).items()}
        if result["failures"]:
            result["hub_errors"] = error_lines(hub.hub_log)
    end = max(result.get("latencies_s", {}).values(), default=timeout)  # the storm: until the last answered
    n = len(users)
    result.update(
        cpu_per_spawn_s={name: seconds / n for name, seconds in result["cpu_s"].items()},
        loop_lag_s=stats(during(lag, end)), health_s=stats(during(sampler.health, end)),
        users_list_s=stats(during(sampler.users, end)), storm_s=end,
        # hpchub's cluster commands by kind for the N spawns and the N stops after them
        commands_per_user={name: count / n for name, count in sorted(commands.items()) if count},
        series={"loop_lag": lag, "health": sampler.health, "users_list": sampler.users},
    )
    return result, jobs


def error_lines(log: Path, most: int = 200) -> list[str]:
    """The hub's error lines and the traceback lines after each (why spawns failed), at most ``most``."""
    kept: list[str] = []
    in_error = False
    for text in log.read_text(errors="replace").splitlines() if log.exists() else ():
        if text.startswith("["):
            in_error = text.startswith("[E")
        if in_error:
            kept.append(text)
            if len(kept) >= most:
                break
    return kept


def run(users: list[str], kinds: list[str], timeout: float, profile_dir: Path | None) -> dict:
    created = storm.ensure_accounts(users)
    if created:
        print(f"created {len(created)} unix accounts ({created[0]}..{created[-1]})", flush=True)
    if set(kinds) - {"floor"}:
        check_slurm(users)
    os.environ["HPCHUB_CULL_TIMEOUT"] = "0"  # no idle culler asking the hub meanwhile
    since = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-hub500-"))
    standin = install_standin(scratch)
    results: dict[str, dict] = {}
    try:
        for kind in kinds:
            print(f"{kind}: {len(users)} users at once ...", flush=True)
            jobs: dict[str, str] = {}
            try:
                results[kind], jobs = run_variant(kind, users, timeout, standin, scratch, profile_dir)
            except Exception as error:  # one variant's breakdown must not lose the others' results
                results[kind] = storm.summary({}, {"*": f"the bench failed: {type(error).__name__}: {error}"},
                                              len(users))
            finally:
                if kind != "floor":
                    storm.cancel_jobs(SCHEDULER, jobs | storm.bench_jobs(SCHEDULER, users), users)
                left = kill_standins(standin)
                if left:
                    print(f"  killed {left} stand-ins left running", flush=True)
            print("  " + line(kind, results[kind]), flush=True)
            if profile_dir is not None:
                print_profile(profile_dir / f"hub-{kind}.prof")
    finally:
        storm.remove_job_logs(users, since)
        shutil.rmtree(scratch, ignore_errors=True)
    return {"scheduler": SCHEDULER, "n": len(users), "cpus": os.cpu_count(), "users": [users[0], users[-1]],
            "users_created": len(created), "results": results, "ratios_to_floor": ratios(results)}


def print_profile(path: Path, entries: int = 25) -> None:
    import pstats

    if path.exists():
        pstats.Stats(str(path)).sort_stats("cumulative").print_stats(entries)


# -- report ---------------------------------------------------------------------------------------
def line(kind: str, result: dict) -> str:
    text = storm.line(kind, result)
    if result.get("loop_lag_s"):
        lag, users = result["loop_lag_s"], result.get("users_list_s") or {}
        text += (f"; hub CPU alone {result['cpu_per_spawn_s']['hub_alone'] * 1000:.0f} ms per spawn; loop lag "
                 f"median {lag['median'] * 1000:.0f} ms, p90 {lag['p90'] * 1000:.0f} ms, max {lag['max'] * 1000:.0f} ms")
        if users:
            text += f"; GET /users median {users['median']:.2f} s, max {users['max']:.2f} s"
        if result.get("commands_per_user"):
            text += "; hpchub's commands per spawn and stop: " + ", ".join(
                f"{name} {count:.2f}" for name, count in result["commands_per_user"].items())
    return text


def ratios(results: dict) -> dict:
    out = storm.ratios(results)
    floor = results.get("floor", {})
    for kind, ratio in out.items():
        if floor.get("cpu_per_spawn_s") and results[kind].get("cpu_per_spawn_s"):
            ratio["hub_cpu_per_spawn"] = (results[kind]["cpu_per_spawn_s"]["hub"]
                                          / floor["cpu_per_spawn_s"]["hub"])
    return out


def plot(data: dict, path: Path) -> bool:
    plt = storm.pyplot()
    if plt is None:
        return False
    figure, (cdf, lag, users) = plt.subplots(3, 1, figsize=(7.5, 10))
    for kind, result in data["results"].items():
        values = sorted(result.get("latencies_s", {}).values())
        if values:
            fractions = [(index + 1) / result["n"] for index in range(len(values))]
            cdf.step([0, *values], [0, *fractions], where="post",
                     label=f"{kind} ({result['ready']}/{result['n']}, median {result['median_s']:.1f} s)")
        series = result.get("series", {})
        if series.get("loop_lag"):
            lag.plot(*zip(*series["loop_lag"], strict=True), label=kind, linewidth=0.8)
        if series.get("users_list"):
            users.plot(*zip(*series["users_list"], strict=True), marker=".", label=kind, linewidth=0.8)
    cdf.set_xlabel("seconds from the storm's start until the user's server answers through the proxy")
    cdf.set_ylabel("fraction of users")
    cdf.set_ylim(0, 1.02)
    cdf.set_title(f"{data['n']} users start at once on one hub (stand-in servers), {data['cpus']}-core machine")
    lag.set_ylabel("hub event-loop lag (s)")
    users.set_ylabel("GET /hub/api/users (s)")
    for axes in (lag, users):
        axes.set_xlabel("seconds since the storm's start")
    for axes in (cdf, lag, users):
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def report(data: dict, path: Path) -> None:
    print(f"\n{data['n']} users at once on one hub, stand-in servers ({data['cpus']}-core machine):")
    for kind, result in data["results"].items():
        print("  " + line(kind, result))
    for kind, ratio in data["ratios_to_floor"].items():
        print(f"  {kind} / floor: " + ", ".join(f"{name} {value:.2f}" for name, value in ratio.items()))
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--first", default="hpcstorm001", help="the first user's name (default hpcstorm001)")
    parser.add_argument("--variants", default="floor,hpchub,batchspawner",
                        help="comma-separated, of floor, hpchub, batchspawner (default: all three)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a variant may take (default 600)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="write a cProfile of each hub into DIR")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy each hub's log into DIR")
    parser.add_argument("--accounts-only", action="store_true", help="only make the users' unix accounts")
    parser.add_argument("--output", type=Path, default=RESULTS / f"hub500-{SCHEDULER}.json")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(json.loads(args.plot_only.read_text()), args.plot_only)
        return
    users = account_names(args.first, args.users)
    if args.accounts_only:
        print(f"{len(storm.ensure_accounts(users))} of {len(users)} accounts created ({users[0]}..{users[-1]})")
        return
    storm.KEEP_LOGS = args.keep_logs
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    data = run(users, args.variants.split(","), args.timeout, args.profile)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1) + "\n")
    report(data, args.output)


if __name__ == "__main__":
    main()
