"""The walltime in a real browser, on the real local Slurm and Grid Engine at once: the time left on
the hub's home page and in JupyterLab, the warning before the end with every open notebook saved,
and the home page saying "walltime reached" once each scheduler killed its job.

One hub whose site has both clusters; bob runs two named servers, one short job on each scheduler
(1 minute, Slurm's shortest time limit, warned 30 s before its end), side by side: about 70 s in all.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import run_hub
from helpers.profiles import DEFAULT_QUEUE
from helpers.support import REPO, SITE_CONFIGS

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.sge]

USER = "bob"
SCHEDULERS = ("slurm", "sge")  # also bob's server names
WALLTIME_SECONDS = 60  # whole minutes: Slurm counts time limits in minutes
# The two JupyterLabs must be open and edited before the warning (the test fails, never passes
# vacuously, when they are not).
WARNING_SECONDS = 30
EDIT = "# edited in the browser, saved by the walltime warning"


def notebook_path(scheduler: str) -> Path:
    return Path(f"/home/{USER}/hpchub-walltime-test-{scheduler}.ipynb")


def both_clusters_site_text() -> str:
    """The local Slurm and Grid Engine clusters in one site, with a 1-minute profile on each."""
    sites = {scheduler: yaml.safe_load((SITE_CONFIGS / f"local-{scheduler}.yaml").read_text())
             for scheduler in SCHEDULERS}
    return yaml.safe_dump({
        "site": "hpchub local Slurm and Grid Engine",
        "clusters": {name: cluster for site in sites.values() for name, cluster in site["clusters"].items()},
        "profiles": [
            {"slug": f"short-{scheduler}", "name": f"One minute on {scheduler}", "cluster": scheduler,
             "queue": DEFAULT_QUEUE[scheduler], "resources": {"cores": 1, "memory": "1G", "walltime": "00:01:00"}}
            for scheduler in SCHEDULERS
        ],
    })


@pytest.fixture
def hub(slurm_cluster, sge_cluster, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-walltime")
    # The demo config, with a warning that comes early enough to be tested.
    config = state / "jupyterhub_config.py"
    config.write_text(f"load_subconfig({str(REPO / 'examples' / 'jupyterhub_config.py')!r})\n"
                      f"c.HPCSpawner.walltime_warning = {WARNING_SECONDS}\n")
    hubs = run_hub(state, both_clusters_site_text(), (USER,), poll_interval=2, config_file=config,
                   leftover_slurm_profiles=("short-slurm.s-slurm",))
    started = next(hubs)
    try:
        yield started
    finally:
        for name in SCHEDULERS:  # run_hub stops the default server only
            started.api("DELETE", f"/users/{USER}/servers/{name}")
        next(hubs, None)


@pytest.fixture
def notebooks():
    """A notebook of bob's with one cell per scheduler, removed at the end."""
    for scheduler in SCHEDULERS:
        path = notebook_path(scheduler)
        path.write_text(json.dumps({
            "cells": [{"cell_type": "code", "execution_count": None, "id": "a1", "metadata": {}, "outputs": [],
                       "source": ["x = 1"]}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5,
        }))
        shutil.chown(path, USER, USER)
    yield
    for scheduler in SCHEDULERS:
        path = notebook_path(scheduler)
        path.unlink(missing_ok=True)
        (path.parent / ".ipynb_checkpoints" / f"{path.stem}-checkpoint.ipynb").unlink(missing_ok=True)


def test_time_left_warning_save_and_walltime_reached_on_both_schedulers(hub, notebooks):
    began = time.monotonic()
    for scheduler in SCHEDULERS:
        response = hub.api("POST", f"/users/{USER}/servers/{scheduler}", json={"profile": f"short-{scheduler}"})
        assert response.status_code in (201, 202), response.text
    servers = {scheduler: hub.wait_for_server(USER, name=scheduler, timeout=150) for scheduler in SCHEDULERS}
    job_ids = {scheduler: server["state"]["job_id"] for scheduler, server in servers.items()}
    ends = {scheduler: server["state"]["job_ends"] for scheduler, server in servers.items()}
    for scheduler in SCHEDULERS:
        assert abs(ends[scheduler] - (time.time() + WALLTIME_SECONDS)) < 30, (scheduler, ends, time.time())
    with chromium() as browser:
        home = logged_in_page(browser, hub.url, USER)
        home.goto(f"{hub.url}/hub/home")
        for scheduler in SCHEDULERS:
            row = home.locator(f"#hpchub-jobs tr[data-server-name='{scheduler}']")
            assert row.locator(".hpchub-job-id").inner_text() == job_ids[scheduler]
            assert row.locator(".hpchub-job-state").inner_text().startswith("running on ")
            assert re.fullmatch(r"1 min|\d+ s", row.locator(".hpchub-time-left").inner_text())
            assert re.fullmatch(r"\d\d:\d\d", row.locator(".hpchub-job-ends").inner_text())
        screenshot(home, "walltime-home")

        labs = {}
        for scheduler in SCHEDULERS:
            lab = home.context.new_page()
            lab.goto(f"{hub.url}/user/{USER}/{scheduler}/lab/tree/{notebook_path(scheduler).name}")
            label = lab.locator("#hpchub-walltime")
            label.wait_for(timeout=60_000)
            assert re.match(r"Time left: (1 min|\d+ s), ends ", label.inner_text()), label.inner_text()
            # Edit the cell, without saving.
            editor = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
            editor.click()
            lab.keyboard.press("End")
            lab.keyboard.type(f"  {EDIT}")
            assert EDIT not in notebook_path(scheduler).read_text()
            screenshot(lab, f"walltime-lab-{scheduler}")
            print(f"{scheduler}: edited {ends[scheduler] - WARNING_SECONDS - time.time():.0f} s before the warning")
            assert ends[scheduler] - WARNING_SECONDS - time.time() > 0, \
                f"{scheduler}: the edit came after the warning: the test proves nothing"
            labs[scheduler] = lab

        for scheduler, lab in labs.items():
            banner = lab.locator("#hpchub-walltime-warning")
            banner.wait_for(timeout=(ends[scheduler] - WARNING_SECONDS - time.time() + 30) * 1000)
            assert "walltime ends" in banner.inner_text()
            notebook = notebook_path(scheduler)
            deadline = time.monotonic() + 20
            while EDIT not in notebook.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert EDIT in notebook.read_text(), f"{scheduler}: the open notebook was not saved at the warning"
            assert notebook.owner() == USER  # written by bob's server, in bob's job
            screenshot(lab, f"walltime-warning-{scheduler}")

        # Each scheduler kills its job at its walltime; the hub notices and says why.
        for scheduler in SCHEDULERS:
            hub.wait_for_server(USER, ready=False, name=scheduler, timeout=max(0, ends[scheduler] - time.time()) + 120)
        home.goto(f"{hub.url}/hub/home")
        for scheduler in SCHEDULERS:
            reason = home.locator(f"#hpchub-jobs tr[data-server-name='{scheduler}'] .hpchub-end-reason")
            assert reason.inner_text() == "ended: walltime reached", scheduler
        screenshot(home, "walltime-ended")
    print(f"short-walltime test on both schedulers took {time.monotonic() - began:.0f} s")
