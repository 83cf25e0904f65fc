"""The checklist every scheduler backend passes: every member of the documented contract
(base.SchedulerBackend), so callers never probe with getattr; argv builders that give lists of
text; parsers that read what the real scheduler printed (captured in tests/data, listed per backend
in CAPTURED) into the contract's types; a job template of its own; and the renderer takes
scheduler details from the backend.

A new backend is registered in hpchub.schedulers.BACKENDS and gets its captured outputs in
CAPTURED; every test here then runs for it too (CONTRIBUTING.md: "Adding a scheduler backend")."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from helpers.render_cases import SITE_CONFIGS, USER
from helpers.support import REPO

from hpchub.core.config import Cluster, load_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request
from hpchub.job.scheduler_commands import SCHEDULERS, for_scheduler
from hpchub.schedulers import (
    BACKENDS,
    Allocations,
    JobState,
    JobStatus,
    JobStatuses,
    ParseError,
    QueueInfo,
    SchedulerBackend,
    SchedulerQueueLimits,
    StartEstimate,
)

DATA = REPO / "tests" / "data"
TEMPLATES = REPO / "templates"


def data(name: str) -> str:
    return (DATA / name).read_text()


@dataclass(frozen=True)
class Captured:
    """What one backend's commands printed on a real cluster (tests/data), and the arguments they were
    run with: the checklist feeds each parser the output of its own command."""

    submit: str  # stdout of submit_argv()
    estimate: str  # stdout and stderr of estimate_argv() for a job that starts at once
    status: str  # status_argv()
    queue_info: tuple[str, ...]  # one output per command of queue_info_argvs(), in order
    queue: str  # a queue of the captured cluster, for queue_nodes_argv / queue_limits_argv
    queue_nodes: str
    queue_limits: str
    node: str  # a node of the captured cluster, for node_address_argv
    node_address: str  # "" when node_address_argv is None (the hub asks DNS)
    explain: str  # explain_argv(job id) for a held, pending or failed job
    job_names_user: str
    job_names: str
    private_data: str  # "" when private_data_argv is None
    user: str  # whose allocations `answers` holds
    # argv -> stdout for every command of the allocation rounds (the user's and the cluster's).
    answers: dict[tuple[str, ...], str] = field(default_factory=dict)


def _sge_answers() -> dict[tuple[str, ...], str]:
    files = {
        ("qconf", "-sprjl"): "sge-qconf-sprjl.txt",
        ("qconf", "-suserl"): "sge-qconf-suserl.txt",
        ("qrstat", "-xml", "-u", "*"): "sge-qrstat.xml",
        ("qrstat", "-xml", "-ar", "2"): "sge-qrstat-ar.xml",
        ("qconf", "-sm"): "sge-qconf-sm.txt",
        ("qconf", "-so"): "sge-qconf-so.txt",
        ("qconf", "-su", "chem_users,course_users,phys_users"): "sge-qconf-su.txt",
        **{("qconf", "-sprj", project): f"sge-qconf-sprj-{project}.txt" for project in ("chem", "course", "phys")},
        ("qconf", "-suser", "alice"): "sge-qconf-suser-alice.txt",
    }
    return {argv: data(name) for argv, name in files.items()}


CAPTURED: dict[str, Captured] = {
    "slurm": Captured(
        submit="4242\n",
        estimate=data("slurm-test-only-now.txt"),
        status=data("squeue-all-states.txt"),
        queue_info=(data("sinfo.txt"), data("squeue-partitions.txt")),
        queue="multi",
        queue_nodes=data("sinfo-nodes-multi.txt"),
        queue_limits=data("scontrol-show-partition.txt"),
        node="node1",
        node_address=data("scontrol-show-node-node1.txt"),
        explain="PENDING\x1fReqNodeNotAvail\n",
        job_names_user="bob",
        job_names="12\x1fbob\x1fcapture\n14\x1fbob\x1fx\n",
        private_data=data("scontrol-show-config.txt"),
        user="alice",
        answers={
            ("sacctmgr", "--noheader", "--parsable2", "show", "user", "alice", "withassoc",
             "format=cluster,user,defaultaccount,account,partition,qos,defaultqos"): data("sacctmgr-withassoc-alice.txt"),
            ("scontrol", "show", "config"): data("scontrol-show-config.txt"),
            ("scontrol", "show", "reservation", "--oneliner"): data("scontrol-show-reservation.txt"),
            ("sacctmgr", "--noheader", "--parsable2", "show", "association", "format=cluster,account,user,qos"):
                data("sacctmgr-association.txt"),
            ("sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=name"): data("sacctmgr-qos.txt"),
        },
    ),
    "sge": Captured(
        submit="4242\n",
        estimate=data("sge-w-p-found.txt"),
        status=data("qstat-jobs.xml"),
        queue_info=(data("qstat-f-r.xml"),),
        queue="short.q",
        queue_nodes=data("sge-qselect-short.q.txt"),
        queue_limits=data("qconf-sq-short.q.txt"),
        node="vm",
        node_address="",
        explain=("job_number:                 44\nerror reason          1:      11/25/2026 21:31:07 [1001:14636]: "
                 "error: can't open output file \"/proc/nope\": No such file or directory\n"),
        job_names_user="bob",
        job_names=data("qstat-names-bob.xml"),
        private_data="",
        user="alice",
        answers=_sge_answers(),
    ),
}


def _contract() -> dict[str, str]:
    """Member name -> "callable" / "str" / "dict", read from the Protocol itself."""
    members = {name: "callable" for name, value in vars(SchedulerBackend).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    for name, annotation in SchedulerBackend.__annotations__.items():
        members[name] = "dict" if str(annotation).startswith("dict") else str(annotation)
    return members


def test_the_contract_names_every_member_the_spawner_needs():
    contract = _contract()
    assert {"REASON_TEXT", "OUTPUT_JOB_ID", "node_address_argv", "parse_node_address", "explain_argv",
            "parse_explain", "job_names_argv", "parse_job_names", "memory_per_request_mb", "private_data_argv",
            "parse_private_data", "status_argv", "parse_status", "queue_info_argvs",
            "parse_queue_info", "queue_nodes_argv", "parse_queue_nodes", "NODE_NAME_VARIABLE", "queue_limits_argv",
            "parse_queue_limits", "allocations_argvs", "parse_allocations", "cluster_allocations_argvs",
            "parse_cluster_allocations", "empty_answer", "submit_environment", "submit_script", "estimate_argv",
            "estimate_context_argvs", "parse_estimate", "submit_outcome_unknown"} <= set(contract)
    assert len(contract) == 35  # 31 functions, name, OUTPUT_JOB_ID, REASON_TEXT, NODE_NAME_VARIABLE


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_backend_has_every_member_with_the_right_kind(scheduler):
    backend = BACKENDS[scheduler]
    for member, kind in _contract().items():
        assert hasattr(backend, member), f"{scheduler} backend lacks {member}"
        value = getattr(backend, member)
        if kind == "callable":
            assert callable(value), member
            expected = inspect.signature(getattr(SchedulerBackend, member)).parameters
            assert list(inspect.signature(value).parameters) == [p for p in expected if p != "self"], member
        elif kind == "dict":
            assert isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        else:
            assert isinstance(value, str) and value, member
    assert backend.name == scheduler


@pytest.mark.parametrize("config, profile, token",
                         [("local-slurm.yaml", "small", "%j"), ("local-sge.yaml", "small", "$JOB_ID")])
def test_output_path_and_memory_come_from_the_backend(config, profile, token):
    site = load_site_config(SITE_CONFIGS / config)
    request = resolve_request(site, site.profile(profile), {"cores": "4", "memory": "4G"})
    job = server_job(site, request, USER).context["job"]
    assert job["output"].endswith(f".{token}.log")
    backend = BACKENDS[request.cluster.scheduler]
    assert job["sge_memory_mb"] == backend.memory_per_request_mb(4096, 4, request.cluster.sge.memory_per_slot)


# ------------------------------------------------------------------ the checklist, for every backend

def test_every_registered_backend_is_on_the_checklist():
    assert set(CAPTURED) == set(BACKENDS), "a backend in hpchub.schedulers.BACKENDS needs its captured outputs in CAPTURED"


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_the_site_config_and_the_templates_know_the_backend(scheduler):
    assert scheduler in typing.get_args(Cluster.model_fields["scheduler"].annotation), \
        "add the scheduler to Cluster.scheduler (hpchub/config.py)"
    for template in (f"{scheduler}.sh.j2", f"{scheduler}-engines.sh.j2"):
        assert (TEMPLATES / template).is_file(), f"templates/{template} (the server job and the engine job)"


def _argv_ok(argv: object, what: str) -> None:
    assert isinstance(argv, list) and argv, f"{what}: a non-empty list of text, got {argv!r}"
    assert all(isinstance(arg, str) for arg in argv), f"{what}: every argument is text, got {argv!r}"
    assert argv[0] and " " not in argv[0] and "/" not in argv[0], \
        f"{what}: starts with a command name (the hub finds it on the PATH or in commands_dir), got {argv[0]!r}"


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_argv_builders_give_lists_of_text(scheduler):
    backend, captured = BACKENDS[scheduler], CAPTURED[scheduler]
    _argv_ok(backend.submit_argv(), "submit_argv()")
    _argv_ok(backend.estimate_argv(), "estimate_argv()")
    _argv_ok(backend.status_argv(), "status_argv()")
    _argv_ok(backend.status_argv(["alice", "bob"]), "status_argv(users)")
    _argv_ok(backend.cancel_argv(["12", "13"]), "cancel_argv(job_ids)")
    assert backend.cancel_argv(["12", "13"])[-2:] == ["12", "13"], "cancel_argv names the jobs last"
    argvs = backend.queue_info_argvs()
    assert len(argvs) == len(captured.queue_info), "one captured output per queue_info_argvs() command"
    for argv in argvs:
        _argv_ok(argv, "queue_info_argvs()")
    _argv_ok(backend.queue_nodes_argv(captured.queue), "queue_nodes_argv(queue)")
    _argv_ok(backend.queue_limits_argv(captured.queue), "queue_limits_argv(queue)")
    _argv_ok(backend.explain_argv("12"), "explain_argv(job_id)")
    _argv_ok(backend.job_names_argv("bob"), "job_names_argv(user)")
    # Optional commands are None, never missing.
    for name, argv in (("node_address_argv", backend.node_address_argv(captured.node)),
                       ("private_data_argv", backend.private_data_argv())):
        if argv is not None:
            _argv_ok(argv, name)
    for rounds in (lambda outputs: backend.allocations_argvs("alice", outputs), backend.cluster_allocations_argvs):
        for argv in rounds([]):
            _argv_ok(argv, "allocation rounds")


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_submission_reads_the_captured_answer_and_keeps_the_script(scheduler):
    backend = BACKENDS[scheduler]
    assert backend.parse_submit(CAPTURED[scheduler].submit) == "4242"
    with pytest.raises(ParseError):
        backend.parse_submit("error: Batch job submission failed\n")
    environment = backend.submit_environment({"PATH": "/usr/bin", "HOME": "/home/alice", "LANG": "C.UTF-8"})
    assert isinstance(environment, dict) and environment.get("PATH") == "/usr/bin"
    script = "#!/bin/bash\necho hpchub-contract\n"
    submitted = backend.submit_script(script)
    assert submitted.startswith("#!/bin/bash\n") and "echo hpchub-contract\n" in submitted


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_a_start_estimate_reads_the_captured_answer_and_unknown_output_is_none(scheduler):
    backend = BACKENDS[scheduler]
    found = backend.parse_estimate(CAPTURED[scheduler].estimate, datetime(2026, 12, 7, 19, 7, 2))
    assert isinstance(found, StartEstimate) and found.starts_now and found.words
    assert backend.parse_estimate("", datetime.now()) is None
    assert backend.parse_estimate("error: something else\n", datetime.now()) is None


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_status_parses_the_captured_answer_job_by_job(scheduler):
    backend = BACKENDS[scheduler]
    jobs = backend.parse_status(CAPTURED[scheduler].status)
    assert isinstance(jobs, JobStatuses) and jobs and not jobs.problems
    for job_id, status in jobs.items():
        assert isinstance(status, JobStatus) and status.job_id == job_id and isinstance(status.state, JobState)
        assert isinstance(status.scheduler_state, str) and isinstance(status.nodes, tuple)
    try:  # unreadable as a whole: ParseError; else each bad entry costs only its job
        assert isinstance(backend.parse_status("garbage \x1f <\n"), JobStatuses)
    except ParseError:
        pass


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_queries_parse_the_captured_answers_into_the_contracts_types(scheduler):
    backend, captured = BACKENDS[scheduler], CAPTURED[scheduler]
    queues = backend.parse_queue_info(list(captured.queue_info))
    assert queues and all(isinstance(queue, QueueInfo) for queue in queues)
    nodes = backend.parse_queue_nodes(captured.queue_nodes)
    assert nodes and all(isinstance(name, str) and (address is None or isinstance(address, str))
                         for name, address in nodes)
    address = backend.parse_node_address(captured.node_address)
    assert address is None or isinstance(address, str)
    if backend.node_address_argv(captured.node) is not None:
        assert address, "a node_address_argv's answer names the address"
    reason = backend.parse_explain(captured.explain)
    assert isinstance(reason, str) and reason and backend.parse_explain("") is None
    names = backend.parse_job_names(captured.job_names, captured.job_names_user)
    assert names and all(isinstance(k, str) and isinstance(v, str) for k, v in names.items())
    if backend.private_data_argv() is not None:
        assert backend.parse_private_data(captured.private_data) in (True, False)
    assert isinstance(backend.parse_queue_limits(captured.queue_limits), SchedulerQueueLimits)
    assert isinstance(backend.memory_per_request_mb(4096, 2, True), int)
    assert all(isinstance(text, str) and text for text in backend.REASON_TEXT.values())


def _rounds(argvs: Callable[[Sequence[str]], list[list[str]]], answers: dict[tuple[str, ...], str]) -> list[str]:
    outputs: list[str] = []
    while next_argvs := argvs(outputs):
        for argv in next_argvs:
            assert tuple(argv) in answers, f"no captured output for {argv} (add it to CAPTURED)"
            outputs.append(answers[tuple(argv)])
    return outputs


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_allocation_rounds_end_and_parse_the_captured_answers(scheduler):
    backend, captured = BACKENDS[scheduler], CAPTURED[scheduler]
    outputs = _rounds(lambda outputs: backend.allocations_argvs(captured.user, outputs), captured.answers)
    mine = backend.parse_allocations(captured.user, (), outputs)
    assert isinstance(mine, Allocations) and mine.accounts
    everything = backend.parse_cluster_allocations(_rounds(backend.cluster_allocations_argvs, captured.answers))
    assert isinstance(everything, Allocations) and set(mine.accounts) <= set(everything.accounts)
    assert backend.empty_answer(["no-such-command"], 1, "") in (True, False)


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_what_the_job_side_runs_is_the_backends_own(scheduler):
    # hpchub-job submits and the server extension finds its node with the job side's table
    # (standard library only); the hub's backend states the very same functions, so the two agree.
    job_side = for_scheduler(scheduler)
    backend = BACKENDS[scheduler]
    for member in ("submit_argv", "submit_environment", "submit_script", "estimate_argv", "estimate_context_argvs",
                   "node_address_argv", "parse_node_address"):
        assert getattr(backend, member) is getattr(job_side, member), member
    assert job_side.name == backend.name
    assert set(SCHEDULERS) == set(BACKENDS)
