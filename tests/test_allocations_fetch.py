"""A user's allocations asked as the hub and cached per (cluster, user): the scheduler's rounds, the
cache's age, and a failed query meaning "unknown" (never the last good answer)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.jobs import local_site_with_test_profiles, scheduler_output
from helpers.profiles import local_site_text

from hpchub.core.config import parse_site_config
from hpchub.core.jobs import command_job
from hpchub.core.options import OptionsError, resolve_request
from hpchub.core.poller import StatusPoller
from hpchub.core.render import UserAccount
from hpchub.core.runtime import ClusterRuntime
from hpchub.schedulers.base import Allocations
from hpchub.transports.cluster import client_for

ALICE = Allocations(accounts=("chem", "phys"), default_account="chem")


class FakeClient:
    name = "fake"

    def __init__(self, answers: list[Allocations | Exception]):
        self.answers = answers
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    async def allocations(self, user, groups):
        self.asked.append((user, tuple(groups)))
        await asyncio.sleep(0.01)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def status(self, users=None):
        return {}


def runtime_of(client) -> ClusterRuntime:
    return ClusterRuntime(client, StatusPoller(client.status, interval=60, cluster=client.name))


async def test_cached_for_the_ttl_and_shared_by_concurrent_callers():
    client = FakeClient([ALICE])
    runtime = runtime_of(client)
    first, second = await asyncio.gather(runtime.allocations("alice", ["users"], ttl=60),
                                         runtime.allocations("alice", ["users"], ttl=60))
    assert first.allocations == second.allocations == ALICE and client.asked == [("alice", ("users",))]
    await asyncio.sleep(0.05)
    later = await runtime.allocations("alice", ["users"], ttl=60)
    assert later.allocations is ALICE and later.age >= 0.05 and len(client.asked) == 1


async def test_a_failed_query_is_unknown_not_the_last_good_answer():
    client = FakeClient([ALICE, RuntimeError("sacctmgr: error: Problem talking to the database\nmore")])
    runtime = runtime_of(client)
    assert (await runtime.allocations("alice", [], ttl=0)).allocations == ALICE
    failed = await runtime.allocations("alice", [], ttl=0)
    assert failed.allocations is None and failed.error == "sacctmgr: error: Problem talking to the database"


@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
async def test_real_allocations_as_the_hub(scheduler, request):
    request.getfixturevalue(f"{scheduler}_cluster")
    site = local_site_with_test_profiles(scheduler)
    runtime = runtime_of(client_for(site, next(iter(site.clusters))))
    alice = await runtime.allocations("alice", [], ttl=60)
    assert alice.error is None and alice.allocations is not None
    assert (alice.allocations.accounts, alice.allocations.default_account) == (("chem", "phys"), "chem")
    assert "course" in {reservation.name for reservation in alice.allocations.reservations}
    bob = await runtime.allocations("bob", [], ttl=60)
    assert bob.allocations is not None and bob.allocations.accounts == ("phys",)
    again = await runtime.allocations("alice", [], ttl=60)
    assert again.allocations is alice.allocations and again.age >= alice.age


REAL_PROFILES = {
    "slurm": """
  - slug: alloc-research
    name: Allocations
    cluster: slurm
    queue: debug
    resources: {cores: 1, walltime: "00:05:00"}
    account: {from_scheduler: true}
    qos: {from_scheduler: true}
    reservation: course
""",
    "sge": """
  - slug: alloc-research
    name: Allocations
    cluster: sge
    queue: long.q
    resources: {cores: 1, walltime: "00:05:00"}
    account: {from_scheduler: true}
    reservation: course
""",
}


def job_fields(scheduler: str, job_id: str) -> str:
    if scheduler == "slurm":
        return scheduler_output(["squeue", "--noheader", "--jobs", job_id, "--format=%u|%a|%q|%v"]).strip()
    details = scheduler_output(["qstat", "-j", job_id])
    fields = dict(line.split(":", 1) for line in details.splitlines() if ":" in line)
    return "|".join(fields.get(key, "").strip() for key in ("owner", "project", "ar_id"))


@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
async def test_the_scheduler_takes_the_rendered_account_qos_and_reservation(scheduler, request):
    request.getfixturevalue(f"{scheduler}_cluster")
    site = parse_site_config(local_site_text(scheduler, REAL_PROFILES[scheduler]))
    client = client_for(site, scheduler)
    profile = site.profile("alloc-research")
    alice = await runtime_of(client).allocations("alice", [], ttl=60)
    choices = {"account": "phys"} if scheduler == "sge" else {"qos": "high"}
    job_request = resolve_request(site, profile, choices, alice.allocations)
    with pytest.raises(OptionsError) as refused:  # bob may not use the reservation
        resolve_request(site, profile, {}, (await runtime_of(client).allocations("bob", [], ttl=60)).allocations)
    assert set(refused.value.problems) == {"reservation"}
    job = command_job(site, job_request, UserAccount.lookup("alice"), ["sleep", "120"])
    job_id = await client.submit("alice", job.key, job.script, {})
    try:
        if scheduler == "slurm":
            assert job_fields(scheduler, job_id) == "alice|chem|high|course"
        else:
            assert job_request.reservation is not None and job_request.reservation.isdigit()
            assert job_fields(scheduler, job_id) == f"alice|phys|{job_request.reservation}"
    finally:
        await client.cancel("alice", [job_id])
        Path(job.log_path(job_id)).unlink(missing_ok=True)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_hpchub_render_asks_the_scheduler_for_the_users_allocations(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(local_site_text("slurm", REAL_PROFILES["slurm"]))
    hpchub = [sys.executable, "-m", "hpchub.admin.cli", "render", str(site), "--profile", "alloc-research"]
    alice = subprocess.run([*hpchub, "--user", "alice", "--set", "qos=high"], capture_output=True, text=True, timeout=60)
    assert alice.returncode == 0, alice.stderr
    assert [line for line in alice.stdout.splitlines() if line.startswith(("#SBATCH --account", "#SBATCH --qos",
                                                                           "#SBATCH --reservation"))] == \
        ["#SBATCH --account=chem", "#SBATCH --qos=high", "#SBATCH --reservation=course"]
    bob = subprocess.run([*hpchub, "--user", "bob", "--set", "qos=high"], capture_output=True, text=True, timeout=60)
    assert bob.returncode != 0 and "qos: the scheduler does not let you use QoS 'high' (yours: normal)" in bob.stderr
    assert "reservation 'course' is not open to you" in bob.stderr
