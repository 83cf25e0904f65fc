"""Slurm: argv builders and parsers for sbatch, squeue, scancel, scontrol and sinfo.

Status uses squeue's delimited ``--format`` output rather than ``--json``: it is the same on
every Slurm release since 17.x and a fraction of the size, which matters when one query covers
every job of a large centre. It prints only what Slurm and the admin control (no job name: a
user can put a separator or a newline into ``sbatch --job-name``), and it is read line by line,
so a line that still does not parse costs that one job. Names are asked for one user at a time,
for the few questions that need one (see ``parse_job_names``).

Over 500 lines because a backend is one scheduler's whole contract (hpchub.schedulers.base) in one
file: what hpchub asks Slurm and how it reads the answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property

from ..job.scheduler_commands import Slurm
from .base import (
    Allocations,
    JobState,
    JobStatus,
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

name = "slurm"

# sbatch expands it in --output.
OUTPUT_JOB_ID = "%j"
NODE_NAME_VARIABLE = "SLURMD_NODENAME"

# Unit separator: cannot occur in the fields below (ids, states, user, partition and node
# names, reasons, times, numbers), none of which a user chooses.
SEP = "\x1f"
_STATUS_FIELDS = ("%i", "%T", "%u", "%P", "%B", "%N", "%r", "%S", "%V", "%Q")
_JOB_ID_RE = re.compile(r"[0-9]+([_+][0-9A-Za-z\[\]%,-]+)?")
_BRACKET_RE = re.compile(r"\[([^\]]*)\]")  # the first bracketed range of a host list

STATE_TABLE: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,  # allocated, nodes still booting
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "SPECIAL_EXIT": JobState.HELD,
    "RUNNING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,
    "COMPLETING": JobState.COMPLETING,
    "STAGE_OUT": JobState.COMPLETING,
    "COMPLETED": JobState.FINISHED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
}

# Pending reasons that mean "waits for a person", not "waits for resources".
_HELD_REASONS = {"JobHeldUser", "JobHeldAdmin"}

# Pending reasons in plain words, for the spawn page.
REASON_TEXT: dict[str, str] = {
    "Priority": "other jobs with higher priority are ahead in the queue",
    "Resources": "waiting for free resources",
    "ReqNodeNotAvail": "requested nodes are not available (down, drained or reserved)",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionTimeLimit": "the walltime exceeds the partition's limit",
    "PartitionNodeLimit": "the node count exceeds the partition's limit",
    "AssocGrpCpuLimit": "your group's CPU limit is reached",
    "AssocMaxJobsLimit": "your maximum number of running jobs is reached",
    "QOSMaxJobsPerUserLimit": "your maximum number of running jobs is reached",
    "JobHeldUser": "held by the user",
    "JobHeldAdmin": "held by an administrator",
    "BeginTime": "not allowed to start yet (begin time)",
    "Dependency": "waiting for another job to finish",
    "ReqNodeNotAvail, Reserved for maintenance": "nodes are reserved for maintenance",
}


# What hpchub-job runs to submit is the job side's (it imports nothing of the hub): the same functions.
submit_argv = Slurm.submit_argv
submit_environment = Slurm.submit_environment
submit_script = Slurm.submit_script
estimate_argv = Slurm.estimate_argv

estimate_context_argvs = Slurm.estimate_context_argvs

# sbatch --test-only's answer (on stderr) is read by the job side's Slurm.test_only_answer (hpchub-job reads it
# too, to know whether to ask about backfill); a start within STARTS_NOW_SLACK of now is "starts now".
STARTS_NOW_SLACK = Slurm.STARTS_NOW_SLACK
# How long after the question the job may still be submitted and start by backfill: the form's answer
# is cached for a while and a researcher reads it before pressing Start.
BACKFILL_MARGIN = timedelta(minutes=2)
# A waiting job without a planned start submitted longer ago than this was passed over by the backfill
# scheduler's passes (bf_interval, 30 s by default; a pass may take a while on a large cluster).
BACKFILL_PASS = timedelta(minutes=2)


def parse_estimate(output: str, now: datetime, context: Sequence[str] = (),
                   walltime: timedelta | None = None) -> StartEstimate | None:
    answer = Slurm.test_only_answer(output)
    if answer is None:
        return None
    match, start = answer
    estimate = StartEstimate(starts_now=start <= now + STARTS_NOW_SLACK, start=start, words=match.group(0).strip())
    if estimate.starts_now or walltime is None:
        return estimate
    return _backfill_start(match, start, context, now, walltime) or estimate


def _backfill_start(detail: re.Match[str], start: datetime, context: Sequence[str], now: datetime,
                    walltime: timedelta) -> StartEstimate | None:
    """"Starts now" for a job that --test-only says starts later (``detail``: its answer's line,
    ``start``: the time it names), when that answer shows that the job fits now and the backfill
    scheduler's plan leaves it room; None when that cannot be shown.

    --test-only's start is the start its will-run test finds (with the running jobs, memory,
    reservations and the job's constraints) plus a rough delay: the CPU-seconds of every waiting job
    of the partition whose priority is at least the new job's, over the partition's CPUs. Waiting jobs
    are taken in priority order, so the delay is one of the sums of their first k; one of them bringing
    the start back to now means the will-run test found the job a place now, on the nodes it names.
    Backfill then starts it at once unless a waiting job the backfill scheduler has planned on those
    nodes (``context``: the partition's waiting jobs and its CPUs, estimate_context_argvs) would start
    before this one ends. A waiting job without a planned start that the backfill passes had time to
    see holds nothing; one submitted within BACKFILL_PASS leaves the question open (Slurm's time)."""
    if len(context) != 2:
        return None
    waiting = _waiting_jobs(context[0])
    cpus = _partition_cpus(context[1])
    if not waiting or not cpus:  # no waiting job seen (private data?): the delay is not explained
        return None
    try:
        nodes = set(expand_hostlist(detail.group(3)))
    except ParseError:
        return None
    delay = 0
    delays = [0]
    for _, job_cpus, limit, _, _, _ in sorted(waiting, key=lambda job: -job[0]):
        if limit is None:  # Slurm counts a limit we cannot know (the partition's, a year)
            break
        delay += job_cpus * limit
        delays.append(delay // cpus)
    # the answer was computed between the hub's now and a little later (sudo or SSH, then sbatch)
    if not any(now - timedelta(seconds=5) <= start - timedelta(seconds=d) <= now + STARTS_NOW_SLACK for d in delays):
        return None
    ends = now + walltime + BACKFILL_MARGIN
    next_start: datetime | None = None
    for _, _, _, planned, planned_nodes, submitted in waiting:
        if planned is None:
            # not planned yet: too new for a backfill pass to have seen it (it may take our room),
            # or passed over by them (then it holds nothing)
            if submitted is None or submitted > now - BACKFILL_PASS:
                return None
            continue
        if planned_nodes is None or nodes & planned_nodes:
            if planned < ends:
                return None
            next_start = planned if next_start is None else min(next_start, planned)
    room = f"next planned start there {next_start:%H:%M}" if next_start else "no waiting job planned there"
    return StartEstimate(starts_now=True, start=now,
                         words=f"{detail.group(0).strip()} (by backfill: fits now on {detail.group(3)}; {room})")


WaitingJob = tuple[float, int, int | None, datetime | None, set[str] | None, datetime | None]


def _waiting_jobs(stdout: str) -> list[WaitingJob] | None:
    """(priority, CPUs, time limit in seconds, planned start, planned nodes, submit time) per line of
    the waiting jobs' query (``%Q|%C|%l|%S|%Y|%V``); None if a line cannot be read (then nothing is
    concluded)."""
    jobs: list[WaitingJob] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 6:
            return None
        try:
            priority, job_cpus = float(fields[0]), int(fields[1])
            limit = parse_slurm_time(fields[2])
            planned_nodes = None if fields[4] in _NO_NODE else set(expand_hostlist(fields[4]))
        except (ValueError, ParseError):
            return None
        jobs.append((priority, job_cpus, limit, _time(fields[3]), planned_nodes, _time(fields[5])))
    return jobs


def _partition_cpus(stdout: str) -> int | None:
    """The partition's CPUs from sinfo's ``%C`` (allocated/idle/other/total)."""
    try:
        return sum(int(line.strip().split("/")[3]) for line in stdout.splitlines() if line.strip()) or None
    except (ValueError, IndexError):
        return None


# sbatch sent the job and then lost slurmctld's answer (a controller busy beyond MessageTimeout): the
# job may have been created. "Unable to contact slurm controller" means it never got there.
_SUBMIT_LOST_ANSWER_RE = re.compile(r"Batch job submission failed: Socket timed out on send/recv operation")


def submit_outcome_unknown(output: str) -> bool:
    return _SUBMIT_LOST_ANSWER_RE.search(output) is not None


def parse_submit(stdout: str) -> str:
    # --parsable prints "JOBID" or "JOBID;CLUSTER"
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = text.split(";")[0]
    if not re.fullmatch(r"[0-9]+", job_id):
        raise ParseError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def status_argv(users: Sequence[str] | None = None) -> list[str]:
    argv = ["squeue", "--noheader", "--states=all", f"--format={SEP.join(_STATUS_FIELDS)}"]
    if users:
        argv.append("--users=" + ",".join(sorted(set(users))))
    return argv


def _time(text: str) -> datetime | None:
    if text in ("", "N/A", "Unknown", "None"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_NO_NODE = ("", "(null)", "n/a")
# Slurm's compressed node list (node[01-04,7],gpu1): what expand_hostlist expands without an error.
_HOST_PATTERN = r"(?:[^\[\],]+|\[[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*\])+"
_HOSTLIST_RE = re.compile(f"{_HOST_PATTERN}(?:,{_HOST_PATTERN})*")


class _SqueueJob(LazyJobStatus):
    """A JobStatus read from one squeue line (the fields of ``_STATUS_FIELDS``), kept whole. The
    parse reads the job id and state (every caller needs them) and checks what could make the line
    unreadable (field count, id, node list), so a bad line costs its job there and then; the rest
    (times, priority, node names) is read when first asked: a poll lists every job of the watched
    users and the hub reads a few of them (bench/parsing.py)."""

    __slots__ = ("_line",)
    _line: str

    def __init__(self, line: str, job_id: str, state: JobState) -> None:
        # Frozen: set once, here, past the dataclass's guard.
        set_frozen(self, "_line", line)
        super().__init__(job_id, state)

    @cached_property
    def _fields(self) -> list[str]:
        return self._line.split(SEP)

    @property
    def scheduler_state(self) -> str:
        return _state_word(self._fields[1])

    @property
    def user(self) -> str:
        return self._fields[2]

    @property
    def queue(self) -> str:
        return self._fields[3]

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        batch_host, node_list = self._fields[4:6]
        nodes = expand_hostlist(node_list) if node_list not in _NO_NODE else []
        if batch_host not in _NO_NODE and batch_host in nodes:
            nodes.remove(batch_host)
            nodes.insert(0, batch_host)
        return tuple(nodes)

    @property
    def reason(self) -> str | None:
        reason = self._fields[6]
        return None if reason in ("None", "") else reason

    @property
    def estimated_start(self) -> datetime | None:
        return _time(self._fields[7]) if self._state.is_waiting else None

    @property
    def started(self) -> datetime | None:
        return None if self._state.is_waiting else _time(self._fields[7])

    @property
    def submitted(self) -> datetime | None:
        return _time(self._fields[8])

    @property
    def priority(self) -> float | None:
        return _priority(self._fields[9])


def _state_word(text: str) -> str:
    return text.split()[0] if text.strip() else text  # e.g. "CANCELLED by 0"


def parse_status(stdout: str) -> JobStatuses:
    with collector_paused():
        return _parse_status(stdout)


def _parse_status(stdout: str) -> JobStatuses:
    jobs: dict[str, JobStatus] = {}
    problems: list[str] = []
    separators = len(_STATUS_FIELDS) - 1
    # The lines are not cut into fields here (ten strings per job, most never read), only searched.
    for line in stdout.splitlines():
        id_end = line.find(SEP)
        job_id = line[:id_end] if id_end >= 0 else line
        try:
            if line.count(SEP) != separators:
                if not line.strip():
                    continue
                raise ParseError(f"squeue line has {line.count(SEP) + 1} fields, expected {separators + 1}")
            if not ((job_id.isdigit() and job_id.isascii()) or _JOB_ID_RE.fullmatch(job_id)):
                raise ParseError(f"squeue line without a job id ({job_id!r})")
            raw_state = line[id_end + 1:line.find(SEP, id_end + 1)]
            state = STATE_TABLE.get(raw_state)
            if state is None:
                raw_state = _state_word(raw_state)
                state = STATE_TABLE.get(raw_state, JobState.UNKNOWN)
            if state is JobState.PENDING and line.rsplit(SEP, 4)[1] in _HELD_REASONS:
                state = JobState.HELD
            if "[" in line:  # a compressed node list, or an array id or reason with brackets
                node_list = line.split(SEP)[5]
                if node_list not in _NO_NODE and not _HOSTLIST_RE.fullmatch(node_list):
                    raise ParseError(f"squeue line with an unreadable node list ({node_list[:100]!r})")
        except (ValueError, IndexError) as error:
            problems.append(f"{error}: {line[:200]!r}")
            # The job is there even if the rest of its line is unreadable: never report it gone.
            if _JOB_ID_RE.fullmatch(job_id) and job_id not in jobs:
                jobs[job_id] = JobStatus(job_id=job_id, state=JobState.UNKNOWN, scheduler_state="")
            continue
        if state is JobState.UNKNOWN:
            problems.append(f"job {job_id}: unknown Slurm job state {raw_state!r}")
        jobs[job_id] = _SqueueJob(line, job_id, state)
    return job_statuses(jobs, problems, "squeue")


def _priority(text: str) -> float | None:
    return float(text) if text.strip().isdigit() else None


def job_names_argv(user: str) -> list[str]:
    # Only this user's jobs, the name last. `--json` would escape every name, but Slurm 22.05
    # ignores --users with --json and lists every job of the centre (~3.6 KB each) at every stop.
    return ["squeue", "--noheader", "--states=all", f"--users={user}", f"--format=%i{SEP}%u{SEP}%j"]


def parse_job_names(stdout: str, user: str) -> dict[str, str]:
    """Job id -> name for ``user``'s jobs. A name with a line break spills onto a line that may
    look like another entry; all of it is that same user's own text, and the names are only used
    to act on that user's jobs as that user (cancel checks, engine jobs), so at worst a user
    misleads hpchub about their own jobs. The user column keeps other users' lines out."""
    names: dict[str, str] = {}
    for line in stdout.splitlines():
        job_id, _, rest = line.partition(SEP)
        owner, _, name = rest.partition(SEP)
        if re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id) and owner == user:
            names[job_id] = name
    return names


def explain_argv(job_id: str) -> list[str]:
    # squeue, not `scontrol show job`: scontrol prints user-chosen text (job name, comment,
    # paths) on both sides of Reason=, where a renamed job could forge it.
    return ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", f"--format=%T{SEP}%r"]


def parse_explain(stdout: str) -> str | None:
    for line in stdout.splitlines():
        state, _, reason = line.partition(SEP)
        if reason and reason != "None":
            return f"{REASON_TEXT.get(reason, reason)} ({state.strip()}, {reason})"
    return None


def memory_per_request_mb(memory_mb: int, cores: int, per_slot: bool) -> int:
    """``--mem`` is per node, whatever the core count."""
    return memory_mb


def private_data_argv() -> list[str] | None:
    return ["scontrol", "show", "config"]


def parse_private_data(stdout: str) -> bool:
    """``PrivateData = jobs,usage``: users (and a hub not running as root or SlurmUser) see
    only their own jobs, so queue positions and other users' jobs are out of sight."""
    match = re.search(r"^PrivateData\s*=\s*(\S*)", stdout, re.MULTILINE)
    if match is None:
        return False
    return not {"jobs", "all"}.isdisjoint(match.group(1).lower().split(","))


def queue_nodes_argv(queue: str) -> list[str]:
    return ["sinfo", "--noheader", "--Node", f"--partition={queue}", f"--format=%N{SEP}%o"]


def parse_queue_nodes(stdout: str) -> list[tuple[str, str | None]]:
    nodes = []
    for line in stdout.splitlines():
        name, _, address = line.partition(SEP)
        if name.strip():
            nodes.append((name.strip(), address.strip() or None))
    return list(dict.fromkeys(nodes))  # sinfo --Node lists a node once per partition


# The server extension asks for its node's address itself: the same functions.
node_address_argv = Slurm.node_address_argv
parse_node_address = Slurm.parse_node_address


def cancel_argv(job_ids: Sequence[str]) -> list[str]:
    return ["scancel", *job_ids]


_SINFO_FIELDS = ("%R", "%a", "%l", "%C", "%F")


def queue_info_argvs() -> list[list[str]]:
    return [
        ["sinfo", "--noheader", f"--format={SEP.join(_SINFO_FIELDS)}"],
        # Every user's jobs: the queue position counts them all.
        ["squeue", "--noheader", "--states=PENDING,RUNNING", f"--format=%P{SEP}%T{SEP}%Q"],
    ]


def parse_queue_info(outputs: Sequence[str]) -> list[QueueInfo]:
    sinfo_out, squeue_out = outputs
    counts: Counter[tuple[str, str]] = Counter()
    pending_priorities: dict[str, list[float]] = {}
    for line in squeue_out.splitlines():
        fields = line.split(SEP)
        if len(fields) != 3:
            continue  # blank, or not ours to read: one job less in the counts
        partitions, state, priority = fields
        for partition in partitions.split(","):  # a job may wait in several partitions
            counts[(partition, state)] += 1
            value = _priority(priority)
            if state == "PENDING" and value is not None:
                pending_priorities.setdefault(partition, []).append(value)
    merged: dict[str, dict] = {}
    for line in sinfo_out.splitlines():
        if not line.strip():
            continue
        fields = line.split(SEP)
        if len(fields) != len(_SINFO_FIELDS):
            raise ParseError(f"sinfo line has {len(fields)} fields, expected {len(_SINFO_FIELDS)}: {line!r}")
        partition, avail, timelimit, cpus, nodes = fields
        partition = partition.rstrip("*")
        cpu_alloc, cpu_idle, cpu_other, cpu_total = (int(x) for x in cpus.split("/"))
        node_alloc, node_idle, node_other, node_total = (int(x) for x in nodes.split("/"))
        entry = merged.setdefault(
            partition,
            {"available": avail == "up", "timelimit": timelimit, "cores_total": 0, "cores_free": 0, "nodes_total": 0,
             "nodes_free": 0},
        )
        entry["cores_total"] += cpu_total
        entry["cores_free"] += cpu_idle
        entry["nodes_total"] += node_total
        entry["nodes_free"] += node_idle
    return [
        QueueInfo(
            name=partition,
            available=entry["available"],
            cores_total=entry["cores_total"],
            cores_free=entry["cores_free"],
            nodes_total=entry["nodes_total"],
            nodes_free=entry["nodes_free"],
            jobs_pending=counts[(partition, "PENDING")],
            jobs_running=counts[(partition, "RUNNING")],
            max_walltime=None if entry["timelimit"] in ("infinite", "n/a") else entry["timelimit"],
            pending_priorities=tuple(sorted(pending_priorities.get(partition, ()), reverse=True)),
        )
        for partition, entry in merged.items()
    ]


def expand_hostlist(hostlist: str) -> list[str]:
    """``node[1-3,7],gpu01`` -> ``[node1, node2, node3, node7, gpu01]`` (Slurm's compressed form)."""
    if "[" not in hostlist:  # the common case: plain names
        return _split_top_level(hostlist)
    hosts: list[str] = []
    for part in _split_top_level(hostlist):
        hosts.extend(_expand_one(part))
    return hosts


def _split_top_level(text: str) -> list[str]:
    # Split at the commas outside brackets: a comma splits where the brackets before it balance.
    pieces = text.split(",")
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for piece in pieces[:-1]:
        current.append(piece)
        depth += piece.count("[") - piece.count("]")
        if depth == 0:
            parts.append(",".join(current))
            current = []
    current.append(pieces[-1])
    rest = ",".join(current)
    if rest:
        parts.append(rest)
    return parts


def _expand_one(pattern: str) -> list[str]:
    match = _BRACKET_RE.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    names: list[str] = []
    for item in match.group(1).split(","):
        if "-" in item:
            low, high = item.split("-", 1)
            width = len(low) if low.startswith("0") else 0
            names += [f"{n:0{width}d}" for n in range(int(low), int(high) + 1)]
        else:
            names.append(item)
    if "[" not in tail and "[" not in match.group(1):  # one range (node[1-3]): nothing left to expand
        return [head + n + tail for n in names]
    return [expanded for n in names for expanded in _expand_one(head + n + tail)]


# --- a partition's limits (hpchub check --live) ------------------------------------------------

def queue_limits_argv(queue: str) -> list[str]:
    return ["scontrol", "show", "partition", queue, "--oneliner"]


_UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "N/A", "")


def parse_slurm_time(text: str) -> int | None:
    """Seconds in a Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``); None for UNLIMITED."""
    if text.upper() in _UNLIMITED:
        return None
    days, dash, clock = text.partition("-")
    if not dash:
        days, clock = "0", text
    try:
        parts = [int(part) for part in clock.split(":")]
        whole_days = int(days)
    except ValueError:
        raise ParseError(f"not a Slurm time: {text!r}") from None
    if dash:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return ((whole_days * 24 + hours) * 60 + minutes) * 60 + seconds


def _limit_number(text: str) -> int | None:
    if text.upper() in _UNLIMITED:
        return None
    try:
        return int(text)
    except ValueError:
        raise ParseError(f"not a Slurm limit: {text!r}") from None


def parse_queue_limits(stdout: str) -> SchedulerQueueLimits:
    """MaxTime, MaxCPUsPerNode, MaxMemPerNode (MB), MaxNodes and TotalNodes of the first partition."""
    line = next((line for line in stdout.splitlines() if line.startswith("PartitionName=")), None)
    if line is None:
        raise ParseError(f"scontrol printed no partition: {stdout.strip()[:200]!r}")
    fields = dict(word.partition("=")[::2] for word in line.split() if "=" in word)
    texts = {key: f"{key}={fields[key]}" for key in ("MaxTime", "MaxCPUsPerNode", "MaxMemPerNode", "MaxNodes",
                                                     "TotalNodes") if key in fields}
    return SchedulerQueueLimits(
        walltime_seconds=parse_slurm_time(fields.get("MaxTime", "UNLIMITED")),
        cores_per_node=_limit_number(fields.get("MaxCPUsPerNode", "UNLIMITED")),
        memory_mb_per_node=_limit_number(fields.get("MaxMemPerNode", "UNLIMITED")),
        nodes=_limit_number(fields.get("MaxNodes", "UNLIMITED")),
        nodes_total=_limit_number(fields.get("TotalNodes", "UNLIMITED")),
        texts={"walltime": texts.get("MaxTime", ""), "cores": texts.get("MaxCPUsPerNode", ""),
               "memory": texts.get("MaxMemPerNode", ""), "nodes": texts.get("MaxNodes", ""),
               "nodes_total": texts.get("TotalNodes", "")},
    )
# -- allocations: accounts, QoS and reservations (sacctmgr needs slurmdbd) --------------------------

_ASSOC_FIELDS = "cluster,user,defaultaccount,account,partition,qos,defaultqos"
_RESERVATIONS_ARGV = ["scontrol", "show", "reservation", "--oneliner"]


def allocations_argvs(user: str, outputs: Sequence[str]) -> list[list[str]]:
    """One round: the user's associations (every cluster of the slurmdbd), this cluster's name (the
    associations of the others do not count here) and the reservations."""
    if outputs:
        return []
    return [
        ["sacctmgr", "--noheader", "--parsable2", "show", "user", user, "withassoc", f"format={_ASSOC_FIELDS}"],
        ["scontrol", "show", "config"],
        list(_RESERVATIONS_ARGV),
    ]


def parse_allocations(user: str, groups: Sequence[str], outputs: Sequence[str]) -> Allocations:
    """An association with a partition counts as its account (hpchub does not tie accounts to
    partitions). A user without associations gets none (sacctmgr prints nothing): with
    ``AccountingStorageEnforce=associations`` such a user can submit nothing."""
    assoc_out, config_out, reservations_out = outputs
    match = re.search(r"^ClusterName\s*=\s*(\S+)", config_out, re.MULTILINE)
    cluster = match.group(1) if match else None
    qos_by_account: dict[str, set[str]] = {}
    default_qos: dict[str, str] = {}
    default_account: str | None = None
    for line in assoc_out.splitlines():
        fields = line.split("|")
        if len(fields) != len(_ASSOC_FIELDS.split(",")):
            if line.strip():
                raise ParseError(f"sacctmgr line has {len(fields)} fields: {line[:200]!r}")
            continue
        assoc_cluster, assoc_user, user_default, account, _partition, qos, assoc_default_qos = fields
        if assoc_user != user or (cluster is not None and assoc_cluster != cluster) or not account:
            continue
        default_account = user_default or default_account
        qos_by_account.setdefault(account, set()).update(q for q in qos.split(",") if q)
        if assoc_default_qos:
            default_qos[account] = assoc_default_qos
    accounts = tuple(sorted(qos_by_account))
    if default_account not in qos_by_account:
        default_account = None  # a default account of another cluster only
    return Allocations(
        accounts=accounts,
        default_account=default_account,
        qos=tuple(sorted(set().union(*qos_by_account.values()))),
        qos_by_account={account: tuple(sorted(qos)) for account, qos in sorted(qos_by_account.items())},
        default_qos=default_qos.get(default_account) if default_account else None,
        reservations=tuple(reservation for reservation in _parse_reservations(reservations_out)
                           if reservation.admits(user, groups, accounts)),
    )


_CLUSTER_ASSOC_FIELDS = "cluster,account,user,qos"


def cluster_allocations_argvs(outputs: Sequence[str]) -> list[list[str]]:
    """One round: every association (of every cluster of the slurmdbd), every QoS, this cluster's
    name and the reservations."""
    if outputs:
        return []
    return [
        ["sacctmgr", "--noheader", "--parsable2", "show", "association", f"format={_CLUSTER_ASSOC_FIELDS}"],
        ["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=name"],
        ["scontrol", "show", "config"],
        list(_RESERVATIONS_ARGV),
    ]


def parse_cluster_allocations(outputs: Sequence[str]) -> Allocations:
    """The accounts with an association on this cluster, the QoS each allows (any of its
    associations, the account's own or a user's), every QoS and every reservation."""
    assoc_out, qos_out, config_out, reservations_out = outputs
    match = re.search(r"^ClusterName\s*=\s*(\S+)", config_out, re.MULTILINE)
    cluster = match.group(1) if match else None
    qos_by_account: dict[str, set[str]] = {}
    for line in assoc_out.splitlines():
        fields = line.split("|")
        if len(fields) != len(_CLUSTER_ASSOC_FIELDS.split(",")):
            if line.strip():
                raise ParseError(f"sacctmgr line has {len(fields)} fields: {line[:200]!r}")
            continue
        assoc_cluster, account, _user, qos = fields
        if account and (cluster is None or assoc_cluster == cluster):
            qos_by_account.setdefault(account, set()).update(q for q in qos.split(",") if q)
    return Allocations(
        accounts=tuple(sorted(qos_by_account)),
        default_account=None,
        qos=tuple(sorted({line.strip() for line in qos_out.splitlines() if line.strip()})),
        qos_by_account={account: tuple(sorted(qos)) for account, qos in sorted(qos_by_account.items())},
        reservations=_parse_reservations(reservations_out),
    )


def empty_answer(argv: Sequence[str], returncode: int | None, output: str) -> bool:
    return False  # sacctmgr and scontrol print nothing (exit 0) when nothing is defined


# A key of `scontrol show reservation --oneliner`: a word with "=" after a space (values have no
# spaces, except the free text of Comment=, which Slurm 23.02 prints last).
_RESERVATION_KEY_RE = re.compile(r"(?:^| )([A-Za-z]+)=")


def _parse_reservations(stdout: str) -> tuple[Reservation, ...]:
    reservations = []
    for line in stdout.splitlines():
        if not line.startswith("ReservationName="):
            continue  # blank, or "No reservations in the system"
        keys = list(_RESERVATION_KEY_RE.finditer(line))
        comment = next((n for n, key in enumerate(keys) if key.group(1) == "Comment"), None)
        if comment is not None:
            del keys[comment + 1:]  # the comment is free text to the line's end
        ends = [key.start() for key in keys[1:]] + [len(line)]
        fields = {key.group(1): line[key.end():end].strip() for key, end in zip(keys, ends, strict=True)}
        name = fields["ReservationName"]
        reservations.append(Reservation(
            name=name,
            reservation_id=name,
            start=_time(fields.get("StartTime", "")),
            end=_time(fields.get("EndTime", "")),
            active=fields.get("State") == "ACTIVE",
            users=_names(fields.get("Users", "")),
            groups=_names(fields.get("Groups", "")),
            accounts=_names(fields.get("Accounts", "")),
            queue=None if fields.get("PartitionName", "(null)") in ("(null)", "") else fields["PartitionName"],
            nodes=tuple(expand_hostlist(fields["Nodes"])) if fields.get("Nodes", "(null)") not in ("(null)", "") else (),
            state=fields.get("State", ""),
        ))
    return tuple(reservations)


def _names(text: str) -> tuple[str, ...]:
    return () if text in ("", "(null)") else tuple(name for name in text.split(",") if name)
