"""The names sites write in their configs keep working wherever the modules live: the spawner's
entry point ``hpchub`` and class path ``hpchub.spawner.HPCSpawner``, ``hpchub.HUB_TEMPLATES``, the
launchers' entry points and ``hpchub.parallel``; and ``import hpchub`` alone loads nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import hpchub

PYTHON = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/python"


def test_the_spawner_is_found_by_its_entry_point_and_its_documented_class_path():
    from hpchub.hub.spawner import HPCSpawner
    from hpchub.spawner import HPCSpawner as by_path

    (spawner,) = entry_points(group="jupyterhub.spawners", name="hpchub")
    assert spawner.load() is HPCSpawner is by_path is hpchub.HPCSpawner


def test_the_launchers_entry_points_and_the_parallel_face():
    import hpchub.parallel

    (engines,) = entry_points(group="ipyparallel.engine_launchers", name="hpchub")
    (controller,) = entry_points(group="ipyparallel.controller_launchers", name="hpchub")
    assert engines.load() is hpchub.parallel.HPCEngineSetLauncher
    assert controller.load() is hpchub.parallel.HPCControllerLauncher
    assert callable(hpchub.parallel.Cluster)


def test_the_hub_templates_are_installed_where_hpchub_HUB_TEMPLATES_says():
    names = {path.name for path in Path(hpchub.HUB_TEMPLATES).glob("*.html")}
    assert {"home.html", "spawn_pending.html"} <= names


def test_the_console_scripts_name_their_modules():
    scripts = {script.name: script.value for script in entry_points(group="console_scripts")
               if script.name in ("hpchub", "hpchub-job")}
    assert scripts == {"hpchub": "hpchub.admin.cli:main", "hpchub-job": "hpchub.job.jobfiles:main"}


def test_importing_hpchub_loads_no_dependency():
    code = "import json, sys; before = set(sys.modules); import hpchub; print(json.dumps(sorted(set(sys.modules) - before)))"
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "hpchub" in loaded
    assert [name for name in loaded if name != "hpchub" and name.split(".")[0] not in sys.stdlib_module_names] == []
