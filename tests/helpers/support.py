"""Paths and small helpers shared by the tests (importable: setup.cfg puts tests/ on sys.path)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE_CONFIGS = REPO / "site-configs"
CLUSTER_SCRIPTS = REPO / "tests" / "clusters"

# What hpchub-job wrote to stderr (exit 2) for ``hpchub-job estimate`` before it had that subcommand:
# an older hpchub on a cluster (hpchub/job/jobfiles.py's USAGE then).
OLD_JOBFILES_USAGE = """hpchub-job: usage: hpchub-job prepare KEY            (stdin: {"files": {NAME: TEXT}})
       hpchub-job submit KEY SCHEDULER   (stdin: {"files": {NAME: TEXT}, "script": TEXT[, "keep_days": N]};
                                         SCHEDULER: slurm|sge; keep_days: then clean KEEP_DAYS)
       hpchub-job remove KEY
       hpchub-job tail LOGNAME LINES
       hpchub-job clean KEEP_DAYS"""


def run_hpchub(*args: str) -> subprocess.CompletedProcess:
    """The hpchub command, as an admin runs it."""
    return subprocess.run([sys.executable, "-m", "hpchub.admin.cli", *args], capture_output=True, text=True, timeout=120)


def run_as_user(user: str, code: str, timeout: float = 180) -> str:
    """Run Python ``code`` as ``user`` (as a notebook kernel would) with the hpchub venv; return
    the last line it prints."""
    import os
    import shutil
    import tempfile
    import textwrap

    python = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/python"
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-as-user-"))
    shutil.chown(scratch, user)  # ipyparallel writes into the working directory
    script = scratch / "run.py"
    script.write_text(textwrap.dedent(code))
    script.chmod(0o644)
    try:
        result = subprocess.run(["sudo", "-n", "-u", user, python, str(script)], capture_output=True, text=True,
                                timeout=timeout, cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


_READABLE_DIR: Path | None = None


def user_readable(name: str, text: str) -> Path:
    """Write ``text`` to a file the test users can read (jobs and notebooks read the site config;
    the checkout and pytest's tmp dirs may be root-only)."""
    import tempfile

    global _READABLE_DIR
    if _READABLE_DIR is None:
        _READABLE_DIR = Path(tempfile.mkdtemp(prefix="hpchub-test-configs-"))
        _READABLE_DIR.chmod(0o755)
    path = _READABLE_DIR / name
    path.write_text(text)
    path.chmod(0o644)
    return path


def write_stand_in_server(path: Path, body: str) -> None:
    """A stand-in ``jupyterhub-singleuser`` that runs the shell ``body`` (its arguments in ``$*``). Its
    ``#!`` line is this test's Python (which has JupyterHub and jupyter_server), so the job's check of
    the server's environment (the bundle's start-server.sh) passes as it would for a real server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    f"os.execvp('bash', ['bash', '-c', {body!r}, 'jupyterhub-singleuser', *sys.argv[1:]])\n")
    path.chmod(0o755)


def write_job_side(job_dir: Path) -> dict[str, str]:
    """The job side's bundle (hpchub.core.bundle) written under ``job_dir`` as hpchub-job writes it, and
    the environment the job script gives the server for it (PYTHONPATH, JUPYTER_PATH)."""
    from hpchub.core import bundle

    for name, text in bundle.job_side_files().items():
        path = job_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"PYTHONPATH": str(job_dir / bundle.PYTHON_DIR), "JUPYTER_PATH": str(job_dir / bundle.JUPYTER_DIR)}
