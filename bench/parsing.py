"""Hub CPU per status poll: parsing one squeue / qstat answer that lists 1,000 or 10,000 jobs.

The shared poller runs one status query per cluster per interval for every user's jobs, and the
hub parses the whole answer in its event loop, so this CPU time is time no other request gets.
Target (issue 9): parsing 10,000 jobs under 50 ms of hub CPU.

The answers are built from the captured real formats in tests/data/ (squeue-all-states.txt: the
delimited ``--format`` of ``slurm.status_argv``; qstat-jobs.xml: ``qstat -xml -g t -u '*'``),
repeated with varied ids (plain, array and heterogeneous), users, states, partitions, node lists
(``node[001-004]``, ``gpu[01,03-05]``), pending reasons, times and priorities; for Grid Engine,
running jobs on queue@host, parallel jobs with a MASTER entry and one SLAVE entry per slot on
several hosts, array tasks, and pending, held and error jobs. The mix is fixed (seeded).

Measured per answer, CPU time of this process (``time.process_time``), best and median of
``--runs`` runs:
- parse: ``parse_status`` of the backend (it reads each job's id and state and checks what could
  make an entry unreadable; the other fields are read when asked);
- every field: the parse plus every field of every job read once, what the hub would pay if it
  read them all (``hpchub jobs --all`` does; a poll reads the watched jobs' few);
- stdlib reference: what a conventional parse pays in the standard library alone (the lines split
  into fields; the XML element tree), which ``parse_status`` no longer builds;
- poll: the in-process rest of a poll, for context: a ``StatusPoller`` whose query returns that
  parse, one ``refresh()`` (its snapshot) plus ``view()`` of one job; the command itself (fork,
  or SSH channel, and the scheduler's own time) is bench/ssh.py's business.

    /opt/hpchub/venv/bin/python bench/parsing.py [--runs 20] [--jobs 1000 10000]

Needs no cluster. Writes bench/results/parsing.json and, when matplotlib is importable (the
``bench`` extra), bench/results/parsing.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpchub.core.poller import StatusPoller  # noqa: E402
from hpchub.schedulers import JobStatus, sge, slurm  # noqa: E402
from hpchub.schedulers.base import collector_paused  # noqa: E402
from hpchub.transports.cluster import QUERY_MAX_OUTPUT  # noqa: E402

RESULTS = REPO / "bench" / "results" / "parsing.json"
PLOT = REPO / "bench" / "results" / "parsing.png"
TARGET_MS = 50.0
TARGET_JOBS = 10_000
SEED = 9

JOB_FIELDS = tuple(field.name for field in dataclasses.fields(JobStatus))
USERS = [f"user{n:03d}" for n in range(300)] + ["alice", "bob", "carol"]
BASE_TIME = datetime(2026, 11, 25, 20, 11, 58)


def _stamp(rng: random.Random) -> str:
    return (BASE_TIME - timedelta(seconds=rng.randrange(0, 7 * 86400))).isoformat(timespec="seconds")


# -- Slurm --------------------------------------------------------------------------------------
PARTITIONS = ("debug", "multi", "compute", "gpu", "long", "bigmem")
PENDING_REASONS = ("Priority", "Resources", "Dependency", "JobHeldUser", "JobHeldAdmin", "BeginTime",
                   "AssocMaxJobsLimit", "QOSMaxJobsPerUserLimit", "ReqNodeNotAvail, Reserved for maintenance",
                   "PartitionTimeLimit")
# State, share of the queue (a busy centre: mostly running and pending, some just ended).
SLURM_STATES = (("RUNNING", 40), ("PENDING", 45), ("COMPLETING", 3), ("COMPLETED", 4), ("CANCELLED", 3),
                ("FAILED", 2), ("TIMEOUT", 1), ("SUSPENDED", 1), ("CONFIGURING", 1))


def _node_list(rng: random.Random, partition: str) -> tuple[str, str]:
    """(batch host, compressed node list) of a running job."""
    prefix = "gpu" if partition == "gpu" else "node"
    width = 2 if prefix == "gpu" else 3
    first = rng.randrange(1, 400)
    shape = rng.random()
    if shape < 0.6:  # one node
        return f"{prefix}{first:0{width}d}", f"{prefix}{first:0{width}d}"
    if shape < 0.9:  # a range
        last = first + rng.randrange(1, 16)
        return f"{prefix}{first:0{width}d}", f"{prefix}[{first:0{width}d}-{last:0{width}d}]"
    # ranges and singles, as Slurm compresses a scattered allocation
    second = first + rng.randrange(3, 20)
    return (f"{prefix}{first:0{width}d}",
            f"{prefix}[{first:0{width}d},{second:0{width}d}-{second + 3:0{width}d},{second + 9:0{width}d}]")


def slurm_answer(jobs: int, seed: int = SEED) -> str:
    """``squeue --noheader --states=all --format=...`` of ``jobs`` jobs, fields as in
    tests/data/squeue-all-states.txt (%i %T %u %P %B %N %r %S %V %Q, unit separator)."""
    rng = random.Random(seed)
    states = [state for state, share in SLURM_STATES for _ in range(share)]
    lines = []
    for index in range(jobs):
        job_id = str(100_000 + index)
        kind = rng.random()
        if kind < 0.05:
            job_id += f"_{rng.randrange(1, 500)}"  # array task
        elif kind < 0.06:
            job_id += f"+{rng.randrange(0, 2)}"  # heterogeneous job component
        state = rng.choice(states)
        partition = rng.choice(PARTITIONS)
        submitted = _stamp(rng)
        priority = str(rng.randrange(1, 4_294_901_760))
        if state in ("PENDING",):
            if kind < 0.05 and rng.random() < 0.5:
                job_id = f"{job_id.split('_')[0]}_[{rng.randrange(1, 50)}-{rng.randrange(50, 1000)}%10]"
            reason = rng.choice(PENDING_REASONS)
            start = _stamp(rng) if reason in ("Priority", "Resources") and rng.random() < 0.7 else "N/A"
            batch_host, node_list = "n/a", ""
            if reason.startswith("JobHeld"):
                priority = "0"
        elif state in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT") and rng.random() < 0.3:
            reason, start, (batch_host, node_list) = "None", _stamp(rng), ("n/a", "")  # never started
        else:
            batch_host, node_list = _node_list(rng, partition)
            reason = {"FAILED": "NonZeroExitCode", "TIMEOUT": "TimeLimit"}.get(state, "None")
            start = _stamp(rng)
        lines.append(slurm.SEP.join((job_id, state, rng.choice(USERS), partition, batch_host, node_list, reason,
                                     start, submitted, priority)))
    return "\n".join(lines) + "\n"


# -- Grid Engine --------------------------------------------------------------------------------
QUEUES = ("short.q", "long.q", "all.q", "gpu.q")


def _sge_entry(job_id: int, prio: float, name: str, owner: str, letters: str, time_tag: str, stamp: str,
               queue_instance: str, master: str, slots: int, tasks: str | None = None) -> str:
    """One <job_list> as qstat-jobs.xml has them."""
    state = "running" if time_tag == "JAT_start_time" else "pending"
    task = f"\n      <tasks>{tasks}</tasks>" if tasks else ""
    return (f"""    <job_list state="{state}">
      <JB_job_number>{job_id}</JB_job_number>
      <JAT_prio>{prio:.5f}</JAT_prio>
      <JB_name>{escape(name)}</JB_name>
      <JB_owner>{owner}</JB_owner>
      <state>{letters}</state>
      <{time_tag}>{stamp}</{time_tag}>
      <queue_name>{queue_instance}</queue_name>
      <master>{master}</master>
      <slots>{slots}</slots>{task}
    </job_list>
""")


def sge_answer(jobs: int, seed: int = SEED) -> str:
    """``qstat -xml -g t -u '*'`` listing ``jobs`` distinct jobs: running ones in <queue_info>
    (a parallel job once as MASTER on its first host, once as SLAVE per slot on each host), waiting
    ones in <job_info>."""
    rng = random.Random(seed)
    running: list[str] = []
    waiting: list[str] = []
    names = ("jupyterhub", "run2", "sim_a-1", "train.sh", "post&process", "x<y", "analysis_2026")
    for index in range(jobs):
        job_id = 200_000 + index
        owner = rng.choice(USERS)
        name = rng.choice(names)
        prio = rng.random()
        queue = rng.choice(QUEUES)
        kind = rng.random()
        if kind < 0.40:  # running on one host
            letters = rng.choice(("r", "r", "r", "t", "Rr", "dr", "s"))
            host = f"node{rng.randrange(1, 400):03d}"
            slots = rng.choice((1, 1, 2, 4, 8))
            running.append(_sge_entry(job_id, prio, name, owner, letters, "JAT_start_time", _stamp(rng),
                                      f"{queue}@{host}", "MASTER", slots))
        elif kind < 0.50:  # parallel, several hosts
            first = rng.randrange(1, 390)
            hosts = [f"node{first + offset:03d}" for offset in range(rng.randrange(2, 9))]
            per_host = rng.choice((1, 2, 4))
            stamp = _stamp(rng)
            running.append(_sge_entry(job_id, prio, name, owner, "r", "JAT_start_time", stamp,
                                      f"{queue}@{hosts[0]}", "MASTER", 1))
            for host in hosts:
                for _ in range(per_host):
                    running.append(_sge_entry(job_id, prio, name, owner, "r", "JAT_start_time", stamp,
                                              f"{queue}@{host}", "SLAVE", 1))
        elif kind < 0.53:  # running array tasks of one job
            stamp = _stamp(rng)
            for task in range(1, rng.randrange(2, 6)):
                running.append(_sge_entry(job_id, prio, name, owner, "r", "JAT_start_time", stamp,
                                          f"{queue}@node{rng.randrange(1, 400):03d}", "MASTER", 1, str(task)))
        else:  # waiting
            letters = rng.choice(("qw",) * 12 + ("hqw", "hqw", "Eqw"))
            tasks = f"{rng.randrange(1, 10)}-{rng.randrange(10, 100)}:1" if rng.random() < 0.05 else None
            waiting.append(_sge_entry(job_id, 0.0 if letters == "hqw" else prio, name, owner, letters,
                                      "JB_submission_time", _stamp(rng), "", "", rng.choice((1, 1, 4, 50)), tasks))
    header = ("<?xml version='1.0'?>\n<job_info  xmlns:xsd=\"http://arc.liv.ac.uk/repos/darcs/sge/source/dist/"
              "util/resources/schemas/qstat/qstat.xsd\">\n")
    return (header + "  <queue_info>\n" + "".join(running) + "  </queue_info>\n  <job_info>\n" + "".join(waiting)
            + "  </job_info>\n</job_info>\n")


# -- measuring ----------------------------------------------------------------------------------
def cpu_ms(action: Callable[[], object], runs: int) -> list[float]:
    """CPU milliseconds of ``action`` per run (garbage collected before each, collections during
    the run count: a hub pays for them too)."""
    timings = []
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        action()
        timings.append(1000 * (time.process_time() - start))
    return timings


def poll_once(parsed: dict[str, JobStatus], job_id: str) -> None:
    """The poller's share of a poll, the query already answered: refresh (snapshot) and one view."""
    async def query(users: Sequence[str] | None) -> dict[str, JobStatus]:
        return parsed

    async def poll() -> None:
        poller = StatusPoller(query, min_interval=0.0)
        poller.watch(job_id, parsed[job_id].user)
        await poller.refresh(0)
        view = poller.view(job_id)
        assert view.status is parsed[job_id], view

    asyncio.run(poll())


def floor(scheduler: str, answer: str) -> None:
    """What a conventional parser of this format pays in the standard library, the collector paused
    as in parse_status: Slurm, the answer cut into lines and fields; Grid Engine, the XML element
    tree (parse_status builds neither)."""
    with collector_paused():
        if scheduler == "slurm":
            [line.split(slurm.SEP) for line in answer.splitlines()]
        else:
            ElementTree.fromstring(answer)


def read_every_field(parsed: dict[str, JobStatus]) -> None:
    for status in parsed.values():
        for field in JOB_FIELDS:
            getattr(status, field)
        status.host  # noqa: B018 (read for its cost)


def measure(scheduler: str, jobs: int, runs: int) -> dict[str, Any]:
    backend, build = {"slurm": (slurm, slurm_answer), "sge": (sge, sge_answer)}[scheduler]
    answer = build(jobs)
    parsed = backend.parse_status(answer)
    assert len(parsed) == jobs and not parsed.problems, (len(parsed), parsed.problems[:3])
    some_job = sorted(parsed)[len(parsed) // 2]
    parse = cpu_ms(lambda: backend.parse_status(answer), runs)
    every_field = cpu_ms(lambda: read_every_field(backend.parse_status(answer)), runs)
    stdlib = cpu_ms(lambda: floor(scheduler, answer), runs)
    poll = cpu_ms(lambda: poll_once(parsed, some_job), runs)
    return {"scheduler": scheduler, "jobs": jobs, "answer_bytes": len(answer.encode()),
            "answer_lines": answer.count("\n"), "entries": answer.count("<job_list") or answer.count("\n"),
            "runs": runs, "parse_best_ms": min(parse), "parse_median_ms": statistics.median(parse),
            "every_field_best_ms": min(every_field), "every_field_median_ms": statistics.median(every_field),
            "floor_best_ms": min(stdlib), "floor_median_ms": statistics.median(stdlib),
            "poll_rest_best_ms": min(poll), "poll_rest_median_ms": statistics.median(poll),
            "parse_ms": parse, "every_field_ms": every_field, "floor_ms": stdlib, "poll_rest_ms": poll}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"hub CPU per status answer, ms (best / median of {rows[0]['runs']} runs); "
          f"target: {TARGET_JOBS:,} jobs under {TARGET_MS:g} ms")
    print(f"{'':7}{'jobs':>7}{'entries':>9}{'answer KB':>11}{'parse best':>12}{'median':>9}{'/ target':>10}"
          f"{'us/job':>8}{'every field':>13}{'stdlib ref':>12}{'poller+view':>13}")
    for row in rows:
        print(f"{row['scheduler']:7}{row['jobs']:7,}{row['entries']:9,}{row['answer_bytes'] / 1024:11.0f}"
              f"{row['parse_best_ms']:12.1f}{row['parse_median_ms']:9.1f}{row['parse_median_ms'] / TARGET_MS:10.2f}"
              f"{1000 * row['parse_median_ms'] / row['jobs']:8.1f}{row['every_field_median_ms']:13.1f}"
              f"{row['floor_median_ms']:12.1f}"
              f"{row['poll_rest_median_ms']:13.2f}")
    print("(entries: squeue lines or qstat <job_list> entries; every field: the parse plus every field of every "
          "job read once, median; stdlib ref: a conventional parse's standard-library share, the lines split into "
          "fields or the XML element tree, median; poller+view: StatusPoller.refresh with the parse as its answer, "
          "plus one view)")
    for row in rows:
        if row["jobs"] == TARGET_JOBS:
            verdict = "meets" if row["parse_median_ms"] < TARGET_MS else "MISSES"
            print(f"{row['scheduler']}: {TARGET_JOBS:,} jobs parse in {row['parse_median_ms']:.1f} ms median, "
                  f"{verdict} the target ({row['parse_median_ms'] / TARGET_MS:.2f} of it)")
            # hpchub.transports.cluster.QUERY_MAX_OUTPUT, the most of a status answer the hub keeps, is sized from these.
            print(f"{row['scheduler']}: the {row['answer_bytes'] / 2**20:.1f} MiB answer is "
                  f"{row['answer_bytes'] / QUERY_MAX_OUTPUT:.0%} of the hub's output limit for its queries "
                  f"({QUERY_MAX_OUTPUT / 2**20:g} MiB)")


def plot(rows: list[dict[str, Any]]) -> str:
    try:
        import matplotlib
    except ImportError:
        return "skipped the plot: matplotlib is not importable (pip install '.[bench]')"
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4))
    for scheduler in dict.fromkeys(row["scheduler"] for row in rows):
        mine = [row for row in rows if row["scheduler"] == scheduler]
        axes.plot([row["jobs"] for row in mine], [row["parse_median_ms"] for row in mine], marker="o",
                  label=f"{scheduler} parse_status (median)")
    axes.axhline(TARGET_MS, color="grey", linestyle="--", label=f"target at {TARGET_JOBS:,} jobs")
    axes.set_xlabel("jobs in one status answer")
    axes.set_ylabel("hub CPU, ms")
    axes.set_title("Parsing one status poll")
    axes.legend()
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    return f"wrote {PLOT.relative_to(REPO)}"


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    rows = [measure(scheduler, jobs, args.runs) for scheduler in ("slurm", "sge") for jobs in args.jobs]
    print_table(rows)
    results = {"host": os.uname().nodename, "cores": os.cpu_count(), "cpu": cpu_model(),
               "load_average": os.getloadavg(), "python": platform.python_version(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "target_ms": TARGET_MS, "target_jobs": TARGET_JOBS,
               "results": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}; {plot(rows)}")


if __name__ == "__main__":
    main()
