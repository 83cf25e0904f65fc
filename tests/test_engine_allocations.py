"""ipyparallel engine jobs of profiles whose account, QoS or reservation come from the scheduler: the
launcher asks the user's allocations, and engines charge what the notebook's own server job charges
(its HPCHUB_ACCOUNT/QOS/RESERVATION) unless the options say otherwise or the profile refuses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.profiles import local_site_text
from helpers.render_cases import USER
from helpers.support import run_as_user, user_readable

from hpchub.core.config import parse_site_config
from hpchub.core.jobs import ENV_PARENT_ALLOCATIONS, server_job
from hpchub.core.options import resolve_request
from hpchub.parallel import HPCEngineSetLauncher
from hpchub.schedulers.base import Allocations, Reservation
from hpchub.transports.cluster import AllocationsUnavailable
from hpchub.transports.runner import CommandError

COURSE = Reservation("course", "course", None, None, True, ("alice", "carol"))
ALICE = Allocations(accounts=("chem", "phys"), default_account="chem", qos=("high", "normal"),
                    qos_by_account={"chem": ("high", "normal"), "phys": ("normal",)}, default_qos="normal",
                    reservations=(COURSE,))
SGE_COURSE = Reservation("course", "2", None, None, True, ("alice", "carol"))
ALICE_SGE = Allocations(accounts=("chem", "phys"), default_account="chem", reservations=(SGE_COURSE,))

SITE = """\
site: Test
clusters:
  main:
    scheduler: {scheduler}
    submit: {{via: sudo}}
    queues: {{debug: {{max_walltime: "04:00:00"}}}}
profiles:
  - slug: research
    name: From the scheduler
    cluster: main
    queue: debug
    resources: {{walltime: "01:00:00"}}
    account: {{from_scheduler: true}}
    qos: {{from_scheduler: true}}
    reservation: {{from_scheduler: true}}
  - slug: pinned
    name: A fixed account
    cluster: main
    queue: debug
    resources: {{walltime: "01:00:00"}}
    account: chem
    qos: {{from_scheduler: true}}
  - slug: listed
    name: Accounts from a list
    cluster: main
    queue: debug
    resources: {{walltime: "01:00:00"}}
    account: [chem, phys]
"""


class FakeClient:
    """Answers ``allocations`` like ClusterClient, and records who was asked about."""

    name = "main"

    def __init__(self, answer: Allocations | Exception):
        self.answer = answer
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    async def allocations(self, user, groups):
        self.asked.append((user, tuple(groups)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def site_file(tmp_path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(scheduler="slurm"))
    return path


@pytest.fixture(autouse=True)
def no_parent(monkeypatch):
    """The test process is no server job: no allocations of a parent unless a test sets them."""
    for variable in ENV_PARENT_ALLOCATIONS.values():
        monkeypatch.delenv(variable, raising=False)


def allocation_directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(("#SBATCH --account", "#SBATCH --qos",
                                                                      "#SBATCH --reservation", "#$ -P", "#$ -ar"))]


async def engine_directives(site_file: Path, profile: str, client: FakeClient, options: dict | None = None) -> list[str]:
    launcher = HPCEngineSetLauncher(site_config=str(site_file), profile=profile, options=options or {})
    job = await launcher.prepare_asking(2, client, user="alice")
    assert job.kind == "engines"
    return allocation_directives(job.script)


async def test_without_a_parent_the_scheduler_defaults_are_asked_as_the_user(site_file):
    client = FakeClient(ALICE)
    assert await engine_directives(site_file, "research", client) == ["#SBATCH --account=chem", "#SBATCH --qos=normal"]
    (asked,) = client.asked
    assert asked[0] == "alice" and "alice" in asked[1]  # with her unix groups


async def test_the_parents_allocations_become_the_defaults(site_file, monkeypatch):
    monkeypatch.setenv("HPCHUB_ACCOUNT", "phys")
    monkeypatch.setenv("HPCHUB_QOS", "normal")
    monkeypatch.setenv("HPCHUB_RESERVATION", "course")
    assert await engine_directives(site_file, "research", FakeClient(ALICE)) == [
        "#SBATCH --account=phys", "#SBATCH --qos=normal", "#SBATCH --reservation=course"]


async def test_an_explicit_option_wins_over_the_parent(site_file, monkeypatch):
    monkeypatch.setenv("HPCHUB_ACCOUNT", "phys")
    monkeypatch.setenv("HPCHUB_QOS", "normal")
    directives = await engine_directives(site_file, "research", FakeClient(ALICE), {"account": "chem", "qos": "high"})
    assert directives == ["#SBATCH --account=chem", "#SBATCH --qos=high"]
    # An option the allocations refuse is still an error: only the parent's values give way.
    with pytest.raises(ValueError, match="account: the scheduler does not let you use account 'bio'"):
        await engine_directives(site_file, "research", FakeClient(ALICE), {"account": "bio"})


async def test_a_parent_value_the_profile_does_not_allow_falls_back_to_its_default(site_file, monkeypatch):
    monkeypatch.setenv("HPCHUB_ACCOUNT", "bio")  # not one of alice's accounts
    monkeypatch.setenv("HPCHUB_RESERVATION", "gone")
    assert await engine_directives(site_file, "research", FakeClient(ALICE)) == [
        "#SBATCH --account=chem", "#SBATCH --qos=normal"]
    # The account is allowed, the QoS is not allowed with it (phys has no high): phys, QoS left to Slurm.
    monkeypatch.setenv("HPCHUB_ACCOUNT", "phys")
    monkeypatch.setenv("HPCHUB_QOS", "high")
    monkeypatch.delenv("HPCHUB_RESERVATION")
    assert await engine_directives(site_file, "research", FakeClient(ALICE)) == ["#SBATCH --account=phys"]
    # A profile that fixes the account keeps it; the QoS it lets the user choose is the parent's.
    monkeypatch.setenv("HPCHUB_QOS", "high")
    assert await engine_directives(site_file, "pinned", FakeClient(ALICE)) == [
        "#SBATCH --account=chem", "#SBATCH --qos=high"]


async def test_no_query_when_the_profile_needs_no_allocations(site_file, monkeypatch):
    client = FakeClient(RuntimeError("must not be asked"))
    assert await engine_directives(site_file, "listed", client) == ["#SBATCH --account=chem"]
    monkeypatch.setenv("HPCHUB_ACCOUNT", "phys")  # one of the profile's own choices: taken
    assert await engine_directives(site_file, "listed", client) == ["#SBATCH --account=phys"]
    assert client.asked == []


async def test_a_failed_query_names_the_command_and_what_it_said(site_file):
    failure = CommandError(["sacctmgr", "--noheader", "show", "user", "alice"], 1,
                           stderr="sacctmgr: error: Problem talking to the database")
    with pytest.raises(AllocationsUnavailable) as refused:
        await engine_directives(site_file, "research", FakeClient(failure))
    message = str(refused.value)
    assert message.startswith("cannot read alice's accounts, QoS and reservations from cluster 'main': ")
    assert "`sacctmgr --noheader show user alice` exited with code 1" in message
    assert "sacctmgr: error: Problem talking to the database" in message
    assert refused.value.__suppress_context__  # the message says it all: no traceback from inside the client


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
async def test_engines_charge_what_the_server_job_charges(scheduler, tmp_path, monkeypatch):
    """The server job's exported HPCHUB_* values, set as the notebook sees them, give the engine job the
    same account/project, QoS and reservation (Grid Engine: the AR's number; the variable holds its name)."""
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.format(scheduler=scheduler).replace("    qos: {from_scheduler: true}\n", "")
                         if scheduler == "sge" else SITE.format(scheduler=scheduler))
    site = parse_site_config(site_file.read_text())
    allocations = ALICE if scheduler == "slurm" else ALICE_SGE
    choices = {"account": "phys", "reservation": "course"} | ({"qos": "normal"} if scheduler == "slurm" else {})
    server = server_job(site, resolve_request(site, site.profile("research"), choices, allocations), USER).script
    exported = dict(line.removeprefix("export ").split("=", 1) for line in server.splitlines()
                    if line.startswith("export HPCHUB_") and line.split("=")[0][7:] in ENV_PARENT_ALLOCATIONS.values())
    assert exported == {"HPCHUB_ACCOUNT": "phys", "HPCHUB_RESERVATION": "course"} | (
        {"HPCHUB_QOS": "normal"} if scheduler == "slurm" else {})
    for variable, value in exported.items():
        monkeypatch.setenv(variable, value)
    engines = await engine_directives(site_file, "research", FakeClient(allocations))
    assert engines == allocation_directives(server)
    assert engines == (["#SBATCH --account=phys", "#SBATCH --qos=normal", "#SBATCH --reservation=course"]
                       if scheduler == "slurm" else ["#$ -P phys", "#$ -ar 2"])


def test_a_server_job_without_allocations_exports_none():
    site = parse_site_config(local_site_text("slurm"))
    script = server_job(site, resolve_request(site, site.profile("small")), USER).script
    assert not [name for name in ENV_PARENT_ALLOCATIONS.values() if name in script]


# Real schedulers: alice's engine job of a from_scheduler profile, started by the launcher as alice (as in a
# notebook), held so that nothing runs, looked at, stopped. Her notebook's job charged phys.
REAL_PROFILES = {
    "slurm": """
  - slug: engines-alloc
    name: Engines charged from the scheduler's allocations
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 100M, walltime: "00:05:00"}
    directives: ["--hold"]
    account: {from_scheduler: true}
    qos: {from_scheduler: true}
""",
    "sge": """
  - slug: engines-alloc
    name: Engines charged from the scheduler's allocations
    cluster: sge
    queue: short.q
    resources: {cores: 1, memory: 100M, walltime: "00:05:00"}
    directives: ["-h"]
    account: {from_scheduler: true}
""",
}
# What the scheduler records for the engine job, asked by alice inside her notebook process.
RECORDED = {
    "slurm": "subprocess.run(['squeue', '--noheader', '--jobs', job_id, '--format=%u|%a|%q'], capture_output=True, "
             "text=True, check=True).stdout.strip()",
    "sge": "'|'.join(line.split(':', 1)[1].strip() for line in subprocess.run(['qstat', '-j', job_id], "
           "capture_output=True, text=True, check=True).stdout.splitlines() if line.split(':')[0] in ('owner', "
           "'project'))",
}


def start_engines_as_alice(scheduler: str, parent: dict[str, str], options: dict[str, str]) -> dict:
    site = user_readable(f"engines-alloc-{scheduler}.yaml", local_site_text(scheduler, REAL_PROFILES[scheduler]))
    return json.loads(run_as_user("alice", textwrap.dedent(f"""
        import asyncio, json, os, subprocess, time
        os.environ.update({parent!r})  # what her server job exported
        from hpchub.parallel import HPCEngineSetLauncher

        async def main():
            launcher = HPCEngineSetLauncher(site_config={str(site)!r}, profile="engines-alloc", options={options!r})
            started = time.monotonic()
            job_id = await launcher.start(2)
            submitted = time.monotonic() - started
            try:
                recorded = {RECORDED[scheduler]}
            finally:
                await launcher.stop()
            print(json.dumps({{"job_id": job_id, "recorded": recorded, "submitted": submitted,
                               "state": launcher.state}}))

        asyncio.run(main())
    """), timeout=90))


def still_queued(scheduler: str, job_id: str) -> bool:
    argv = ["squeue", "--noheader", "--jobs", job_id, "--format=%i"] if scheduler == "slurm" else ["qstat", "-u", "alice"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    return any(line.split() and line.split()[0] == job_id for line in out.splitlines())


@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
def test_alices_engine_job_charges_her_notebooks_account(scheduler, request):
    request.getfixturevalue(f"{scheduler}_cluster")
    result = start_engines_as_alice(scheduler, {"HPCHUB_ACCOUNT": "phys"}, {})
    # phys is not her default (chem): the notebook's account reached the scheduler.
    assert result["recorded"] == ("alice|phys|normal" if scheduler == "slurm" else "alice|phys"), result
    assert result["submitted"] < 10 and result["state"] == "after"
    assert not still_queued(scheduler, result["job_id"])


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_alices_explicit_account_and_qos_win_over_her_notebooks():
    result = start_engines_as_alice("slurm", {"HPCHUB_ACCOUNT": "phys", "HPCHUB_QOS": "normal"},
                                    {"account": "chem", "qos": "high"})
    assert result["recorded"] == "alice|chem|high", result
    assert not still_queued("slurm", result["job_id"])


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_hpchub_render_engines_asks_the_users_allocations(tmp_path):
    """`hpchub render --engines` prints what the launcher submits: the user's allocations asked (as the hub),
    the notebook's values as defaults; bob's allocations refuse alice's account, so his engines charge his."""
    site = tmp_path / "site.yaml"
    site.write_text(local_site_text("slurm", REAL_PROFILES["slurm"]))

    def render(user: str, parent: dict[str, str], *sets: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "hpchub.admin.cli", "render", str(site), "--profile", "engines-alloc", "--user", user,
                "--engines", "2", *(arg for choice in sets for arg in ("--set", choice))]
        env = {key: value for key, value in os.environ.items() if key not in ENV_PARENT_ALLOCATIONS.values()}
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env | parent)

    alice = render("alice", {"HPCHUB_ACCOUNT": "phys"})
    assert alice.returncode == 0, alice.stderr
    assert "#SBATCH --ntasks=2" in alice.stdout and "#SBATCH --job-name=hpchub-alice-engines-alloc.e-" in alice.stdout
    assert allocation_directives(alice.stdout) == ["#SBATCH --account=phys"]
    assert allocation_directives(render("alice", {}).stdout) == ["#SBATCH --account=chem", "#SBATCH --qos=normal"]
    bob = render("bob", {"HPCHUB_ACCOUNT": "chem", "HPCHUB_QOS": "high"})
    assert bob.returncode == 0, bob.stderr
    assert allocation_directives(bob.stdout) == ["#SBATCH --account=phys"]  # his association names no default QoS
    refused = render("bob", {}, "qos=high")
    assert refused.returncode == 1 and "hpchub: qos: the scheduler does not let you use QoS 'high'" in refused.stderr


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
def test_a_failed_query_tells_the_notebook_which_command_failed_and_why():
    """Grid Engine's commands fail at once when SGE_ROOT is wrong (the site's sge.root): the launcher's
    error names the cluster, the command and its words, instead of refusing the options."""
    text = local_site_text("sge", REAL_PROFILES["sge"]).replace("root: /var/lib/gridengine", "root: /nonexistent/sge")
    site = user_readable("engines-alloc-broken-sge.yaml", text)
    result = json.loads(run_as_user("alice", textwrap.dedent(f"""
        import asyncio, json
        from hpchub.parallel import HPCEngineSetLauncher

        async def main():
            launcher = HPCEngineSetLauncher(site_config={str(site)!r}, profile="engines-alloc")
            try:
                await launcher.start(2)
            except Exception as error:
                print(json.dumps({{"error": type(error).__name__, "message": str(error), "job_id": launcher.job_id}}))

        asyncio.run(main())
    """), timeout=60))
    assert result["error"] == "AllocationsUnavailable" and not result["job_id"], result
    assert result["message"].startswith("cannot read alice's accounts, QoS and reservations from cluster 'sge': "
                                        "command `env SGE_ROOT=/nonexistent/sge SGE_CELL=default "
                                        "/usr/lib/gridengine/qconf -sprjl` exited with code 1"), result
    assert 'SGE_ROOT directory "/nonexistent/sge" doesn\'t exist' in result["message"]
