"""Paths and small helpers shared by the tests (importable: setup.cfg puts tests/ on sys.path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITE_CONFIGS = REPO / "site-configs"
CLUSTER_SCRIPTS = REPO / "tests" / "clusters"
