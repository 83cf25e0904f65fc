"""The suite's two lanes (tests/run.sh): the modules conftest.BESIDE_MODULES names run in a second
pytest process beside the real clusters' tests, so they must touch nothing those tests use."""

from __future__ import annotations

import re

import pytest
from conftest import BESIDE_MODULES
from helpers.support import REPO

# What a module beside the clusters' tests must not use: the clusters and their fixtures, the test
# users (sudo, their homes), a hub against the clusters, the browser, podman.
FORBIDDEN = re.compile(r"sudo|slurm_cluster|sge_cluster|login_node|/home/|pytest\.mark\.(slurm|sge|e2e|ssh|ldap|"
                       r"multinode|containers)|run_hub|helpers\.hub|chromium|podman|kernel_env|getpwnam")


@pytest.mark.parametrize("module", sorted(BESIDE_MODULES))
def test_a_module_beside_the_clusters_tests_touches_none_of_their_things(module):
    path = REPO / "tests" / f"{module}.py"
    found = FORBIDDEN.search(path.read_text())
    assert found is None, f"{path.name} uses {found.group(0)!r}: it cannot run beside the clusters' tests"


def test_every_name_in_the_lane_is_a_test_module():
    modules = {path.stem for path in (REPO / "tests").glob("test_*.py")}
    assert BESIDE_MODULES <= modules, BESIDE_MODULES - modules
