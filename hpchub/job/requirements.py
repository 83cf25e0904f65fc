"""The server job's check of its environment, run by the job script just before the server starts,
with the Python of ``jupyterhub-singleuser`` (the job's bundle on its PYTHONPATH):

    python -m hpchub_job.requirements

A missing or too old piece ends the job at once with one line ``hpchub: ...`` naming it, which the
spawn shows from the job's log, instead of a server that starts without hpchub's extension and a
spawn that waits out its start timeout. A version newer than the supported range is tried, with a
warning. Standard library only, like all of hpchub/job/.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

# (distribution, what it is for, lowest supported major, first major not tested)
SUPPORTED = (
    ("jupyterhub", "JupyterHub's single-user server (jupyterhub-singleuser)", 4, 7),
    ("jupyter_server", "hpchub's server extension", 2, 3),
)


def major_minor(version: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def supported_range(lowest: int, newest: int) -> str:
    return f"{lowest}.x" if newest == lowest + 1 else f"{lowest}.x to {newest - 1}.x"


def problems(version_of: Callable[[str], str | None] = installed_version,
             python: str | None = None) -> tuple[list[str], list[str]]:
    """(what stops the server, what is only warned about), each one line naming the piece;
    ``version_of``: a distribution's version in the environment of ``python`` (default: this one)."""
    where = f"the environment of {python or sys.executable}"
    errors: list[str] = []
    warnings: list[str] = []
    for distribution, purpose, lowest, newest in SUPPORTED:
        wanted = supported_range(lowest, newest)
        version = version_of(distribution)
        if version is None:
            errors.append(f"{distribution} is not installed in {where}; {purpose} needs {distribution} {wanted}")
            continue
        parsed = major_minor(version)
        if parsed is None or parsed[0] < lowest:
            errors.append(f"{distribution} {version} in {where} is too old; {purpose} needs {distribution} {wanted}")
        elif parsed[0] >= newest:
            warnings.append(f"{distribution} {version} is newer than hpchub supports ({wanted}); trying it anyway")
    return errors, warnings


def main() -> int:
    errors, warnings = problems()
    for line in warnings:
        print(f"hpchub: warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"hpchub: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
