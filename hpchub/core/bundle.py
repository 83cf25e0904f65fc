"""The job side as it travels with every server job: written into the job's directory with its
other files (``hpchub-job`` creates the subdirectories), so the job's environment needs JupyterHub's
single-user server and nothing of hpchub. What the job directory gets:

- ``python/hpchub_job/``: the modules of hpchub/job/ that run in the job (hpchub.job.NOT_IN_BUNDLE
  stay out) under their own top-level name (hpchub.job.BUNDLE_PACKAGE), so they never shadow an
  hpchub installed in the job's environment; the job script puts ``python`` first on PYTHONPATH;
- ``python/hpchub_job-VERSION.dist-info/``: its METADATA and the entry_points.txt made from
  hpchub.job.ENTRY_POINTS, found by importlib.metadata on that PYTHONPATH;
- ``start-server.sh``: checks the server's environment (hpchub_job.requirements), then execs the
  server; the job script runs it on the node, or inside the job's container;
- ``jupyter/labextensions/hpchub-walltime/``: the prebuilt JupyterLab extension (hpchub.labextensions);
  the job script puts ``jupyter`` first on JUPYTER_PATH, where JupyterLab looks for ``labextensions``.

The files are read from the installed hpchub once per process (importlib.resources).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import metadata, resources
from types import MappingProxyType

from .. import job as job_side

PYTHON_DIR = "python"  # first on the job's PYTHONPATH
JUPYTER_DIR = "jupyter"  # first on the job's JUPYTER_PATH
LABEXTENSION = "hpchub-walltime"
START_SCRIPT = "start-server.sh"  # in hpchub/job/ and at the top of the bundle
DISTRIBUTION = "hpchub-job"  # the bundle's name for importlib.metadata


def entry_points_text(groups: Mapping[str, Mapping[str, str]]) -> str:
    """An entry_points.txt: one ``[group]`` section per group, ``name = module:attr`` lines."""
    sections = []
    for group, entries in sorted(groups.items()):
        sections.append(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in sorted(entries.items())))
    return "\n".join(sections)


def _hpchub_version() -> str:
    try:
        return metadata.version("hpchub")
    except metadata.PackageNotFoundError:  # imported from a checkout
        return "0"


@functools.lru_cache(maxsize=1)
def job_side_files() -> Mapping[str, str]:
    """Job file name (relative to the job directory) -> text, for the job side's bundle."""
    files: dict[str, str] = {}
    package = f"{PYTHON_DIR}/{job_side.BUNDLE_PACKAGE}"
    for module in sorted(resources.files(job_side).iterdir(), key=lambda entry: entry.name):
        stem, _, suffix = module.name.rpartition(".")
        if suffix == "py" and module.is_file() and stem not in job_side.NOT_IN_BUNDLE:
            files[f"{package}/{module.name}"] = module.read_text(encoding="utf-8")
    files[START_SCRIPT] = (resources.files(job_side) / START_SCRIPT).read_text(encoding="utf-8")
    version = _hpchub_version()
    dist_info = f"{PYTHON_DIR}/{job_side.BUNDLE_PACKAGE}-{version}.dist-info"
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n"
                                      "Summary: hpchub's job side, written into a server job's directory by hpchub\n")
    files[f"{dist_info}/entry_points.txt"] = entry_points_text(job_side.ENTRY_POINTS)
    extension = resources.files("hpchub.labextensions") / LABEXTENSION
    target = f"{JUPYTER_DIR}/labextensions/{LABEXTENSION}"
    files[f"{target}/package.json"] = (extension / "package.json").read_text(encoding="utf-8")
    # `jupyter labextension list` shows this: the copy is the job's, not an installed package's.
    files[f"{target}/install.json"] = json.dumps({
        "packageManager": "python", "packageName": "hpchub",
        "uninstallInstructions": "Written into this job's directory by hpchub; removed with the job's files"}, indent=2) + "\n"
    for static in sorted((extension / "static").iterdir(), key=lambda entry: entry.name):
        if static.name.endswith(".js"):
            files[f"{target}/static/{static.name}"] = static.read_text(encoding="utf-8")
    return MappingProxyType(files)


def size(files: Mapping[str, str]) -> int:
    """Bytes of the files' texts (UTF-8)."""
    return sum(len(text.encode("utf-8")) for text in files.values())
