"""The suite's lanes (tests/run.sh): the modules conftest.BESIDE_MODULES names run in a pytest process
of their own beside the real clusters' tests, so they must touch nothing those tests use; Grid
Engine's own tests run in another, which conftest decides from their marks."""

from __future__ import annotations

import re

import pytest
from conftest import (
    AFTER_THE_LANES,
    ALONE,
    BESIDE_MODULES,
    SECOND_LANE_MODULES,
    _in_the_second_lane,
    pytest_collection_modifyitems,
)
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


class _Item:
    """What conftest._in_the_second_lane reads of a collected test."""

    def __init__(self, marks: tuple[str, ...], fixtures: tuple[str, ...] = (), module: str = "test_x"):
        self.marks, self.fixturenames, self.nodeid = marks, fixtures, f"tests/{module}.py::test_y"
        self.path, self.name = REPO / "tests" / f"{module}.py", "test_y"

    def iter_markers(self):
        return (getattr(pytest.mark, name).mark for name in self.marks)

    def get_closest_marker(self, name: str):
        return getattr(pytest.mark, name).mark if name in self.marks else None

    def add_marker(self, marker) -> None:
        self.marks += (marker.name,)


@pytest.mark.parametrize(("marks", "in_lane"), [(("sge", "e2e"), True), (("sge", "slurm"), False),
                                                (("sge", "ssh"), False), (("slurm",), False), ((), False)])
def test_the_second_lane_takes_tests_marked_sge_and_neither_slurm_nor_ssh(marks, in_lane):
    assert _in_the_second_lane(_Item(marks, ("hub",))) is in_lane


@pytest.mark.parametrize("module", sorted(SECOND_LANE_MODULES))
def test_the_second_lane_takes_its_modules_tests_of_either_scheduler(module):
    assert _in_the_second_lane(_Item(("slurm", "e2e"), ("hub", "slurm_cluster"), module=module))


@pytest.mark.parametrize(("marks", "fixture", "module"), [(("sge",), "slurm_cluster", "test_x"),
                                                          (("sge",), "login_node", "test_x"),
                                                          (("slurm",), "login_node", "test_pages_class")])
def test_a_second_lane_test_that_reaches_what_the_first_disturbs_is_refused(marks, fixture, module):
    with pytest.raises(pytest.UsageError, match=f"runs in the second lane .*, yet takes .*{fixture}"):
        _in_the_second_lane(_Item(marks, ("hub", fixture), module=module))


def test_the_tests_that_need_slurm_alone_exist_and_run_in_the_first_lane():
    for module, name in ALONE:
        text = (REPO / "tests" / f"{module}.py").read_text()
        assert f"def {name}(" in text, (module, name)
        assert module not in SECOND_LANE_MODULES | BESIDE_MODULES


@pytest.mark.parametrize("mark", AFTER_THE_LANES)
@pytest.mark.parametrize("module", ["test_x", "test_pages_class", "test_units"])
def test_a_test_that_needs_the_queues_to_itself_runs_in_no_lane(mark, module):
    item = _Item(("sge", "e2e", mark), ("hub",), module=module)  # without `mark`: second lane or beside
    pytest_collection_modifyitems([item])
    assert not {"beside", "second_lane"} & set(item.marks), item.marks


def test_the_tests_run_after_the_lanes_are_marked_and_run_sh_runs_them():
    marked = {path.stem for path in (REPO / "tests").glob("test_*.py")
              if re.search(r"pytest\.mark\.(" + "|".join(AFTER_THE_LANES) + r")\b", path.read_text())}
    assert {"test_busy_cluster", "test_e2e_ssh", "test_estimate_real", "test_pages_estimate"} <= marked
    markers = (REPO / "setup.cfg").read_text()
    run = (REPO / "tests" / "run.sh").read_text()
    for name in AFTER_THE_LANES:
        assert f"\n    {name}: " in markers and f"and not {name}" in run, name
    assert f'-m "{" or ".join(AFTER_THE_LANES)}"' in run
