"""The job side's bundle (hpchub.core.bundle) and the server job's environment check
(hpchub.job.requirements): what a server job carries, that hpchub-job accepts every name of it, and
that it runs in environments without hpchub (tests/setup-envs.sh makes them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.support import REPO, write_job_side

import hpchub.job
from hpchub.core import bundle
from hpchub.job import jobfiles, requirements

ENVS = Path("/opt/hpchub-test/envs")
JOB_DIR = Path(hpchub.job.__file__).parent


def env_python(name: str) -> str:
    python = ENVS / name / "bin" / "python"
    assert python.exists(), f"{python} missing: run bash tests/setup-envs.sh"
    return str(python)


def test_the_bundle_is_the_job_sides_modules_under_their_own_name_the_labextension_and_a_dist_info():
    files = bundle.job_side_files()
    modules = {path.name for path in JOB_DIR.glob("*.py") if path.stem not in hpchub.job.NOT_IN_BUNDLE}
    assert {"__init__.py", "extension.py", "requirements.py", "walltime.py", "scheduler_commands.py"} <= modules
    assert {name for name in files if name.startswith("python/hpchub_job/")} == {f"python/hpchub_job/{m}" for m in modules}
    for module in modules:
        assert files[f"python/hpchub_job/{module}"] == (JOB_DIR / module).read_text()
    version = hpchub.__version__
    assert files[f"python/hpchub_job-{version}.dist-info/entry_points.txt"] == bundle.entry_points_text(hpchub.job.ENTRY_POINTS)
    assert "Name: hpchub-job\n" in files[f"python/hpchub_job-{version}.dist-info/METADATA"]
    extension = REPO / "labextensions" / "hpchub-walltime"
    (remote_entry,) = extension.glob("static/remoteEntry.*.js")
    assert files[f"jupyter/labextensions/hpchub-walltime/static/{remote_entry.name}"] == remote_entry.read_text()
    assert files["jupyter/labextensions/hpchub-walltime/package.json"] == (extension / "package.json").read_text()
    # Sent with every server job: small (the check of collaboration and jupytext took it past 48 KiB,
    # the Slurm estimate's backfill questions in scheduler_commands past 56 KiB).
    assert bundle.size(files) < 60 * 1024


def test_hpchub_job_accepts_every_name_of_the_bundle():
    files = bundle.job_side_files()
    assert len(files) + 4 <= jobfiles.MAX_FILES  # with the secrets env, TLS files and the site copy
    for name in files:
        jobfiles.file_name_parts(name)


def test_entry_points_text_is_one_section_per_group():
    text = bundle.entry_points_text({"ipyparallel.engine_launchers": {"hpchub": "hpchub_job.parallel:Engines"},
                                     "a.group": {"b": "hpchub_job.m:B", "a": "hpchub_job.m:A"}})
    assert text == ("[a.group]\na = hpchub_job.m:A\nb = hpchub_job.m:B\n\n"
                    "[ipyparallel.engine_launchers]\nhpchub = hpchub_job.parallel:Engines\n")


IN_THE_JOB = """
import sys
before = set(sys.modules)
import importlib.metadata, importlib.util, json
import hpchub_job.extension as extension
distribution = importlib.metadata.distribution("hpchub-job")
print(json.dumps({
    "hpchub": importlib.util.find_spec("hpchub") is not None,
    "points": extension._jupyter_server_extension_points(),
    "version": distribution.version,
    "entry_points": sorted(f"{e.group} {e.name} {e.value}" for e in distribution.entry_points),
    "outside": sorted({m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names) - {"hpchub_job"}),
}))
"""


@pytest.mark.parametrize("env", ["jh4", "jh5", "jh6"])
def test_the_bundle_runs_in_an_environment_without_hpchub(tmp_path, env):
    paths = write_job_side(tmp_path)
    result = subprocess.run([env_python(env), "-c", IN_THE_JOB], capture_output=True, text=True, timeout=60, cwd="/",
                            env={"PATH": "/usr/bin:/bin", **paths})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["hpchub"] is False and found["points"] == [{"module": "hpchub_job.extension"}]
    assert found["version"] == hpchub.__version__ and found["outside"] == []
    assert found["entry_points"] == sorted(f"{group} {name} {value}" for group, entries in hpchub.job.ENTRY_POINTS.items()
                                           for name, value in entries.items())
    # JupyterLab of that environment finds the labextension on the job's JUPYTER_PATH.
    listed = subprocess.run([str(ENVS / env / "bin" / "jupyter"), "labextension", "list"], capture_output=True, text=True,
                            timeout=60, cwd="/", env={"PATH": f"{ENVS / env}/bin:/usr/bin:/bin", "HOME": str(tmp_path), **paths})
    assert listed.returncode == 0, listed.stderr
    assert f"{tmp_path}/jupyter/labextensions" in listed.stdout + listed.stderr
    assert "hpchub-walltime v0.1.0 enabled" in (listed.stdout + listed.stderr).replace("\x1b[32m", "").replace("\x1b[0m", "")


@pytest.mark.parametrize("versions, errors, warnings", [
    ({"jupyterhub": "5.2.1", "jupyter_server": "2.14.0"}, [], []),
    ({"jupyterhub": "4.0.0", "jupyter_server": "2.0.0"}, [], []),
    ({"jupyter_server": "2.14.0"}, ["jupyterhub is not installed in the environment of PY; JupyterHub's single-user "
                                    "server (jupyterhub-singleuser) needs jupyterhub 4.x to 6.x"], []),
    ({"jupyterhub": "3.1.1", "jupyter_server": "2.14.0"}, ["jupyterhub 3.1.1 in the environment of PY is too old; "
                                                           "JupyterHub's single-user server (jupyterhub-singleuser) "
                                                           "needs jupyterhub 4.x to 6.x"], []),
    ({"jupyterhub": "4.1.6", "jupyter_server": "1.24.0"}, ["jupyter_server 1.24.0 in the environment of PY is too old; "
                                                           "hpchub's server extension needs jupyter_server 2.x"], []),
    ({"jupyterhub": "7.0.0b1", "jupyter_server": "3.0.0"}, [], [
        "jupyterhub 7.0.0b1 is newer than hpchub supports (4.x to 6.x); trying it anyway",
        "jupyter_server 3.0.0 is newer than hpchub supports (2.x); trying it anyway"]),
])
def test_the_environment_check_names_what_is_missing_too_old_or_untested(versions, errors, warnings):
    assert requirements.problems(versions.get, "PY") == (errors, warnings)


@pytest.mark.parametrize("env, code, line", [
    ("jh4", 0, ""),
    ("jh3", 1, "hpchub: jupyterhub 3."),
    ("no-singleuser", 1, "hpchub: jupyterhub is not installed in the environment of"),
])
def test_the_environment_check_in_real_environments(tmp_path, env, code, line):
    result = subprocess.run([env_python(env), "-m", "hpchub_job.requirements"], capture_output=True, text=True, timeout=60,
                            cwd="/", env={"PATH": "/usr/bin:/bin", **write_job_side(tmp_path)})
    assert result.returncode == code and result.stdout == ""
    assert result.stderr.startswith(line) if line else result.stderr == ""
    if line:
        assert f"{ENVS / env}/bin/python" in result.stderr


def test_the_job_script_fails_at_once_without_the_server_command(tmp_path):
    # The launch part of a rendered server job, in a shell whose PATH has no jupyterhub-singleuser.
    rendered = subprocess.run([os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/hpchub", "render",
                               str(REPO / "site-configs" / "local-slurm.yaml"), "--profile", "small", "--user", "alice"],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    script = rendered.stdout
    launch = script[script.index("hpchub_fail() {"):script.index("\n", script.index("hpchub_fail() {"))] + "\n" + \
        script[script.index("export PYTHONPATH="):]
    # The job's directory with its bundle, where hpchub-job would write it.
    write_job_side(tmp_path)
    launch = launch.replace("/home/alice/.hpchub/jobs/hpchub-alice-small", str(tmp_path))
    result = subprocess.run(["bash", "-c", launch], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.startswith("hpchub: jupyterhub-singleuser is not on the PATH on ")
    # `hpchub render` says on stderr what the submission writes into the job's directory.
    assert "python/hpchub_job/extension.py" in rendered.stderr and "/home/alice/.hpchub/jobs/hpchub-alice-small/" \
        in rendered.stderr
