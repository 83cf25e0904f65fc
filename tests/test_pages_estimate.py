"""The spawn form's start estimates in a real browser against a real hub on the local Slurm: each card
shows the scheduler's own answer for its current values ("starts now"), the chosen card the largest
node count that starts now ("2 nodes start now; 3 nodes expected at 14:20"), and a change of a field asks
again ("expected to start at 14:20" once the choice needs the node carol's job holds). Without
JavaScript the chosen card opens with the answer for its values. Nothing starts. Marker `empty_queue`:
tests/run.sh runs these after its lanes, whose jobs would make "starts now" untrue."""

from __future__ import annotations

import re

import pytest
import requests
from helpers import holding
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import run_hub
from helpers.profiles import local_site_text
from helpers.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.empty_queue]

USER = "alice"


@pytest.fixture(scope="module")
def hub(slurm_cluster, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-estimate")
    config = state / "jupyterhub_config.py"
    config.write_text(f"load_subconfig({str(REPO / 'examples' / 'jupyterhub_config.py')!r})\n")
    holding.queue_emptied("slurm")
    yield from run_hub(state, local_site_text("slurm"), (USER,), config_file=config)


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


def note_text(page, slug: str, pattern: str, timeout: float = 20_000) -> str:
    """The card's estimate once it matches ``pattern``."""
    page.wait_for_function(
        "([slug, pattern]) => new RegExp(pattern).test(document.getElementById('hpchub-estimate-' + slug).textContent)",
        arg=[slug, pattern], timeout=timeout)
    return page.text_content(f"#hpchub-estimate-{slug}")


@pytest.mark.multinode
def test_each_card_shows_the_schedulers_answer_the_hint_and_asks_again_when_a_field_changes(hub, browser):
    page = logged_in_page(browser, hub.url, USER)
    try:
        with holding.slurm_node_held():
            page.goto(f"{hub.url}/hub/spawn")
            assert note_text(page, "small", "^starts now$") == "starts now"
            page.check("#profile-multi")
            assert note_text(page, "multi", "^starts now$") == "starts now"  # 2 nodes of 3; carol holds node3
            assert page.get_attribute("#hpchub-estimate-multi", "title").startswith("sbatch: Job ")
            # The chosen card's hint: the largest node count that starts now, and the next one's time.
            page.wait_for_function("document.getElementById('hpchub-estimate-hint-multi').textContent !== ''")
            assert re.fullmatch(r"2 nodes start now; 3 nodes expected at \d\d:\d\d",
                                page.text_content("#hpchub-estimate-hint-multi"))
            assert page.text_content("#hpchub-estimate-hint-small") == ""  # not the chosen card
            page.fill("#multi--nodes", "3")
            later = note_text(page, "multi", r"^expected to start at \d\d:\d\d$")
            screenshot(page, "spawn-form-estimates")
            assert re.fullmatch(r"expected to start at \d\d:\d\d", later)
            page.fill("#multi--nodes", "1")
            assert note_text(page, "multi", "^starts now$") == "starts now"
        assert hub.submissions() == 0  # asked, never submitted
    finally:
        page.context.close()


def test_without_javascript_the_chosen_card_opens_with_its_answer(hub, browser):
    page = logged_in_page(browser, hub.url, USER, javascript=False)
    try:
        page.goto(f"{hub.url}/hub/spawn")
        assert page.is_checked("#profile-small")
        assert page.text_content("#hpchub-estimate-small") == "starts now"
        assert page.text_content("#hpchub-estimate-multi") == ""  # asked by the script only
        assert hub.submissions() == 0
    finally:
        page.context.close()


def test_the_endpoint_answers_signed_in_users_only(hub):
    response = requests.get(f"{hub.url}/hub/hpchub/estimate", params={"profile": "small"}, allow_redirects=False,
                            timeout=30)
    assert response.status_code in (302, 403) and "estimate" not in response.text
    if response.status_code == 302:
        assert "/hub/login" in response.headers["Location"]
