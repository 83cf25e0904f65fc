"""The shared status poller, with a fake scheduler query (the real one is in the e2e tests)."""

import asyncio
import time

import pytest

from hpchub.core.poller import JobWatchedElsewhere, Presence, StatusPoller
from hpchub.schedulers import JobState, JobStatus


class FakeScheduler:
    def __init__(self):
        self.jobs: dict[str, JobStatus] = {}
        self.calls: list = []
        self.failing = False
        self.delay = 0.0

    async def query(self, users):
        self.calls.append(users)
        await asyncio.sleep(self.delay)
        if self.failing:
            raise RuntimeError("squeue: error: slurm_load_jobs error: Unable to contact slurm controller")
        return {job_id: job for job_id, job in self.jobs.items() if users is None or job.user in users}

    def add(self, job_id, user, state=JobState.RUNNING):
        self.jobs[job_id] = JobStatus(job_id, state, state.name, user=user)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup():
    scheduler, clock = FakeScheduler(), Clock()
    poller = StatusPoller(scheduler.query, interval=30, min_interval=1, max_backoff=300, jitter=0, clock=clock)
    return scheduler, clock, poller


async def test_many_spawners_one_query(setup):
    scheduler, clock, poller = setup
    scheduler.delay = 0.05
    for n in range(60):
        scheduler.add(str(n), f"user{n}")
        poller.watch(str(n), f"user{n}")
    clock.now += 5
    views = await asyncio.gather(*(poller.get(str(n)) for n in range(60)))
    assert len(scheduler.calls) == 1
    assert sorted(scheduler.calls[0]) == sorted(f"user{n}" for n in range(60))
    assert all(view.presence is Presence.KNOWN and view.status.state is JobState.RUNNING for view in views)
    # Within the interval the cache answers without asking again.
    clock.now += 10
    await asyncio.gather(*(poller.get(str(n)) for n in range(60)))
    assert len(scheduler.calls) == 1
    clock.now += 25
    await poller.get("0")
    assert len(scheduler.calls) == 2


async def test_starting_spawners_ask_faster_but_not_faster_than_min_interval(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    poller.watch("1", "alice")
    clock.now += 1
    await poller.get("1", max_age=1)
    await poller.get("1", max_age=0)  # min_interval still applies
    assert len(scheduler.calls) == 1
    clock.now += 1.5
    await poller.get("1", max_age=1)
    assert len(scheduler.calls) == 2


async def test_a_failing_scheduler_means_unknown_never_gone(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    poller.watch("1", "alice")
    clock.now += 1
    assert (await poller.get("1")).presence is Presence.KNOWN
    scheduler.failing = True
    scheduler.jobs.clear()  # as if squeue printed nothing useful
    clock.now += 31
    view = await poller.get("1")
    # The last good answer stands (stale), but nothing says gone.
    assert view.presence is Presence.KNOWN and "Unable to contact" in poller.last_error
    assert poller.last_error is not None
    # Backoff: no new query until interval * 2**(failures-1) has passed.
    calls = len(scheduler.calls)
    clock.now += 10
    await poller.get("1")
    assert len(scheduler.calls) == calls
    clock.now += 25
    await poller.get("1")
    assert len(scheduler.calls) == calls + 1  # second failure: now 60 s backoff
    clock.now += 40
    await poller.get("1")
    assert len(scheduler.calls) == calls + 1
    scheduler.failing = False
    scheduler.add("1", "alice")
    clock.now += 30
    view = await poller.get("1")
    assert view.presence is Presence.KNOWN and poller.last_error is None and poller.last_error is None


async def test_backoff_is_capped(setup):
    scheduler, clock, poller = setup
    poller.watch("1", "alice")
    scheduler.failing = True
    for _ in range(12):
        clock.now += 301
        await poller.refresh()
    assert len(scheduler.calls) == 12


async def test_new_job_is_unknown_until_a_query_covers_it(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    poller.watch("1", "alice")
    clock.now += 1
    await poller.refresh()
    clock.now += 0.5
    scheduler.add("2", "bob")
    poller.watch("2", "bob")
    assert poller.view("2").presence is Presence.UNKNOWN  # never "gone" just because it is new
    clock.now += 1
    assert (await poller.get("2", max_age=1)).presence is Presence.KNOWN


async def test_a_job_missing_from_a_good_answer_is_gone(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    poller.watch("1", "alice")
    clock.now += 1
    await poller.refresh()
    del scheduler.jobs["1"]
    clock.now += 31
    assert (await poller.get("1")).presence is Presence.GONE


async def test_failure_before_any_answer_is_unknown(setup):
    scheduler, clock, poller = setup
    scheduler.failing = True
    poller.watch("1", "alice")
    clock.now += 1
    view = await poller.get("1")
    assert view.presence is Presence.UNKNOWN and "Unable to contact" in view.error


async def test_a_job_is_watched_for_one_server_of_its_user_and_only_as_that_users(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    poller.watch("1", "alice", "alice/")
    poller.watch("1", "alice", "alice/")  # the same server again (a poll after its start)
    for user, watcher in (("bob", "bob/"), ("alice", "alice/gpu"), ("bob", "alice/")):
        with pytest.raises(JobWatchedElsewhere):
            poller.watch("1", user, watcher)
    ended = []

    async def record():
        ended.append(1)

    poller.on_end("1", record, "bob", "bob/")  # only the watcher sets its callback...
    poller.unwatch("1", "bob", "bob/")  # ...or unwatches
    assert poller.watches("1", "alice", "alice/") and poller.watched == {"1": "alice"}
    clock.now += 1
    assert (await poller.get("1")).presence is Presence.KNOWN
    # Listed as another user's (a reused id; bob's jobs are asked for his own server): gone for alice, with the owner.
    scheduler.add("1", "bob")
    scheduler.add("2", "bob")
    poller.watch("2", "bob", "bob/")
    clock.now += 31
    view = await poller.get("1")
    await asyncio.sleep(0)
    assert view.presence is Presence.GONE and view.status is None and view.other_owner == "bob"
    assert ended == []
    poller.unwatch("1", "alice", "alice/")
    assert poller.watched == {"2": "bob"}


async def test_end_listener_fires_once_right_after_the_query_that_sees_the_end(setup):
    scheduler, clock, poller = setup
    scheduler.add("1", "alice")
    scheduler.add("2", "bob")
    for job_id, user in (("1", "alice"), ("2", "bob")):
        poller.watch(job_id, user)
    ended = []

    async def record(job_id=None):
        ended.append(job_id)

    poller.on_end("1", lambda: record("1"), "alice")
    poller.on_end("2", lambda: record("2"), "bob")
    clock.now += 1
    await poller.refresh()
    await asyncio.sleep(0)
    assert ended == []
    scheduler.add("1", "alice", JobState.CANCELLED)
    del scheduler.jobs["2"]
    clock.now += 5
    await poller.refresh()
    await asyncio.sleep(0)
    assert sorted(ended) == ["1", "2"]
    clock.now += 5
    await poller.refresh()
    await asyncio.sleep(0)
    assert sorted(ended) == ["1", "2"]  # once only


async def test_no_listener_fires_while_the_scheduler_fails(setup):
    scheduler, clock, poller = setup
    poller.watch("1", "alice")
    ended = []

    async def record():
        ended.append(1)

    poller.on_end("1", record, "alice")
    scheduler.failing = True
    clock.now += 1
    await poller.refresh()
    await asyncio.sleep(0)
    assert ended == [] and poller.view("1").presence is Presence.UNKNOWN


async def test_a_query_that_never_answers_fails_after_query_timeout_and_releases_every_caller():
    clock = Clock()
    answers = asyncio.Event()  # never set while the scheduler hangs
    hanging = True
    cancelled = []

    async def query(users):
        if hanging:
            try:
                await answers.wait()
            except asyncio.CancelledError:
                cancelled.append(users)
                raise
        return {"1": JobStatus("1", JobState.RUNNING, "RUNNING", user="alice")}

    poller = StatusPoller(query, interval=30, min_interval=1, jitter=0, clock=clock, query_timeout=0.3)
    poller.watch("1", "alice")
    clock.now += 1
    started = time.monotonic()
    first = asyncio.ensure_future(poller.get("1"))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(poller.get("1"))  # joins the query in flight
    views = await asyncio.wait_for(asyncio.gather(first, second), 0.3 + 1)
    assert time.monotonic() - started < 0.3 + 0.3
    assert all(view.presence is Presence.UNKNOWN and "timed out after 0.3 s" in view.error for view in views)
    assert cancelled == [["alice"]] and poller.last_error is not None  # the hung query was cancelled, once
    # Back off as after any failure; the next answer recovers.
    hanging = False
    clock.now += 10
    assert (await poller.get("1")).presence is Presence.UNKNOWN and len(cancelled) == 1
    clock.now += 25
    view = await asyncio.wait_for(poller.get("1"), 1)
    assert view.presence is Presence.KNOWN and poller.last_error is None and poller.last_error is None


async def test_a_query_that_ignores_cancellation_still_releases_the_callers():
    clock = Clock()
    release = asyncio.Event()

    async def stubborn_query(users):
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # a query that swallows the cancellation keeps running
        return {}

    poller = StatusPoller(stubborn_query, interval=30, min_interval=1, jitter=0, clock=clock, query_timeout=0.2)
    poller.watch("1", "alice")
    clock.now += 1
    view = await asyncio.wait_for(poller.get("1"), 0.2 + 1)
    assert view.presence is Presence.UNKNOWN and "timed out" in view.error
    release.set()  # let the abandoned query end before the test's loop closes
    await asyncio.sleep(0)
