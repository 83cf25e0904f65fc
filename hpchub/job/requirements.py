"""The server job's check of its environment, run by the job script just before the server starts,
with the Python of ``jupyterhub-singleuser`` (the job's bundle on its PYTHONPATH), told the server's
command line (start-server.sh):

    python -m hpchub_job.requirements jupyterhub-singleuser ARGS...

A missing or too old piece ends the job at once with one line ``hpchub: ...`` naming it, which the
spawn shows from the job's log, instead of a server that starts without hpchub's extension and a
spawn that waits out its start timeout. A version newer than the supported range is tried, with a
warning. What the profile's environment turns on in the server (hpchub.core.jobs puts the arguments
below on its command line) is checked too: real-time collaboration needs jupyter-collaboration, a
jupytext pairing needs jupytext, whose own parser judges the formats string. Standard library only,
like all of hpchub/job/ (jupytext is imported from the environment only when the server is told to
pair, to ask it about its own formats).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

# (distribution, what it is for, lowest supported major, first major not tested)
SUPPORTED = (
    ("jupyterhub", "JupyterHub's single-user server (jupyterhub-singleuser)", 4, 7),
    ("jupyter_server", "hpchub's server extension", 2, 3),
)


# The server arguments of a profile's environment.collaboration and environment.jupytext
# (hpchub.core.jobs.environment_server_args); the check below finds them on the server's command line.
COLLABORATION_EXTENSION = "jupyter_server_ydoc"  # jupyter-collaboration 3.x and newer: its server extension
COLLABORATION_ON = f"--ServerApp.jpserver_extensions={COLLABORATION_EXTENSION}=True"
JUPYTEXT_ON = "--ServerApp.jpserver_extensions=jupyterlab_jupytext=True"
JUPYTEXT_FORMATS = "--ContentsManager.formats="
# jupytext 1.16 is the JupyterLab 4 line, whose server extension is jupyterlab_jupytext.
JUPYTEXT_LOWEST = (1, 16)
# The jupyter-collaboration line for a JupyterLab line (its releases pin JupyterLab's minor), newest first.
COLLABORATION_FOR_LAB = (((4, 6), "5.x"), ((4, 4), "4.x"), ((4, 0), "3.x"))


def major_minor(version: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def installed_version(distribution: str) -> str | None:
    """The version of ``distribution`` this Python would import: from the name of the first
    ``NAME-VERSION.dist-info`` (or ``.egg-info``) on sys.path, the order importlib.metadata searches
    in. importlib.metadata itself is asked only when no such name is found (a zip, an egg-info
    without a version): importing it costs about 20 ms of CPU, most of what this check added to
    every server's start (bench/startcost.py)."""
    wanted = _project_name(distribution)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem, _, suffix = name.rpartition(".")
            project, _, version = stem.partition("-")
            if suffix in ("dist-info", "egg-info") and version and _project_name(project) == wanted:
                return version
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _project_name(name: str) -> str:
    """A distribution's name as packaging compares them (PEP 503): case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


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


def module_installed(module: str) -> bool:
    from importlib import util

    try:
        return util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def jupytext_refusal(formats: str) -> str | None:
    """What the environment's own jupytext says about ``formats`` (None: it takes them), parsed as its
    contents manager does: groups split on ";" where this jupytext has them, each a list of formats."""
    try:
        from jupytext import config
        from jupytext import formats as jupytext_formats

        normalize = getattr(config, "normalize_formats", None)
        groups = normalize(formats) if normalize is not None else [formats]
        for group in groups:
            for one in jupytext_formats.long_form_multiple_formats(group):
                jupytext_formats.validate_one_format(one)
    except Exception as error:  # jupytext's JupytextFormatError, or a jupytext that cannot be imported
        return str(error) or type(error).__name__
    return None


def collaboration_wanted(version_of: Callable[[str], str | None]) -> str:
    lab = major_minor(version_of("jupyterlab") or "")
    for lowest, line in COLLABORATION_FOR_LAB:
        if lab is not None and lab >= lowest:
            return f"jupyter-collaboration {line} (for JupyterLab {lab[0]}.{lab[1]})"
    return "jupyter-collaboration 3.x or newer (5.x for JupyterLab 4.6)"


def server_arg_problems(server_args: Sequence[str], version_of: Callable[[str], str | None] = installed_version,
                        has_module: Callable[[str], bool] = module_installed,
                        refusal: Callable[[str], str | None] = jupytext_refusal,
                        python: str | None = None) -> list[str]:
    """What stops the server from doing what its command line (``server_args``) turns on: real-time
    collaboration without jupyter-collaboration, a jupytext pairing without jupytext or with formats
    this jupytext refuses; each one line naming the piece and the site config key that asked for it."""
    where = f"the environment of {python or sys.executable}"
    errors: list[str] = []
    if COLLABORATION_ON in server_args and not has_module(COLLABORATION_EXTENSION):
        wanted = collaboration_wanted(version_of)
        old = version_of("jupyter-collaboration")
        if old is not None:
            errors.append(f"jupyter-collaboration {old} in {where} is too old; the profile's environment.collaboration "
                          f"needs {wanted}")
        else:
            errors.append(f"jupyter-collaboration is not installed in {where}; the profile's "
                          f"environment.collaboration needs {wanted}")
    formats = [arg[len(JUPYTEXT_FORMATS):] for arg in server_args if arg.startswith(JUPYTEXT_FORMATS)]
    if formats:
        wanted = f"jupytext {JUPYTEXT_LOWEST[0]}.{JUPYTEXT_LOWEST[1]} or newer"
        version = version_of("jupytext")
        parsed = major_minor(version) if version is not None else None
        if version is None:
            errors.append(f"jupytext is not installed in {where}; the profile's environment.jupytext needs {wanted}")
        elif parsed is None or parsed < JUPYTEXT_LOWEST:
            errors.append(f"jupytext {version} in {where} is too old; the profile's environment.jupytext needs {wanted}")
        else:
            refused = refusal(formats[-1])
            if refused is not None:
                errors.append(f"environment.jupytext {formats[-1]!r}: jupytext {version} refuses it: {refused}")
    return errors


def main(argv: Sequence[str] = ()) -> int:
    errors, warnings = problems()
    errors += server_arg_problems(argv)
    for line in warnings:
        print(f"hpchub: warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"hpchub: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
