"""Spawn to ready in a container: one user's server in a rootless podman container, started again and
again on an idle queue, timed from the request until it answers, against its floor. Three variants
on the local Slurm (or Grid Engine), one spawn at a time, taking turns round by round:

- floor: the same image and server command with bare sbatch/qsub and ``podman run`` (no hpchub):
  the job script runs ``podman run --rm --userns keep-id --network host --volume $HOME:$HOME
  --workdir $HOME --env ... IMAGE jupyterhub-singleuser`` (the flags a server in a container needs:
  the user's uid for the home's files, the node's network for the hub) against bench/floor.py's stub
  hub API, on a port the bench chose, timed until the server answers on it;
- hpchub: ``POST /hub/api/users/USER/server`` with a profile whose ``environment.container`` is
  that image (podman), through a real hub and proxy (bench/storm.py's), timed until the server
  answers through the proxy;
- venv: the same profile without the container, its environment a venv with the image's JupyterHub
  and JupyterLab versions (``/opt/hpchub-test/envs/jh5`` of tests/setup-envs.sh): what the container
  costs hpchub.

The image is the test image of tests/clusters/image.sh (Debian bookworm, JupyterHub 5.5.4, JupyterLab
4.6.6, no hpchub), referred to by its name in the user's podman storage; the bench loads it there
once and starts one container before the first round (a user's first container on a node maps the
image's files for ``--userns keep-id``, 10-30 s, once). The phases are bench/single.py's, with the
container's own start in between, from podman's event log (``create``, ``start``: ns):

  submit           request -> the job id is known
  queue            job id known -> the scheduler starts the job
  job start        the job started -> its script runs (a marker line, as in bench/single.py)
  container start  the script runs -> podman started the container's process (venv: none)
  server start     that -> the Jupyter server logs "Jupyter Server ... is running at"
  port report      the server listens -> the spawner has its port (floor: 0, the bench chose it)
  proxy route      the spawner has the port -> the server answers through the proxy (floor: on its port)

Run as root with the cluster up, tests/clusters/containers.sh up and image.sh build done
(HPCHUB_TEST_IMAGES: another image directory, as for image.sh); uses the account hpcbench62 only
(created if missing, left in place, with its podman storage under /var/tmp; Slurm knows its
association from tests/clusters/slurm.sh up; ``--user`` names another account with subordinate ids):

    /opt/hpchub/venv/bin/python bench/container.py [--scheduler slurm|sge] [--rounds 10] [--variants floor,hpchub,venv]
        [--user hpcbench62]

Writes bench/results/container-SCHEDULER.json and, where matplotlib imports, container-SCHEDULER.png.
Re-plot with any Python that has matplotlib and requests:

    python bench/container.py --plot-only bench/results/container-slurm.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import floor  # bench/, first on sys.path when run as a script
import single
from helpers.hub import Hub, free_port
from storm import (
    SCHEDULERS,
    answers,
    bench_hub,
    bench_jobs,
    cancel_jobs,
    ensure_accounts,
    names_argument,
    remove_job_logs,
    save_result,
    submit_floor_job,
)

USER = "hpcbench62"  # this bench's own account by default (bench/single.py uses hpcbench61)
VARIANTS = ("floor", "hpchub", "venv")
IMAGES = Path(os.environ.get("HPCHUB_TEST_IMAGES", "/var/lib/hpchub-test/images"))  # as tests/clusters/image.sh
ARCHIVE = IMAGES / "hpchub-test-lab.oci.tar"
REF_FILE = IMAGES / "hpchub-test-lab.ref"
JH5_VENV = Path("/opt/hpchub-test/envs/jh5")  # tests/setup-envs.sh: the image's JupyterHub and JupyterLab

PHASES = (("submit", "posted", "submitted"), ("queue", "submitted", "running"), ("job start", "running", "script"),
          ("container start", "script", "container_started"), ("server start", "container_started", "listening"),
          ("port report", "listening", "port_known"), ("proxy route", "port_known", "answered"))
MOMENTS = ("posted", "submitted", "received", "running", "launched", "script", "container_created",
           "container_started", "python_logging", "listening", "job_reported_port", "hub_port_request",
           "port_known", "hub_up", "route_added", "answered")
STEPS = (("posted", "received"), ("running", "script"), ("script", "container_created"),
         ("container_created", "container_started"), ("script", "container_started"),
         ("container_started", "python_logging"), ("script", "python_logging"), ("python_logging", "listening"),
         ("listening", "port_known"), ("port_known", "answered"), ("listening", "answered"))

SOURCES = single.SOURCES | {
    "container_created": "podman's event log of the user (events_logger file): the container's 'create' (ns)",
    "container_started": "podman's event log: the container's 'start', its process runs (ns)",
    "python_logging": "the job's output: the server's first log line (ms), in the container after hpchub's "
                      "start-server.sh check (hpchub) or at once (floor)",
}

# The profiles: the local site's cluster without its venv (a venv of the node around a container is an
# error), one profile with the image, one with the venv of the same versions instead.
PROFILES = """
  - slug: container
    name: "Bench: the test image in podman"
    cluster: {cluster}
    queue: {queue}
    resources: {{cores: 1, memory: {memory}, walltime: "{walltime}"}}
    environment:
      container: {{runtime: podman, image: "{image}"}}
  - slug: venv
    name: "Bench: the same JupyterHub and JupyterLab in a venv"
    cluster: {cluster}
    queue: {queue}
    resources: {{cores: 1, memory: {memory}, walltime: "{walltime}"}}
    environment:
      venv: {venv}
"""


def without_node_venv(text: str) -> str:
    line = "      venv: /opt/hpchub/venv\n"  # the local sites' cluster environment
    if text.count(line) != 1:
        raise RuntimeError(f"the local site has no single {line.strip()!r} line to take out")
    return text.replace(line, "")


def runtime_dir(user: str) -> Path:
    """The directory rootless podman uses in a batch job of ``user`` (hpchub's job script sets it; the
    floor's does the same)."""
    return Path(f"/tmp/podman-run-{pwd.getpwnam(user).pw_uid}")


def podman(user: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["sudo", "-n", "-u", user, "env", f"XDG_RUNTIME_DIR={runtime_dir(user)}", "podman", *args],
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def prepare_image(user: str, image: str) -> None:
    """The image in the user's storage on this node, and one container started, so that no round pays
    the first load (about 12 s) or the first --userns keep-id mapping (about 11 s). Jobs of the local
    partition run on this machine."""
    runtime_dir(user).mkdir(mode=0o700, exist_ok=True)
    shutil.chown(runtime_dir(user), user, user)
    if podman(user, "image", "exists", image).returncode != 0:
        loaded = podman(user, "load", "-q", "-i", str(ARCHIVE))
        if loaded.returncode != 0:
            raise RuntimeError(f"podman load as {user}: {loaded.stderr}")
    home = f"/home/{user}"
    warm = podman(user, "run", "--rm", "--userns", "keep-id", "--network", "host", "--volume", f"{home}:{home}",
                  "--workdir", home, image, "true")
    if warm.returncode != 0:
        raise RuntimeError(f"podman run as {user}: {warm.stderr}")


class PodmanEvents:
    """The user's podman event log (a file, events_logger = "file" in tests/clusters/containers.sh):
    when a container was created and started."""

    def __init__(self, user: str) -> None:
        self.tail = single.LogTail(runtime_dir(user) / "libpod" / "tmp" / "events" / "events.log")

    def mark(self) -> None:
        self.tail.offset = self.tail.path.stat().st_size if self.tail.path.exists() else 0

    def moments(self, name_prefix: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in self.tail.read().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("Type") != "container" or not str(event.get("Name", "")).startswith(name_prefix):
                continue
            name = {"create": "container_created", "start": "container_started"}.get(event.get("Status"))
            if name and name not in found:
                found[name] = event_time(event["Time"])
        return found


def event_time(text: str) -> float:
    """podman's ``2026-12-07T15:54:58.916384676Z`` (or with an offset) as seconds since the epoch, all
    nine digits kept (datetime keeps six)."""
    found = re.fullmatch(r"([^.Z+]+)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", text.strip())
    if found is None:
        raise ValueError(f"not a podman event time: {text!r}")
    zone = found.group(3) or "Z"
    stamp = datetime.fromisoformat(found.group(1) + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + float("0." + (found.group(2) or "0"))


def floor_script(image: str, user: str, port: int, hub_api_url: str, name: str) -> str:
    """The floor's job script: the marker, then the server in the image with bare ``podman run``. The
    stub hub's variables pass by name (``--env NAME``), as hpchub's job passes its own."""
    environment = floor.server_environment(user, port, hub_api_url)
    exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in environment.items())
    names = " ".join(f"--env {key}" for key in environment)
    return (f"#!/bin/bash\n{single.MARK_COMMAND}\n"
            f"export XDG_RUNTIME_DIR=/tmp/podman-run-$(id -u)\n{exports}\n"
            f"exec podman run --rm --userns keep-id --network host --name {name} --volume $HOME:$HOME "
            f"--workdir $HOME {names} {image} jupyterhub-singleuser --ServerApp.ip=127.0.0.1 --ServerApp.port={port}\n")


def floor_round(scheduler: str, user: str, image: str, hub_api: floor.StubHubAPI, logs: Path, index: int,
                timeout: float, clock: single.SchedulerClock, events: PodmanEvents) -> dict:
    port = free_port()
    log = logs / f"round-{index}.log"
    name = f"bench-floor-{uuid.uuid4().hex[:8]}"
    script = floor_script(image, user, port, hub_api.url, name)
    clock.mark()
    events.mark()
    moments: dict[str, float] = {"posted": time.time()}
    job_id, error = submit_floor_job(scheduler, user, script, log, name="container-floor")
    moments["submitted"] = time.time()
    if job_id is None:
        return {"error": f"submit: {error}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(floor.api_url(port, user)):
            moments["answered"] = time.time()
            break
        time.sleep(single.POLL_SECONDS)
    # The container runs under conmon, outside the job's process tree: the end of the job does not end
    # it on Slurm, and Grid Engine's kill of the job's processes leaves it "Stopping" in podman's
    # records. So podman stops it first, while the job runs, then the job is cancelled.
    podman(user, "stop", "--ignore", "--time", "2", name)
    subprocess.run(["sudo", "-n", "-u", user, "scancel" if scheduler == "slurm" else "qdel", job_id],
                   capture_output=True)
    gone = single.wait_until_gone(scheduler, job_id, user=user)
    moments |= clock.moments(job_id)
    moments |= events.moments(name)
    moments |= single.job_output_moments(log.read_text(errors="replace") if log.exists() else "")
    if "listening" in moments:
        moments["port_known"] = moments["listening"]  # the bench chose the port: nothing to report
    return single.finish_round(job_id, moments, None if "answered" in moments else
                               f"not answering after {timeout:.0f} s", gone, PHASES)


def hub_round(kind: str, scheduler: str, user: str, hub: Hub, timeout: float, clock: single.SchedulerClock,
              events: PodmanEvents) -> dict:
    """One spawn through the hub: profile ``container`` (hpchub) or ``venv``; podman's moments of the
    job's container (named hpchub-JOB-NODE-PID by hpchub's job script)."""
    events.mark()
    return single.hub_round("hpchub", scheduler, hub, timeout, clock, user=user,
                            options={"profile": "container" if kind == "hpchub" else "venv"},
                            more_moments=lambda job_id: events.moments(f"hpchub-{job_id}-"), table=PHASES)


def run_rounds(scheduler: str, user: str, image: str, variants: list[str], rounds: int, timeout: float,
               jobs: set[str]) -> dict[str, list[dict]]:
    """The floor's stub hub API and one hub for both hpchub variants started first; then round by
    round one spawn of each variant in turn. Job ids go into ``jobs`` as they become known."""
    clock = single.SchedulerClock(scheduler)
    events = PodmanEvents(user)
    results: dict[str, list[dict]] = {kind: [] for kind in variants}
    spec = SCHEDULERS[scheduler]
    profiles = PROFILES.format(cluster=spec["cluster"], queue=spec["queue"], memory=spec["memory"],
                               walltime="00:30:00", image=image, venv=JH5_VENV)
    with contextlib.ExitStack() as stack:
        spawns: dict[str, Callable[[int], dict]] = {}
        hub = None
        for kind in variants:
            if kind == "floor":
                logs = Path(tempfile.mkdtemp(prefix="hpchub-container-floor-"))
                logs.chmod(0o1777)
                stack.callback(shutil.rmtree, logs, ignore_errors=True)
                hub_api = stack.enter_context(floor.StubHubAPI())
                spawns[kind] = lambda index, hub_api=hub_api, logs=logs: floor_round(
                    scheduler, user, image, hub_api, logs, index, timeout, clock, events)
            else:
                if hub is None:  # one hub serves both hpchub variants (two profiles), one spawn at a time
                    hub = stack.enter_context(bench_hub(
                        "hpchub", scheduler, [user], timeout, prologue=single.MARK_COMMAND, profiles=profiles,
                        name="container", site_edit=without_node_venv))
                spawns[kind] = lambda index, kind=kind, hub=hub: hub_round(kind, scheduler, user, hub, timeout,
                                                                           clock, events)
        print(f"started: {', '.join(variants)}; {rounds} rounds of one spawn each", flush=True)
        for index in range(rounds):
            for kind in variants:
                load = os.getloadavg()[0]
                result = spawns[kind](index) | {"load_1min": load}
                results[kind].append(result)
                if result.get("job_id"):
                    jobs.add(result["job_id"])
                text = f"{result['total_s']:.2f} s" if "total_s" in result else result["error"]
                print(f"  round {index + 1}/{rounds} {kind:7} job {result.get('job_id')}: {text} "
                      f"(load {load:.1f})", flush=True)
    return results


def summarize(rounds: list[dict]) -> dict:
    """bench/single.py's summary, plus the median total without the queue phase: Slurm's backfill
    (bf_interval=1 on the test cluster) starts these jobs on its next tick, 0-1 s after the
    submission whoever submitted, which a few rounds do not average out."""
    summary = single.summarize(rounds, PHASES, MOMENTS, STEPS)
    rest = [result["total_s"] - (result["phases_s"]["queue"] or 0) for result in rounds if "total_s" in result]
    if rest:
        summary["median_without_queue_s"] = statistics.median(rest)
    return summary


def comparisons(summaries: dict[str, dict]) -> dict:
    """hpchub in the container against its floor (the target: within the floor + 0.5 s) and against
    hpchub without the container."""
    def median(kind: str) -> float | None:
        return summaries.get(kind, {}).get("median_s")

    out: dict = {}
    for kind, base in (("hpchub", "floor"), ("venv", "floor"), ("hpchub", "venv")):
        if median(kind) is not None and median(base) is not None:
            out[f"{kind}_minus_{base}_s"] = median(kind) - median(base)
            out[f"{kind}_over_{base}"] = median(kind) / median(base)
            without = [summaries[name].get("median_without_queue_s") for name in (kind, base)]
            if None not in without:
                out[f"{kind}_minus_{base}_without_queue_s"] = without[0] - without[1]
    if "hpchub_minus_floor_s" in out:
        out["target_within_floor_plus_0.5_s"] = out["hpchub_minus_floor_s"] <= 0.5
    return out


def run(scheduler: str, user: str, rounds: int, variants: list[str], timeout: float) -> dict:
    created = ensure_accounts([user])
    if created:
        print(f"created unix account {user}", flush=True)
    image = REF_FILE.read_text().strip()
    prepare_image(user, image)
    since = time.time()
    jobs: set[str] = set()
    try:
        results = run_rounds(scheduler, user, image, variants, rounds, timeout, jobs)
    finally:
        cancel_jobs(scheduler, {job_id: user for job_id in jobs | set(bench_jobs(scheduler, [user]))}, [user])
        mine = ("bench-floor-", *(f"hpchub-{job_id}-" for job_id in jobs))
        left = [name for name in podman(user, "ps", "--all", "--format", "{{.Names}}").stdout.split()
                if name.startswith(mine)]
        if left:
            podman(user, "rm", "--force", "--ignore", *left)
            print(f"  note: containers left after the rounds, removed: {left}", flush=True)
        remove_job_logs([user], since)
    summaries = {kind: summarize(rounds_) for kind, rounds_ in results.items()}
    version = podman(user, "version", "--format", "{{.Client.Version}}").stdout.strip()
    return {"scheduler": scheduler, "queue": SCHEDULERS[scheduler]["queue"], "user": user, "rounds": rounds,
            "image": image, "venv": str(JH5_VENV), "podman": version,
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "sources": SOURCES,
            "phases": {phase: [start, end] for phase, start, end in PHASES},
            "summaries": summaries, "comparisons": comparisons(summaries), "results": results}


# -- report ---------------------------------------------------------------------------------------
def report(data: dict, path: Path) -> None:
    print(f"\nspawn to ready in a podman container on local {data['scheduler']} ({data['queue']}), "
          f"{data['rounds']} rounds per variant, {data['cpus']}-core machine "
          f"(load {data['load_average_at_end'][0]:.1f} at the end); image {data['image']}, podman {data['podman']}")
    single.print_summaries(data["summaries"], PHASES)
    compared = data["comparisons"]
    if compared:
        print()
        for kind, base in (("hpchub", "floor"), ("venv", "floor"), ("hpchub", "venv")):
            if f"{kind}_minus_{base}_s" in compared:
                print(f"{kind} - {base}: {compared[f'{kind}_minus_{base}_s']:+.2f} s "
                      f"(ratio {compared[f'{kind}_over_{base}']:.2f}); without the queue phase "
                      f"{compared.get(f'{kind}_minus_{base}_without_queue_s', float('nan')):+.2f} s")
        if "target_within_floor_plus_0.5_s" in compared:
            print(f"target_within_floor_plus_0.5_s: {'met' if compared['target_within_floor_plus_0.5_s'] else 'MISSED'}")
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


LABELS = {"floor": "floor: {submit} + podman run", "hpchub": "hpchub, container", "venv": "hpchub, venv (no container)"}


def plot(data: dict, path: Path) -> bool:
    plt = single.pyplot()
    if plt is None:
        return False
    kinds = [kind for kind, summary in data["summaries"].items() if summary.get("ok")]
    names = [phase for phase, _, _ in PHASES]
    figure, axes = plt.subplots(figsize=(8.5, 2.2 + 0.6 * len(kinds)), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    submit = "sbatch" if data["scheduler"] == "slurm" else "qsub"
    rows = [LABELS.get(kind, kind).format(submit=submit) for kind in kinds]
    for index, phase in enumerate(names):
        medians = [data["summaries"][kind]["phases_median_s"] for kind in kinds]
        lefts = [sum(values[name] or 0 for name in names[:index]) for values in medians]
        axes.barh(rows, [values[phase] or 0 for values in medians], left=lefts, color=colors[index], label=phase)
    ends = []
    for row, kind in enumerate(kinds):
        summary = data["summaries"][kind]
        ends.append(sum(value or 0 for value in summary["phases_median_s"].values()))
        axes.text(ends[-1] + 0.1, row, f"total: median {summary['median_s']:.2f} s "
                  f"({summary['min_s']:.2f}-{summary['max_s']:.2f})", va="center", fontsize=8)
    axes.set_xlim(0, max(ends, default=1) * 1.5)
    axes.invert_yaxis()
    axes.set_xlabel("seconds from the request: median of each phase")
    axes.set_title(f"Spawn to ready in a podman container, local {data['scheduler']} ({data['queue']})\n"
                   f"{data['rounds']} rounds per variant, {data['cpus']}-core machine", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncol=4, fontsize=8)
    figure.savefig(path, dpi=110)
    return True


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="slurm")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--user", default=USER,
                        help=f"the account whose jobs and podman storage the bench uses (default {USER}; it needs "
                             "a Slurm association and /etc/subuid and /etc/subgid ranges)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, in this order (default {','.join(VARIANTS)})")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one spawn may take (default 120)")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot and report a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(json.loads(args.plot_only.read_text()), args.plot_only)
        return
    variants = names_argument(parser, args.variants, VARIANTS, "variants")
    data = run(args.scheduler, args.user, args.rounds, variants, args.timeout)
    save_result(data, f"container-{args.scheduler}", report)


if __name__ == "__main__":
    main()
