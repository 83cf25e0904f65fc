"""The hub-user -> unix-account map (hpchub.core.accounts and HPCSpawner.unix_account*): the pure rules,
and the spawner using the mapped account for the submission, the job's name and files, and the
profiles' group check (fake scheduler; the real one in tests/test_ldap.py)."""

from __future__ import annotations

import asyncio

import pytest
from test_spawner_lifecycle import SITE, TOKEN, fake, make_spawner, start_running  # noqa: F401 (fixture)
from tornado import web
from traitlets import TraitError

from hpchub.core import accounts
from hpchub.core.accounts import AccountMapError, unix_account_name
from hpchub.core.config import load_site_config
from hpchub.hub import porthandler
from hpchub.hub.spawner import HPCSpawner, SpawnFailed


async def test_exceptions_come_first_then_the_domain_is_stripped_then_the_template():
    exceptions = {"jdoe@uni.example": "john"}
    domains = ["uni.example", "@Staff.Uni.Example"]
    assert await unix_account_name("jdoe@uni.example", exceptions, domains, "{username}") == "john"
    assert await unix_account_name("dora@uni.example", exceptions, domains, "{username}") == "dora"
    assert await unix_account_name("dora@staff.uni.example", exceptions, domains, "{username}") == "dora"
    assert await unix_account_name("DORA@UNI.EXAMPLE", {}, domains, "{username}") == "DORA"
    assert await unix_account_name("dora", exceptions, domains, "hpc-{username}") == "hpc-dora"
    assert await unix_account_name("alice", {}, [], "{username}") == "alice"


async def test_an_address_outside_the_sites_domains_has_no_account():
    with pytest.raises(AccountMapError, match=r"'elsewhere.example' is not one of the site's domains \(uni.example"):
        await unix_account_name("dora@elsewhere.example", {}, ["uni.example"], "{username}")
    with pytest.raises(AccountMapError, match="an e-mail address is no unix name.*unix_account_domains"):
        await unix_account_name("dora@uni.example", {}, [], "{username}")
    with pytest.raises(AccountMapError):  # nothing before the '@'
        await unix_account_name("@uni.example", {}, ["uni.example"], "{username}")


async def test_a_callable_rule_may_be_async_and_its_result_is_checked():
    async def from_directory(name: str) -> str:
        await asyncio.sleep(0)
        return {"dora": "d.smith"}[name]

    assert await unix_account_name("dora@uni.example", {}, ["uni.example"], from_directory) == "d.smith"
    assert await unix_account_name("Dora", {}, [], str.lower) == "dora"
    for bad in ("dora@uni.example", "", "a b", "../etc"):
        with pytest.raises(AccountMapError, match="not a valid unix account name"):
            await unix_account_name("dora", {}, [], lambda name, bad=bad: bad)
    with pytest.raises(AccountMapError, match="unix_account_map"):
        await unix_account_name("dora", {"dora": "dora smith"}, [], "{username}")


def test_the_template_is_checked_when_the_config_is_loaded():
    for template in ("{user}", "{username!r}", "{username:>9}", "everybody", "{username"):
        with pytest.raises((TraitError, ValueError)):
            HPCSpawner(unix_account=template)
    assert HPCSpawner(unix_account="hpc-{username}").unix_account == "hpc-{username}"


def mapped_spawner(hub_name: str, options=None, site=SITE, **traits) -> HPCSpawner:
    spawner = make_spawner(user=hub_name, options=options, site=site)
    for name, value in traits.items():
        setattr(spawner, name, value)
    return spawner


async def test_a_mapped_user_submits_and_is_cancelled_as_the_unix_account(fake):  # noqa: F811
    spawner = mapped_spawner("alice@uni.example", {"profile": "small"}, unix_account_domains=["uni.example"])
    assert await start_running(spawner, fake) == ("127.0.0.1", 1234)
    user, script = fake.scripts[0]
    assert user == "alice"  # sudo -u alice, hpchub-job writes the files in alice's home
    assert fake.files["hpchub-alice-small"][0] == "alice"
    assert "#SBATCH --job-name=hpchub-alice-small" in script and "@" not in fake.names["100"]
    assert ". /home/alice/.hpchub/jobs/hpchub-alice-small/env" in script
    assert f"JUPYTERHUB_API_TOKEN={TOKEN}" in fake.files["hpchub-alice-small"][1]["env"]
    assert spawner.get_state()["job_user"] == "alice"
    await spawner.stop()
    assert fake.cancelled == ["100"] and fake.removed == ["hpchub-alice-small"]


async def test_a_hub_user_mapped_to_a_missing_account_gets_a_clear_refusal_and_no_job(fake):  # noqa: F811
    spawner = mapped_spawner("zed@uni.example", {"profile": "small"}, unix_account_domains=["uni.example"])
    with pytest.raises(SpawnFailed) as caught:
        await spawner.start()
    assert ("hub user 'zed@uni.example' runs as unix account 'zed' (HPCSpawner.unix_account): "
            "no unix account 'zed' on this host") in caught.value.message
    assert fake.scripts == [] and porthandler.waiting_for(TOKEN) is None


async def test_an_unmapped_address_is_refused_before_anything_is_submitted(fake):  # noqa: F811
    spawner = mapped_spawner("alice@elsewhere.example", {"profile": "small"}, unix_account_domains=["uni.example"])
    for attempt in (spawner.start(), spawner.visible_profiles()):
        with pytest.raises(web.HTTPError) as caught:
            await attempt
        assert caught.value.status_code == 403 and "'elsewhere.example' is not one of" in caught.value.log_message
    assert fake.scripts == []


GROUP_SITE = """
site: groups of the mapped account
clusters:
  slurm:
    scheduler: slurm
    submit: {via: sudo}
    queues:
      debug: {max_walltime: "01:00:00", max_cores: 2, max_memory: 2G}
profiles:
  - {slug: open, name: Open, cluster: slurm, queue: debug, resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
  - {slug: alices, name: "For the group alice", cluster: slurm, queue: debug, unix_groups: [alice],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
  - {slug: named, name: "For the user alice", cluster: slurm, queue: debug, unix_users: [alice],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
"""


async def test_the_profiles_group_and_user_checks_use_the_unix_account(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(GROUP_SITE)
    # The unix group alice (alice's own) has no hub user of that name: only the mapped account has it.
    mapped = mapped_spawner("a.person@uni.example", site=site, unix_account_map={"a.person@uni.example": "alice"})
    assert [p.slug for p in await mapped.visible_profiles()] == ["open", "alices", "named"]
    other = mapped_spawner("bob@uni.example", site=site, unix_account_domains=["uni.example"])
    assert [p.slug for p in await other.visible_profiles()] == ["open"]
    # Without the map the same hub name has no account at all.
    with pytest.raises(web.HTTPError):
        await mapped_spawner("a.person@uni.example", site=site).visible_profiles()


COLLISION_SITE = """
site: same names in the hub and on the cluster
clusters:
  slurm:
    scheduler: slurm
    submit: {via: sudo}
    queues:
      debug: {max_walltime: "01:00:00", max_cores: 2, max_memory: 2G}
profiles:
  - {slug: hub-carol, name: "Hub user carol", cluster: slurm, queue: debug, hub_users: [carol],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
  - {slug: unix-carol, name: "Unix account carol", cluster: slurm, queue: debug, unix_users: [carol],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
  - {slug: hub-alice, name: "JupyterHub group alice", cluster: slurm, queue: debug, hub_groups: [alice],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
  - {slug: unix-alice, name: "Unix group alice", cluster: slurm, queue: debug, unix_groups: [alice],
     resources: {cores: 1, memory: 1G, walltime: "00:10:00"}}
"""


async def test_same_named_hub_and_unix_identities_do_not_get_each_others_profiles(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(COLLISION_SITE)

    async def visible(hub_name: str, account: str, hub_groups=()) -> list[str]:
        spawner = make_spawner(user=hub_name, groups=hub_groups, site=site)
        spawner.unix_account_map = {hub_name: account}
        return [p.slug for p in await spawner.visible_profiles()]

    # Hub user carol runs as unix account alice (whose own unix group is alice).
    assert await visible("carol", "alice") == ["hub-carol", "unix-alice"]
    # Another hub user runs as unix account carol: the account, not the hub user carol.
    assert await visible("c.smith", "carol") == ["unix-carol"]
    # Hub user bob in the JupyterHub group alice: not a member of the unix group alice.
    assert await visible("bob", "bob", hub_groups=["alice"]) == ["hub-alice"]


def test_visible_profiles_is_core_code_the_hub_and_check_can_share(tmp_path):
    # The rule without a spawner: the unix account alice (own unix group alice) on GROUP_SITE.
    site_file = tmp_path / "site.yaml"
    site_file.write_text(GROUP_SITE)
    site = load_site_config(site_file)
    alice = accounts.identity("someone", frozenset(), "alice")
    assert "alice" in alice.unix_groups
    assert [p.slug for p in accounts.visible_profiles(site, alice)] == ["open", "alices", "named"]
    nobody = accounts.identity("someone", frozenset(), "no-such-account")
    assert [p.slug for p in accounts.visible_profiles(site, nobody)] == ["open"]
    # A pinned profile: only that one, and only if the asker may use it.
    assert [p.slug for p in accounts.visible_profiles(site, alice, "named")] == ["named"]
    assert accounts.visible_profiles(site, nobody, "named") == []
    with pytest.raises(KeyError):
        accounts.visible_profiles(site, alice, "no-such-profile")
