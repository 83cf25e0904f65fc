"""hpchub.hub.waiting alone: the progress log and the startup polling, no spawner."""

from __future__ import annotations

import asyncio
import logging

from hpchub.hub.waiting import ProgressLog, StartupPolling


def test_startup_checks_back_off_between_the_interval_and_the_ceiling():
    polling = StartupPolling(interval=0.5, backoff=0.1, ceiling=30.0)
    assert polling.check_interval(0) == 0.5
    assert polling.check_interval(100) == 10.0
    assert polling.check_interval(10_000) == 30.0


async def test_every_listener_gets_every_kept_event_then_each_new_one():
    events = ProgressLog(logging.getLogger("test"), "alice", kept=2)
    events.emit(10, "one")
    events.emit(20, "two", {"job_id": "7"})
    events.emit(30, "three")
    assert events.details == {"job_id": "7"}
    listener = events.follow()
    assert [(await anext(listener))["message"] for _ in range(2)] == ["two", "three"]  # "one" went past kept
    later = asyncio.ensure_future(anext(listener))
    await asyncio.sleep(0)
    events.emit(40, "four")
    assert (await asyncio.wait_for(later, 1))["message"] == "four"
    events.clear()
    assert not events.events
