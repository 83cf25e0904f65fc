"""Shared fixtures. Real-cluster tests are marked `slurm` / `sge`; tests/run.sh starts those
clusters and sets HPCHUB_REQUIRE_CLUSTERS=1 so that a cluster that is not up fails the run
instead of skipping (CI must never pass by skipping them).

A test that does the same on both schedulers takes `scheduler` (it runs once per scheduler, each
run marked like the modules about that scheduler) and `local_site`; a module about one scheduler
overrides `scheduler` with a fixture that returns that scheduler's name."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
from helpers.jobs import cancel_and_remove_logs, local_site_with_test_profiles

from hpchub.cluster import ClusterClient, client_for
from hpchub.config import SiteConfig, load_site_config

# A command that answers only when the cluster is up.
CLUSTER_PROBES = {"slurm": ["sinfo", "--noheader"], "sge": ["qstat", "-g", "c"]}


def _cluster_answers(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _require(name: str) -> None:
    if _cluster_answers(CLUSTER_PROBES[name]):
        return
    message = f"the local {name} cluster is not up (start it with tests/clusters/{name}.sh up)"
    if os.environ.get("HPCHUB_REQUIRE_CLUSTERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    _require("slurm")


@pytest.fixture(scope="session")
def sge_cluster() -> None:
    _require("sge")


@pytest.fixture(scope="session", params=[pytest.param("slurm", marks=pytest.mark.slurm),
                                         pytest.param("sge", marks=pytest.mark.sge)])
def scheduler(request: pytest.FixtureRequest) -> str:
    """Each real scheduler in turn; its local cluster must be up."""
    _require(request.param)
    return request.param


@pytest.fixture
def local_site(scheduler: str) -> SiteConfig:
    """site-configs/local-<scheduler>.yaml with the real-scheduler tests' own profiles (helpers.profiles)."""
    return local_site_with_test_profiles(scheduler)


@pytest.fixture
async def cleanup(local_site: SiteConfig) -> AsyncIterator[list[tuple[str, str, str]]]:
    """The (job id, user, log) a test submitted: cancelled and removed at the end, even when it fails."""
    submitted: list[tuple[str, str, str]] = []
    yield submitted
    await cancel_and_remove_logs(local_site, submitted)


@pytest.fixture(scope="module")
def client(hub) -> ClusterClient:
    """The cluster of the e2e module's `hub` (its site has the one cluster of a local site config)."""
    site = load_site_config(hub.site_config)
    return client_for(site, next(iter(site.clusters)))
