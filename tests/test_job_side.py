"""The job side (hpchub/job/) imports nothing else of hpchub and nothing beyond the standard library
and, in the server extension only, jupyter_server (with the tornado its handler API is made of): a
job whose environment holds no hpchub hub side, no JupyterHub, no pydantic or paramiko still runs it.
Its modules import each other relatively, so they work as the job's bundle ``hpchub_job`` too
(tests/test_bundle.py runs that bundle in environments without hpchub)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hpchub.job

JOB_DIR = Path(hpchub.job.__file__).parent
JOB_MODULES = sorted(path.stem for path in JOB_DIR.glob("*.py"))  # __init__: the package itself
# The server extension runs inside jupyterhub-singleuser's jupyter_server: its handlers are
# jupyter_server's, built on tornado (web.authenticated, the IO loop's HTTP client).
# The engine launchers run in the user's kernel, which has ipyparallel (and the traitlets its launchers
# are made of) or would not ask for engines.
# The environment check asks the environment's own jupytext about a profile's formats, only when the
# server is told to pair notebooks (and so needs jupytext anyway).
EXTENSION_MODULES = {"extension": {"jupyter_server", "tornado"}, "engines": {"ipyparallel", "traitlets"},
                     "requirements": {"jupytext"}}
PYTHON = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/python"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of the file: absolute modules as written, relative ones as
    ``.name`` with their level of dots."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def foreign_imports(path: Path, allowed: set[str]) -> list[str]:
    bad = []
    for line, name in imports_of(path):
        if name.startswith("."):
            if name.startswith(".."):  # climbs out of hpchub.job
                bad.append(f"{path.name}:{line}: {name}")
            continue
        top = name.split(".")[0]
        # Not even hpchub.job by its absolute name: in a job the package is the bundle's hpchub_job
        # (hpchub.core.bundle), and hpchub need not be installed there.
        if top in sys.stdlib_module_names or top == "__future__" or top in allowed:
            continue
        bad.append(f"{path.name}:{line}: {name}")
    return bad


def test_the_job_side_is_the_modules_that_run_as_the_user():
    assert set(JOB_MODULES) >= {"extension", "jobfiles", "probe", "walltime", "scheduler_commands", "logindefs"}


@pytest.mark.parametrize("module", JOB_MODULES)
def test_a_job_side_module_imports_only_the_standard_library_and_the_job_side(module):
    assert foreign_imports(JOB_DIR / f"{module}.py", EXTENSION_MODULES.get(module, set())) == []


def test_the_check_finds_an_import_of_the_hub_side(tmp_path):
    # What singleuser.py did before the job side had its own walltime and scheduler table.
    module = tmp_path / "extension.py"
    module.write_text("from ..walltime import parse_end\nimport hpchub.schedulers\nimport jupyterhub.utils\n"
                      "def f():\n    from jupyterhub.httpclient import fetch\n    import tornado\n")
    assert foreign_imports(module, EXTENSION_MODULES["extension"]) == [
        "extension.py:1: ..walltime", "extension.py:2: hpchub.schedulers", "extension.py:3: jupyterhub.utils",
        "extension.py:5: jupyterhub.httpclient"]
    assert foreign_imports(module, set())[-1] == "extension.py:6: tornado"


def test_the_check_finds_an_absolute_import_of_the_job_side(tmp_path):
    # It would work where hpchub is installed, and fail in the job's bundle (hpchub_job) where it is not.
    module = tmp_path / "walltime.py"
    module.write_text("from hpchub.job.scheduler_commands import for_scheduler\nfrom .logindefs import UID_MIN\n")
    assert foreign_imports(module, set()) == ["walltime.py:1: hpchub.job.scheduler_commands"]


LOADED = """
import json, sys
before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_loaded_by(module: str) -> list[str]:
    """The modules a fresh Python of the jobs' environment loads to import ``module`` (hpchub's
    package __init__ included: it is imported first)."""
    result = subprocess.run([PYTHON, "-c", LOADED, module], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", JOB_MODULES)
def test_importing_a_job_side_module_loads_nothing_of_the_hub(module):
    loaded = modules_loaded_by("hpchub.job" if module == "__init__" else f"hpchub.job.{module}")
    hub_side = [name for name in loaded if name.startswith("hpchub") and name != "hpchub"
                and not name.startswith("hpchub.job")]
    assert hub_side == []
    # jupyter_server is imported by the extension's hooks only when the server loads it; the engine
    # launchers load what ipyparallel's launchers load, and nothing more.
    allowed = set(sys.stdlib_module_names) | {"hpchub"}
    if module == "engines":
        allowed |= {name.split(".")[0] for name in modules_loaded_by("ipyparallel.cluster.launcher")}
    outside = sorted({name.split(".")[0] for name in loaded} - allowed)
    assert outside == [], f"hpchub.job.{module} loads {outside}"


def test_hpchub_job_loads_neither_pathlib_nor_logging():
    # It starts once per submission, estimate, cancel and clean-up, as the user: in a 500-user storm its
    # start is the hub's largest cost per spawn after JupyterHub's own (bench/hub500.py); these two took
    # half of its 20 ms of imports.
    loaded = modules_loaded_by("hpchub.job.jobfiles")
    assert "pathlib" not in loaded and "logging" not in loaded, loaded


def test_the_extension_builds_its_handler_with_jupyter_server_alone():
    # jupyter_server brings its own dependencies (tornado, jinja2, prometheus_client ...); what must
    # not come is JupyterHub, the hub side of hpchub, or what only the hub needs.
    code = ("import sys, hpchub.job.extension as e; e.walltime_handler(); e.client_ssl_context(None, None, None);"
            "print([m for m in sys.modules if m.split('.')[0] in ('jupyterhub', 'pydantic', 'paramiko')"
            " or (m.startswith('hpchub.') and not m.startswith('hpchub.job'))])")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_servers_check_reads_each_version_as_importlib_metadata_does_without_importing_it():
    """hpchub_job.requirements runs before every server: it reads versions from the names of the
    dist-info directories on sys.path (importing importlib.metadata cost ~20 ms of CPU per start)."""
    from importlib import metadata

    from hpchub.job.requirements import installed_version

    names = sorted({distribution.metadata["Name"] for distribution in metadata.distributions()})
    assert len(names) > 50 and {"jupyterhub", "jupyter_server"} <= {name.replace("-", "_").lower() for name in names}
    assert {name: installed_version(name) for name in names} == {name: metadata.version(name) for name in names}
    assert installed_version("Jupyter-Server") == metadata.version("jupyter_server")  # names compare as packaging's
    assert installed_version("no-such-distribution-of-hpchub") is None
    code = ("import sys; from hpchub.job.requirements import installed_version; "
            "assert installed_version('jupyterhub'); print('importlib.metadata' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
