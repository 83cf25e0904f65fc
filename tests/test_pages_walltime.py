"""The walltime in a real browser, on the real local Slurm and Grid Engine: the time left on the hub's
home page and in JupyterLab, the warning before the end with every open notebook saved, and the
home page saying "walltime reached" once the scheduler killed the job.

One short job per scheduler (3 minutes, warned 2 minutes before its end): about 4 minutes each.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import run_hub, spawn
from helpers.profiles import DEFAULT_QUEUE, local_site_text
from helpers.support import REPO

pytestmark = [pytest.mark.e2e]

USER = "bob"
PROFILE = "walltime-short"
WALLTIME_SECONDS = 180  # whole minutes: Slurm counts time limits in minutes
WARNING_SECONDS = 120
NOTEBOOK = Path(f"/home/{USER}/hpchub-walltime-test.ipynb")
EDIT = "# edited in the browser, saved by the walltime warning"


def short_walltime_profile(scheduler: str) -> str:
    return f"""
  - slug: {PROFILE}
    name: "Three minutes"
    cluster: {scheduler}
    queue: {DEFAULT_QUEUE[scheduler]}
    resources: {{cores: 1, memory: 1G, walltime: "00:03:00"}}
"""


@pytest.fixture
def hub(scheduler, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"hub-walltime-{scheduler}")
    # The demo config, with a warning that comes early enough to be tested.
    config = state / "jupyterhub_config.py"
    config.write_text(f"load_subconfig({str(REPO / 'examples' / 'jupyterhub_config.py')!r})\n"
                      f"c.HPCSpawner.walltime_warning = {WARNING_SECONDS}\n")
    site_text = local_site_text(scheduler, short_walltime_profile(scheduler))
    yield from run_hub(state, site_text, (USER,),
                       poll_interval=5, config_file=config, leftover_slurm_profiles=(PROFILE,))


@pytest.fixture
def notebook():
    """A notebook of bob's with one cell, removed at the end."""
    NOTEBOOK.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "a1", "metadata": {}, "outputs": [],
                   "source": ["x = 1"]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))
    shutil.chown(NOTEBOOK, USER, USER)
    yield NOTEBOOK
    NOTEBOOK.unlink(missing_ok=True)
    for checkpoint in NOTEBOOK.parent.glob(".ipynb_checkpoints/hpchub-walltime-test-checkpoint.ipynb"):
        checkpoint.unlink()


def test_time_left_warning_save_and_walltime_reached(hub, scheduler, notebook):
    began = time.monotonic()
    server = spawn(hub, USER, {"profile": PROFILE}, timeout=150)
    job_id, ends = server["state"]["job_id"], server["state"]["job_ends"]
    assert abs(ends - (time.time() + WALLTIME_SECONDS)) < 60, (ends, time.time())
    with chromium() as browser:
        page = logged_in_page(browser, hub.url, USER)
        page.goto(f"{hub.url}/hub/home")
        row = page.locator("#hpchub-jobs tr[data-server-name='']")
        assert row.locator(".hpchub-job-id").inner_text() == job_id
        assert row.locator(".hpchub-job-state").inner_text().startswith("running on ")
        assert re.fullmatch(r"[1-3] min|\d+ s", row.locator(".hpchub-time-left").inner_text())
        assert re.fullmatch(r"\d\d:\d\d", row.locator(".hpchub-job-ends").inner_text())
        screenshot(page, f"walltime-home-{scheduler}")

        page.goto(f"{hub.url}/user/{USER}/lab/tree/{notebook.name}")
        label = page.locator("#hpchub-walltime")
        label.wait_for(timeout=60_000)
        assert re.match(r"Time left: ([1-3] min|\d+ s), ends ", label.inner_text()), label.inner_text()
        # Edit the cell, without saving.
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.press("End")
        page.keyboard.type(f"  {EDIT}")
        assert EDIT not in notebook.read_text()
        screenshot(page, f"walltime-lab-{scheduler}")
        seconds_to_warning = ends - WARNING_SECONDS - time.time()
        assert seconds_to_warning > 0, "the edit came after the warning: the test proves nothing"

        banner = page.locator("#hpchub-walltime-warning")
        banner.wait_for(timeout=(seconds_to_warning + 30) * 1000)
        assert "walltime ends" in banner.inner_text()
        deadline = time.monotonic() + 20
        while EDIT not in notebook.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert EDIT in notebook.read_text(), "the open notebook was not saved at the warning"
        assert notebook.owner() == USER  # written by bob's server, in bob's job
        screenshot(page, f"walltime-warning-{scheduler}")

        # The scheduler kills the job at its walltime; the hub notices and says why.
        hub.wait_for_server(USER, ready=False, timeout=max(0, ends - time.time()) + 120)
        page.goto(f"{hub.url}/hub/home")
        reason = page.locator("#hpchub-jobs tr[data-server-name=''] .hpchub-end-reason")
        assert reason.inner_text() == "ended: walltime reached"
        screenshot(page, f"walltime-ended-{scheduler}")
    print(f"{scheduler}: short-walltime test took {time.monotonic() - began:.0f} s")
