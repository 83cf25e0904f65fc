"""Time to JupyterLab on a busy cluster: researchers who press Start with the default choice against
researchers who first take the form's hint ("2 cores start now; 3 cores would wait").

On the local Slurm (partition ``multi``) or Grid Engine (``short.q`` and ``long.q``) filled by
tests/clusters/busy.sh (other accounts' jobs: some run, the rest wait for 15 min to 2 h, a little
room is left that a small short job takes at once), K simulated researchers arrive one after the
other, evenly spread over ``--spread`` seconds, at a real hub and proxy (tests/helpers/hub.py, as
bench/storm.py runs them). Each opens the profile ``busy``, whose default waits on the filled queue
(Slurm: 2 nodes; Grid Engine: 4 cores) and whose node (Slurm) or core (Grid Engine) count the user
may lower. Then, by strategy:

- default: presses Start with the profile's values;
- hint: asks ``GET /hub/hpchub/estimate?hint=1`` in its signed-in session, for the default values, as
  the form's script does for the chosen card, and takes the largest count the hint says starts now (the
  default when it names none, or when there is no estimate), then presses Start.

"Start" is the REST spawn ``POST /hub/api/users/USER/server`` with the choice; each researcher is
timed from it until JupyterLab's server answers through the proxy (bench/single.py's watch). Who is
not answered within ``--cap`` seconds counts as "waited > cap" (their spawn is then stopped, which
cancels the job); a spawn the hub gives up on counts as failed. A researcher who got JupyterLab keeps
it ``--session`` seconds and stops it, so the room the hint finds is the room the others left.

Both strategies see the same queue: before each, the fillers are drained and submitted again
(``busy.sh drain`` + ``fill``), so they run and wait with the same time left; the arrivals are the
same instants. Percentiles count the researchers who waited > cap as later than any answer, so a
median or 90th percentile that falls among them is "> cap".

Run as root with the clusters up; uses the accounts hpcbench01..06 (``--users`` names others; made
where missing, as storm.py makes its accounts: a new account needs a uid in slurmctld's association
cache before it may submit to Slurm, see busy.sh's header) and busy.sh's own fillers:

    /opt/hpchub/venv/bin/python bench/busy.py --scheduler sge|slurm [--strategies default,hint]
        [--spread 180] [--cap 300] [--session 60]

Fills only the scheduler's busy.sh targets (Slurm: ``multi``; Grid Engine: ``sge``) and drains them
at the end (also on Ctrl-C or SIGTERM). Writes bench/results/busy-SCHEDULER.json and, where
matplotlib imports, busy-SCHEDULER.png (time to JupyterLab per strategy, as CDFs). Re-plot:

    python bench/busy.py --plot-only bench/results/busy-sge.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.hub import Hub  # noqa: E402
from helpers.support import CLUSTER_SCRIPTS  # noqa: E402
from single import wait_through_proxy  # noqa: E402  (bench/, first on sys.path when run as a script)
from storm import (  # noqa: E402
    bench_hub,
    bench_jobs,
    bench_users,
    cancel_jobs,
    ensure_accounts,
    names_argument,
    pyplot,
    remove_job_logs,
    save_result,
)

BUSY = CLUSTER_SCRIPTS / "busy.sh"
FILLER_ACCOUNTS = os.environ.get("HPCHUB_BUSY_USERS", "hpcbench07,hpcbench08,hpcbench09").split(",")  # busy.sh's
STRATEGIES = ("default", "hint")
PROFILE = "busy"
PASSWORD = os.environ.get("HPCHUB_PASSWORD", "hpchub-test")  # examples/jupyterhub_config.py's shared one

# Per scheduler: busy.sh's targets, the profile (its default waits on the filled queue; a smaller
# count fits the room busy.sh's plan leaves) and the field the form's hint is about.
#   Slurm multi: node1, node2 full (busy-m1, 45 min), node3 has 2 of 4 CPUs free (busy-m2 holds the
#     rest for 15 min); busy-m3 waits for all three nodes, so a 1-node job of 20 min fits before it
#     (backfill) while 2 nodes wait for busy-m1's end.
#   Grid Engine short.q: busy-s1 holds 6 of 8 slots for 30 min, busy-s2 waits for all 8: 2 cores
#     start now, 4 wait for at least 50 min. long.q is full (busy-l1) and not offered.
SETUPS = {
    "slurm": {"targets": ["multi"], "field": "nodes", "title": "Slurm, partition multi filled", "profile": """
  - slug: busy
    name: "Busy bench: 2 nodes, 1 core each, 20 min"
    cluster: slurm
    queue: multi
    # slurm.sh's account of the hpcbench users, named: this slurmctld knows no default account for
    # users whose unix account was made after it started (busy.sh's header)
    account: bench
    resources: {cores: 1, memory: 512M, walltime: "00:20:00", nodes: 2}
    user_adjustable:
      nodes: {min: 1, max: 3}
"""},
    "sge": {"targets": ["sge"], "field": "cores", "title": "Grid Engine, short.q and long.q filled", "profile": """
  - slug: busy
    name: "Busy bench: 4 cores, 4 GB, 30 min"
    cluster: sge
    queue: short.q
    resources: {cores: 4, memory: 4G, walltime: "00:30:00"}
    user_adjustable:
      cores: {min: 1, max: 4}
"""},
}
DEFAULTS = {"slurm": {"nodes": 2}, "sge": {"cores": 4}}

# The part of the form's hint that names a count that starts now: "2 cores start now; 3 cores
# expected at 19:13", "up to 4 cores start now", "1 node starts now; ..." (hpchub/hub/estimate.py).
STARTS_NOW = re.compile(r"^(?:up to )?(\d+) (?:node|nodes|core|cores) starts? now\b")


def busy_sh(command: str, targets: list[str]) -> str:
    done = subprocess.run(["bash", str(BUSY), command, *targets], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"busy.sh {command} {' '.join(targets)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def fillers(targets: list[str]) -> dict[str, str]:
    """busy.sh's planned jobs of ``targets`` that are queued: tag -> "JOB STATE"."""
    lines = busy_sh("status", targets).splitlines()[1:]  # TAG WHERE USER WALLTIME SIZE JOB STATE [REASON]
    return {fields[0]: " ".join(fields[5:7]) for fields in (line.split() for line in lines) if fields[5:6] != ["-"]}


def queue_snapshot(scheduler: str) -> list[str]:
    """Every job of the bench's queues now (whoever owns it): what the researchers met."""
    if scheduler == "slurm":
        command = ["squeue", "-p", "multi", "-o", "%.8i %.10u %.14j %.8T %.6D %.5C %.10l %.10L %R"]
    else:
        command = ["qstat", "-u", "*", "-q", "short.q,long.q"]
    return subprocess.run(command, capture_output=True, text=True).stdout.splitlines()


def others_jobs(scheduler: str, queue: list[str], users: list[str]) -> list[str]:
    """The lines of ``queue`` (queue_snapshot) of jobs neither the fill's nor the researchers': other
    people's tests share these clusters, and their jobs take room the researchers would find."""
    column = 1 if scheduler == "slurm" else 3
    return [line for line in queue[1 if scheduler == "slurm" else 2:]
            if len(line.split()) > column and line.split()[column] not in (*FILLER_ACCOUNTS, *users)]


def job_state(scheduler: str, user: str) -> str:
    """The state of ``user``'s bench server job(s) in the scheduler's words ("PENDING Resources", "qw")."""
    if scheduler == "slurm":
        text = subprocess.run(["squeue", "-h", "-u", user, "-n", f"hpchub-{user}-{PROFILE}", "-o", "%i %T %r"],
                              capture_output=True, text=True).stdout
        return "; ".join(text.split("\n")).strip("; ")
    text = subprocess.run(["qstat", "-u", user], capture_output=True, text=True).stdout
    return "; ".join(" ".join((fields[0], fields[4])) for fields in (line.split() for line in text.splitlines()[2:])
                     if len(fields) > 4)


def signed_in(hub: Hub, user: str) -> requests.Session:
    """A browser's session of ``user``: logged in with the test password, which lands on the spawn
    form (the hub renders it with the estimate for the card it opens with)."""
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login", timeout=30)
    login = browser.post(f"{hub.url}/hub/login", timeout=60, data={
        "username": user, "password": PASSWORD, "_xsrf": browser.cookies.get("_xsrf", path="/hub/")})
    if login.status_code != 200 or not login.url.endswith("/hub/spawn") or f'value="{PROFILE}"' not in login.text:
        raise RuntimeError(f"{user}: login did not open the spawn form ({login.status_code} {login.url})")
    return browser


def hinted_choice(hint: str) -> int | None:
    """The largest count the hint says starts now, or None when it names none."""
    found = STARTS_NOW.match(hint)
    return int(found.group(1)) if found else None


def ask_hint(hub: Hub, browser: requests.Session, scheduler: str) -> dict:
    """The estimate and hint for the profile's default values, as the form's script asks for the
    chosen card; the researcher's choice from it."""
    field = SETUPS[scheduler]["field"]
    query = {"profile": PROFILE, "hint": "1",
             **{f"{PROFILE}--{name}": str(value) for name, value in DEFAULTS[scheduler].items()}}
    asked = time.monotonic()
    try:
        response = browser.get(f"{hub.url}/hub/hpchub/estimate", params=query, timeout=30, allow_redirects=False)
        response.raise_for_status()
        answer = response.json()
    except (requests.RequestException, ValueError) as error:
        answer = {"text": "no estimate", "hint": "", "error": str(error)}
    seconds = time.monotonic() - asked
    count = hinted_choice(answer.get("hint", ""))
    return {"asked_s": round(seconds, 3), "text": answer.get("text"), "words": answer.get("words"),
            "hint": answer.get("hint", ""), "error": answer.get("error"),
            "choice": {field: count} if count is not None else dict(DEFAULTS[scheduler])}


def researcher(hub: Hub, scheduler: str, strategy: str, user: str, arrival: float, started: float, cap: float,
               session: float) -> dict:
    """One researcher: arrives ``arrival`` s after ``started``, opens the form, chooses by ``strategy``,
    presses Start, waits for JupyterLab at most ``cap`` s, keeps it ``session`` s, stops it."""
    time.sleep(max(0.0, started + arrival - time.monotonic()))
    queue = queue_snapshot(scheduler)
    result: dict = {"user": user, "arrival_s": round(arrival, 1), "queue_at_arrival": queue}
    opened = time.monotonic()
    browser = signed_in(hub, user)
    result["form_s"] = round(time.monotonic() - opened, 3)
    choice = dict(DEFAULTS[scheduler])
    if strategy == "hint":
        result["estimate"] = ask_hint(hub, browser, scheduler)
        choice = result["estimate"]["choice"]
    result["choice"] = choice
    moments: dict[str, float] = {"posted": time.time()}
    result["start_s"] = round(time.monotonic() - started, 2)
    response = hub.api("POST", f"/users/{user}/server", json={"profile": PROFILE, **{k: str(v) for k, v in choice.items()}})
    if response.status_code not in (201, 202):
        result |= {"outcome": "failed", "error": f"POST {response.status_code}: {response.text[:300]}"}
        return result
    error = wait_through_proxy(hub, cap, moments, user)
    if error is None:
        result |= {"outcome": "answered", "to_lab_s": round(moments["answered"] - moments["posted"], 2)}
        time.sleep(session)
    elif error.startswith("not answering"):
        result |= {"outcome": "waited > cap", "job_at_cap": job_state(scheduler, user)}
    else:
        result |= {"outcome": "failed", "error": error}
    hub.api("DELETE", f"/users/{user}/server")
    try:
        hub.wait_for_server(user, ready=False, timeout=120)
    except AssertionError:
        result["note"] = "the server was still there 120 s after the stop"
    return result


def run_strategy(hub: Hub, scheduler: str, strategy: str, users: list[str], spread: float, cap: float,
                 session: float) -> dict:
    """A fresh fill, then the researchers of one strategy; their jobs cancelled at the end."""
    targets = SETUPS[scheduler]["targets"]
    busy_sh("drain", targets)
    busy_sh("fill", targets)
    queue = queue_snapshot(scheduler)
    filled = fillers(targets)
    print(f"{strategy}: filled {' '.join(targets)}; {len(users)} researchers over {spread:.0f} s", flush=True)
    step = spread / (len(users) - 1) if len(users) > 1 else 0
    started = time.monotonic()
    pool = ThreadPoolExecutor(len(users))
    try:
        futures = [pool.submit(researcher, hub, scheduler, strategy, user, index * step, started, cap,
                               session) for index, user in enumerate(users)]
        results = []
        for user, future in zip(users, futures, strict=True):
            try:
                results.append(future.result())
            except Exception as error:  # one researcher's breakdown must not lose the others
                results.append({"user": user, "outcome": "failed",
                                "error": f"the bench failed: {type(error).__name__}: {error}"})
            print("  " + describe(results[-1]), flush=True)
            others = others_jobs(scheduler, results[-1].get("queue_at_arrival", []), users)
            if others:
                print(f"    (other people's jobs in the queue at the arrival: {len(others)})", flush=True)
    finally:
        # interrupted: no waiting for researchers who sleep; the caller drains the fill at once
        pool.shutdown(wait=False, cancel_futures=True)
        left = fillers(targets)
        cancel_jobs(scheduler, bench_jobs(scheduler, users), users)
    for result in results:
        result["others_at_arrival"] = others_jobs(scheduler, result.get("queue_at_arrival", []), users)
    # Other people's tests share the clusters: a filler cancelled or resubmitted meanwhile (another
    # busy.sh drain), or their jobs in the room, mean the researchers did not all meet the planned queue.
    intact = {tag: job.split()[0] for tag, job in left.items()} == {tag: job.split()[0] for tag, job in filled.items()}
    if not intact:
        print(f"  WARNING: the fill changed during the run: {filled} at the start, {left} at the end", flush=True)
    return {"queue_at_start": queue, "fillers_at_start": filled, "fillers_at_end": left, "fill_intact": intact,
            "researchers": results, "summary": summarize(results, cap)}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank (storm.py's p90): the value at index int(fraction * n), inf when it is a capped one."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(results: list[dict], cap: float) -> dict:
    """Median and p90 from Start to JupyterLab; who waited > cap counts as infinitely late (None:
    "> cap"); failures are counted apart."""
    waited = [math.inf if result["outcome"] == "waited > cap" else result["to_lab_s"]
              for result in results if result["outcome"] in ("answered", "waited > cap")]

    def finite(value: float) -> float | None:
        return None if math.isinf(value) else round(value, 2)

    summary: dict = {"n": len(results), "answered": sum(result["outcome"] == "answered" for result in results),
                     "waited_over_cap": sum(result["outcome"] == "waited > cap" for result in results),
                     "failed": sum(result["outcome"] == "failed" for result in results), "cap_s": cap,
                     "met_other_jobs": sum(bool(result.get("others_at_arrival")) for result in results)}
    if waited:
        summary |= {"median_s": finite(statistics.median(waited)), "p90_s": finite(percentile(waited, 0.9))}
    return summary


def ratios(summaries: dict[str, dict]) -> dict:
    """hint / default of the median and the p90; a default beyond the cap gives an upper bound
    (hint / cap), a hint beyond it a lower bound."""
    out: dict = {}
    hint, default = summaries.get("hint"), summaries.get("default")
    if not hint or not default:
        return out
    for name in ("median_s", "p90_s"):
        h, d = hint.get(name), default.get(name)
        key = name.replace("_s", "")
        if h is not None and d is not None:
            out[key] = {"ratio": round(h / d, 4)}
        elif h is not None:
            out[key] = {"at_most": round(h / default["cap_s"], 4)}
        elif d is not None:
            out[key] = {"at_least": round(hint["cap_s"] / d, 4)}
    return out


def describe(result: dict) -> str:
    choice = ",".join(f"{name}={value}" for name, value in result.get("choice", {}).items())
    text = f"{result.get('user', '?'):11} arrives {result.get('arrival_s', 0):5.0f} s, {choice:8} "
    if "estimate" in result:
        text += f"(hint: {result['estimate']['hint'] or result['estimate']['text']!r}) "
    if result["outcome"] == "answered":
        return text + f"JupyterLab after {result['to_lab_s']:.1f} s"
    if result["outcome"] == "waited > cap":
        return text + f"waited > cap (job: {result['job_at_cap'] or 'none listed'})"
    return text + f"FAILED: {result['error']}"


def run(scheduler: str, strategies: list[str], users: list[str], spread: float, cap: float, session: float) -> dict:
    created = ensure_accounts(users)
    if created:
        print(f"created unix accounts {', '.join(created)}", flush=True)
    since = time.time()
    targets = SETUPS[scheduler]["targets"]
    # drain on SIGTERM too (Ctrl-C raises KeyboardInterrupt): the fill makes every other job wait
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, dict] = {}
    try:
        with bench_hub("hpchub", scheduler, users, cap + 120, profiles=SETUPS[scheduler]["profile"],
                       name="busy") as hub:
            for strategy in strategies:
                results[strategy] = run_strategy(hub, scheduler, strategy, users, spread, cap, session)
    finally:
        busy_sh("drain", targets)
        cancel_jobs(scheduler, bench_jobs(scheduler, users), users)
        remove_job_logs(users, since)
    summaries = {strategy: result["summary"] for strategy, result in results.items()}
    return {"scheduler": scheduler, "targets": targets, "profile": SETUPS[scheduler]["profile"].strip(),
            "default": DEFAULTS[scheduler], "users": users, "spread_s": spread, "cap_s": cap, "session_s": session,
            "cpus": os.cpu_count(), "strategies": results, "summaries": summaries, "hint_over_default": ratios(summaries)}


# -- report ---------------------------------------------------------------------------------------
def seconds_text(value: float | None, cap: float) -> str:
    return f"> {cap:.0f} s" if value is None else f"{value:.1f} s"


def ratio_text(ratio: dict) -> str:
    if "ratio" in ratio:
        return f"{ratio['ratio']:.2f}"
    if "at_most" in ratio:
        return f"< {ratio['at_most']:.2f}"
    return f"> {ratio['at_least']:.2f}"


def report(data: dict, path: Path) -> None:
    cap = data["cap_s"]
    print(f"\nbusy {data['scheduler']} ({' '.join(data['targets'])}), {len(data['users'])} researchers over "
          f"{data['spread_s']:.0f} s, cap {cap:.0f} s, sessions of {data['session_s']:.0f} s:")
    for strategy, summary in data["summaries"].items():
        print(f"  {strategy:8} answered {summary['answered']}/{summary['n']}, waited > cap {summary['waited_over_cap']}, "
              f"failed {summary['failed']}; Start to JupyterLab: median "
              f"{seconds_text(summary.get('median_s'), cap)}, p90 {seconds_text(summary.get('p90_s'), cap)}; "
              f"{summary.get('met_other_jobs', 'n/a')} arrived with other people's jobs in the queue")
    for name, ratio in data["hint_over_default"].items():
        print(f"  hint / default, {name}: {ratio_text(ratio)}")
    png = path.with_suffix(".png")
    print(f"wrote {path}" + (f" and {png}" if plot(data, png) else "; no PNG (matplotlib is not importable)"))


def plot(data: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    cap = data["cap_s"]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for strategy, result in data["strategies"].items():
        summary = result["summary"]
        values = sorted(r["to_lab_s"] for r in result["researchers"] if r["outcome"] == "answered")
        fractions = [(index + 1) / summary["n"] for index in range(len(values))]
        axes.step([0, *values, cap], [0, *fractions, len(values) / summary["n"]], where="post", linewidth=2,
                  label=f"{strategy}: {summary['answered']}/{summary['n']} within {cap:.0f} s, median "
                        f"{seconds_text(summary.get('median_s'), cap)}, p90 {seconds_text(summary.get('p90_s'), cap)}")
    axes.axvline(cap, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlim(0, cap * 1.05)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("seconds from Start until JupyterLab answers through the proxy (cap dotted)")
    axes.set_ylabel("fraction of researchers")
    axes.set_title(f"{SETUPS[data['scheduler']]['title']}: {len(data['users'])} researchers, default choice "
                   "vs the form's hint", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=sorted(SETUPS), default="sge")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, in this order")
    parser.add_argument("--users", default=",".join(bench_users(1, 6)), help="the researchers' accounts, comma-separated")
    parser.add_argument("--spread", type=float, default=180, help="seconds between the first and the last arrival")
    parser.add_argument("--cap", type=float, default=300, help="seconds a researcher waits for JupyterLab at most")
    parser.add_argument("--session", type=float, default=60, help="seconds a researcher keeps JupyterLab")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only re-plot and report a result file")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(json.loads(args.plot_only.read_text()), args.plot_only)
        return
    strategies = names_argument(parser, args.strategies, STRATEGIES, "strategies")
    data = run(args.scheduler, strategies, args.users.split(","), args.spread, args.cap, args.session)
    save_result(data, f"busy-{args.scheduler}", report)


if __name__ == "__main__":
    main()
