"""The instructor's view of a class in a real browser, against a real hub on the local Slurm and Grid
Engine: a non-admin instructor (hub user tutor, in group `instructors`, with the role of
hpchub.hub.teaching.class_roles) sees the servers of group `course` (alice and bob) and no one
else's, starts the course's named server `class` for both with "start for all" and sees their jobs'
queue states, then ready; joins alice's server through the page (the one-time "Authorize" page) and
gets alice's JupyterLab; cannot join or stop carol's (outside the course: 403); "stop all" stops both
servers and their jobs leave the scheduler. Students get 403 on the page.

tutor is a hub user only (no unix account): an instructor never runs anything of their own here.
"""

from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import Hub, jobs_of, run_hub
from helpers.profiles import begins_in_an_hour_profile, local_site_text, profile
from helpers.support import REPO

pytestmark = pytest.mark.e2e

INSTRUCTOR = "tutor"
STUDENTS = ("alice", "bob")
OUTSIDER = "carol"
SERVER = "class"  # the servers of this module: named server `class` with the profile `class`, and
PROFILE = "class"
QUEUED = "queued"  # named server `queued` with the profile `queued`, whose job waits for an hour
SERVER_MEMORY = {"slurm": "1G", "sge": "2G"}  # JupyterLab's (Grid Engine's h_vmem counts virtual memory)
QUEUE = {"slurm": "debug", "sge": "short.q"}

CONFIG = """
load_subconfig({example!r})
from hpchub.hub.teaching import class_roles
c.Authenticator.allowed_users = {{"alice", "bob", "carol", "tutor"}}
c.JupyterHub.load_groups = {{"course": {{"users": ["alice", "bob"]}}, "instructors": {{"users": ["tutor"]}}}}
c.JupyterHub.load_roles = c.JupyterHub.load_roles + class_roles({{"course": "instructors"}})
"""


def queued_profile(scheduler: str) -> str:
    """`queued`: a job that stays pending for the whole test (may not start before a time to come)."""
    if scheduler == "slurm":
        return begins_in_an_hour_profile(QUEUED)
    return profile(QUEUED, "starts in 2030", "sge", directives=["-a 203001010000"])


def marker(user: str, scheduler: str) -> Path:
    return Path(f"/home/{user}/hpchub-class-test-{scheduler}.txt")


@pytest.fixture(scope="module")
def hub(scheduler, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"hub-class-{scheduler}")
    config = state / "jupyterhub_config.py"
    config.write_text(CONFIG.format(example=str(REPO / "examples" / "jupyterhub_config.py")))
    site_text = local_site_text(scheduler, profile(PROFILE, "Class", scheduler, SERVER_MEMORY[scheduler])
                                + queued_profile(scheduler))
    users = (*STUDENTS, OUTSIDER)
    hubs = run_hub(state, site_text, users, poll_interval=2, config_file=config)
    started = next(hubs)
    for user in STUDENTS:  # a file only alice's (bob's) server shows
        marker(user, scheduler).write_text(f"{user}'s file\n")
        shutil.chown(marker(user, scheduler), user, user)
    try:
        yield started
    finally:
        for user in users:  # whatever a failed test left (run_hub stops the default servers only)
            for name in (SERVER, QUEUED):
                started.api("DELETE", f"/users/{user}/servers/{name}")
        for user in users:
            for name in (SERVER, QUEUED):
                started.wait_for_server(user, ready=False, timeout=90, name=name)
            marker(user, scheduler).unlink(missing_ok=True)
        hubs.close()


def off_the_browser_loop(function, *args):
    """Playwright's sync API runs an asyncio loop in this thread; scheduler queries start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def rows(page, server_name: str = SERVER) -> dict[str, dict[str, str]]:
    """The class table: user -> cell texts of its row for server ``server_name`` (or of its only row)."""
    found = {}
    for row in page.locator("tr.hpchub-class-server").all():
        user, server = row.get_attribute("data-user"), row.get_attribute("data-server")
        if server in (server_name, "") and (server == server_name or user not in found):
            found[user] = {name: row.locator(f".hpchub-class-{name}").inner_text().strip()
                           for name in ("status", "job", "queue", "node", "time-left", "profile")}
            found[user]["join"] = "yes" if row.locator(".hpchub-class-join").count() else ""
    return found


def test_the_instructor_sees_starts_joins_and_stops_the_class_and_nothing_else(hub: Hub, client, scheduler):
    began = time.monotonic()
    # carol is outside the course: her server runs, and the instructor must not reach it.
    assert hub.api("POST", f"/users/{OUTSIDER}/servers/{SERVER}", json={"profile": PROFILE}).status_code in (201, 202)
    class_url = f"{hub.url}/hub/hpchub/class/course"
    with chromium() as browser:
        page = logged_in_page(browser, hub.url, INSTRUCTOR)
        page.goto(f"{hub.url}/hub/home")
        links = page.locator("a.hpchub-class-link")
        assert [links.nth(i).inner_text() for i in range(links.count())] == ["course"]
        links.first.click()
        page.wait_for_url(class_url)
        assert set(rows(page)) == set(STUDENTS)  # carol is not listed
        assert rows(page)["alice"]["status"] in ("no server", "stopped")  # stopped: after the other test

        # Start for all: profile `class`, server `class`.
        page.select_option("#hpchub-class-profile", PROFILE)
        page.fill("#hpchub-class-server-name", SERVER)
        page.click("#hpchub-class-start-all")
        page.wait_for_url(class_url)
        assert page.locator("#hpchub-class-report").inner_text().startswith("start for all (Class)")
        # The page shows where each job is (from the hub's cached status) until its server is ready.
        seen: dict[str, set[str]] = {user: set() for user in STUDENTS}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            page.goto(class_url)
            table = rows(page)
            for user in STUDENTS:
                if table[user]["status"] == "starting" and table[user]["job"]:
                    seen[user].add(f"{table[user]['job']} | {table[user]['queue']}")
            if all(table[user]["status"] == "ready" for user in STUDENTS):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not ready: {rows(page)}\n{hub.log_tail()}")
        print("states seen while starting:", seen)
        for user in STUDENTS:
            assert seen[user], f"{user}: the page never showed the starting job"
            assert all(re.fullmatch(rf"\d+: (waiting in (the )?queue.*|running on \S+|submitted) \| ({QUEUE[scheduler]})?",
                                    state) for state in seen[user]), seen[user]
            assert table[user]["profile"] == PROFILE and table[user]["queue"] == QUEUE[scheduler]
            assert table[user]["node"] and re.fullmatch(r"\d+ min|\d+ s", table[user]["time-left"])
            assert table[user]["join"] == "yes"
        job_ids = {user: hub.server(user, SERVER)["state"]["job_id"] for user in STUDENTS}
        assert {user: table[user]["job"].split(":")[0] for user in STUDENTS} == job_ids
        report = page.locator("#hpchub-class-report").inner_text()
        assert "alice/class: started" in report or "alice/class: submitted" in report, report
        screenshot(page, f"class-view-{scheduler}")

        # Join alice's server through the page: the hub asks once to authorize, then it is alice's JupyterLab.
        page.locator("tr.hpchub-class-server[data-user='alice'][data-server='class'] .hpchub-class-join").click()
        page.wait_for_url(re.compile(r".*/hub/api/oauth2/authorize.*|.*/user/alice/class/.*"))
        if "/hub/api/oauth2/authorize" in page.url:
            page.click("button:has-text('Authorize')")
        page.wait_for_url(re.compile(r".*/user/alice/class/lab.*"), timeout=60_000)
        page.locator(".jp-DirListing-item", has_text=marker("alice", scheduler).name).wait_for(timeout=60_000)
        contents = page.request.get(f"{hub.url}/user/alice/class/api/contents/{marker('alice', scheduler).name}")
        assert contents.status == 200 and contents.json()["content"] == "alice's file\n"
        screenshot(page, f"class-join-{scheduler}")

        # Not the instructor's: carol's server (outside the course), other groups' pages.
        hub.wait_for_server(OUTSIDER, name=SERVER, timeout=150)
        assert page.goto(f"{hub.url}/user/{OUTSIDER}/{SERVER}/lab").status == 403
        assert page.goto(f"{hub.url}/hub/hpchub/class/instructors").status == 403
        page.goto(class_url)
        token = page.locator("#hpchub-class-stop input[name=_xsrf]").get_attribute("value")
        refused = page.request.post(class_url, form={"_xsrf": token, "action": "stop", "user": OUTSIDER,
                                                     "server": SERVER})
        assert refused.status == 403
        assert page.request.post(class_url, form={"action": "stop"}).status == 403  # no xsrf token
        assert hub.server(OUTSIDER, SERVER)["ready"]
        assert all(hub.server(user, SERVER)["ready"] for user in STUDENTS)  # nothing stopped

        # A student may not see the class.
        student = logged_in_page(browser, hub.url, "bob")
        assert student.goto(class_url).status == 403
        student.goto(f"{hub.url}/hub/home")
        assert student.locator("a.hpchub-class-link").count() == 0

        # Stop all: both servers stop and their jobs leave the scheduler; carol's keeps running.
        page.goto(class_url)
        page.click("#hpchub-class-stop-all")
        page.wait_for_url(class_url)
        for user in STUDENTS:
            hub.wait_for_server(user, ready=False, name=SERVER, timeout=90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = {user: job_ids[user] for user in STUDENTS
                    if job_ids[user] in off_the_browser_loop(jobs_of, client, user)}
            if not left:
                break
            time.sleep(1)
        assert not left, f"jobs still active after stop all: {left}"
        page.goto(class_url)
        assert all(rows(page)[user]["status"] == "stopped" for user in STUDENTS), rows(page)
        assert "stop all" in page.locator("#hpchub-class-report").inner_text()
        assert hub.server(OUTSIDER, SERVER)["ready"]
    print(f"class view test on {scheduler} took {time.monotonic() - began:.0f} s")


def test_queued_jobs_show_their_queue_state_and_stopping_cancels_them(hub: Hub, client, scheduler):
    """Start for all with jobs that wait in the queue: the page says so; Stop (one) and Stop all (the
    other) interrupt the pending starts and cancel the queued jobs."""
    class_url = f"{hub.url}/hub/hpchub/class/course"
    with chromium() as browser:
        page = logged_in_page(browser, hub.url, INSTRUCTOR, javascript=False)  # plain forms: no script needed
        page.goto(class_url)
        page.select_option("#hpchub-class-profile", QUEUED)
        page.fill("#hpchub-class-server-name", QUEUED)
        page.click("#hpchub-class-start-all")
        page.wait_for_url(class_url)
        waiting = "waiting in queue debug" if scheduler == "slurm" else "waiting in the queue"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page.goto(class_url)
            table = rows(page, QUEUED)
            if all(table[user]["job"].endswith(waiting) for user in STUDENTS):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not shown as waiting: {rows(page, QUEUED)}")
        assert all(table[user]["status"] == "starting" and table[user]["queue"] == QUEUE[scheduler]
                   and not table[user]["node"] and not table[user]["join"] for user in STUDENTS), table
        job_ids = {user: table[user]["job"].split(":")[0] for user in STUDENTS}
        report = page.locator("#hpchub-class-report").inner_text()
        assert "alice/queued: submitted" in report and "bob/queued: submitted" in report, report
        screenshot(page, f"class-queued-{scheduler}")

        page.click("tr.hpchub-class-server[data-user='alice'][data-server='queued'] .hpchub-class-stop")
        page.wait_for_url(class_url)
        hub.wait_for_server("alice", ready=False, name=QUEUED, timeout=60)
        assert hub.server("bob", QUEUED) is not None  # only alice's
        page.goto(class_url)
        page.click("#hpchub-class-stop-all")
        page.wait_for_url(class_url)
        hub.wait_for_server("bob", ready=False, name=QUEUED, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = {user: job_ids[user] for user in STUDENTS if job_ids[user] in jobs_of(client, user)}
        if not left:
            break
        time.sleep(1)
    assert not left, f"queued jobs still there after stop: {left}"
