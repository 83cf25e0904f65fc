"""Who hpchub acts as: the transport refuses root, system accounts and the hub's own account, and
never runs users' jobs as root through `via: local`."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd

import pytest
from helpers.support import REPO, SITE_CONFIGS

from hpchub.core.config import load_site_config, parse_site_config
from hpchub.schedulers.base import Allocations
from hpchub.transports import cluster
from hpchub.transports.cluster import QUERY_MAX_OUTPUT, USER_MAX_OUTPUT, AccountRefused, ClusterClient, ClusterSpec, client_for
from hpchub.transports.runner import CommandError, CommandResult, OutputTooLarge

SITE = load_site_config(SITE_CONFIGS / "local-slurm.yaml")


def spec(**changes) -> ClusterSpec:
    fields = {**ClusterSpec.from_site(SITE, "slurm").to_state(), **changes}
    return ClusterSpec.from_state(fields)


@pytest.mark.parametrize("account", ["daemon", "bin"])
def test_sudo_refuses_system_accounts(account):
    client = ClusterClient(spec(uid_min=1000))
    with pytest.raises(AccountRefused, match=f"account '{account}' has uid"):
        client.as_user(account, ["sbatch"])


@pytest.mark.parametrize("via", ["sudo", "ssh", "local"])
def test_no_transport_acts_as_root_or_a_malformed_name(via):
    for account in ("root", "../alice", "alice bob"):
        with pytest.raises(AccountRefused, match="hpchub does not act as"):
            ClusterClient(spec(via=via)).as_user(account, ["sbatch"])


def test_sudo_refuses_the_hubs_own_account_and_unknown_accounts():
    me = pwd.getpwuid(os.getuid()).pw_name
    with pytest.raises(AccountRefused):  # root here: below the minimum; as a service account: the hub itself
        ClusterClient(spec(uid_min=0)).as_user(me, ["sbatch"])
    with pytest.raises(AccountRefused, match="no unix account"):
        ClusterClient(spec()).as_user("no-such-user-here", ["sbatch"])


def test_the_site_minimum_uid_is_used():
    alice_uid = pwd.getpwnam("alice").pw_uid
    assert ClusterClient(spec(uid_min=alice_uid)).as_user("alice", ["id"]) == ["sudo", "-n", "-u", "alice", "--", "id"]
    with pytest.raises(AccountRefused, match="below the site's minimum"):
        ClusterClient(spec(uid_min=alice_uid + 1)).as_user("alice", ["id"])
    assert client_for(SITE, "slurm").spec.uid_min == SITE.effective_uid_min


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is about a hub running as root")
def test_local_submission_is_refused_when_the_hub_is_root():
    with pytest.raises(AccountRefused, match="which is root here"):
        ClusterClient(spec(via="local")).as_user("alice", ["sbatch"])


def test_the_spec_survives_the_spawner_state():
    original = ClusterSpec.from_site(SITE, "slurm")
    assert ClusterSpec.from_state(original.to_state()) == original
    assert original.jobfiles.endswith("hpchub-job") and original.via == "sudo"


SGE_SITE = load_site_config(SITE_CONFIGS / "local-sge.yaml")


async def test_sge_commands_dir_runs_the_hubs_queries_with_the_binaries_not_the_wrapper(tmp_path):
    # Debian's qstat on the PATH is a script that forks ~14 processes per call; the hub polls often.
    (tmp_path / "qstat").write_text('#!/bin/sh\necho "$0 $* root=$SGE_ROOT cell=$SGE_CELL"\n')
    (tmp_path / "qstat").chmod(0o755)
    sge = ClusterSpec.from_site(SGE_SITE, "sge")
    assert sge.commands_dir == "/usr/lib/gridengine" and "SGE_ROOT=/var/lib/gridengine" in sge.commands_env
    client = ClusterClient(ClusterSpec.from_state({**sge.to_state(), "commands_dir": str(tmp_path),
                                                   "commands_env": ["SGE_ROOT=/opt/sge", "SGE_CELL=c1"]}))
    result = await client.run(["qstat", "-xml"])
    assert result.stdout.strip() == f"{tmp_path}/qstat -xml root=/opt/sge cell=c1"
    # what runs as a user keeps the PATH's command: the sudoers rule names it
    assert client.as_user("alice", ["qdel", "7"])[-2:] == ["qdel", "7"]
    assert hash(ClusterSpec.from_state(sge.to_state())) == hash(sge)  # runtimes are keyed by the spec


def test_sge_commands_dir_needs_root(tmp_path):
    text = (SITE_CONFIGS / "local-sge.yaml").read_text().replace("      root: /var/lib/gridengine\n", "")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    from hpchub.core.config import SiteConfigError
    with pytest.raises(SiteConfigError, match=r"site.yaml:\d+: clusters.sge.sge.commands_dir: needs sge.root too"):
        load_site_config(path)


async def test_a_grid_engine_without_projects_or_user_objects_has_no_allocations_rather_than_failing(tmp_path):
    # qconf prints "no project list defined" and exits 1 when the cluster has none: that is an
    # answer (nothing), while any other failure of the same command stays a failure.
    (tmp_path / "qconf").write_text('#!/bin/sh\ncase "$1" in -sprjl) echo "no project list defined" >&2;;\n'
                                    '-suserl) echo "no user list defined" >&2;; -sm) echo root; exit 0;;\n'
                                    '-so) echo "no operator defined" >&2;; *) echo "$*: broken" >&2;; esac\n'
                                    'exit 1\n')
    (tmp_path / "qrstat").write_text("#!/bin/sh\necho '<?xml version=\"1.0\"?><qrstat></qrstat>'\n")
    for command in ("qconf", "qrstat"):
        (tmp_path / command).chmod(0o755)
    spec = ClusterSpec.from_state({**ClusterSpec.from_site(SGE_SITE, "sge").to_state(), "commands_dir": str(tmp_path)})
    client = ClusterClient(spec)
    nothing = Allocations(accounts=(), default_account=None, reservation_admins=("root",))
    assert await client.allocations("alice", []) == nothing
    assert await client.cluster_allocations() == nothing
    (tmp_path / "qconf").write_text('#!/bin/sh\necho "error: commlib error: got select error" >&2\nexit 1\n')
    with pytest.raises(CommandError, match="qconf -sprjl"):
        await client.allocations("alice", [])


def test_the_sites_service_accounts_are_refused_through_sudo_too():
    """`submit.service_accounts`: accounts with a person's uid that are still no person's (a backup or
    monitoring account from LDAP)."""
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    text = (SITE_CONFIGS / "local-slurm.yaml").read_text().replace("submit: {via: sudo}",
                                                                   "submit: {via: sudo, service_accounts: [alice]}")
    client = client_for(parse_site_config(text), "slurm")
    with pytest.raises(AccountRefused, match="'alice' is a service account"):
        client.as_user("alice", ["sbatch"])
    assert client_for(site, "slurm").as_user("alice", ["sbatch"])[:4] == ["sudo", "-n", "-u", "alice"]


def test_a_job_saved_before_service_accounts_were_listed_still_refuses_the_query_account():
    """A spawner's state from before `service_accounts` has none: the query account is refused anyway."""
    state = {**spec(via="ssh", host="login", key="/keys/{user}", known_hosts="/kh", query_user="hpchub-q").to_state()}
    del state["service_accounts"]
    client = ClusterClient(ClusterSpec.from_state(state))
    with pytest.raises(AccountRefused, match="'hpchub-q' is a service account"):
        client.as_user("hpchub-q", ["sbatch"])
    assert client.as_user("alice", ["sbatch"]) == ["sbatch"]


async def test_output_limit_by_who_runs_the_command():
    """A user-side command (submit, cancel, a log tail) keeps at most USER_MAX_OUTPUT; the hub's
    own queries, which list the whole cluster, QUERY_MAX_OUTPUT."""
    client = ClusterClient(spec(via="sudo"))
    two_mib = ["head", "-c", str(2 << 20), "/dev/zero"]
    assert len((await client.run(two_mib)).stdout) == 2 << 20
    with pytest.raises(OutputTooLarge) as caught:
        await client.run(two_mib, user="alice")
    assert caught.value.limit == USER_MAX_OUTPUT and "wrote more than 1 MiB to stdout" in str(caught.value)


def test_query_output_limit_holds_the_benchmarks_largest_status_answers():
    """QUERY_MAX_OUTPUT is sized from bench/parsing.py's 10,000-job answers, with headroom."""
    bench = importlib.util.spec_from_file_location("bench_parsing", REPO / "bench" / "parsing.py")
    assert bench is not None and bench.loader is not None
    parsing = importlib.util.module_from_spec(bench)
    bench.loader.exec_module(parsing)
    for answer in (parsing.slurm_answer(10_000), parsing.sge_answer(10_000)):
        assert 4 * len(answer.encode()) <= QUERY_MAX_OUTPUT


async def test_commands_as_users_run_at_most_parallel_commands_at_once_and_the_hubs_queries_never_wait(monkeypatch):
    # 500 submissions at once made some sbatch time out against slurmctld on the test VM (bench/hub500.py)
    running: list[tuple[str, ...]] = []
    peak = 0
    release = asyncio.Event()

    async def fake_run_command(argv, **_):
        nonlocal peak
        running.append(tuple(argv))
        peak = max(peak, sum(1 for command in running if command[0] == "sudo"))
        if argv[0] == "sudo":
            await release.wait()
        running.remove(tuple(argv))
        return CommandResult(tuple(argv), 0, "", "", 0.0)

    monkeypatch.setattr(cluster, "run_command", fake_run_command)
    client = ClusterClient(spec(via="sudo", uid_min=0, parallel_commands=3))
    users = [asyncio.ensure_future(client.run(["hpchub-job", "remove", f"k{n}"], user="nobody")) for n in range(10)]
    await asyncio.sleep(0.05)
    assert peak == 3 and len(running) == 3  # seven wait their turn
    # the hub's own status query runs at once, past the queue
    assert (await asyncio.wait_for(client.run(["squeue"]), 1)).returncode == 0
    release.set()
    assert [done.returncode for done in await asyncio.gather(*users)] == [0] * 10
    assert peak == 3


def test_parallel_commands_comes_from_the_site_and_does_not_split_a_cluster_in_two():
    text = (SITE_CONFIGS / "local-slurm.yaml").read_text().replace("{via: sudo}", "{via: sudo, parallel_commands: 4}", 1)
    site = parse_site_config(text, source="local-slurm.yaml")
    assert ClusterSpec.from_site(site, "slurm").parallel_commands == 4
    assert ClusterSpec.from_site(SITE, "slurm").parallel_commands == 16
    # a job's spec saved before the change is the same cluster (one runtime, one poller)
    assert ClusterSpec.from_site(site, "slurm") == ClusterSpec.from_site(SITE, "slurm")
    with pytest.raises(Exception, match="parallel_commands"):
        parse_site_config(text.replace("parallel_commands: 4", "parallel_commands: 0"), source="local-slurm.yaml")
