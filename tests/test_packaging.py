"""The wheel carries the templates and declares its dependencies: installed into a fresh venv
outside the checkout, `hpchub render` prints the same script as the golden file."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers.support import REPO, SITE_CONFIGS

GOLDEN = REPO / "tests" / "golden" / "local-slurm--small.sh"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, cwd=out)
    (path,) = out.glob("hpchub-*.whl")
    return path


def test_wheel_contains_templates_and_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("base.sh.j2", "slurm.sh.j2", "sge.sh.j2", "partials/environment.sh.j2", "partials/launch.sh.j2"):
        assert f"hpchub/templates/{template}" in names
    # The JupyterLab extension, installed to $PREFIX/share/jupyter/labextensions (see setup.cfg).
    extension = "hpchub-0.1.0.data/data/share/jupyter/labextensions/hpchub-walltime"
    assert f"{extension}/package.json" in names and f"{extension}/install.json" in names
    assert any(n.startswith(f"{extension}/static/remoteEntry.") and n.endswith(".js") for n in names)
    # Exactly the checkout's modules: none left over from an earlier layout (setuptools' build/).
    modules = {name for name in names if name.startswith("hpchub/") and name.endswith(".py")}
    assert modules == {str(path.relative_to(REPO)) for path in (REPO / "hpchub").rglob("*.py")
                       if "templates" not in path.relative_to(REPO).parts}
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    for dependency in ("jupyterhub", "batchspawner", "wrapspawner", "ipyparallel", "jinja2", "pydantic", "PyYAML", "tornado"):
        assert any(line.split()[1].lower().startswith(dependency.lower()) for line in requires), dependency


def test_fresh_venv_outside_the_checkout_renders(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    # No PYTHONPATH: with the checkout on it, pip would take the checkout's hpchub.egg-info (left by
    # building the wheel) for an installed hpchub and skip the wheel.
    clean = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, env=clean)
    assert install.returncode == 0, install.stderr
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, env=clean)
    assert check.returncode == 0, check.stdout
    site = tmp_path / "site.yaml"
    shutil.copy(SITE_CONFIGS / "local-slurm.yaml", site)
    rendered = subprocess.run([str(venv / "bin" / "hpchub"), "render", str(site), "--profile", "small", "--user", "alice"],
                              capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert rendered.returncode == 0, rendered.stderr
    # The server job names its site config's absolute path: here the copy.
    assert rendered.stdout.replace(str(site), "$CHECKOUT/site-configs/local-slurm.yaml") == GOLDEN.read_text()
