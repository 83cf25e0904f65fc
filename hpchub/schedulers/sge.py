"""Grid Engine (Son of Grid Engine 8.1, also OGS/UGE): argv builders and ``qstat -xml`` parsers.

Job names are user text. SGE 8.1.9 refuses names with control characters, newlines, tabs,
spaces, ``/ : @ *`` and non-ASCII, and escapes the rest in its XML, except that it writes
``<`` as ``%lt;``. Characters XML 1.0 forbids are replaced anyway (other Grid Engines may let
them through), and a job entry that cannot be read costs that job only.

Over 500 lines because a backend is one scheduler's whole contract (hpchub.schedulers.base) in one
file: what hpchub asks Grid Engine and how it reads the answers.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from ..job.scheduler_commands import GridEngine
from .base import (
    Allocations,
    JobState,
    JobStatuses,
    LazyJobStatus,
    ParseError,
    QueueInfo,
    Reservation,
    SchedulerQueueLimits,
    StartEstimate,
    collector_paused,
    job_statuses,
    set_frozen,
)

name = "sge"

# Grid Engine sets it in the job's environment; -o paths expand it.
OUTPUT_JOB_ID = "$JOB_ID"
NODE_NAME_VARIABLE = "HOSTNAME"

# qstat's job list carries no pending reason (``qstat -j`` has it, see explain_argv); held and
# error states are told apart by their letters.
REASON_TEXT: dict[str, str] = {}

# Characters XML 1.0 does not allow (lone surrogates come from undecodable bytes).
_NOT_XML_RE = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# Queue-instance states that keep a queue from taking jobs (alarm, unknown, error, disabled,
# suspended, calendar-disabled/suspended, configuration ambiguous, orphaned).
_UNUSABLE_QUEUE_STATES = set("auEdsDSco")


def state_from_letters(letters: str) -> JobState:
    """Grid Engine's state letters (``qw``, ``hqw``, ``r``, ``Eqw``, ``dr`` ...) to a JobState.

    Order matters: an error flag wins over everything, deletion over running, hold over waiting.
    Letters that say none of these give UNKNOWN (the job is there, its state unreadable).
    """
    if "E" in letters:
        return JobState.ERROR
    if "d" in letters:
        return JobState.COMPLETING
    if "s" in letters or "S" in letters or "T" in letters:
        return JobState.SUSPENDED
    if "h" in letters and "q" in letters:
        return JobState.HELD
    if "q" in letters:
        return JobState.PENDING
    if "r" in letters or "t" in letters or "R" in letters:
        return JobState.RUNNING
    return JobState.UNKNOWN


# What hpchub-job runs to submit is the job side's (it imports nothing of the hub): the same functions.
# Their -clear directive (a user's ~/.sge_request does not reach a hub job): see job/scheduler_commands.py.
submit_argv = GridEngine.submit_argv
submit_environment = GridEngine.submit_environment
submit_script = GridEngine.submit_script
estimate_argv = GridEngine.estimate_argv
estimate_context_argvs = GridEngine.estimate_context_argvs

# qsub -w p checks the job against the cluster's current load and says only whether some queue could
# take it now; it names no start time, so a job that cannot start now "would wait", for how long unsaid.
_ESTIMATE_ANSWERS = (
    (re.compile(r"^verification: found (suitable queue\(s\)|possible assignment with \d+ slots)\s*$", re.MULTILINE), True),
    (re.compile(r"^verification: no suitable queues\s*$", re.MULTILINE), False),
)


def parse_estimate(output: str, now: datetime, context: Sequence[str] = (),
                   walltime: timedelta | None = None) -> StartEstimate | None:
    for pattern, starts_now in _ESTIMATE_ANSWERS:
        match = pattern.search(output)
        if match is not None:
            return StartEstimate(starts_now=starts_now, words=match.group(0).strip())
    return None


# qsub sent the job and lost qmaster's answer (a qmaster too busy to answer in time): the job may exist.
_SUBMIT_LOST_ANSWER_RE = re.compile(r"failed receiving gdi request response|"
                                    r"unable to receive message from qmaster|commlib error: got read error")


def submit_outcome_unknown(output: str) -> bool:
    return _SUBMIT_LOST_ANSWER_RE.search(output) is not None


def parse_submit(stdout: str) -> str:
    # -terse prints "JOBID" (or "JOBID.1-4:1" for array jobs)
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    match = re.fullmatch(r"([0-9]+)(\.[0-9:-]+)?", text)
    if not match:
        raise ParseError(f"qsub printed no job id: {stdout.strip()!r}")
    return match.group(1)


def status_argv(users: Sequence[str] | None = None) -> list[str]:
    # -g t lists every host of a parallel job (MASTER first), so multi-host jobs show all nodes.
    return ["qstat", "-xml", "-g", "t", "-u", ",".join(sorted(set(users))) if users else "*"]


def _text(element: ElementTree.Element, tag: str) -> str:
    found = element.find(tag)
    return (found.text or "").strip() if found is not None else ""


def _time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _name(element: ElementTree.Element) -> str:
    # SGE writes "<" as "%lt;" (its escaping bug); a literal "%lt;" in a name reads as "<" too.
    return _text(element, "JB_name").replace("%lt;", "<")


def _parse_xml(stdout: str, command: str) -> ElementTree.Element:
    try:
        # Most answers have no character XML forbids: parse as is, sparing a pass over a large one
        # (expat refuses every such character, so a refused answer is cleaned and parsed again).
        return ElementTree.fromstring(stdout)
    except (ElementTree.ParseError, UnicodeEncodeError):
        pass
    try:
        return ElementTree.fromstring(_NOT_XML_RE.sub("\ufffd", stdout))
    except ElementTree.ParseError as error:
        raise ParseError(f"{command} printed no valid XML ({error}): {stdout[:200]!r}") from None


def parse_status(stdout: str) -> JobStatuses:
    with collector_paused():
        return _parse_status(stdout)


# qstat -xml's own shape is read without building the document's tree (for 10,000 jobs, most of
# them SLAVE entries of parallel jobs under -g t, the tree alone costs five times the hub's budget):
# an entry is <job_list ...>...</job_list>, each field a child <tag>text</tag> without attributes.
_ENTRY_START = "<job_list"
_NUMBER_TAG, _STATE_TAG = "<JB_job_number>", "<state>"
_FIELD_RE = re.compile(r"<([A-Za-z_]+)>([^<]*)</\1>")


@dataclass(frozen=True)
class _Answer:
    """One ``qstat -xml`` answer, kept whole by the jobs read from it (one string, not thousands)."""

    text: str
    # Job number -> where its further entries start: one per further slot (-g t), or array task.
    more_entries: dict[str, list[int]]

    def entry_end(self, start: int) -> int:
        """An entry runs to the next one: the end tags between hold no field."""
        following = self.text.find(_ENTRY_START, start + len(_ENTRY_START))
        return following if following >= 0 else len(self.text)


def _parse_status(stdout: str) -> JobStatuses:
    _check_job_list(stdout)
    answer = _Answer(stdout, {})
    jobs: dict[str, _QstatJob] = {}
    problems: list[str] = []
    states: dict[str, JobState] = {}  # state letters -> state: a few kinds for thousands of jobs
    find, size = stdout.find, len(stdout)
    start_length, number_length, state_length = len(_ENTRY_START), len(_NUMBER_TAG), len(_STATE_TAG)
    start = find(_ENTRY_START)
    while start >= 0:
        following = find(_ENTRY_START, start + start_length)
        end = following if following >= 0 else size
        # _field_text, inline: this runs for every entry (-g t: every slot of every job), the
        # state for every job.
        number_at = find(_NUMBER_TAG, start, end) + number_length
        number_end = find("<", number_at, end) if number_at >= number_length else -1
        job_id = stdout[number_at:number_end].strip() if number_end >= 0 else ""
        if not job_id.isdigit():
            problems.append(f"job entry without a job number: {stdout[start:min(end, start + 200)]!r}")
        elif job_id in jobs:  # another host (-g t: another slot) or task of a job already seen
            more_entries = answer.more_entries.get(job_id)
            if more_entries is None:
                answer.more_entries[job_id] = [start]
            else:
                more_entries.append(start)
        else:
            state_at = find(_STATE_TAG, start, end) + state_length
            state_end = find("<", state_at, end) if state_at >= state_length else -1
            letters = stdout[state_at:state_end].strip() if state_end >= 0 else ""
            state = states.get(letters)
            if state is None:
                state = states[letters] = state_from_letters(letters)
            if state is JobState.UNKNOWN:
                problems.append(f"job {job_id}: unknown Grid Engine job state {_xml_text(letters)!r}")
            jobs[job_id] = _QstatJob(answer, start, job_id, state)
        start = following
    return job_statuses(jobs, problems, "qstat -xml")


def _check_job_list(stdout: str) -> None:
    """An answer read in full ends with the job list's end tag: a cut or failed one must not read as
    "these jobs are gone" (jobs missing from a status answer have ended)."""
    head, tail = stdout[:200].lstrip(), stdout[-200:].rstrip()
    if head.startswith(("<?xml", "<job_info")) and tail.endswith("</job_info>"):
        return
    _parse_xml(stdout, "qstat -xml")  # raises the XML parser's own words for what is no XML
    raise ParseError(f"qstat -xml printed no job list: {stdout[:200]!r}")


def _field_text(text: str, open_tag: str, start: int, end: int) -> str:
    """The raw text of the first ``open_tag`` element in ``text[start:end]`` ("" without one)."""
    at = text.find(open_tag, start, end)
    if at < 0:
        return ""
    at += len(open_tag)
    close = text.find("<", at, end)
    return text[at:close if close >= 0 else end].strip()


def _xml_text(raw: str) -> str:
    """Element text as an XML parser gives it, characters XML forbids replaced (see the module's
    docstring)."""
    text = html.unescape(raw.strip()) if "&" in raw else raw.strip()
    return text if text.isascii() and text.isprintable() else _NOT_XML_RE.sub("\ufffd", text)


class _QstatJob(LazyJobStatus):
    """A JobStatus read from the ``qstat -xml`` entries of one job. The parse reads the job number
    and state letters (every caller needs them; an unreadable state is reported there and then); the
    other fields are read from the answer's text when first asked: a poll lists every job of the
    watched users and the hub reads a few of them (bench/parsing.py)."""

    __slots__ = ("_answer", "_start")
    _answer: _Answer
    _start: int  # where its first entry starts in the answer

    def __init__(self, answer: _Answer, start: int, job_id: str, state: JobState) -> None:
        # Frozen: set once, here, past the dataclass's guard.
        set_frozen(self, "_answer", answer)
        set_frozen(self, "_start", start)
        super().__init__(job_id, state)

    @cached_property
    def _fields(self) -> dict[str, str]:
        """Tag -> text of each child of the first entry, the first of a repeated tag (as ``find`` would)."""
        found = _FIELD_RE.findall(self._answer.text, self._start, self._answer.entry_end(self._start))
        return {tag: _xml_text(text) for tag, text in reversed(found)}

    @property
    def scheduler_state(self) -> str:
        return self._fields.get("state", "")

    @property
    def user(self) -> str:
        return self._fields.get("JB_owner", "")

    @property
    def name(self) -> str:
        return self._fields.get("JB_name", "").replace("%lt;", "<")  # SGE writes "<" as "%lt;" (see _name)

    @property
    def queue(self) -> str:
        return self._fields.get("queue_name", "").partition("@")[0]

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """Every host of the job, the MASTER's first."""
        text, hosts = self._answer.text, list[str]()
        for start in (self._start, *self._answer.more_entries.get(self._job_id, ())):
            end = self._answer.entry_end(start)
            host = _xml_text(_field_text(text, "<queue_name>", start, end)).partition("@")[2]
            if host and host not in hosts:
                if _field_text(text, "<master>", start, end) == "MASTER":
                    hosts.insert(0, host)
                else:
                    hosts.append(host)
        return tuple(hosts)

    @property
    def reason(self) -> str | None:
        return "job is in an error state (Eqw); `qstat -j ID` tells why" if self._state is JobState.ERROR else None

    @property
    def submitted(self) -> datetime | None:
        return _time(self._fields.get("JB_submission_time", ""))

    @property
    def started(self) -> datetime | None:
        return _time(self._fields.get("JAT_start_time", ""))

    @property
    def priority(self) -> float | None:
        return _float(self._fields.get("JAT_prio", ""))


def explain_argv(job_id: str) -> list[str]:
    """Why a job is held or in error: ``qstat -j`` has the reason (the XML list does not)."""
    return ["qstat", "-j", job_id]


def parse_explain(stdout: str) -> str | None:
    reasons = [line.split(":", 1)[1].strip() for line in stdout.splitlines() if line.lower().startswith("error reason")]
    return "; ".join(reasons) or None


def cancel_argv(job_ids: Sequence[str]) -> list[str]:
    return ["qdel", *job_ids]


def queue_nodes_argv(queue: str) -> list[str]:
    return ["qselect", "-q", queue]  # one queue@host line per queue instance


def parse_queue_nodes(stdout: str) -> list[tuple[str, str | None]]:
    hosts = [line.strip().rpartition("@")[2] for line in stdout.splitlines() if line.strip()]
    return [(host, None) for host in dict.fromkeys(hosts)]


# The server extension asks for its node's address itself: the same functions.
node_address_argv = GridEngine.node_address_argv
parse_node_address = GridEngine.parse_node_address


def job_names_argv(user: str) -> list[str]:
    return ["qstat", "-xml", "-u", user]


def parse_job_names(stdout: str, user: str) -> dict[str, str]:
    root = _parse_xml(stdout, "qstat -xml")
    return {
        _text(job, "JB_job_number"): _name(job)
        for job in root.iter("job_list")
        if _text(job, "JB_owner") == user and _text(job, "JB_job_number")
    }


def memory_per_request_mb(memory_mb: int, cores: int, per_slot: bool) -> int:
    """Where the memory resource counts per slot (h_vmem usually does), a job on ``cores``
    slots asks for its share per slot, rounded up."""
    return -(-memory_mb // max(cores, 1)) if per_slot else memory_mb


def private_data_argv() -> list[str] | None:
    return None  # every user may list every job in Grid Engine


def parse_private_data(stdout: str) -> bool:
    return False


def queue_info_argvs() -> list[list[str]]:
    # One call: every queue instance with its slots and state, plus pending jobs (with -r,
    # the queue each one asked for).
    return [["qstat", "-f", "-r", "-xml", "-u", "*"]]


def parse_queue_info(outputs: Sequence[str]) -> list[QueueInfo]:
    root = _parse_xml(outputs[0], "qstat -f -xml")
    queues: dict[str, dict] = {}
    for instance in root.iter("Queue-List"):
        queue, _, _host = _text(instance, "name").partition("@")
        used = int(_text(instance, "slots_used") or 0) + int(_text(instance, "slots_resv") or 0)
        total = int(_text(instance, "slots_total") or 0)
        usable = not (set(_text(instance, "state")) & _UNUSABLE_QUEUE_STATES)
        entry = queues.setdefault(
            queue, {"cores_total": 0, "cores_free": 0, "nodes_total": 0, "nodes_free": 0, "usable": 0, "running": 0}
        )
        entry["cores_total"] += total
        entry["nodes_total"] += 1
        if usable:
            entry["usable"] += 1
            entry["cores_free"] += max(total - used, 0)
            entry["nodes_free"] += 1 if used == 0 else 0
        entry["running"] += sum(1 for job in instance.iter("job_list") if _text(job, "master") != "SLAVE")
    pending: Counter[str] = Counter()
    # Jobs that can start (not held, not in error), every user's; those that asked for no
    # queue may start in any, so they are ahead in every queue.
    priorities: dict[str, list[float]] = {}
    waiting = root.find("job_info")
    for job in waiting.iter("job_list") if waiting is not None else ():
        requested = [q.text.split("@")[0] for q in job.iter("hard_req_queue") if q.text]
        for queue in requested or ["*"]:
            pending[queue] += 1
        priority = _float(_text(job, "JAT_prio"))
        if priority is not None and state_from_letters(_text(job, "state")) is JobState.PENDING:
            for queue in requested or ["*"]:
                priorities.setdefault(queue, []).append(priority)
    return [
        QueueInfo(
            name=queue,
            available=entry["usable"] > 0,
            cores_total=entry["cores_total"],
            cores_free=entry["cores_free"],
            nodes_total=entry["nodes_total"],
            nodes_free=entry["nodes_free"],
            jobs_pending=pending[queue],
            jobs_running=entry["running"],
            notes=(f"{pending['*']} more jobs wait without asking for a queue",) if pending["*"] else (),
            pending_priorities=tuple(sorted(priorities.get(queue, []) + priorities.get("*", []), reverse=True)),
        )
        for queue, entry in queues.items()
    ]


# --- a queue's limits (hpchub check --live) ---------------------------------------------------

def queue_limits_argv(queue: str) -> list[str]:
    return ["qconf", "-sq", queue]


_SGE_MEMORY_FACTORS = {"": 1, "k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2, "g": 1000**3, "G": 1024**3,
                       "t": 1000**4, "T": 1024**4}
_SGE_MEMORY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kKmMgGtT]?)")
_HOST_VALUE_RE = re.compile(r"\[[^=\]]+=([^\]]*)\]")


def _host_values(text: str) -> list[str]:
    """A queue attribute's values: the default and each ``[host=value]`` override (qconf -sq)."""
    default = text.split(",", 1)[0].strip()
    return [default, *(value.strip() for value in _HOST_VALUE_RE.findall(text))]


def parse_sge_time(text: str) -> int | None:
    """Seconds in a Grid Engine time (``INFINITY``, ``SS``, ``MM:SS``, ``HH:MM:SS``)."""
    if text.upper() == "INFINITY":
        return None
    try:
        parts = [int(part or 0) for part in text.split(":")]
    except ValueError:
        raise ParseError(f"not a Grid Engine time: {text!r}") from None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def parse_sge_memory_mb(text: str) -> int | None:
    """MiB in a Grid Engine memory value (``INFINITY``, ``4G``, ``4g`` = 4*10^9 bytes, ``512M``)."""
    if text.upper() == "INFINITY":
        return None
    match = _SGE_MEMORY_RE.fullmatch(text)
    if not match:
        raise ParseError(f"not a Grid Engine memory value: {text!r}")
    return int(float(match.group(1)) * _SGE_MEMORY_FACTORS[match.group(2)] // 1024**2)


def _most(values: list[int | None]) -> int | None:
    """The most any host allows (None, no limit, if one host has none)."""
    return None if any(value is None for value in values) else max(value for value in values if value is not None)


def parse_queue_limits(stdout: str) -> SchedulerQueueLimits:
    """h_rt, slots (cores on one host) and h_vmem (per slot) of a cluster queue, the most any host has."""
    attributes: dict[str, str] = {}
    for line in stdout.replace("\\\n", "").splitlines():  # qconf continues long values with a backslash
        key, _, value = line.strip().partition(" ")
        if key:
            attributes[key] = " ".join(value.split())
    if "qname" not in attributes:
        raise ParseError(f"qconf printed no queue: {stdout.strip()[:200]!r}")
    slots = _host_values(attributes.get("slots", "INFINITY"))
    return SchedulerQueueLimits(
        walltime_seconds=_most([parse_sge_time(value) for value in _host_values(attributes.get("h_rt", "INFINITY"))]),
        cores_per_node=_most([None if value.upper() == "INFINITY" else int(value) for value in slots]),
        memory_mb_per_slot=_most([parse_sge_memory_mb(value)
                                  for value in _host_values(attributes.get("h_vmem", "INFINITY"))]),
        nodes=1,  # hpchub's Grid Engine jobs run on one host
        texts={"walltime": f"h_rt {attributes.get('h_rt', 'INFINITY')}",
               "cores": f"slots {attributes.get('slots', 'INFINITY')}",
               "memory": f"h_vmem {attributes.get('h_vmem', 'INFINITY')}"},
    )
# -- allocations: projects and advance reservations ---------------------------------------------------

def _allocation_plan(user: str, outputs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(what, argv) of every command the outputs so far call for, in order: round one lists the
    projects, the user objects and the reservations; round two shows each project, the user's
    object and the reservations' details; round three the access lists the projects name. The
    managers and operators (round one) are whose reservations a profile may pin."""
    plan: list[tuple[str, list[str]]] = [("projects", ["qconf", "-sprjl"]), ("users", ["qconf", "-suserl"]),
                                         ("reservations", ["qrstat", "-xml", "-u", "*"]),
                                         ("managers", ["qconf", "-sm"]), ("operators", ["qconf", "-so"])]
    if len(outputs) < len(plan):
        return plan
    projects, users, reservations = (_lines(text) for text in outputs[:3])
    plan += [("project", ["qconf", "-sprj", project]) for project in projects]
    if user in users:
        plan.append(("user", ["qconf", "-suser", user]))
    plan += [(what, argv) for what, argv in _reservation_details(outputs[2])]
    if len(outputs) < len(plan):
        return plan
    lists = sorted({name for what, output in zip((w for w, _ in plan), outputs, strict=False) if what == "project"
                    for key in ("acl", "xacl") for name in _qconf_list(_qconf_fields(output).get(key, ""))})
    if lists:
        plan.append(("usersets", ["qconf", "-su", ",".join(lists)]))
    return plan


def _lines(text: str) -> list[str]:
    """A qconf -s*l answer: one name a line (none: qconf prints "no ... defined" and exits 1)."""
    return [line.strip() for line in text.splitlines() if line.strip() and " " not in line.strip()]


def _qconf_fields(text: str) -> dict[str, str]:
    """``key value`` lines (qconf -sprj, -suser) -> key: value."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            fields[key] = value.strip()
    return fields


def _qconf_list(text: str) -> list[str]:
    return [] if text.strip() in ("", "NONE") else [name for name in re.split(r"[,\s]+", text.strip()) if name]


def _reservation_details(qrstat_out: str) -> list[tuple[str, list[str]]]:
    ids = [_text(summary, "id") for summary in _parse_xml(qrstat_out, "qrstat -xml").iter("ar_summary")]
    return [("reservation details", ["qrstat", "-xml", "-ar", ",".join(ids)])] if ids else []


def allocations_argvs(user: str, outputs: Sequence[str]) -> list[list[str]]:
    """Up to three rounds (see ``_allocation_plan``). ``qconf -sprjl`` exits 1 when the cluster has no
    project: read that as an empty answer."""
    return [argv for _, argv in _allocation_plan(user, outputs)[len(outputs):]]


def parse_allocations(user: str, groups: Sequence[str], outputs: Sequence[str]) -> Allocations:
    """The projects whose access lists (``acl``, none: everybody) hold the user or one of their groups
    (``@group``) and whose ``xacl`` does not; the default project of the user's object. Grid Engine has
    no QoS."""
    plan = _allocation_plan(user, outputs)
    answers = list(zip((what for what, _ in plan), outputs, strict=False))
    members: dict[str, set[str]] = {}
    for what, output in answers:
        if what == "usersets":
            for block in re.split(r"\n(?=name\s)", output.strip()):
                fields = _qconf_fields(block)
                if "name" in fields:
                    members[fields["name"]] = set(_qconf_list(fields.get("entries", "")))
    names = {user, *(f"@{group}" for group in groups)}

    def in_lists(lists: list[str]) -> bool:
        return any(names & members.get(name, set()) for name in lists)

    accounts = []
    default_account = None
    for what, output in answers:
        fields = _qconf_fields(output)
        if what == "project" and "name" in fields:
            acl, xacl = _qconf_list(fields.get("acl", "")), _qconf_list(fields.get("xacl", ""))
            if (not acl or in_lists(acl)) and not in_lists(xacl):
                accounts.append(fields["name"])
        elif what == "user" and fields.get("default_project", "NONE") != "NONE":
            default_account = fields["default_project"]
    details = next((output for what, output in answers if what == "reservation details"), "")
    reservations = _parse_reservation_details(details) if details else ()
    project_names = tuple(sorted(accounts))
    return Allocations(
        accounts=project_names,
        default_account=default_account if default_account in project_names else None,
        reservations=tuple(reservation for reservation in reservations if reservation.admits(user, groups)),
        reservation_admins=_admins(output for what, output in answers if what in ("managers", "operators")),
    )


def _admins(outputs: Iterable[str]) -> tuple[str, ...]:
    """The managers and operators (qconf -sm, -so: one a line), sorted."""
    return tuple(sorted({name for output in outputs for name in _lines(output)}))


def cluster_allocations_argvs(outputs: Sequence[str]) -> list[list[str]]:
    """Round one: the projects, the reservations, the managers and operators; round two: the
    reservations' details."""
    if not outputs:
        return [["qconf", "-sprjl"], ["qrstat", "-xml", "-u", "*"], ["qconf", "-sm"], ["qconf", "-so"]]
    return [argv for _, argv in _reservation_details(outputs[1])] if len(outputs) == 4 else []


def parse_cluster_allocations(outputs: Sequence[str]) -> Allocations:
    """Every project and advance reservation (Grid Engine has no QoS)."""
    return Allocations(accounts=tuple(sorted(_lines(outputs[0]))), default_account=None,
                       reservations=_parse_reservation_details(outputs[4]) if len(outputs) > 4 else (),
                       reservation_admins=_admins(outputs[2:4]))


# qconf's answer to a list of nothing, e.g. "no project list defined" (on stderr, exit code 1).
_NONE_DEFINED_RE = re.compile(r"^no [\w ]+ defined$")


def empty_answer(argv: Sequence[str], returncode: int | None, output: str) -> bool:
    return (returncode == 1 and list(argv[:2]) in (["qconf", "-sprjl"], ["qconf", "-suserl"], ["qconf", "-sm"],
                                                   ["qconf", "-so"])
            and bool(_NONE_DEFINED_RE.match(output.strip())))


def _parse_reservation_details(stdout: str) -> tuple[Reservation, ...]:
    """``qrstat -xml -ar IDS``: one <ar_summary> each, with the granted queue instances and the
    access list (``qrsub -u``: users, and ``@group``s)."""
    reservations = []
    for summary in _parse_xml(stdout, "qrstat -xml -ar").iter("ar_summary"):
        instances = [slot.get("queue_instance", "") for slot in summary.iter("granted_slots")]
        queues = sorted({instance.partition("@")[0] for instance in instances if instance})
        # Without an access list (qrsub without -u) only the owner may use it.
        entries = [acl.get("user", "") for acl in summary.iter("acl") if acl.get("user")] or [_text(summary, "owner")]
        state = _text(summary, "state")
        reservations.append(Reservation(
            name=_text(summary, "name") or _text(summary, "id"),
            reservation_id=_text(summary, "id"),
            start=_time(_text(summary, "start_time")),
            end=_time(_text(summary, "end_time")),
            active="r" in state,
            users=tuple(entry for entry in entries if not entry.startswith("@")),
            groups=tuple(entry[1:] for entry in entries if entry.startswith("@")),
            queue=queues[0] if len(queues) == 1 else None,
            nodes=tuple(dict.fromkeys(instance.partition("@")[2] for instance in instances if "@" in instance)),
            state=state,
            owner=_text(summary, "owner"),  # "" if it were missing: no trusted owner
        ))
    return tuple(reservations)
