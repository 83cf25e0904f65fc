"""hpchub as a child of wrapspawner.ProfilesSpawner (a site mixing batch profiles with a local
one): the spawn, the port report through the wrapper, and the stop, on the real Slurm."""

from __future__ import annotations

import asyncio
import textwrap
import time

import pytest
from helpers.hub import Hub, jobs_of, remove_job_logs, spawn, stop
from helpers.support import REPO, SITE_CONFIGS

from hpchub.core.config import load_site_config
from hpchub.transports.cluster import client_for

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@pytest.fixture(scope="module")
def hub(slurm_cluster, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-wrap")
    config = state / "jupyterhub_config.py"
    config.write_text(textwrap.dedent(f"""\
        load_subconfig({str(REPO / "examples" / "jupyterhub_config.py")!r})
        site = {str(SITE_CONFIGS / "local-slurm.yaml")!r}
        c.JupyterHub.spawner_class = "wrapspawner.ProfilesSpawner"
        c.ProfilesSpawner.profiles = [
            ("Slurm job: small", "hpc-small", "hpchub.spawner.HPCSpawner", {{"site_config": site, "profile": "small"}}),
            ("Slurm job: two nodes", "hpc-multi", "hpchub.spawner.HPCSpawner", {{"site_config": site, "profile": "multi"}}),
            ("A process on the hub host", "local", "jupyterhub.spawner.LocalProcessSpawner", {{}}),
        ]
        """))
    hub = Hub(SITE_CONFIGS / "local-slurm.yaml", state, config_file=config)
    started = time.time()
    hub.start()
    yield hub
    hub.api("DELETE", "/users/alice/server")
    hub.close()
    remove_job_logs(["alice"], since=started, clusters=("slurm",), profiles=("hpc-small", "hpc-multi", "small", "multi"))


def test_hpchub_profile_through_profiles_spawner(hub):
    client = client_for(load_site_config(SITE_CONFIGS / "local-slurm.yaml"), "slurm")
    server = spawn(hub, "alice", {"profile": "hpc-small", "cores": 2})
    child_state = server["state"]["child_state"]
    assert server["state"]["profile"] == "hpc-small" and child_state["job_profile"] == "small"
    assert hub.submissions() == 1  # what the test below counts: the child spawner's submission
    job = jobs_of(client, "alice")[child_state["job_id"]]
    assert job.user == "alice" and asyncio.run(client.job_names("alice"))[child_state["job_id"]] == "hpchub-alice-small"
    assert hub.get_user_url("alice", "api/status").status_code == 200
    stop(hub, "alice")
    assert child_state["job_id"] not in jobs_of(client, "alice")


def test_bad_options_fail_the_child_spawn_without_a_job(hub):
    before = hub.submissions()
    response = hub.api("POST", "/users/alice/server", json={"profile": "hpc-small", "cores": 64})
    assert response.status_code in (400, 500) and "64 is above the maximum 4" in response.json()["message"]
    assert hub.submissions() == before
