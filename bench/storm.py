"""The class-start storm: N users press "start" in the same second. Through a real JupyterHub and
configurable-http-proxy (tests/helpers/hub.py) on the local Slurm or Grid Engine, in one run:

- floor: the same N notebook servers (``jupyterhub-singleuser``, the command both spawners' jobs run;
  bench/floor.py) submitted with bare sbatch/qsub, one per user, as that user, each timed until it
  answers over HTTP on its node; what the scheduler and the server's own start cost;
- hpchub: N REST spawns at once, each user timed until its server answers through the proxy;
- batchspawner: the same with batchspawner's SlurmSpawner / GridengineSpawner configured the usual
  way.

Per variant: time until all N answer, per-user latency (median, p90, max), failures; ratios to the
floor. N users means N unix accounts: hpcbench01..NN are created (useradd, as tests/clusters/users.sh
does) where missing and left in place. N is capped at what the partition/queue can run at once
(idle CPUs of Slurm's `debug`, free slots of Grid Engine's `short.q`); the cap is printed.

Run as root with the cluster up (tests/clusters/slurm.sh up / sge.sh up):

    /opt/hpchub/venv/bin/python bench/storm.py [--users 60] [--scheduler slurm|sge] [--variants floor,hpchub,batchspawner]

Writes bench/results/storm-SCHEDULER.json and, where matplotlib imports, storm-SCHEDULER.png (per-user
latency CDF). Re-plot a result with any Python that has matplotlib and requests:

    python bench/storm.py --plot-only bench/results/storm-slurm.json

Stops its hubs and proxies, cancels the jobs of the bench users it recorded, removes their job logs,
its hubs' state and its site configs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import floor  # noqa: E402  (bench/, first on sys.path when run as a script)
from helpers.hub import VENV, Hub, free_port  # noqa: E402
from helpers.support import SITE_CONFIGS  # noqa: E402

RESULTS = REPO / "bench" / "results"
KEEP_LOGS: Path | None = None  # --keep-logs DIR: where the hubs' logs are copied before their state goes
USER_PREFIX = "hpcbench"
WALLTIME = "00:30:00"

# Per scheduler: the base site, the queue all three variants use and the memory each server asks for.
# Grid Engine enforces h_vmem as a virtual-memory limit, which a Jupyter server exceeds well below 1 GB.
SCHEDULERS = {
    "slurm": {"site": "local-slurm.yaml", "cluster": "slurm", "queue": "debug", "memory": "200M"},
    "sge": {"site": "local-sge.yaml", "cluster": "sge", "queue": "short.q", "memory": "2G"},
}

STORM_PROFILE = """
  - slug: storm
    name: "Storm: 1 core, {memory}"
    cluster: {cluster}
    queue: {queue}
    resources: {{cores: 1, memory: {memory}, walltime: "{walltime}"}}
"""

HUB_CONFIG = """
load_subconfig({base!r})
c.Authenticator.allowed_users = set({users!r})
c.JupyterHub.concurrent_spawn_limit = max(100, {n})
# GET /users lists every bench user in one page (JupyterHub truncates at 200 by default)
c.JupyterHub.api_page_max_limit = max(200, {n})
"""

# batchspawner as its README configures it: the venv activated in the prologue, the hub's poll interval.
BATCHSPAWNER_CONFIG = {
    "slurm": """
import batchspawner  # registers batchspawner's port handler
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_partition = {queue!r}
c.SlurmSpawner.req_runtime = {walltime!r}
c.SlurmSpawner.req_memory = {memory!r}
c.SlurmSpawner.req_prologue = "source {venv}/bin/activate"
c.SlurmSpawner.startup_poll_interval = 0.5
c.Spawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.env_keep = ["PATH", "LANG"]  # JupyterHub 5 keeps no PATH by itself
""",
    "sge": """
import batchspawner  # registers batchspawner's port handler
c.JupyterHub.spawner_class = "batchspawner.GridengineSpawner"
c.GridengineSpawner.req_options = "-q {queue} -l h_vmem={memory} -l h_rt={walltime}"
c.GridengineSpawner.req_prologue = "source {venv}/bin/activate"
c.GridengineSpawner.startup_poll_interval = 0.5
c.Spawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.env_keep = ["PATH", "LANG"]
""",
}


# -- accounts and capacity -------------------------------------------------------------------------
def ensure_users(count: int) -> tuple[list[str], list[str]]:
    """hpcbench01..: unix accounts as tests/clusters/users.sh makes them; returns (all, newly created)."""
    users = bench_users(1, count)
    return users, ensure_accounts(users)


def bench_users(first: int, count: int) -> list[str]:
    """``count`` bench account names from hpcbenchFIRST on (hpcbench01, hpcbench02, ...)."""
    return [f"{USER_PREFIX}{index:02d}" for index in range(first, first + count)]


def ensure_accounts(users: Iterable[str]) -> list[str]:
    """Make the missing unix accounts as tests/clusters/users.sh does (left in place); returns the new ones."""
    created = []
    for user in users:
        if subprocess.run(["getent", "passwd", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--home-dir", f"/home/{user}", "--shell", "/bin/bash",
                            "--user-group", "-K", "UID_MIN=1000", "-K", "UID_MAX=59999", user], check=True)
            subprocess.run(["usermod", "-p", "*", user], check=True)  # not locked, no password
            created.append(user)
    return created


def capacity(scheduler: str) -> int:
    """How many 1-core jobs the bench queue can start right now."""
    if scheduler == "slurm":
        # %C: allocated/idle/other/total CPUs
        cpus = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%C"], capture_output=True, text=True,
                              check=True).stdout.split()[0]
        return int(cpus.split("/")[1])
    text = subprocess.run(["qstat", "-g", "c"], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "short.q":
            return int(fields[4])  # CLUSTER QUEUE, CQLOAD, USED, RES, AVAIL, TOTAL, ...
    raise RuntimeError(f"no short.q in qstat -g c:\n{text}")


def bench_jobs(scheduler: str, users: list[str]) -> dict[str, str]:
    """Job id -> owner of the bench users' jobs (only this bench runs jobs as them)."""
    if scheduler == "slurm":
        text = subprocess.run(["squeue", "-h", "-u", ",".join(users), "-o", "%i %u"], capture_output=True,
                              text=True).stdout
        return dict(line.split() for line in text.splitlines() if line.strip())
    text = subprocess.run(["qstat", "-u", ",".join(users)], capture_output=True, text=True).stdout
    jobs = {}
    for line in text.splitlines()[2:]:  # header and dashes
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            jobs[fields[0]] = fields[3]
    return jobs


def cancel_jobs(scheduler: str, jobs: dict[str, str], users: list[str], timeout: float = 90) -> None:
    """Cancel the recorded jobs that are still there (as their owners); wait until the queue is free."""
    left = {job_id: user for job_id, user in bench_jobs(scheduler, users).items() if job_id in jobs}
    for job_id, user in left.items():
        command = ["scancel", job_id] if scheduler == "slurm" else ["qdel", job_id]
        subprocess.run(["sudo", "-n", "-u", user, *command], capture_output=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(bench_jobs(scheduler, users)) & set(jobs):
        time.sleep(1)
    stray = set(bench_jobs(scheduler, users)) - set(jobs)
    if stray:
        print(f"  note: bench users have jobs this run did not record: {sorted(stray)}", flush=True)


def remove_job_logs(users: list[str], since: float) -> None:
    """The job output files the variants wrote into the bench users' homes during this run, and what
    their servers left there (runtime files of cancelled servers, jupyterlab's `npm prefix` logs)."""
    patterns = (".hpchub/logs/hpchub-*.log", "jupyterhub_slurmspawner_*.log", ".jupyterhub.sge.out",
                ".jupyterhub.sge.err", ".local/share/jupyter/runtime/jpserver-*", ".npm/_logs/*.log")
    for user in users:
        for pattern in patterns:
            for log in Path(f"/home/{user}").glob(pattern):
                if log.stat().st_mtime >= since:
                    log.unlink(missing_ok=True)


# -- timing ---------------------------------------------------------------------------------------
def summary(latencies: dict[str, float], failures: dict[str, str], n: int) -> dict:
    values = sorted(latencies.values())
    result: dict = {"n": n, "ready": len(values), "failures": failures, "latencies_s": latencies}
    if values:
        result.update(median_s=statistics.median(values), p90_s=values[min(len(values) - 1, int(0.9 * len(values)))],
                      max_s=values[-1])
    result["all_ready_s"] = values[-1] if len(values) == n else None
    return result


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU of a process and (``children``) of the children it has waited for (the
    hub's sudo calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def routed_users(hub: Hub) -> set[str]:
    """Users whose server the hub has added to the proxy, from the proxy's own REST API (asking
    costs the hub nothing, where a request to a server not yet routed lands on the hub)."""
    response = requests.get(f"http://127.0.0.1:{hub.proxy_api_port}/api/routes", timeout=10,
                            headers={"Authorization": f"token {hub.proxy_token}"})
    return {route.split("/")[2] for route in response.json() if route.startswith("/user/")}


def answers(url: str, headers: dict | None = None) -> bool:
    """A Jupyter server answered (its /api gives a version), not the hub's pending page or an error."""
    try:
        response = requests.get(url, headers=headers, timeout=5, allow_redirects=False)
        return response.status_code == 200 and "version" in response.json()
    except (requests.RequestException, ValueError):
        return False


def run_floor(scheduler: str, users: list[str], timeout: float) -> tuple[dict, dict[str, str]]:
    """Bare submissions: each user's server (bench/floor.py: the command hpchub's and batchspawner's
    jobs run) as a batch job on a port chosen here, timed until it answers."""
    logs = Path(tempfile.mkdtemp(prefix="hpchub-storm-floor-"))
    logs.chmod(0o1777)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(users):
        ports = {user: free_port() for user in users}
    jobs: dict[str, str] = {}
    failures: dict[str, str] = {}

    with floor.StubHubAPI() as hub_api:
        def submit(user: str) -> None:
            script = "#!/bin/bash\n" + floor.server_command(VENV, user, ports[user], hub_api.url) + "\n"
            job_id, error = submit_floor_job(scheduler, user, script, logs / f"{user}.log")
            if job_id is None:
                failures[user] = f"submit: {error}"
            else:
                jobs[job_id] = user

        started = time.monotonic()
        with ThreadPoolExecutor(len(users)) as pool:
            pool.map(submit, users)
            latencies = wait_until_answering(users, started, timeout, failures,
                                             lambda user: answers(floor.api_url(ports[user], user)))
    shutil.rmtree(logs, ignore_errors=True)
    return summary(latencies, failures, len(users)), jobs


def submit_floor_job(scheduler: str, user: str, script: str, log: Path, name: str = "storm-floor",
                     ) -> tuple[str | None, str]:
    """Submit ``script`` with bare sbatch/qsub as ``user`` to the bench queue, output to ``log``;
    returns (job id, "") or (None, the scheduler's error)."""
    spec = SCHEDULERS[scheduler]
    if scheduler == "slurm":
        command = ["sbatch", "--parsable", "-p", spec["queue"], "-c", "1", f"--mem={spec['memory']}",
                   "-t", WALLTIME, "-J", name, f"--chdir=/home/{user}", "-o", str(log)]
    else:
        command = ["qsub", "-terse", "-S", "/bin/bash", "-N", name, "-q", spec["queue"],
                   "-l", f"h_vmem={spec['memory']}", "-l", f"h_rt={WALLTIME}", "-j", "y",
                   "-o", str(log), "-wd", f"/home/{user}"]
    done = subprocess.run(["sudo", "-n", "-H", "-u", user, *command], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip()
    return done.stdout.strip().split(";")[0], ""


def wait_until_answering(users: list[str], started: float, timeout: float, failures: dict[str, str],
                         answering: Callable[[str], bool],
                         refresh: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Seconds from ``started`` until each user's server answers, one watcher thread per user (a server
    that accepts but answers late must not delay the others' times); ``refresh`` runs between rounds
    (the hub's user list). Who does not answer by the timeout fails."""
    latencies: dict[str, float] = {}

    def watch(user: str) -> None:
        while time.monotonic() - started < timeout and user not in failures:
            if answering(user):
                latencies[user] = time.monotonic() - started
                return
            time.sleep(0.2)

    watchers = [threading.Thread(target=watch, args=(user,), daemon=True) for user in users]
    for watcher in watchers:
        watcher.start()
    while any(watcher.is_alive() for watcher in watchers):
        refresh()
        time.sleep(0.5)
    for user in users:
        if user not in latencies and user not in failures:
            failures[user] = f"not answering after {timeout:.0f} s"
    return latencies


def site_text(scheduler: str, prologue: str | None = None, profiles: str = "") -> str:
    """The local site config plus the bench profile ``storm`` and ``profiles`` (YAML list entries);
    ``prologue``: shell lines every job of the cluster runs before the server (after the venv is
    activated)."""
    spec = SCHEDULERS[scheduler]
    text = (SITE_CONFIGS / spec["site"]).read_text()
    if prologue is not None:
        anchor = "    environment:\n"  # the one cluster's environment block in the local sites
        if text.count(anchor) != 1:
            raise RuntimeError(f"{spec['site']}: no single {anchor.strip()!r} block to add a prologue to")
        text = text.replace(anchor, anchor + f"      prologue: {json.dumps(prologue)}\n")
    return text + STORM_PROFILE.format(memory=spec["memory"], cluster=spec["cluster"], queue=spec["queue"],
                                       walltime=WALLTIME) + profiles


@contextlib.contextmanager
def bench_hub(kind: str, scheduler: str, users: list[str], timeout: float, prologue: str | None = None,
              extra_config: str = "", poll_interval: int = 30, profiles: str = "", name: str = "storm",
              site_edit: Callable[[str], str] | None = None) -> Iterator[Hub]:
    """A started hub and proxy with hpchub (profile ``storm`` and ``profiles``) or batchspawner as its
    spawner, for ``users``; stopped (by pid) and its state and site config removed at the end.
    ``timeout``: the hub's start_timeout; ``extra_config``: more lines for the hub's config file;
    ``site_edit``: a change to the site config's text."""
    spec = SCHEDULERS[scheduler]
    state = Path(tempfile.mkdtemp(prefix=f"hpchub-{name}-{kind}-"))
    sites = Path(tempfile.mkdtemp(prefix=f"hpchub-{name}-site-"))
    sites.chmod(0o755)  # the jobs read the site config as their users
    site = sites / f"{name}-{scheduler}.yaml"
    text = site_text(scheduler, prologue, profiles)
    site.write_text(site_edit(text) if site_edit else text)
    site.chmod(0o644)
    config = HUB_CONFIG.format(base=str(REPO / "examples" / "jupyterhub_config.py"), users=users, n=len(users))
    if kind == "batchspawner":
        config += BATCHSPAWNER_CONFIG[scheduler].format(venv=VENV, **spec, walltime=WALLTIME)
    config_file = state / "jupyterhub_config.py"
    config_file.write_text(textwrap.dedent(config) + textwrap.dedent(extra_config))
    hub = Hub(site, state, poll_interval=poll_interval, config_file=config_file, start_timeout=int(timeout))
    try:
        hub.start()
        yield hub
    finally:
        hub.close()
        if KEEP_LOGS and hub.hub_log.exists():
            KEEP_LOGS.mkdir(parents=True, exist_ok=True)
            shutil.copy(hub.hub_log, KEEP_LOGS / f"hub-{kind}-{scheduler}.log")
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(sites, ignore_errors=True)


def run_hub(kind: str, scheduler: str, users: list[str], timeout: float) -> tuple[dict, dict[str, str]]:
    """N REST spawns at once through a real hub and proxy, each timed until it answers through the proxy."""
    with bench_hub(kind, scheduler, users, timeout) as hub:
        return spawn_storm(hub, kind, scheduler, users, timeout)


def spawn_storm(hub: Hub, kind: str, scheduler: str | None, users: list[str], timeout: float,
                profile: str = "storm") -> tuple[dict, dict[str, str]]:
    """The storm itself on a started hub: POST all spawns at once (hpchub's with ``profile``), time each
    until it answers, stop all. ``scheduler``: where the spawners' jobs go (None: no batch jobs)."""
    failures: dict[str, str] = {}
    posted: set[str] = set()
    jobs: dict[str, str] = {}
    lock = threading.Lock()
    options = {"profile": profile} if kind == "hpchub" else {}

    post_timeouts: set[str] = set()  # the hub took longer than 30 s to answer; the spawn may go on

    def post(user: str) -> None:
        try:
            response = hub.api("POST", f"/users/{user}/server", json=options)
        except requests.Timeout:
            with lock:
                post_timeouts.add(user)  # not a failure unless the server never answers
            return
        except requests.RequestException as error:
            response, reason = None, f"POST: {error}"
        else:
            reason = f"POST {response.status_code}: {response.text[:200]}"
        with lock:
            if response is not None and response.status_code in (201, 202):
                posted.add(user)
            else:
                failures[user] = reason

    routed: set[str] = set()  # users whose server the hub has added to the proxy
    list_seconds: list[float] = []  # how long the hub took to answer GET /users during the storm
    rounds = itertools.count()

    def refresh() -> None:
        """What all watchers need, asked once per round: the proxy's routes (the hub adds a user's
        route once the server is up) from the proxy's own API, which costs the hub nothing; the
        hub's user list, for failed spawns, only every 10th round (5 s) so as not to load the hub
        whose work is measured."""
        routed.update(routed_users(hub))
        if next(rounds) % 10:
            return
        asked = time.monotonic()
        try:
            models = {model["name"]: model for model in hub.api("GET", "/users").json()}
        except requests.RequestException:  # a hub too busy to answer in 30 s: recorded, asked again later
            list_seconds.append(time.monotonic() - asked)
            return
        list_seconds.append(time.monotonic() - asked)
        for user in users:
            server = models.get(user, {}).get("servers", {}).get("")
            with lock:
                if server is None and user in posted and user not in latencies_seen:
                    failures[user] = "spawn failed (server gone)"  # accepted, then gone

    latencies_seen: set[str] = set()

    def answering(user: str) -> bool:
        if user in routed and answers(f"{hub.url}/user/{user}/api", {"Authorization": f"token {hub.admin_token}"}):
            latencies_seen.add(user)
            return True
        return False

    def cpu_now() -> dict[str, float]:
        return {"hub": cpu_seconds(hub.hub.pid), "hub_alone": cpu_seconds(hub.hub.pid, children=False),
                "proxy": cpu_seconds(hub.proxy.pid)}

    cpu_before = cpu_now()
    started = time.monotonic()
    with ThreadPoolExecutor(len(users)) as pool:
        pool.map(post, users)
        latencies = wait_until_answering(users, started, timeout, failures, answering, refresh)
    cpu_after = cpu_now()
    jobs = bench_jobs(scheduler, users) if scheduler else {}
    result = summary(latencies, failures, len(users))
    result["hub_user_list_s"] = {"median": statistics.median(list_seconds), "max": max(list_seconds)}
    result["post_timeouts"] = len(post_timeouts)
    # CPU the hub (with the children it reaped: its sudo calls; and alone) and the proxy spent from the
    # first POST until all answered, with this bench's own asking (the user list every 5 s, each
    # server once it is routed)
    result["cpu_s"] = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    if failures:
        result["hub_log_tail"] = hub.log_tail(40)
    with ThreadPoolExecutor(len(users)) as pool:
        pool.map(lambda user: hub.api("DELETE", f"/users/{user}/server"), users)
    def servers_left() -> bool:
        try:
            return any(model.get("servers") for model in hub.api("GET", "/users").json() if model["name"] in users)
        except requests.RequestException:
            return True

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and servers_left():
        time.sleep(1)
    return result, jobs


# -- report ---------------------------------------------------------------------------------------
def line(kind: str, result: dict) -> str:
    if not result.get("ready"):
        return f"{kind:13} 0/{result['n']} ready; failures: {result['failures']}"
    all_ready = f"{result['all_ready_s']:.1f} s" if result["all_ready_s"] is not None else "never"
    text = (f"{kind:13} {result['ready']}/{result['n']} ready, all in {all_ready}; per user median "
            f"{result['median_s']:.1f} s, p90 {result['p90_s']:.1f} s, max {result['max_s']:.1f} s; "
            f"{len(result['failures'])} failures")
    if "hub_user_list_s" in result:  # a busy hub answers its REST API late
        text += f"; hub answered GET /users in {result['hub_user_list_s']['max']:.2f} s at worst"
    if "cpu_s" in result:
        n = result["n"]
        text += (f"; CPU per spawn: hub {result['cpu_s']['hub'] / n:.2f} s (with its sudo children), "
                 f"proxy {result['cpu_s']['proxy'] / n:.2f} s")
    return text + (f" {sorted(set(result['failures'].values()))}" if result["failures"] else "")


def ratios(results: dict) -> dict:
    floor = results.get("floor", {})
    out: dict = {}
    for kind in ("hpchub", "batchspawner"):
        result = results.get(kind)
        if not result or not floor.get("ready") or not result.get("ready"):
            continue
        out[kind] = {"median": result["median_s"] / floor["median_s"]}
        if result["all_ready_s"] is not None and floor["all_ready_s"] is not None:
            out[kind]["all_ready"] = result["all_ready_s"] / floor["all_ready_s"]
    return out


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files, or None where matplotlib is not installed (the bench extra)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def plot(data: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for kind, result in data["results"].items():
        values = sorted(result["latencies_s"].values())
        if values:
            fractions = [(index + 1) / result["n"] for index in range(len(values))]
            axes.step([0, *values], [0, *fractions], where="post",
                      label=f"{kind} ({result['ready']}/{result['n']}, median {result['median_s']:.1f} s)")
    axes.set_xlabel("seconds from the storm's start until the user's server answers")
    axes.set_ylabel("fraction of users")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"{data['n']} users start at once, local {data['scheduler']} on a {data['cpus']}-core machine")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def run(scheduler: str, wanted: int, kinds: list[str], timeout: float) -> dict:
    free = capacity(scheduler)
    n = min(wanted, free)
    if n < wanted:
        print(f"the {SCHEDULERS[scheduler]['queue']} queue can run {free} servers at once: N = {n} "
              f"instead of {wanted}", flush=True)
    users, created = ensure_users(n)
    if created:
        print(f"created unix accounts {', '.join(created)}", flush=True)
    since = time.time()
    variants: dict[str, Callable[[], tuple[dict, dict[str, str]]]] = {
        "floor": lambda: run_floor(scheduler, users, timeout),
        "hpchub": lambda: run_hub("hpchub", scheduler, users, timeout),
        "batchspawner": lambda: run_hub("batchspawner", scheduler, users, timeout),
    }
    variants = {kind: variant for kind, variant in variants.items() if kind in kinds}
    results: dict[str, dict] = {}
    try:
        for kind, variant in variants.items():
            print(f"{kind}: {n} users at once ...", flush=True)
            jobs: dict[str, str] = {}
            try:
                results[kind], jobs = variant()
            except Exception as error:  # one variant's breakdown must not lose the others' results
                results[kind] = {**summary({}, {"*": f"the bench failed: {type(error).__name__}: {error}"}, n)}
            finally:
                cancel_jobs(scheduler, jobs | bench_jobs(scheduler, users), users)
            print("  " + line(kind, results[kind]), flush=True)
    finally:
        remove_job_logs(users, since)
    return {"scheduler": scheduler, "n": n, "requested": wanted, "queue_capacity": free, "cpus": os.cpu_count(),
            "users_created": created, "results": results, "ratios_to_floor": ratios(results)}


def report(data: dict, path: Path) -> None:
    print(f"\n{data['n']} users at once on local {data['scheduler']} ({data['cpus']}-core machine, "
          f"queue free for {data['queue_capacity']} servers):")
    for kind, result in data["results"].items():
        print("  " + line(kind, result))
    for kind, ratio in data["ratios_to_floor"].items():
        all_ready = f"{ratio['all_ready']:.2f}" if "all_ready" in ratio else "n/a (not all ready)"
        print(f"  {kind} / floor (lower is better): all ready {all_ready}, median {ratio['median']:.2f}")
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


def names_argument(parser: argparse.ArgumentParser, text: str, allowed: Iterable[str], what: str) -> list[str]:
    """A comma-separated argument (``--variants floor,hpchub``) as its names in order; the parser's
    error for a name not in ``allowed`` (``what`` names them in the message)."""
    names = [name for name in text.split(",") if name]
    allowed = list(allowed)
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"unknown {what} {sorted(unknown)}; choose from {', '.join(allowed)}")
    return names


def save_result(data: dict, name: str, report: Callable[[dict, Path], None]) -> None:
    """Write bench/results/NAME.json and report it (the bench's report draws the PNG beside it)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    report(data, path)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="slurm")
    parser.add_argument("--variants", default="floor,hpchub,batchspawner",
                        help="comma-separated, of floor, hpchub, batchspawner (default: all three)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a variant may take (default 300)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy each hub's log into DIR")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        data = json.loads(args.plot_only.read_text())
        report(data, args.plot_only)
        return
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs
    data = run(args.scheduler, args.users, args.variants.split(","), args.timeout)
    save_result(data, f"storm-{args.scheduler}", report)


if __name__ == "__main__":
    main()
