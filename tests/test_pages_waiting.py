"""The waiting page and named servers in a real browser (Debian's chromium), against a real hub on
the local Slurm and Grid Engine, as carol: the job's details while it queues, Cancel; a CPU and a
GPU-named server at once, each its own job; the idle culler stops both and their jobs are gone.

The local clusters have no GPUs: the "GPU" server's profile has the name only (one core, no GPU)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.browser import chromium, logged_in_page, screenshot
from helpers.hub import Hub, active_job_names, jobs_of, run_hub
from helpers.profiles import DEFAULT_QUEUE, begins_in_an_hour_profile, local_site_text, profile

from hpchub.schedulers import JobState

pytestmark = pytest.mark.e2e

USER = "carol"
CULL_TIMEOUT = 20  # seconds idle before the culler stops a server (production default: an hour)
CULL_EVERY = 5
CULLED_ON = "slurm"
# Memory a JupyterLab server lives with (Grid Engine's h_vmem limits virtual memory, per slot).
SERVER_MEMORY = {"slurm": "1G", "sge": "2G"}


def queued_profile(scheduler: str) -> str:
    """`queued`: a job that stays pending for the whole test (may not start before a time to come)."""
    if scheduler == "slurm":
        return begins_in_an_hour_profile("queued")
    return profile("queued", "starts in 2030", "sge", directives=["-a 203001010000"])


def gpu_profile(scheduler: str) -> str:
    return profile("gpu", "GPU (a name only, the local clusters have no GPUs)", scheduler, SERVER_MEMORY[scheduler])


class CullingHub(Hub):
    """The demo config's hub with the idle culler on a test's time scale."""

    def _env(self) -> dict[str, str]:
        return dict(super()._env(), HPCHUB_CULL_TIMEOUT=str(CULL_TIMEOUT), HPCHUB_CULL_EVERY=str(CULL_EVERY))


SERVERS = ("waits", "cpu", "gpu")  # carol's named servers in these tests


@pytest.fixture(scope="module")
def hub(scheduler, tmp_path_factory):
    site_text = local_site_text(scheduler, queued_profile(scheduler) + gpu_profile(scheduler))
    # The culler is JupyterHub's, the same whatever the scheduler: it runs on Slurm's hub only (half
    # a minute of waiting saved); on Grid Engine the servers are stopped through the API instead.
    hubs = run_hub(tmp_path_factory.mktemp(f"hub-pages-waiting-{scheduler}"), site_text, (USER,),
                   hub_class=CullingHub if scheduler == CULLED_ON else Hub, poll_interval=2)
    started = next(hubs)
    try:
        yield started
    finally:
        for name in SERVERS:  # whatever a failed test left (run_hub stops the default server only)
            started.api("DELETE", f"/users/{USER}/servers/{name}")
        for name in SERVERS:
            started.wait_for_server(USER, ready=False, timeout=90, name=name)
        hubs.close()


def start_named(hub: Hub, name: str, profile_slug: str) -> int:
    """POST the start of carol's server ``name`` ("": the default one): 201 once it runs, 202 if
    still pending after the hub's slow-spawn timeout (10 s)."""
    path = f"/users/{USER}/servers/{name}" if name else f"/users/{USER}/server"
    return hub.api("POST", path, json={"profile": profile_slug}).status_code


def off_the_browser_loop(function, *args):
    """Call ``function`` in a thread of its own: Playwright's sync API keeps an asyncio loop running
    in this one, and the scheduler queries (helpers.hub.jobs_of ...) start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def job_named(client, name: str, timeout: float = 30) -> str:
    """The id of carol's active job called ``name`` (once the scheduler lists it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [job_id for job_id, job_name in active_job_names(client, USER).items() if job_name == name]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no job {name} of {USER}: {active_job_names(client, USER)}")


def test_the_waiting_page_shows_the_queued_job_and_cancel_removes_it(hub, client, scheduler):
    with ThreadPoolExecutor(1) as pool, chromium() as browser:
        # The POST returns after the hub's slow-spawn timeout; the page is there as soon as the spawn is.
        posted = pool.submit(start_named, hub, "waits", "queued")
        page = logged_in_page(browser, hub.url, USER)
        job_id = off_the_browser_loop(job_named, client, f"hpchub-{USER}-queued.s-waits")
        page.goto(f"{hub.url}/hub/spawn-pending/{USER}/waits")
        job = page.locator("#hpchub-job")
        page.wait_for_function("document.getElementById('hpchub-job-state').textContent === 'waiting in the queue'")
        assert job.is_visible()
        assert page.locator("#hpchub-job-id").text_content() == job_id
        assert page.locator("#hpchub-job-where").text_content() == f"{DEFAULT_QUEUE[scheduler]} on {scheduler}"
        if scheduler == "slurm":  # Slurm says why and when; Grid Engine's job list says neither
            assert page.locator("#hpchub-job-reason").text_content() == "not allowed to start yet (begin time)"
            estimated_start = page.locator("#hpchub-job-estimated-start").text_content()
            assert re.search(r"\(in about (5\d|60) minutes\)$", estimated_start), estimated_start
        assert not page.locator('.hpchub-field[data-field="node"]').is_visible()
        assert page.get_by_role("button", name="Cancel server waits").is_visible()
        screenshot(page, f"waiting-{scheduler}")
        assert posted.result(timeout=30) == 202

        page.get_by_role("button", name="Cancel server waits").click()
        page.wait_for_url(f"{hub.url}/hub/spawn/{USER}/waits", timeout=60_000)
        page.wait_for_load_state()
        screenshot(page, f"waiting-cancelled-{scheduler}")
        # Stopping the pending spawn cancelled the job: the scheduler no longer runs it.
        assert job_id not in off_the_browser_loop(jobs_of, client, USER)
        assert hub.server(USER, "waits") is None


def test_two_named_servers_and_the_default_one_run_as_jobs_and_stopping_or_culling_cancels_them(hub, client,
                                                                                              scheduler):
    # With named servers on, the default server works as before, next to them (same profile as "cpu").
    with ThreadPoolExecutor(3) as pool:
        starts = [pool.submit(start_named, hub, name, slug) for name, slug in (("cpu", "small"), ("gpu", "gpu"),
                                                                                ("", "small"))]
        assert {start.result(timeout=150) for start in starts} <= {201, 202}
    servers = {name: hub.wait_for_server(USER, name=name, timeout=120) for name in ("cpu", "gpu", "")}
    ready_at = time.monotonic()
    job_ids = {name: server["state"]["job_id"] for name, server in servers.items()}
    assert len(set(job_ids.values())) == 3
    active = jobs_of(client, USER)
    assert all(active[job_id].state is JobState.RUNNING for job_id in job_ids.values())
    names = active_job_names(client, USER)
    assert [names[job_ids[name]] for name in ("cpu", "gpu", "")] == [
        f"hpchub-{USER}-small.s-cpu", f"hpchub-{USER}-gpu.s-gpu", f"hpchub-{USER}-small"]
    assert [servers[name]["state"]["job_profile"] for name in ("cpu", "gpu", "")] == ["small", "gpu", "small"]
    for name in ("cpu", "gpu", ""):
        assert hub.get_user_url(USER, "api/status", name=name).status_code == 200

    with chromium() as browser:
        page = logged_in_page(browser, hub.url, USER)
        page.goto(f"{hub.url}/hub/home")
        html = page.content()
        assert f"/user/{USER}/cpu/" in html and f"/user/{USER}/gpu/" in html
        # hpchub's table: each server's own job, where it runs, and the time its walltime leaves.
        for name in ("cpu", "gpu", ""):
            row = page.locator(f"#hpchub-jobs tr[data-server-name='{name}']")
            assert row.locator(".hpchub-job-id").inner_text() == job_ids[name]
            assert row.locator(".hpchub-job-state").inner_text().startswith("running on ")
            assert re.fullmatch(r"(\d+ h )?\d+ min", row.locator(".hpchub-time-left").inner_text())
        screenshot(page, f"named-home-{scheduler}")

        # Nobody uses them: the culler stops all three (on Grid Engine: the API), and stopping cancels their jobs.
        if scheduler != CULLED_ON:
            for name in ("cpu", "gpu", ""):
                response = hub.api("DELETE", f"/users/{USER}/servers/{name}" if name else f"/users/{USER}/server")
                assert response.status_code in (202, 204), response.text
        for name in ("cpu", "gpu", ""):
            hub.wait_for_server(USER, ready=False, timeout=CULL_TIMEOUT + CULL_EVERY + 60, name=name)
        culled_after = time.monotonic() - ready_at
        page.reload()
        screenshot(page, f"named-stopped-{scheduler}")
    assert not set(job_ids.values()) & set(jobs_of(client, USER))
    if scheduler == CULLED_ON:
        log = hub.hub_log.read_text(errors="replace")
        assert all(f"Culling server {USER}{server} " in log for server in ("/cpu", "/gpu", ""))
        print(f"culled {culled_after:.0f} s after the servers were ready (timeout {CULL_TIMEOUT} s, every {CULL_EVERY} s)")
