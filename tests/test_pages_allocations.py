"""Accounts, QoS and reservations on the spawn form in a real browser against a real hub on the local
Slurm (slurmdbd's associations): alice's accounts with her default preselected, a QoS her chosen
account does not have refused at its field with nothing submitted, and a pinned reservation's card
saying when it opens."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import run_hub
from helpers.profiles import local_site_text

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

USER = "carol"  # in the course reservations, account course only: alice's form is checked below too
PROFILES = """
  - slug: research
    name: "Research: your accounts"
    cluster: slurm
    queue: debug
    resources: {cores: 1, walltime: "00:30:00"}
    account: {from_scheduler: true}
    qos: {from_scheduler: true}
  - slug: course-later
    name: "Course session"
    cluster: slurm
    queue: multi
    resources: {cores: 1, walltime: "00:30:00"}
    reservation: course-later
"""


@pytest.fixture(scope="module")
def hub(slurm_cluster, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-allocations")
    yield from run_hub(state, local_site_text("slurm", PROFILES), ("alice", USER))


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


def squeue_jobs(user: str) -> str:
    return subprocess.run(["squeue", "--noheader", "--user", user, "--format=%i"], capture_output=True, text=True,
                          check=True).stdout


def test_accounts_from_slurmdbd_and_a_refused_qos_at_its_field(hub, browser):
    page = logged_in_page(browser, hub.url, "alice")
    try:
        page.goto(f"{hub.url}/hub/spawn")
        page.click("label[for=profile-research]")
        assert page.locator("#research--account option").all_inner_texts() == ["chem", "phys"]
        assert page.input_value("#research--account") == "chem" and page.input_value("#research--qos") == "normal"
        assert re.search(r"from the scheduler, updated \d+ s ago", page.inner_text("#research--account-hint"))
        before = squeue_jobs("alice")
        page.select_option("#research--account", "phys")
        page.select_option("#research--qos", "high")
        with page.expect_navigation() as navigation:
            page.click("#spawn_form button[type=submit]")
        assert navigation.value.status == 400
        assert page.inner_text("#research--qos-error") == "the scheduler does not let you use QoS 'high' (yours: normal)"
        assert page.get_attribute("#research--qos", "aria-invalid") == "true"
        assert page.input_value("#research--account") == "phys"  # the choice is kept
        screenshot(page, "form-allocations-refused")
        assert hub.server("alice") is None and squeue_jobs("alice") == before
    finally:
        page.context.close()


def test_a_pinned_reservation_not_open_yet_says_when_it_opens(hub, browser):
    text = subprocess.run(["scontrol", "show", "reservation", "course-later"], capture_output=True, text=True,
                          check=True).stdout
    start = re.search(r"StartTime=(\d{4}-\d\d-\d\d)T(\d\d:\d\d)", text)
    page = logged_in_page(browser, hub.url, USER)
    try:
        page.goto(f"{hub.url}/hub/spawn")
        card = page.inner_text("#hpchub-profile-course-later .hpchub-reservation")
        assert card == f"reservation course-later opens {start.group(1)} {start.group(2)}"
        # carol charges course only: one choice, preselected.
        assert page.locator("#research--account option").all_inner_texts() == ["course"]
        screenshot(page, "form-allocations-reservation")
    finally:
        page.context.close()
