"""Shared fixtures. Real-cluster tests are marked `slurm` / `sge`; tests/run.sh starts those
clusters and sets HPCHUB_REQUIRE_CLUSTERS=1 so that a cluster that is not up fails the run
instead of skipping (CI must never pass by skipping them)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _cluster_answers(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _require(name: str, argv: list[str]) -> None:
    if _cluster_answers(argv):
        return
    message = f"the local {name} cluster is not up (start it with tests/clusters/{name}.sh up)"
    if os.environ.get("HPCHUB_REQUIRE_CLUSTERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    _require("slurm", ["sinfo", "--noheader"])


@pytest.fixture(scope="session")
def sge_cluster() -> None:
    _require("sge", ["qstat", "-g", "c"])
