"""One spawn's way through the modules (issue 18): the spawner hands the choice's resolution, the
job's assembly and its submission to hpchub.core.spawn in one call each, and the wait to hpchub.hub.waiting; it never calls
the options' resolution, the template renderer, the job's lifecycle, a scheduler backend or a transport itself. Traced with
sys.setprofile over one _start_job against the fake cluster."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from test_spawner_lifecycle import TOKEN, fake, make_spawner, report_port, wait_until  # noqa: F401 (fixture)

from hpchub.hub import porthandler
from hpchub.schedulers import JobState

SPAWNER = "hpchub.hub.spawner"


def _module(frame) -> str:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name if name.startswith("hpchub.") else ""


async def traced_start(spawner, fake) -> Counter[tuple[str, str, str]]:  # noqa: F811
    """(caller module, callee module, callee function) -> calls, for one _start_job. A coroutine
    resumed after an await is the same call: counted once (by its frame)."""
    frames: dict[tuple[str, str, str], list] = {}

    def profile(frame, event, arg):
        if event == "call":
            callee, caller = _module(frame), _module(frame.f_back)
            if callee and caller and callee != caller:
                seen = frames.setdefault((caller, callee, frame.f_code.co_qualname), [])
                if not any(frame is other for other in seen):
                    seen.append(frame)

    async def start():
        sys.setprofile(profile)
        try:
            return await spawner._start_job()
        finally:
            sys.setprofile(None)

    task = asyncio.create_task(start())
    await wait_until(lambda: fake.scripts and porthandler.waiting_for(TOKEN))
    fake.set("100", JobState.RUNNING, nodes=("vm",))
    report_port(1234)
    assert await asyncio.wait_for(task, 5) == ("127.0.0.1", 1234)
    return Counter({key: len(seen) for key, seen in frames.items()})


async def test_the_spawner_builds_and_submits_its_job_through_core_spawn_only(fake):  # noqa: F811
    spawner = make_spawner(options={"profile": "small", "cores": "2"})
    calls = await traced_start(spawner, fake)
    from_spawner = {(callee, function) for caller, callee, function in calls if caller == SPAWNER}
    # Never the options, the renderer, the lifecycle, a backend or a transport's command runner from the spawner itself.
    assert not {callee for callee, _ in from_spawner
                if callee in ("hpchub.core.options", "hpchub.core.render", "hpchub.core.lifecycle", "hpchub.transports.runner",
                              "hpchub.transports.sshpool") or callee.startswith("hpchub.schedulers")}
    # One call to resolve the choice, one to prepare the job, one to submit it; of jobs.py only PreparedJob's accessors.
    assert calls[(SPAWNER, "hpchub.core.spawn", "resolve")] == 1
    assert calls[(SPAWNER, "hpchub.core.spawn", "prepare_server_job")] == 1
    assert calls[(SPAWNER, "hpchub.core.spawn", "submit")] == 1
    assert {function for callee, function in from_spawner if callee == "hpchub.core.jobs"} <= {
        "PreparedJob.log_path", "PreparedJob.job_dir"}
    assert ("hpchub.core.spawn", "hpchub.core.lifecycle", "submit_and_watch") in calls
