"""Start estimates without a cluster: the backends read what ``sbatch --test-only`` and ``qsub -w p``
printed on the local clusters (tests/data), unknown output is no estimate, the form's words, and the
hub's cache, per-user rate limit and timeout (hpchub.hub.estimate)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from helpers.support import OLD_JOBFILES_USAGE, REPO

from hpchub.hub import estimate
from hpchub.hub.estimate import Answer, Estimates, estimate_text
from hpchub.job.scheduler_commands import for_scheduler
from hpchub.schedulers import BACKENDS, StartEstimate, sge, slurm

DATA = REPO / "tests" / "data"
# When the Slurm answers were captured (their own "to start at" of the job that fitted).
CAPTURED_AT = datetime(2026, 12, 7, 19, 7, 2)


def data(name: str) -> str:
    return (DATA / name).read_text()


def test_argv_asks_without_submitting_and_is_the_job_sides():
    assert slurm.estimate_argv() == ["sbatch", "--test-only"]
    assert sge.estimate_argv() == ["qsub", "-w", "p"]
    for name, backend in BACKENDS.items():
        assert backend.estimate_argv is for_scheduler(name).estimate_argv


def test_slurm_a_job_that_fits_starts_now():
    found = slurm.parse_estimate(data("slurm-test-only-now.txt"), CAPTURED_AT)
    assert found == StartEstimate(True, CAPTURED_AT, data("slurm-test-only-now.txt").strip())
    # Asked a little later (the answer is rounded to the second): still now.
    assert slurm.parse_estimate(data("slurm-test-only-now.txt"), CAPTURED_AT - timedelta(seconds=30)).starts_now


def test_slurm_a_job_that_waits_names_its_expected_start():
    found = slurm.parse_estimate(data("slurm-test-only-later.txt"), CAPTURED_AT)
    assert found is not None and not found.starts_now
    assert found.start == CAPTURED_AT + timedelta(hours=1)
    assert "to start at 2026-12-07T20:07:02" in found.words


# Captured on the busy `multi` partition (tests/clusters/busy.sh fill multi) at BUSY_AT, for a 1-core
# job: --test-only says 21:43:28, i.e. BUSY_AT plus its delay for the two waiting jobs ((12 CPUs x 30
# min + 4 x 2 h) / 12 CPUs = 70 min); backfill started such a job at once (node3 had 2 idle CPUs and
# the first planned start there is 21:14:59).
BUSY_AT = datetime(2026, 12, 7, 20, 33, 28)
BUSY_CONTEXT = ["slurm-busy-waiting.txt", "slurm-busy-cpus.txt"]


def busy_estimate(minutes: float, at: datetime = BUSY_AT, waiting: str | None = None, cpus: str | None = None,
                  output: str | None = None) -> StartEstimate | None:
    context = [waiting if waiting is not None else data(BUSY_CONTEXT[0]),
               cpus if cpus is not None else data(BUSY_CONTEXT[1])]
    return slurm.parse_estimate(output if output is not None else data("slurm-test-only-busy.txt"), at, context,
                                timedelta(minutes=minutes))


def test_slurm_backfill_a_short_job_that_fits_now_starts_now_though_test_only_says_later():
    alone = slurm.parse_estimate(data("slurm-test-only-busy.txt"), BUSY_AT)
    assert alone is not None and not alone.starts_now and alone.start == datetime(2026, 12, 7, 21, 43, 28)
    found = busy_estimate(10)
    assert found is not None and found.starts_now and found.start == BUSY_AT
    assert found.words.startswith(data("slurm-test-only-busy.txt").strip())
    assert "by backfill: fits now on node3; next planned start there 21:14" in found.words
    # asked a little before the answer was computed (the transport, then sbatch): the same
    assert busy_estimate(10, at=BUSY_AT - timedelta(seconds=3)).starts_now
    # till 2 min (the margin for reading the form) before the first planned start on node3
    assert busy_estimate(39).starts_now
    # a waiting job the backfill passes have long seen and not planned holds nothing
    passed_over = data(BUSY_CONTEXT[0]) + "4294898600|1|10:00|N/A|(null)|2026-12-07T20:20:00\n"
    assert busy_estimate(10, waiting=passed_over).starts_now


@pytest.mark.parametrize("case", [
    "ends after the planned start",
    "no context (an older hpchub-job)",
    "no waiting job visible (private data)",
    "a delay that does not bring the start back to now (the job does not fit now)",
    "a planned job without nodes",
    "a new waiting job no backfill pass has planned yet",
    "unreadable waiting line",
    "unreadable cpus",
    "unlimited limit of the first waiting job",
])
def test_slurm_backfill_is_claimed_only_when_the_answer_shows_room(case):
    waiting = data(BUSY_CONTEXT[0])
    found = {
        "ends after the planned start": lambda: busy_estimate(40),
        "no context (an older hpchub-job)": lambda: slurm.parse_estimate(
            data("slurm-test-only-busy.txt"), BUSY_AT, [], timedelta(minutes=10)),
        "no waiting job visible (private data)": lambda: busy_estimate(10, waiting=""),
        "a delay that does not bring the start back to now (the job does not fit now)":
            lambda: busy_estimate(10, at=BUSY_AT - timedelta(minutes=15)),
        "a planned job without nodes": lambda: busy_estimate(
            10, waiting=waiting + "4294898600|1|10:00|2026-12-07T20:40:00|(null)|2026-12-07T20:30:00\n"),
        "a new waiting job no backfill pass has planned yet": lambda: busy_estimate(
            10, waiting=waiting + "4294898600|1|10:00|N/A|(null)|2026-12-07T20:33:00\n"),
        "unreadable waiting line": lambda: busy_estimate(10, waiting=waiting + "garbage\n"),
        "unreadable cpus": lambda: busy_estimate(10, cpus="10/2/0\n"),
        "unlimited limit of the first waiting job": lambda: busy_estimate(
            10, waiting=waiting.replace("30:00", "UNLIMITED")),
    }[case]()
    assert found is not None and not found.starts_now and found.start == datetime(2026, 12, 7, 21, 43, 28), found


def test_slurm_backfill_context_is_asked_only_for_a_later_start():
    later = data("slurm-test-only-busy.txt")
    argvs = slurm.estimate_context_argvs(later, BUSY_AT)
    assert argvs == [["squeue", "--noheader", "--partition=multi", "--states=PENDING",
                      "--format=%Q|%C|%l|%S|%Y|%V"],
                     ["sinfo", "--noheader", "--partition=multi", "--format=%C"]]
    assert slurm.estimate_context_argvs(later, datetime(2026, 12, 7, 21, 43, 0)) == []  # that is now
    assert slurm.estimate_context_argvs(data("slurm-test-only-now.txt"), CAPTURED_AT) == []
    assert slurm.estimate_context_argvs("sbatch: error: nope\n", BUSY_AT) == []
    assert sge.estimate_context_argvs(data("sge-w-p-none.txt"), BUSY_AT) == []
    for name, backend in BACKENDS.items():
        assert backend.estimate_context_argvs is for_scheduler(name).estimate_context_argvs


@pytest.mark.parametrize("output", [
    "",
    "allocation failure: Requested node configuration is not available\n",
    "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
    "sbatch: Job 12 to start at someday using 1 processors\n",
    "sbatch: Job 12 to start at 2026-13-40T99:00:00 using 1 processors on nodes vm in partition debug\n",
    "echo sbatch: Job 12 to start at 2026-12-07T19:07:02 using 1",  # not at the start of a line
])
def test_slurm_output_not_understood_is_no_estimate(output):
    assert slurm.parse_estimate(output, CAPTURED_AT) is None


def test_grid_engine_says_now_or_would_wait_and_names_no_time():
    assert sge.parse_estimate(data("sge-w-p-found.txt"), CAPTURED_AT) == \
        StartEstimate(True, None, "verification: found suitable queue(s)")
    assert sge.parse_estimate("verification: found possible assignment with 4 slots\n", CAPTURED_AT).starts_now
    waits = sge.parse_estimate(data("sge-w-p-none.txt"), CAPTURED_AT)
    assert waits == StartEstimate(False, None, "verification: no suitable queues")


@pytest.mark.parametrize("output", ["", "Unable to run job: denied: host \"x\" is no submit host.\nExiting.\n",
                                    "Your job 12 (\"x\") has been submitted\n", "verification: maybe\n"])
def test_grid_engine_output_not_understood_is_no_estimate(output):
    assert sge.parse_estimate(output, CAPTURED_AT) is None


def test_the_forms_words():
    now = datetime(2026, 12, 7, 14, 0, 0)
    assert estimate_text(None, now) == "no estimate"
    assert estimate_text(StartEstimate(True, now), now) == "starts now"
    assert estimate_text(StartEstimate(False, now.replace(hour=14, minute=20)), now) == "expected to start at 14:20"
    assert estimate_text(StartEstimate(False, now + timedelta(days=1)), now) == \
        "expected to start at 2026-12-08 14:00"
    assert estimate_text(StartEstimate(False), now) == "would wait: no queue can take it now"


def _key(user="alice", profile="small", **values):
    return (user, profile, tuple(sorted(values.items())))


def test_answers_are_kept_per_user_profile_and_values_for_the_ttl(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(estimate.time, "monotonic", lambda: clock[0])
    estimates, asked = Estimates(), []

    def asker(text):
        async def ask():
            asked.append(text)
            return Answer(text)
        return ask

    async def answer(key, text):
        return (await estimates.answer(key, asker(text), ttl=30, per_minute=100, timeout=5)).text

    async def scenario():
        assert await answer(_key(cores="1"), "starts now") == "starts now"
        assert await answer(_key(cores="1"), "other") == "starts now"  # cached
        assert await answer(_key(cores="2"), "later") == "later"  # other values
        assert await answer(_key(user="bob", cores="1"), "bob's") == "bob's"  # other user
        clock[0] += 31
        assert await answer(_key(cores="1"), "fresh") == "fresh"

    asyncio.run(scenario())
    assert asked == ["starts now", "later", "bob's", "fresh"]


def test_each_user_asks_the_scheduler_at_most_so_often(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(estimate.time, "monotonic", lambda: clock[0])
    estimates = Estimates()

    async def ask():
        return Answer("starts now")

    async def answer(user, cores):
        return await estimates.answer(_key(user=user, cores=str(cores)), ask, ttl=30, per_minute=3, timeout=5)

    async def scenario():
        assert [(await answer("alice", cores)).text for cores in range(4)] == ["starts now"] * 3 + ["no estimate"]
        assert "too many" in (await answer("alice", 9)).words
        assert (await answer("alice", 0)).text == "starts now"  # cached answers still come
        assert (await answer("bob", 1)).text == "starts now"  # another user's own limit
        clock[0] += 61
        assert (await answer("alice", 9)).text == "starts now"

    asyncio.run(scenario())


def test_a_slow_or_failed_estimate_is_no_estimate_and_one_question_per_choice():
    estimates, asked = Estimates(), []

    async def slow():
        asked.append("slow")
        await asyncio.sleep(0.3)
        return Answer("starts now")

    async def failing():
        raise RuntimeError("a password is required")

    async def scenario():
        key = _key(cores="1")
        first, second = await asyncio.gather(estimates.answer(key, slow, 30, 10, timeout=0.05),
                                             estimates.answer(key, slow, 30, 10, timeout=0.05))
        assert first.text == second.text == "no estimate" and "within 0.05 s" in first.words
        await asyncio.sleep(0.4)  # the question went on: its answer is kept for the next caller
        assert (await estimates.answer(key, slow, 30, 10, timeout=0.05)).text == "starts now"
        failed = await estimates.answer(_key(cores="2"), failing, 30, 10, timeout=1)
        assert failed.text == "no estimate"

    asyncio.run(scenario())
    assert asked == ["slow"]


def _answers(starts_now_up_to: int | None, later: str = "expected to start at 15:10", missing: int | None = None):
    """answer_for(value): starts now up to ``starts_now_up_to``, later beyond; records the values asked."""
    asked: list[int] = []

    async def answer_for(value: int) -> Answer:
        asked.append(value)
        if value == missing:
            return Answer("no estimate")
        if starts_now_up_to is not None and value <= starts_now_up_to:
            return Answer("starts now", starts_now=True)
        return Answer(later, starts_now=False)

    return answer_for, asked


@pytest.mark.parametrize("name, values, up_to, hint", [
    ("nodes", [1, 2, 3], 2, "2 nodes start now; 3 nodes expected at 15:10"),
    ("nodes", [1, 2, 3], 1, "1 node starts now; 2 nodes expected at 15:10"),
    ("nodes", [1, 2, 3], 3, "up to 3 nodes start now"),
    ("nodes", [1, 2, 3], None, "1 node: expected at 15:10"),
    ("cores", list(range(1, 65)), 20, "20 cores start now; 21 cores expected at 15:10"),
])
def test_the_hint_names_the_largest_choice_that_starts_now(name, values, up_to, hint):
    answer_for, asked = _answers(up_to)
    assert asyncio.run(estimate.largest_now_hint(name, values, answer_for)) == hint
    assert len(asked) <= 2 + len(values).bit_length()  # halving: a few questions, not one per value


def test_the_hint_of_grid_engine_says_would_wait_and_a_missing_answer_gives_none():
    answer_for, _ = _answers(2, later="would wait: no queue can take it now")
    assert asyncio.run(estimate.largest_now_hint("cores", [1, 2, 3, 4], answer_for)) == \
        "2 cores start now; 3 cores would wait: no queue can take it now"
    answer_for, _ = _answers(2, missing=4)
    assert asyncio.run(estimate.largest_now_hint("nodes", [1, 2, 3, 4], answer_for)) == ""


def test_the_hint_is_about_nodes_if_adjustable_else_cores():
    from hpchub.core.config import load_site_config

    site = load_site_config(REPO / "site-configs" / "local-slurm.yaml")
    assert estimate.hint_values(site, site.profile("multi")) == ("nodes", [1, 2, 3])
    assert estimate.hint_values(site, site.profile("small")) == ("cores", [1, 2, 3, 4])


class _SlowSpawner:
    """What start_estimate needs of an HPCSpawner, with a scheduler that never answers."""

    name = ""
    start_estimate_ttl, start_estimate_rate, start_estimate_timeout = 30.0, 20, 10.0

    def __init__(self):
        self.requests = 0

    async def _profile_for(self, options):
        from types import SimpleNamespace
        return SimpleNamespace(slug=options.get("profile", "small"), name="Small")

    async def unix_user_name(self):
        return "alice"

    async def _request_from(self, options):
        self.requests += 1
        await asyncio.sleep(3600)


def test_the_form_waits_only_briefly_for_its_first_answer(monkeypatch):
    monkeypatch.setattr(estimate, "FIRST_LOAD_SECONDS", 0.2)
    monkeypatch.setattr(estimate, "ESTIMATES", Estimates())
    spawner = _SlowSpawner()

    async def scenario():
        started = asyncio.get_running_loop().time()
        answer = await estimate.first_load_estimate(spawner, "small", {"cores": "2"})
        assert answer.text == "no estimate" and asyncio.get_running_loop().time() - started < 1
        # The endpoint's own bound (start_estimate_timeout) holds too, whatever the scheduler does.
        spawner.start_estimate_timeout = 0.1
        name, answer, hint = await estimate.start_estimate(spawner, {"profile": ["small"], "small--cores": ["3"]})
        assert (name, answer.text, hint) == ("Small", "no estimate", "")
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(scenario())
    assert spawner.requests == 2


def test_a_value_the_form_cannot_read_is_no_estimate_and_asks_nothing(monkeypatch):
    monkeypatch.setattr(estimate, "ESTIMATES", Estimates())
    spawner = _SlowSpawner()
    name, answer, _ = asyncio.run(estimate.start_estimate(spawner, {"profile": ["small"], "small--walltime-hours": ["x"]}))
    assert answer.text == "no estimate" and answer.words and "scheduler" not in answer.words and spawner.requests == 0


@pytest.mark.parametrize("scheduler, output, starts_now", [
    ("slurm", data("slurm-test-only-later.txt"), False), ("sge", data("sge-w-p-found.txt"), True)])
def test_the_client_asks_as_the_user_through_hpchub_job_and_reads_its_answer(scheduler, output, starts_now):
    import json

    from hpchub.transports.cluster import ClusterClient, ClusterSpec
    from hpchub.transports.runner import CommandResult

    client = ClusterClient(ClusterSpec(name="c", scheduler=scheduler, via="ssh", jobfiles="/x/hpchub-job"))
    calls = []

    async def run(argv, *, user=None, input=None):
        calls.append((list(argv), user, json.loads(input)))
        return CommandResult(tuple(argv), 0, replies.pop(0), "", 0.1)

    client.run = run  # the transport itself is tested in test_cluster.py and for real in test_estimate_real.py
    replies = [json.dumps({"returncode": 0, "output": output}), "not json", json.dumps({"returncode": 1})]
    found = asyncio.run(client.estimate("alice", "#!/bin/bash\n", CAPTURED_AT))
    assert found is not None and found.starts_now is starts_now
    assert calls == [(["/x/hpchub-job", "estimate", scheduler], "alice", {"files": {}, "script": "#!/bin/bash\n"})]
    assert asyncio.run(client.estimate("alice", "#!/bin/bash\n", CAPTURED_AT)) is None
    assert asyncio.run(client.estimate("alice", "#!/bin/bash\n", CAPTURED_AT)) is None


def _client_answering(error):
    """A ClusterClient over SSH whose hpchub-job call fails with ``error`` (as CommandError's fields)."""
    from hpchub.transports.cluster import ClusterClient, ClusterSpec
    from hpchub.transports.runner import CommandError

    client = ClusterClient(ClusterSpec(name="c", scheduler="slurm", via="ssh", host="login1", jobfiles="/x/hpchub-job"))

    async def run(argv, *, user=None, input=None):
        raise CommandError(argv, *error)

    client.run = run
    return client


def test_an_hpchub_job_without_the_estimate_subcommand_is_told_apart_in_one_line():
    from hpchub.job.jobfiles import USAGE
    from hpchub.transports.cluster import EstimateUnsupported
    from hpchub.transports.runner import CommandError

    with pytest.raises(EstimateUnsupported) as caught:
        asyncio.run(_client_answering((2, "", OLD_JOBFILES_USAGE + "\n")).estimate("alice", "#!/bin/bash\n", CAPTURED_AT))
    assert str(caught.value) == ("/x/hpchub-job on the login node login1 has no `estimate` subcommand (it is from an "
                                 "older hpchub): install the hub's hpchub there for start estimates")
    assert caught.value.returncode == 2 and caught.value.stderr.startswith("hpchub-job: usage:")
    # Today's hpchub-job refusing a call (its usage names estimate), or any other failure: not that.
    for error in [(2, "", f"hpchub-job: {USAGE}\n"), (1, "", "hpchub-job: cannot run sbatch: No such file\n"),
                  (127, "", "bash: /x/hpchub-job: No such file or directory\n")]:
        with pytest.raises(CommandError) as caught:
            asyncio.run(_client_answering(error).estimate("alice", "#!/bin/bash\n", CAPTURED_AT))
        assert not isinstance(caught.value, EstimateUnsupported), error


def test_a_cluster_that_cannot_estimate_is_logged_once_and_looked_at_again_after_a_while(caplog):
    from hpchub.transports.cluster import EstimateUnsupported
    from hpchub.transports.runner import CommandError

    estimates = Estimates()
    error = EstimateUnsupported(CommandError(["hpchub-job"], 2, "", OLD_JOBFILES_USAGE), "too old")
    caplog.set_level("INFO", logger="hpchub.estimate")
    assert not estimates.unsupported("c", 1000.0)
    recheck = estimate.UNSUPPORTED_RECHECK_SECONDS
    last = 1000.0 + recheck + 1  # found again when asked after the first recheck: no second line
    for now in (1000.0, 1001.0, last):
        estimates.found_unsupported("c", error, now)
    assert [record.getMessage() for record in caplog.records] == ["no start estimates on cluster c: too old"]
    assert estimates.unsupported("c", 1500.0) and not estimates.unsupported("other", 1500.0)
    # The last finding counts: asked again only UNSUPPORTED_RECHECK_SECONDS after it.
    assert estimates.unsupported("c", last + recheck - 1) and not estimates.unsupported("c", last + recheck)
    estimates.found_supported("c")  # updated: asked again at once, and a later downgrade is logged again
    assert not estimates.unsupported("c", 2000.0)
    estimates.found_unsupported("c", error, 3000.0)
    assert [record.getMessage() for record in caplog.records][1:] == [
        "start estimates on cluster c work again", "no start estimates on cluster c: too old"]


def test_the_note_of_a_failed_question_says_what_failed():
    from hpchub.transports.runner import CommandError, CommandTimeout
    from hpchub.transports.sshpool import LoginUnreachable, SSHTarget

    target = SSHTarget(host="login1", port=22, user="alice", key_file="/k", known_hosts="/h")
    failures = {
        LoginUnreachable(["hpchub-job"], target, "connection refused"): "the cluster's login node could not be reached",
        CommandTimeout(["hpchub-job"], None, reason="timed out"): "the scheduler gave no answer in time",
        CommandError(["hpchub-job"], 127, "", "hpchub-job: No such file\n"): "the question to the scheduler failed",
        ValueError("odd"): "the scheduler's answer could not be read",
    }

    async def scenario():
        for cores, (error, words) in enumerate(failures.items()):
            async def ask(error=error):
                raise error

            answer = await Estimates().answer(_key(cores=str(cores)), ask, 30, 10, timeout=5)
            assert answer.text == "no estimate" and answer.words.startswith(words), (error, answer)

    asyncio.run(scenario())
