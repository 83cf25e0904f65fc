"""Paths and small helpers shared by the tests (importable: setup.cfg puts tests/ on sys.path)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITE_CONFIGS = REPO / "site-configs"
CLUSTER_SCRIPTS = REPO / "tests" / "clusters"


def run_hpchub(*args: str) -> subprocess.CompletedProcess:
    """The hpchub command, as an admin runs it."""
    return subprocess.run([sys.executable, "-m", "hpchub.cli", *args], capture_output=True, text=True, timeout=120)
