"""Every scheduler backend has every member of the documented contract (base.SchedulerBackend),
so callers never probe with getattr; and the renderer takes scheduler details from the backend."""

from __future__ import annotations

import inspect

import pytest
from helpers.render_cases import SITE_CONFIGS, USER

from hpchub.core.config import load_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request
from hpchub.job.scheduler_commands import SCHEDULERS, for_scheduler
from hpchub.schedulers import BACKENDS, SchedulerBackend


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
            "parse_cluster_allocations", "empty_answer", "submit_environment", "submit_script"} <= set(contract)
    assert len(contract) == 31  # 27 functions, name, OUTPUT_JOB_ID, REASON_TEXT, NODE_NAME_VARIABLE


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


@pytest.mark.parametrize("scheduler", sorted(BACKENDS))
def test_what_the_job_side_runs_is_the_backends_own(scheduler):
    # hpchub-job submits and the server extension finds its node with the job side's table
    # (standard library only); the hub's backend states the very same functions, so the two agree.
    job_side = for_scheduler(scheduler)
    backend = BACKENDS[scheduler]
    for member in ("submit_argv", "submit_environment", "submit_script", "node_address_argv", "parse_node_address"):
        assert getattr(backend, member) is getattr(job_side, member), member
    assert job_side.name == backend.name
    assert set(SCHEDULERS) == set(BACKENDS)
