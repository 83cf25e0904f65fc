""""Starts now, or when": the scheduler's own answer for a choice on the spawn form, asked as the user.

The job script is the one the spawner would submit (hpchub.core.jobs.server_job); ``hpchub-job
estimate`` runs ``sbatch --test-only`` / ``qsub -w p`` with it as the user, so their limits and
associations count and nothing is submitted. Answers are kept per (user, profile, values) for a short
time, each user asks the scheduler at most so often, and an answer that fails or takes too long is
"no estimate": the form never waits long for it. The form's script asks ``GET /hub/hpchub/estimate``
for each card and again when a field changes; the chosen card's answer for the values it opens with
is also in the form's HTML (for browsers without JavaScript), if it comes within FIRST_LOAD_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import web

from ..core import jobs, metrics
from ..core.render import UserAccount
from ..schedulers import StartEstimate
from ..transports.cluster import ClusterSpec, EstimateUnsupported
from . import walltime
from .form import FIELD_SEPARATOR, read_form

log = logging.getLogger("hpchub.estimate")

ROUTE = r"/hpchub/estimate"  # below the hub prefix: /hub/hpchub/estimate
NO_ESTIMATE = "no estimate"
# The form waits at most this long (or start_estimate_timeout, if shorter) for the chosen card's
# answer before it is shown without it; the question goes on and the script shows its answer.
FIRST_LOAD_SECONDS = 2.0
# A cluster whose hpchub-job cannot estimate (an older hpchub there) is not asked again for this long:
# each question would be an SSH login or a sudo for no answer. After it, one question looks again.
UNSUPPORTED_RECHECK_SECONDS = 600.0
OLDER_JOBFILES = "the cluster's hpchub-job is older than the hub's and cannot estimate"


def estimate_text(estimate: StartEstimate | None, now: datetime) -> str:
    """The scheduler's answer in the form's words: "starts now", "expected to start at 14:20" (another
    day: "2026-12-08 14:20"), "would wait" (Grid Engine names no time) or "no estimate"."""
    if estimate is None:
        return NO_ESTIMATE
    if estimate.starts_now:
        return "starts now"
    if estimate.start is None:
        return "would wait: no queue can take it now"
    return f"expected to start at {walltime.clock_text(estimate.start.timestamp(), now.timestamp())}"


@dataclass(frozen=True)
class Answer:
    text: str
    words: str = ""  # the scheduler's own line, for the title of the card's note
    starts_now: bool | None = None  # None: no estimate


Key = tuple[str, str, tuple[tuple[str, str], ...]]


class Estimates:
    """Answers per (user, profile, values) for ``ttl`` seconds, one question in flight per key, and at
    most ``per_minute`` questions to the scheduler per user in any minute (beyond that: no estimate)."""

    def __init__(self) -> None:
        self._answers: dict[Key, tuple[Answer, float]] = {}
        self._inflight: dict[Key, asyncio.Task[Answer]] = {}
        self._asked: dict[str, deque[float]] = {}
        self._unsupported: dict[str, float] = {}  # cluster -> when its hpchub-job last could not estimate

    def unsupported(self, cluster: str, now: float) -> bool:
        """Whether ``cluster``'s hpchub-job was found unable to estimate within UNSUPPORTED_RECHECK_SECONDS."""
        found = self._unsupported.get(cluster)
        return found is not None and now - found < UNSUPPORTED_RECHECK_SECONDS

    def found_unsupported(self, cluster: str, error: EstimateUnsupported, now: float) -> None:
        """One log line for the admin when a cluster's hpchub-job is found unable to estimate, not one
        per question: again only after it has estimated in between."""
        if cluster not in self._unsupported:
            log.warning("no start estimates on cluster %s: %s", cluster, error)
        self._unsupported[cluster] = now

    def found_supported(self, cluster: str) -> None:
        """``cluster`` estimated: asked as any other from now on (its hpchub-job was updated)."""
        if self._unsupported.pop(cluster, None) is not None:
            log.info("start estimates on cluster %s work again", cluster)

    def cached(self, key: Key, ttl: float, now: float) -> Answer | None:
        found = self._answers.get(key)
        if found is None or now - found[1] >= ttl:
            return None
        return found[0]

    def allowed(self, user: str, per_minute: int, now: float) -> bool:
        """Whether ``user`` may ask the scheduler once more now (and count it if so)."""
        asked = self._asked.setdefault(user, deque())
        while asked and now - asked[0] >= 60:
            asked.popleft()
        if len(asked) >= per_minute:
            return False
        asked.append(now)
        return True

    async def answer(self, key: Key, ask: Callable[[], Awaitable[Answer]], ttl: float, per_minute: int,
                     timeout: float) -> Answer:
        now = time.monotonic()
        cached = self.cached(key, ttl, now)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            if not self.allowed(key[0], per_minute, now):
                return Answer(NO_ESTIMATE, "too many questions to the scheduler just now; try again in a minute")
            task = asyncio.ensure_future(self._ask(key, ask))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        try:
            # shield: a caller that gives up leaves the answer to be cached for the next one
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            return Answer(NO_ESTIMATE, f"the scheduler gave no answer within {timeout:g} s")

    async def _ask(self, key: Key, ask: Callable[[], Awaitable[Answer]]) -> Answer:
        try:
            answer = await ask()
        except Exception as error:  # a refused account, a failed command, an unreachable login node
            log.warning("start estimate for %s, profile %s: %s", key[0], key[1], error)
            answer = Answer(NO_ESTIMATE, failure_words(error))
        self._answers[key] = (answer, time.monotonic())
        self._forget_old()
        return answer

    def _forget_old(self, keep: float = 600) -> None:
        now = time.monotonic()
        for key in [key for key, (_, when) in self._answers.items() if now - when > keep]:
            del self._answers[key]


ESTIMATES = Estimates()

# The note's words (its tooltip) for a question that failed, by metrics.command_error_class: what
# went wrong, without the command or its output (the hub's log has those).
FAILURE_WORDS = {
    "unreachable": "the cluster's login node could not be reached just now",
    "timeout": "the scheduler gave no answer in time",
    "too_much_output": "the question to the scheduler failed",
    "failed": "the question to the scheduler failed",
}


def failure_words(error: Exception) -> str:
    return FAILURE_WORDS.get(metrics.command_error_class(error) or "", "the scheduler's answer could not be read")


async def start_estimate(spawner: Any, formdata: Mapping[str, list[str]], hint: bool = False) -> tuple[str, Answer, str]:
    """(profile name, answer, hint) for the form's choice in ``formdata`` (the form's own field names),
    as ``spawner``'s user would start it. A choice the form would refuse has no estimate (it says why).
    ``hint``: also the largest value of the profile's adjustable node (else core) count that starts now
    ("2 nodes start now; 3 nodes expected at 15:10"); "" when there is none to give."""
    submitted = read_form(formdata)
    try:
        profile = await spawner._profile_for(submitted.options)
    except web.HTTPError as error:
        return "", Answer(NO_ESTIMATE, error.log_message or "profile not available"), ""
    if submitted.problems:
        return profile.name, Answer(NO_ESTIMATE, "; ".join(submitted.problems.values())), ""
    unix_name = await spawner.unix_user_name()

    async def answer_for(options: dict[str, str]) -> Answer:
        async def ask() -> Answer:
            try:
                request = await spawner._request_from(options)
            except web.HTTPError as error:  # a choice the form would refuse: the same words
                return Answer(NO_ESTIMATE, error.log_message or "not accepted")
            cluster = request.cluster_name
            if ESTIMATES.unsupported(cluster, time.monotonic()):
                return Answer(NO_ESTIMATE, OLDER_JOBFILES)
            site = spawner.site
            runtime = spawner.runtime_for(ClusterSpec.from_site(site, cluster))
            user = await asyncio.get_running_loop().run_in_executor(None, UserAccount.lookup, unix_name)
            job = jobs.server_job(site, request, user, spawner.name, spawner.server_command)
            try:
                estimate = await runtime.client.estimate(unix_name, job.script, datetime.now(),
                                                         timedelta(seconds=request.walltime.seconds))
            except EstimateUnsupported as error:
                ESTIMATES.found_unsupported(cluster, error, time.monotonic())
                return Answer(NO_ESTIMATE, OLDER_JOBFILES)
            ESTIMATES.found_supported(cluster)
            if estimate is None:
                return Answer(NO_ESTIMATE)
            return Answer(estimate_text(estimate, datetime.now()), estimate.words, estimate.starts_now)

        key: Key = (unix_name, profile.slug, tuple(sorted(options.items())))
        return await ESTIMATES.answer(key, ask, spawner.start_estimate_ttl, spawner.start_estimate_rate,
                                      spawner.start_estimate_timeout)

    answer = await answer_for(submitted.options)
    hint_text = ""
    if hint and answer.starts_now is not None:
        adjustable = hint_values(spawner.site, profile)
        if adjustable is not None:
            name, values = adjustable
            hint_text = await largest_now_hint(
                name, values, lambda value: answer_for({**submitted.options, name: str(value)}))
    return profile.name, answer, hint_text


HINT_FIELDS = {"nodes": ("node", "nodes", "max_nodes"), "cores": ("core", "cores", "max_cores")}


def hint_values(site: Any, profile: Any) -> tuple[str, list[int]] | None:
    """The field the hint is about (nodes if the user may change them, else cores) and its values,
    smallest first; None when neither offers a choice."""
    adjustable = profile.user_adjustable.fields()
    for name, (_, _, limit) in HINT_FIELDS.items():
        bound = adjustable.get(name)
        if bound is None:
            continue
        if bound.choices:
            values = sorted(set(bound.choices))
        else:
            high = bound.max if bound.max is not None else getattr(site.clusters[profile.cluster].queues[profile.queue],
                                                                   limit)
            if high is None:
                continue
            values = list(range(bound.min if bound.min is not None else 1, high + 1))
        if len(values) > 1:
            return name, values
    return None


async def largest_now_hint(name: str, values: list[int], answer_for: Callable[[int], Awaitable[Answer]]) -> str:
    """"2 nodes start now; 3 nodes expected at 15:10": the largest of ``values`` that starts now, found
    by halving (a bigger job never starts sooner: a few questions, each cached like any other), and
    the next one's answer. "" when an answer is missing."""
    one, many, _ = HINT_FIELDS[name]

    def count(value: int) -> str:
        return f"{value} {one if value == 1 else many}"

    def starts(value: int) -> str:
        return "starts" if value == 1 else "start"

    def later(answer: Answer) -> str:
        return answer.text.replace("expected to start at", "expected at")

    smallest = await answer_for(values[0])
    if smallest.starts_now is None:
        return ""
    if not smallest.starts_now:
        return f"{count(values[0])}: {later(smallest)}"
    largest = await answer_for(values[-1])
    if largest.starts_now is None:
        return ""
    if largest.starts_now:
        return f"up to {count(values[-1])} {starts(values[-1])} now"
    low, high, high_answer = 0, len(values) - 1, largest  # values[low] starts now, values[high] does not
    while high - low > 1:
        middle = (low + high) // 2
        answer = await answer_for(values[middle])
        if answer.starts_now is None:
            return ""
        if answer.starts_now:
            low = middle
        else:
            high, high_answer = middle, answer
    return f"{count(values[low])} {starts(values[low])} now; {count(values[high])} {later(high_answer)}"


async def first_load_estimate(spawner: Any, profile: str, values: Mapping[str, str]) -> Answer:
    """The answer for the card the form opens with: ``profile`` with the form's input ``values``
    (Preselection.values: by input suffix), as the form would send them."""
    formdata = {"profile": [profile], **{f"{profile}{FIELD_SEPARATOR}{name}": [value] for name, value in values.items()}}
    try:
        _, answer, _ = await asyncio.wait_for(start_estimate(spawner, formdata),
                                              min(FIRST_LOAD_SECONDS, spawner.start_estimate_timeout))
        return answer
    except asyncio.TimeoutError:
        return Answer(NO_ESTIMATE)


def _hpc_spawner(user: Any) -> Any:
    """The user's HPCSpawner (wrapspawner: its child); 404 for any other spawner."""
    spawner = user.spawner
    spawner = getattr(spawner, "child_spawner", None) or spawner
    if not hasattr(spawner, "start_estimate_ttl") or spawner.start_estimate_rate <= 0:
        raise web.HTTPError(404, "no start estimates here (they need hpchub's spawner and start_estimate_rate > 0)")
    return spawner


class EstimateHandler(BaseHandler):
    """``GET ?profile=SLUG&SLUG--cores=2...[&hint=1]`` (the form's own field names) -> ``{"profile",
    "text", "words", "starts_now", "hint"}``: the answer for that choice, for the form's script (which
    asks for the hint for the chosen card only). A GET: asking changes nothing."""

    @web.authenticated
    async def get(self) -> None:
        arguments = {name: [value.decode("utf-8", "replace") for value in values]
                     for name, values in self.request.query_arguments.items() if name not in ("_xsrf", "hint")}
        name, answer, hint = await start_estimate(_hpc_spawner(self.current_user), arguments,
                                                  hint=self.get_query_argument("hint", "") == "1")
        self.set_header("Cache-Control", "no-store")
        self.finish({"profile": name, "text": answer.text, "words": answer.words, "starts_now": answer.starts_now,
                     "hint": hint})


HANDLERS = [(ROUTE, EstimateHandler)]
