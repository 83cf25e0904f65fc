"""hpchub.core.spawn alone: a server job and its files from a resolved choice, against the fake cluster."""

from __future__ import annotations

import asyncio

import pytest
from test_spawner_lifecycle import SITE, fake  # noqa: F401 (the fixture)

from hpchub.core import bundle, spawn
from hpchub.core.config import load_site_config
from hpchub.core.metrics import SpawnFailure
from hpchub.core.options import resolve_request
from hpchub.core.runtime import ClusterRuntime
from hpchub.transports.cluster import ClusterSpec

HUB = spawn.HubSide(env={"JUPYTERHUB_API_TOKEN": "t" * 32}, api_url="http://10.77.0.1:8081/hub/api")


def runtime_for(site):
    spec = ClusterSpec.from_site(site, "slurm")
    return ClusterRuntime.registry[(spec, id(asyncio.get_running_loop()))]


async def test_a_server_job_comes_with_its_user_only_files(fake):  # noqa: F811
    site = load_site_config(SITE)
    request = resolve_request(site, site.profile("small"), {"cores": "2"})
    prepared = await spawn.prepare_server_job(site, runtime_for(site), request, "alice", "alice", "",
                                              ("jupyterhub-singleuser",), HUB)
    assert prepared.job.name == "hpchub-alice-small" and prepared.hub_port == ""
    assert f"JUPYTERHUB_API_TOKEN={'t' * 32}" in prepared.files["env"] and "t" * 32 not in prepared.job.script
    job_id = await spawn.submit(runtime_for(site), prepared, keep_days=3, watcher="alice/")
    # Written with them: the job side's bundle (hpchub.core.bundle), the same for every server job.
    assert fake.files["hpchub-alice-small"][1] == {**bundle.job_side_files(), **prepared.files}
    assert fake.keep_days == 3 and job_id == "100"


async def test_an_account_hpchub_refuses_gets_no_job(fake):  # noqa: F811
    site = load_site_config(SITE)
    request = resolve_request(site, site.profile("small"), {})
    with pytest.raises(spawn.JobRefused) as refused:
        await spawn.prepare_server_job(site, runtime_for(site), request, "root", "root", "", ("x",), HUB)
    assert refused.value.failure is SpawnFailure.ACCOUNT_REFUSED and not fake.scripts
