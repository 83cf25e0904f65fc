"""The docs: README is the landing page, and the generated reference (docs/_ext/hpchub_reference.py)
documents every site-config key and every setting, and says so when one lacks its words.
(tests/run.sh builds the whole site with warnings as errors: bash docs/build.sh.)"""

from __future__ import annotations

import importlib.util
import logging
import sys
from types import ModuleType

import pytest
from helpers.support import REPO
from pydantic import BaseModel, Field
from traitlets import Integer
from traitlets.config import Configurable


def reference_generator() -> ModuleType:
    pytest.importorskip("sphinx", reason="the docs extra (tests/setup-python.sh installs it)")
    spec = importlib.util.spec_from_file_location("hpchub_reference", REPO / "docs" / "_ext" / "hpchub_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_readme_is_a_landing_page_with_the_two_commands_and_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    for command in ("bash examples/local.sh", "bash tests/run.sh", "bash docs/build.sh"):
        assert command in readme
    assert "State of the work" not in readme
    assert "](docs/screenshots/" in readme


def test_every_site_config_key_and_setting_of_this_code_is_documented(caplog):
    generator = reference_generator()
    with caplog.at_level(logging.WARNING):
        keys = generator.site_config_page()
        settings = generator.traitlets_page("t", "", [spec for specs in generator.TRAITLETS_CLASSES.values()
                                                      for spec in specs])
        options = generator.cli_page()
    assert [record.getMessage() for record in caplog.records] == []
    assert "| `walltime` | walltime (HH:MM:SS or D-HH:MM:SS) | required |" in keys
    assert "`clusters.<name>.submit`" in keys and "`profiles[].resources`" in keys
    assert "### `c.HPCSpawner.site_config`" in settings and "### `c.HPCEngineSetLauncher.options`" in settings
    assert "## hpchub check" in options


class Undocumented(BaseModel):
    """A model with one key that has no description."""

    plain: int = 1
    described: int = Field(default=2, description="has one")


class Quiet(Configurable):
    loud = Integer(1, config=True, help="has help")
    silent = Integer(2, config=True)


def test_a_key_or_a_setting_without_its_words_is_a_warning(caplog, monkeypatch):
    generator = reference_generator()
    monkeypatch.setattr(generator, "_load", lambda spec: {"model": Undocumented, "traits": Quiet}[spec])
    monkeypatch.setattr(generator, "SITE_CONFIG_MODEL", "model")
    with caplog.at_level(logging.WARNING):
        generator.site_config_page()
        generator.traitlets_page("t", "", ["traits"])
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["site config key Undocumented.plain has no description (Field(description=...))",
                        "setting Quiet.silent has no help text"]
