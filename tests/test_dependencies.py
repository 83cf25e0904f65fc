"""install_requires is what hpchub imports at run time (plus the spawners it builds on): nothing
that only the tests or benchmarks use, nothing the product no longer imports."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

from helpers.support import REPO

# Declared by design though hpchub does not import them: sites run it beside these spawners.
BUILT_ON = {"batchspawner", "wrapspawner"}
# Imported by the job side from the server's own environment, and only when a profile asks for it
# (hpchub/job/requirements.py: environment.jupytext): not the hub's to install.
FROM_THE_SERVERS_ENVIRONMENT = {"jupytext"}


def distribution_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def declared(option: str, section: str = "options") -> set[str]:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    return {distribution_name(line) for line in setup[section][option].splitlines() if line.strip()}


def imported_distributions(package: Path) -> set[str]:
    modules: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {package.name} - FROM_THE_SERVERS_ENVIRONMENT
    owners = importlib.metadata.packages_distributions()
    return {distribution_name(owners[module][0]) for module in third_party}


def test_install_requires_is_what_the_product_imports():
    assert declared("install_requires") == imported_distributions(REPO / "hpchub") | BUILT_ON


def test_test_and_lint_tools_are_extras_only():
    extras = declared("test", "options.extras_require") | declared("lint", "options.extras_require")
    assert {"pytest", "requests", "ruff", "mypy"} <= extras
    assert not extras & declared("install_requires")
