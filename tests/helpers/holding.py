"""Another test user's job holding what a test needs to be busy (a whole Slurm node, all slots of a
Grid Engine queue), for the tests of start estimates; cancelled when the test ends."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

HOLDER = "carol"
HOLD_NAME = "hpchub-estimate-hold"
HOLD_MINUTES = 2


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.3)


QUEUE_LISTINGS = {"slurm": ["squeue", "-h", "-o", "%i"], "sge": ["qstat", "-u", "*"]}


def queue_emptied(scheduler: str, timeout: float = 60) -> None:
    """Waits until ``scheduler`` holds no job of anyone's. The tests of start estimates assert the
    answer for a new job on an otherwise empty queue ("starts now"), which any other job could change:
    they are marked `empty_queue`, and tests/run.sh runs them after its lanes."""
    def empty() -> bool:
        return subprocess.run(QUEUE_LISTINGS[scheduler], capture_output=True, text=True,
                              check=True).stdout.strip() == ""

    wait_until(f"{scheduler}'s queue empty of other tests' jobs (the estimates asserted are an empty queue's)",
               empty, timeout)


@contextmanager
def slurm_node_held(node: str = "node3", partition: str = "multi") -> Iterator[datetime]:
    """carol's exclusive job on ``node`` for HOLD_MINUTES; yields when it started running."""
    job_id = subprocess.run(
        ["sudo", "-n", "-u", HOLDER, "--", "sbatch", "--parsable", "-p", partition, "-w", node, "-N", "1",
         "--exclusive", "-t", str(HOLD_MINUTES), "-J", HOLD_NAME, "-o", "/dev/null",
         "--wrap", f"sleep {HOLD_MINUTES * 60}"],
        capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        def running() -> bool:
            return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                                  text=True).stdout.strip() == "RUNNING"

        wait_until(f"carol's job holding {node} runs", running)
        yield datetime.now()
    finally:
        subprocess.run(["sudo", "-n", "-u", HOLDER, "--", "scancel", job_id], capture_output=True)


@contextmanager
def sge_queue_held(queue: str = "short.q", slots: int = 8) -> Iterator[None]:
    """carol's job holding all ``slots`` slots of ``queue``."""
    job_id = subprocess.run(
        ["sudo", "-n", "-u", HOLDER, "--", "qsub", "-terse", "-q", queue, "-pe", "smp", str(slots), "-N", HOLD_NAME,
         "-o", "/dev/null", "-j", "y", "-b", "y", "sleep", str(HOLD_MINUTES * 60)],
        capture_output=True, text=True, check=True).stdout.strip()
    try:
        def running() -> bool:
            lines = subprocess.run(["qstat", "-u", HOLDER], capture_output=True, text=True).stdout.splitlines()
            return any(line.split()[:1] == [job_id] and line.split()[4] == "r" for line in lines if line.strip())

        wait_until(f"carol's job holding {queue} runs", running)
        yield
    finally:
        subprocess.run(["sudo", "-n", "-u", HOLDER, "--", "qdel", job_id], capture_output=True)
