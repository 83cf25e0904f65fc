"""The spawn form in a real browser (Debian's Chromium through Playwright) against a real hub on
the local Slurm and Grid Engine: cards with live numbers, an inline error for a refused value
with no job submitted, the last choice remembered, and class links (a good one shows the form
prefilled with what it charges and starts nothing before Start; a bad one shows the errors)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import jobs_of, run_hub, stop
from helpers.profiles import local_site_text
from helpers.support import REPO, run_hpchub

pytestmark = [pytest.mark.e2e]

USER = "alice"
QUEUE = {"slurm": "debug", "sge": "short.q"}


def tiny_profile(scheduler: str) -> str:
    """A second profile of the same queue, with memory as a number of GB."""
    return f"""
  - slug: tiny
    name: "Tiny: 1 core, 2 GB, 30 minutes"
    cluster: {scheduler}
    queue: {QUEUE[scheduler]}
    resources: {{cores: 1, memory: 2G, walltime: "00:30:00"}}
    user_adjustable:
      cores: {{min: 1, max: 2}}
      memory: {{min: 1G, max: 4G}}
"""


@pytest.fixture(scope="module")
def hub(scheduler, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"hub-form-{scheduler}")
    config = state / "jupyterhub_config.py"  # the demo config with named servers
    config.write_text(f"load_subconfig({str(REPO / 'examples' / 'jupyterhub_config.py')!r})\n"
                      "c.JupyterHub.allow_named_servers = True\n")
    leftovers = ("small", "tiny", "small.s-course") if scheduler == "slurm" else ()
    yield from run_hub(state, local_site_text(scheduler, tiny_profile(scheduler)), (USER,), config_file=config,
                       leftover_slurm_profiles=leftovers)


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


@pytest.fixture
def page(hub, browser):
    page = logged_in_page(browser, hub.url, USER)
    yield page
    page.context.close()


def off_the_page_thread(function, *args):
    """Call ``function`` in another thread: Playwright's sync API keeps an event loop running in
    this one, so asyncio.run (jobs_of, the client's calls) cannot run here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def active_jobs(client) -> set[str]:
    return set(off_the_page_thread(jobs_of, client, USER))


def job_cores(scheduler: str, job_id: str) -> int:
    """The cores the scheduler gave the job."""
    if scheduler == "slurm":
        text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
        return int(re.search(r"\bNumCPUs=(\d+)", text).group(1))
    text = subprocess.run(["sudo", "-n", "-u", USER, "qstat", "-j", job_id], capture_output=True, text=True,
                          check=True).stdout
    found = re.search(r"^parallel environment:\s+\S+ range:\s+(\d+)", text, re.M)
    return int(found.group(1)) if found else 1


def test_cards_show_live_numbers_labels_and_work_by_keyboard(hub, client, page, scheduler):
    page.goto(f"{hub.url}/hub/spawn")
    assert page.locator("fieldset.hpchub-cluster > legend").all_inner_texts() == [f"Cluster {scheduler}"]
    live = page.inner_text("#hpchub-profile-small .hpchub-live")
    (queue,) = [q for q in off_the_page_thread(asyncio.run, client.queue_info()) if q.name == QUEUE[scheduler]]
    assert re.fullmatch(rf"now: \d+ of {queue.cores_total} cores free, \d+ running, \d+ waiting "
                        r"\(updated \d+ s ago\)", live.strip()), live
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('#spawn_form input, #spawn_form select')]
        .filter(e => e.type !== 'hidden' && e.labels.length === 0).map(e => e.name)""")
    assert unlabelled == []
    assert page.get_attribute("#tiny--memory", "step") == "0.5" and page.input_value("#tiny--memory") == "2"
    # Keyboard alone: arrows pick another profile, whose fields then show; Tab reaches them.
    page.focus("#profile-small")
    assert page.is_visible("#small--cores")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # small, then the site's second profile, then tiny
    assert page.is_checked("#profile-tiny") and page.is_hidden("#small--cores")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "tiny--cores"
    screenshot(page, f"form-cards-{scheduler}")


def test_a_refused_value_is_shown_at_its_field_and_nothing_is_submitted(hub, client, page, scheduler):
    before = active_jobs(client)
    page.goto(f"{hub.url}/hub/spawn")
    page.click("label[for=profile-small]")
    page.fill("#small--cores", "3")
    page.fill("#small--walltime-hours", "4")  # within the inputs' own bounds, over the profile's 4 h
    page.fill("#small--walltime-minutes", "30")
    with page.expect_navigation() as navigation:
        page.click("#spawn_form button[type=submit]")
    assert navigation.value.status == 400
    assert page.inner_text("#small--walltime-error") == "4:30:00 is above the maximum 04:00:00"
    assert page.get_attribute("#small--walltime-hours", "aria-invalid") == "true"
    assert "small--walltime-error" in page.get_attribute("#small--walltime-minutes", "aria-describedby")
    assert page.is_checked("#profile-small")
    assert (page.input_value("#small--cores"), page.input_value("#small--walltime-hours"),
            page.input_value("#small--walltime-minutes")) == ("3", "4", "30")
    assert page.get_attribute("#small--cores", "aria-invalid") is None
    screenshot(page, f"form-error-{scheduler}")
    assert hub.server(USER) is None and active_jobs(client) == before


def test_the_last_choice_is_preselected_after_a_spawn_and_stop(hub, client, browser, scheduler):
    # With JavaScript off: the form's basics (pick a profile, set its fields, start) need none.
    page = logged_in_page(browser, hub.url, USER, javascript=False)
    page.goto(f"{hub.url}/hub/spawn")
    # JupyterHub's page scripts never ran (they set window.jhdata's helpers up through require.js).
    assert page.evaluate("typeof window.require") == "undefined"
    page.click("label[for=profile-tiny]")
    page.fill("#tiny--cores", "2")
    page.fill("#tiny--memory", "1.5")
    page.click("#spawn_form button[type=submit]")
    try:
        server = hub.wait_for_server(USER)
        assert server["user_options"] == {"profile": "tiny", "cores": "2", "memory": "1.5G"}
        assert job_cores(scheduler, server["state"]["job_id"]) == 2
    finally:
        stop(hub, USER)
    page.goto(f"{hub.url}/hub/spawn")
    assert page.is_checked("#profile-tiny") and not page.is_checked("#profile-small")
    assert (page.input_value("#tiny--cores"), page.input_value("#tiny--memory")) == ("2", "1.5")
    screenshot(page, f"form-remembered-{scheduler}")
    page.context.close()


def test_a_class_link_shows_its_choices_and_the_charge_and_starts_only_on_start_and_a_bad_link_shows_the_error(
        hub, client, page, scheduler):
    made = run_hpchub("link", str(hub.site_config), "--profile", "small", "--set", "cores=2", "--hub-url", hub.url,
                      "--user", USER, "--server", "course")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link == f"{hub.url}/hub/spawn/{USER}/course?opt-profile=small&opt-cores=2"
    before = active_jobs(client)
    response = page.goto(link)
    # Following the link submits nothing: the form, prefilled, says what Start will charge.
    assert response.status == 200
    assert page.is_checked("#profile-small") and page.input_value("#small--cores") == "2"
    summary = " ".join(page.inner_text("#hpchub-link-summary").split())
    word = "project" if scheduler == "sge" else "account"
    assert re.match(rf"Nothing has started yet\. The link you followed chose profile Small: 1 core, \d GB, 1 hour on "
                    rf"cluster {scheduler}, to be charged to your default {word}: 2 cores, 1 h \(2 core-hours at most\)"
                    r"\. Check the choices below and press Start to start it\.$", summary), summary
    assert page.locator(".spawn-error-msg, .hpchub-error, #hpchub-general-error").count() == 0
    screenshot(page, f"form-link-{scheduler}")
    assert hub.server(USER, name="course") is None and active_jobs(client) == before
    page.click("#spawn_form button[type=submit]")  # the one click that starts it
    try:
        server = hub.wait_for_server(USER, name="course")
        assert server["user_options"]["profile"] == "small" and server["user_options"]["cores"] == "2"
        assert job_cores(scheduler, server["state"]["job_id"]) == 2
    finally:
        assert hub.api("DELETE", f"/users/{USER}/servers/course").status_code in (202, 204)
        hub.wait_for_server(USER, ready=False, name="course", timeout=90)
    before = active_jobs(client)
    response = page.goto(f"{hub.url}/hub/spawn?opt-profile=small&opt-cores=99&opt-shoe_size=44")
    assert response.status == 400
    assert page.inner_text("#small--cores-error") == "99 is above the maximum 4"
    assert page.input_value("#small--cores") == "99" and page.is_checked("#profile-small")
    assert "shoe_size: unknown option" in page.inner_text("#hpchub-general-error")
    screenshot(page, f"form-link-error-{scheduler}")
    assert hub.server(USER) is None and active_jobs(client) == before
