"""Test-only profiles, appended to a local site config (site-configs/local-<scheduler>.yaml) as
entries of its `profiles:` list: a job held on submit, one that may not start yet, one whose
environment cannot load, one Grid Engine puts in its error state."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .support import SITE_CONFIGS

# The queue of the local clusters' test profiles: the head node's partition / queue.
DEFAULT_QUEUE = {"slurm": "debug", "sge": "short.q"}
HOLD_DIRECTIVE = {"slurm": "--hold", "sge": "-h"}
# An environment block each scheduler's job fails to set up: a module that does not exist (the
# Slurm site loads modules), a virtual environment that does not exist (the SGE site activates one).
BROKEN_ENVIRONMENT = {"slurm": ("512M", "modules: [no-such-module/1.0]"), "sge": ("1G", "venv: /nonexistent/venv")}


def profile(slug: str, name: str, scheduler: str, memory: str = "100M", directives: Sequence[str] = (),
            environment: str = "", queue: str = "", adjustable: Sequence[str] = ()) -> str:
    """One entry of a site's `profiles:` list: one core for ten minutes in ``queue`` (default: the
    scheduler's default queue); ``adjustable``: lines of its `user_adjustable:`, e.g. "cores: {max: 4}"."""
    lines = [
        f"  - slug: {slug}",
        f"    name: {name}",
        f"    cluster: {scheduler}",
        f"    queue: {queue or DEFAULT_QUEUE[scheduler]}",
        f'    resources: {{cores: 1, memory: {memory}, walltime: "00:10:00"}}',
    ]
    if adjustable:
        lines += ["    user_adjustable:", *(f"      {line}" for line in adjustable)]
    if directives:
        lines.append(f"    directives: {json.dumps(list(directives))}")
    if environment:
        lines += ["    environment:", f"      {environment}"]
    return "\n" + "\n".join(lines) + "\n"


def held_profile(scheduler: str) -> str:
    """`held`: the job is held on submit (a user hold), so it waits without ever starting."""
    return profile("held", "held on submit", scheduler, directives=[HOLD_DIRECTIVE[scheduler]])


def broken_profile(scheduler: str) -> str:
    """`broken`: the job starts, and its environment block fails (the spawn fails with the log's tail)."""
    memory, environment = BROKEN_ENVIRONMENT[scheduler]
    return profile("broken", "a profile whose environment cannot load", scheduler, memory, environment=environment)


def begins_in_an_hour_profile(slug: str, memory: str = "100M") -> str:
    """Slurm: the job may not start for an hour (pending, reason BeginTime, with an estimated start)."""
    return profile(slug, "starts in an hour", "slurm", memory, directives=["--begin=now+1hour"])


def unwritable_output_profile(slug: str, memory: str = "100M") -> str:
    """Grid Engine: an output path nobody can write, so the job lands in the error state Eqw."""
    return profile(slug, "output nobody can write (the job lands in Eqw)", "sge", memory,
                   directives=["-o /proc/hpchub-cannot-write-here"])


def busy_multi_profile(slug: str = "busy-multi") -> str:
    """Slurm: one node of partition `multi` for ten minutes, cores and walltime adjustable. On the busy
    cluster (tests/clusters/busy.sh fill multi) up to 2 cores for less than half an hour start at once by
    backfill; longer or bigger choices wait."""
    return profile(slug, "one node of multi", "slurm", "512M", queue="multi",
                   adjustable=["cores: {min: 1, max: 4}", 'walltime: {max: "02:00:00"}'])


# What the real-scheduler tests (conftest's `local_site`) add to the local site of each scheduler.
REAL_SCHEDULER_TEST_PROFILES = {
    "slurm": held_profile("slurm") + begins_in_an_hour_profile("later"),
    "sge": held_profile("sge") + unwritable_output_profile("broken-output"),
}


def local_site_text(scheduler: str, extra_profiles: str = "") -> str:
    """site-configs/local-<scheduler>.yaml with ``extra_profiles`` appended to its profile list."""
    return (SITE_CONFIGS / f"local-{scheduler}.yaml").read_text() + extra_profiles


KERNEL_ENGINES = {"slurm": ("multi", "512M", "\n    user_adjustable:\n      nodes: {min: 1, max: 3}"),
                  "sge": ("short.q", "1G", "")}


def kernel_engines_profile(scheduler: str) -> str:
    """`kernel-engines`: a server whose kernels ask the hub for engines (a profile of its own, so
    that its job files never meet another test's server of the same user)."""
    queue, memory, adjustable = KERNEL_ENGINES[scheduler]
    return (f"\n  - slug: kernel-engines\n    name: \"Engines from a kernel\"\n    cluster: {scheduler}\n"
            f"    queue: {queue}\n    resources: {{cores: 1, memory: {memory}, walltime: \"01:00:00\"}}{adjustable}\n")
