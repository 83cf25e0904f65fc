"""A Python environment like a user's kernel in a server job: ipyparallel, no hpchub installed, and
the job side first on its path as it travels with the job (a package ``hpchub_job`` with its own
``*.dist-info/entry_points.txt``, made from hpchub.job.IPYPARALLEL_ENTRY_POINTS).

The environment is the test venv's site-packages without hpchub, as symlinks, run with ``python -S``
(no site-packages of its own), so ``import hpchub`` fails in it."""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

import hpchub.job

BUNDLE_PACKAGE = "hpchub_job"


def write_job_side(target: Path) -> Path:
    """The job side as a package of its own under ``target`` (the installed hpchub.job's modules),
    with the entry points ipyparallel finds; ``target``."""
    package = target / BUNDLE_PACKAGE
    package.mkdir(parents=True)
    for module in Path(hpchub.job.__file__).parent.glob("*.py"):
        shutil.copy(module, package / module.name)
    info = target / f"{BUNDLE_PACKAGE}-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {BUNDLE_PACKAGE}\nVersion: 0\n")
    groups = [f"[{group}]\n" + "".join(f"{name} = {BUNDLE_PACKAGE}.{value}\n" for name, value in entries.items())
              for group, entries in hpchub.job.IPYPARALLEL_ENTRY_POINTS.items()]
    (info / "entry_points.txt").write_text("\n".join(groups))
    return target


def kernel_environment(with_hpchub: bool = False) -> tuple[list[str], dict[str, str], Path]:
    """(argv of its Python, environment variables to add, its directory: remove it when done), readable
    by the test users. ``with_hpchub``: the venv as it is (hpchub installed) plus the job side first."""
    top = Path(tempfile.mkdtemp(prefix="hpchub-kernel-env-"))
    top.chmod(0o755)
    bundle = write_job_side(top / "job")
    python = str(Path(os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv")) / "bin" / "python")
    if with_hpchub:
        argv, path = [python], [str(bundle)]
    else:
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(Path(python).parent.parent)}))
        site = top / "site"
        site.mkdir()
        for entry in purelib.iterdir():
            if entry.name != "hpchub" and not entry.name.startswith("hpchub-"):
                (site / entry.name).symlink_to(entry)
        argv, path = [python, "-S"], [str(bundle), str(site)]
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return argv, {"PYTHONPATH": ":".join(path)}, top
