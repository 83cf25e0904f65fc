"""Grid Engine (Son of Grid Engine 8.1, also OGS/UGE): argv builders and ``qstat -xml`` parsers.

Job names are user text. SGE 8.1.9 refuses names with control characters, newlines, tabs,
spaces, ``/ : @ *`` and non-ASCII, and escapes the rest in its XML, except that it writes
``<`` as ``%lt;``. Characters XML 1.0 forbids are removed before parsing anyway (other Grid
Engines may let them through), and a job entry that cannot be read costs that job only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from .base import JobState, JobStatus, JobStatuses, ParseError, QueueInfo, collector_paused, job_statuses

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


def submit_argv() -> list[str]:
    return ["qsub", "-terse"]


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


def _parse_status(stdout: str) -> JobStatuses:
    root = _parse_xml(stdout, "qstat -xml")
    first_entries: dict[str, tuple[dict[str, str], JobState]] = {}
    hosts: dict[str, list[str]] = {}
    problems: list[str] = []
    for job in root.iter("job_list"):
        fields = _child_texts(job)
        job_id = fields.get("JB_job_number", "")
        if not job_id.isdigit():
            problems.append(f"job entry without a job number: {ElementTree.tostring(job)[:200]!r}")
            continue
        queue_instance = fields.get("queue_name", "")
        host = queue_instance.partition("@")[2]
        if host:
            job_hosts = hosts.setdefault(job_id, [])
            if host not in job_hosts:
                if fields.get("master") == "MASTER":
                    job_hosts.insert(0, host)
                else:
                    job_hosts.append(host)
        if job_id in first_entries:
            continue  # another host (or task) of a job already seen
        letters = fields.get("state", "")
        state = state_from_letters(letters)
        if state is JobState.UNKNOWN:
            problems.append(f"job {job_id}: unknown Grid Engine job state {letters!r}")
        first_entries[job_id] = (fields, state)
    jobs = {job_id: _status(job_id, fields, state, tuple(hosts.get(job_id, ())))
            for job_id, (fields, state) in first_entries.items()}
    return job_statuses(jobs, problems, "qstat -xml")


def _child_texts(element: ElementTree.Element) -> dict[str, str]:
    """Tag -> stripped text of each child, the first of a repeated tag (as ``find`` would), in one
    pass rather than a search per field."""
    return {child.tag: (child.text or "").strip() for child in reversed(element)}


def _status(job_id: str, fields: dict[str, str], state: JobState, nodes: tuple[str, ...]) -> JobStatus:
    return JobStatus(
        job_id=job_id,
        state=state,
        scheduler_state=fields.get("state", ""),
        user=fields.get("JB_owner", ""),
        # SGE writes "<" as "%lt;" (see _name).
        name=fields.get("JB_name", "").replace("%lt;", "<"),
        queue=fields.get("queue_name", "").partition("@")[0],
        nodes=nodes,
        reason="job is in an error state (Eqw); `qstat -j ID` tells why" if state is JobState.ERROR else None,
        submitted=_time(fields.get("JB_submission_time", "")),
        started=_time(fields.get("JAT_start_time", "")),
        priority=_float(fields.get("JAT_prio", "")),
    )


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


def node_address_argv(node: str) -> list[str] | None:
    """None: Grid Engine itself resolves host names (DNS or its host_aliases), so do we."""
    return None


def parse_node_address(stdout: str) -> str | None:
    return None


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
