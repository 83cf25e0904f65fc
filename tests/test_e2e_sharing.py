"""Sharing a server, in real browsers against a real hub on the local Slurm and Grid Engine: alice
shares her running server from hpchub's Share page (with JavaScript off), bob opens her notebook in
his own browser context, revokes and group shares reach the server within seconds, a share link
works once accepted and stops when deleted or expired, and carol, outside every share, is refused.

One hub per scheduler (HPCSpawner.sharing on, hpchub.hub.sharing.sharing_roles() loaded), one named
server of alice's ("shared") for the whole test. The timings it prints are the ones docs/sharing.md
quotes. The 60-second share code (JupyterHub's shortest) is made at the start and checked expired at
the end, so the expiry costs only what is left of its minute.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import run_hub
from helpers.profiles import local_site_text
from helpers.support import REPO

from hpchub.core.jobs import AUTH_CACHE_SECONDS

pytestmark = [pytest.mark.e2e]

OWNER, GUEST, OUTSIDER = "alice", "bob", "carol"
SERVER = "shared"  # alice's named server: apart from other tests' servers of hers
GROUP = "hpchub-share-course"  # bob is a member
# A grant or revoke reaches the server within the auth cache's interval; slack for the polling.
WITHIN = AUTH_CACHE_SECONDS + 7
CELL = "print('a notebook alice shares')"
# Opens a websocket with the page's cookies; window.hpchubSocket.code is its close code once closed.
OPEN_WEBSOCKET = """url => new Promise(resolve => {
    const socket = new WebSocket(url);
    window.hpchubSocket = {code: null};
    socket.onopen = () => resolve("open");
    socket.onclose = event => { window.hpchubSocket.code = event.code; resolve("closed " + event.code); };
})"""


@pytest.fixture(scope="module")
def hub(scheduler, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"hub-sharing-{scheduler}")
    config = state / "jupyterhub_config.py"
    config.write_text(  # the demo hub with sharing on, as examples/jupyterhub_config.py documents it
        "import os\n"
        "os.environ['HPCHUB_SHARING'] = '1'\n"
        f"load_subconfig({str(REPO / 'examples' / 'jupyterhub_config.py')!r})\n"
        f"c.JupyterHub.load_groups = {{{GROUP!r}: {{'users': [{GUEST!r}]}}}}\n")
    hubs = run_hub(state, local_site_text(scheduler), (OWNER,), config_file=config,
                   leftover_slurm_profiles=(f"small.s-{SERVER}",) if scheduler == "slurm" else ())
    started = next(hubs)
    try:
        yield started
    finally:
        started.api("DELETE", f"/users/{OWNER}/servers/{SERVER}")  # run_hub stops default servers only
        started.wait_for_server(OWNER, ready=False, name=SERVER, timeout=90)
        next(hubs, None)


@pytest.fixture
def notebook(scheduler):
    path = Path(f"/home/{OWNER}/hpchub-share-test-{scheduler}.ipynb")
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                   "source": [CELL]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))
    shutil.chown(path, OWNER, OWNER)
    yield path
    path.unlink(missing_ok=True)
    (path.parent / ".ipynb_checkpoints" / f"{path.stem}-checkpoint.ipynb").unlink(missing_ok=True)
    path.with_suffix(".py").unlink(missing_ok=True)  # its jupytext twin, where a server pairs notebooks


def new_token(hub, user: str) -> str:
    response = hub.api("POST", f"/users/{user}/tokens", json={"note": "sharing test"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def server_url(hub, path: str = "api/status") -> str:
    return f"{hub.url}/user/{OWNER}/{SERVER}/{path}"


def with_token(hub, token: str) -> Callable[[], int]:
    return lambda: requests.get(server_url(hub), headers={"Authorization": f"token {token}"}, timeout=30).status_code


def with_cookies(hub, page) -> Callable[[], int | str]:
    """A request with the browser context's cookies (bob's cookie for alice's server); a connection
    reset is an answer to ask again (a kept-alive connection the other end closed as it was reused)."""
    from playwright.sync_api import Error

    def status() -> int | str:
        try:
            return page.request.get(server_url(hub), max_redirects=0).status
        except Error as error:
            if "ECONNRESET" not in str(error):
                raise
            return "connection reset"

    return status


def becomes(answer: Callable[[], object], wanted: object, within: float = WITHIN) -> float:
    """Seconds until ``answer()`` is ``wanted``; fails after ``within``."""
    began = time.monotonic()
    while (got := answer()) != wanted:
        assert time.monotonic() - began < within, f"still {got} after {within} s (wanted {wanted})"
        time.sleep(0.25)
    return time.monotonic() - began


def submit(page, form: str, **fields: str) -> None:
    """Fill and submit one of the Share page's forms (no JavaScript: a plain POST and a new page)."""
    for name, value in fields.items():
        page.fill(f"{form} [name={name}]", value)
    with page.expect_navigation():
        page.click(f"{form} button[type=submit]")


def revoke(page, row: str) -> None:
    with page.expect_navigation():
        page.click(f"{row} button[type=submit]")


def open_notebook(page, hub, path: Path) -> None:
    """bob opens alice's notebook: the one-time "Authorize" page of her server, then JupyterLab."""
    page.goto(f"{hub.url}/user/{OWNER}/{SERVER}/lab/tree/{path.name}")
    if "/hub/api/oauth2/authorize" in page.url:
        page.click("button:has-text('Authorize')")
    page.locator(".jp-Notebook .jp-Cell .cm-content", has_text="a notebook alice shares").first.wait_for(timeout=90_000)


def shown_time(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)


def test_share_with_a_user_a_group_and_a_link_and_revoke_within_seconds(hub, scheduler, notebook):
    response = hub.api("POST", f"/users/{OWNER}/servers/{SERVER}", json={"profile": "small"})
    assert response.status_code in (201, 202), response.text
    hub.wait_for_server(OWNER, name=SERVER, timeout=150)
    bob_token, carol_token, alice_token = (new_token(hub, user) for user in (GUEST, OUTSIDER, OWNER))
    bob, carol = with_token(hub, bob_token), with_token(hub, carol_token)
    # JupyterHub's REST API, as a script would: alice's shortest-lived share code (60 s).
    answer = requests.post(f"{hub.url}/hub/api/share-codes/{OWNER}/{SERVER}", json={"expires_in": 60},
                           headers={"Authorization": f"token {alice_token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    short_code = answer.json()
    short_code_expires = datetime.fromisoformat(short_code["expires_at"].replace("Z", "+00:00"))
    assert bob() == 403 and carol() == 403

    with chromium() as browser:
        alice_page = logged_in_page(browser, hub.url, OWNER, javascript=False)  # the page needs no JavaScript
        bob_page = logged_in_page(browser, hub.url, GUEST)
        carol_page = logged_in_page(browser, hub.url, OUTSIDER)
        assert carol_page.goto(f"{hub.url}/hub/accept-share?code={short_code['code']}").status == 200  # valid now

        # alice: home page -> Share -> with bob.
        alice_page.goto(f"{hub.url}/hub/home")
        alice_page.click(f"#hpchub-sharing li[data-server-name='{SERVER}'] a.hpchub-share-link")
        assert alice_page.url.endswith(f"/hub/hpchub/share/{OWNER}/{SERVER}")
        assert "Whoever joins runs code as alice" in alice_page.inner_text("#hpchub-share-warning")
        page_url = alice_page.url
        refused = alice_page.request.post(page_url, form={"action": "share-user", "user": GUEST})  # no _xsrf
        assert refused.status == 403
        assert bob_page.request.post(page_url, form={"action": "share-user", "user": GUEST}).status in (403, 404)
        # The default server's page (its name is empty), though it is not running.
        assert alice_page.goto(f"{hub.url}/hub/hpchub/share/{OWNER}/").status == 200
        assert alice_page.inner_text("h1") == "Share alice's server" and "not running now" in alice_page.inner_text("body")
        alice_page.goto(page_url)
        submit(alice_page, "#hpchub-share-user-form", user="nobody-of-this-name")
        assert alice_page.inner_text("#hpchub-share-error") == "no hub user 'nobody-of-this-name'"
        xsrf = alice_page.get_attribute("#hpchub-share-code-form [name=_xsrf]", "value")
        odd_expiry = alice_page.request.post(page_url, form={"_xsrf": xsrf, "action": "new-code", "expires_in": "60"})
        assert odd_expiry.status == 400 and "a link expires in one of: 1 hour, 1 day, 1 week" in odd_expiry.text()
        submit(alice_page, "#hpchub-share-user-form", user=GUEST)
        shared_at = time.monotonic()
        assert alice_page.locator(f"#hpchub-shares tr[data-kind=user][data-name={GUEST}]").count() == 1

        granted_after = becomes(bob, 200)
        open_notebook(bob_page, hub, notebook)
        first_view_after = time.monotonic() - shared_at
        screenshot(bob_page, f"sharing-bob-in-alices-notebook-{scheduler}")
        # carol is in no share: the hub refuses her at its authorize step, her token at the server.
        assert carol_page.goto(server_url(hub, "lab")).status == 403
        assert carol() == 403

        # A websocket of bob's open in alice's server (as his notebook's kernel and JupyterLab hold some).
        socket_url = server_url(hub, "api/events/subscribe").replace("http://", "ws://")
        assert bob_page.evaluate(OPEN_WEBSOCKET, socket_url) == "open"

        # Revoke bob: his browser's next request and his token are refused within seconds.
        revoke(alice_page, f"#hpchub-shares tr[data-kind=user][data-name={GUEST}]")
        revoked_at = time.monotonic()
        becomes(with_cookies(hub, bob_page), 403)
        becomes(bob, 403)
        revoked_after = time.monotonic() - revoked_at
        # ...and the server closed his open websocket (else a revoked guest's kernel would go on).
        becomes(lambda: bob_page.evaluate("window.hpchubSocket.code"), 1008)
        websockets_closed_after = time.monotonic() - revoked_at

        # A group bob is in: his token and his browser get in (hpchub's group-share fix), carol not.
        submit(alice_page, "#hpchub-share-group-form", group=GROUP)
        group_granted_after = becomes(bob, 200)
        becomes(with_cookies(hub, bob_page), 200)
        assert carol() == 403
        revoke(alice_page, f"#hpchub-shares tr[data-kind=group][data-name={GROUP}]")
        becomes(bob, 403)

        # A link for one hour: shown once, with its end; bob accepts it and gets in.
        submit(alice_page, "#hpchub-share-code-form")
        link = alice_page.inner_text("#hpchub-share-link").strip()
        assert link.startswith(f"{hub.url}/hub/accept-share?code=")
        expires = [shown_time(cell) for cell in alice_page.locator(".hpchub-share-code-expires").all_inner_texts()]
        in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
        assert any(abs(when - in_an_hour) < timedelta(minutes=2) for when in expires), expires
        screenshot(alice_page, f"sharing-new-link-nojs-{scheduler}")
        bob_page.goto(link)
        with bob_page.expect_navigation():
            bob_page.click("button:has-text('Accept invitation')")
        if "/hub/api/oauth2/authorize" in bob_page.url:
            bob_page.click("button:has-text('Authorize')")
        becomes(bob, 200)
        alice_page.goto(page_url)
        assert alice_page.locator(f"#hpchub-shares tr[data-kind=user][data-name={GUEST}]").count() == 1
        with_javascript = logged_in_page(browser, hub.url, OWNER)  # as most people see it (docs/sharing.md)
        with_javascript.goto(page_url)
        screenshot(with_javascript, f"sharing-page-{scheduler}")
        # Deleting the link stops new people; bob, who joined by it, stays until revoked.
        revoke(alice_page, ".hpchub-share-code:last-child")  # the newest: the REST-made 60 s code comes first
        assert carol_page.goto(link).status == 404
        assert bob() == 200
        with alice_page.expect_navigation():
            alice_page.click("#hpchub-share-revoke-all button[type=submit]")
        becomes(bob, 403)
        assert alice_page.locator("#hpchub-no-shares").count() == 1

        # The 60-second code has expired by now (or soon): refused.
        time.sleep(max(0.0, (short_code_expires - datetime.now(timezone.utc)).total_seconds() + 1))
        assert carol_page.goto(f"{hub.url}/hub/accept-share?code={short_code['code']}").status == 404
    print(f"{scheduler}: bob's token let in {granted_after:.1f} s after the share, bob saw the notebook "
          f"{first_view_after:.1f} s after it; group share {group_granted_after:.1f} s; revoke refused "
          f"bob's browser and token within {revoked_after:.1f} s, his open websockets closed within "
          f"{websockets_closed_after:.1f} s")
