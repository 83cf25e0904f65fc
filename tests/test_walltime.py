"""The walltime without a browser: the job's end in the script, the report that carries it, the
spawner's state and end reason, the home page's data, and the JupyterLab extension as JupyterLab
finds and loads it (the browser tests are in test_pages_walltime.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap
import time

import pytest
from helpers.render_cases import USER
from helpers.support import REPO, SITE_CONFIGS
from test_spawner_lifecycle import TOKEN, fake, make_spawner, poll_until_ended, start_running  # noqa: F401 (fixture)
from tornado import web

from hpchub.core.config import load_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request
from hpchub.core.poller import JobView, Presence
from hpchub.hub import porthandler, walltime
from hpchub.job.extension import walltime_info
from hpchub.job.walltime import DEFAULT_WARNING
from hpchub.schedulers import JobState, JobStatus

EXTENSION = REPO / "labextensions" / "hpchub-walltime"


# -- the job script ------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "profile", "seconds"), [("local-slurm.yaml", "small", 3600),
                                                            ("local-sge.yaml", "smp", 7200)])
def test_the_script_exports_the_jobs_end_from_its_start_and_walltime(config, profile, seconds):
    site = load_site_config(SITE_CONFIGS / config)
    script = server_job(site, resolve_request(site, site.profile(profile)), USER).script
    line = next(line for line in script.splitlines() if "HPCHUB_JOB_END=" in line)
    assert line == f"export HPCHUB_JOB_END=$(( $(date +%s) + {seconds} ))"
    # Before the environment block (a failing module load must not be what sets the start) and the server.
    assert script.index(line) < script.index("start-server.sh jupyterhub-singleuser")
    before = int(time.time())
    ends = int(subprocess.run(["bash", "-c", f"{line}; echo $HPCHUB_JOB_END"], capture_output=True, text=True,
                              check=True).stdout)
    assert before + seconds <= ends <= int(time.time()) + seconds
    # The warning is per spawn: it travels in the env file, so `hpchub render` shows the submitted script.
    assert "HPCHUB_WALLTIME_WARNING" not in script


# -- the report and the state ------------------------------------------------------------------
def test_the_port_report_may_carry_the_jobs_end_and_nothing_else():
    assert porthandler.read_report(b'{"port": 8888}') == (8888, None)
    ends = int(time.time()) + 3600
    assert porthandler.read_report(json.dumps({"port": 8888, "ends": ends}).encode()) == (8888, ends)
    for body in (b'{"ends": 1700000000}', b'{"port": 8888, "ends": -5}', b'{"port": 8888, "ends": true}',
                 b'{"port": 8888, "ends": "1700000000"}', b'{"port": 8888, "host": "evil"}', b'[8888]'):
        with pytest.raises(web.HTTPError) as error:
            porthandler.read_report(body)
        assert error.value.status_code == 400, body


def test_a_reported_end_no_job_can_have_is_refused():
    """A job's end shows on its owner's home page at every load: 10**20 is past what the clock
    functions take (a 500 on every load, kept in the state across restarts)."""
    now = int(time.time())
    for ends in (10**20, now + 367 * 86400, now - 2 * 86400):
        with pytest.raises(web.HTTPError) as error:
            porthandler.read_report(json.dumps({"port": 8888, "ends": ends}).encode())
        assert error.value.status_code == 400 and "ends" in error.value.log_message, ends
    for ends in (now + 30 * 86400, now - 600):  # a month's walltime; a node's clock a little behind
        assert porthandler.read_report(json.dumps({"port": 8888, "ends": ends}).encode()) == (8888, ends)


async def test_an_impossible_end_in_a_saved_state_is_dropped_and_the_page_still_renders(fake):  # noqa: F811
    """A state written before ends were bounded must not keep breaking the home page."""
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake)
    state = dict(spawner.get_state(), job_ends=10**20)
    restarted = make_spawner(options={"profile": "small"})
    restarted.load_state(state)
    info = restarted.page_info()
    assert info["job_id"] == "100" and info["ends"] is None and info["time_left"] == ""
    assert "job_ends" not in restarted.get_state()
    ends = int(time.time()) + 3600  # a plausible end is kept
    restarted.load_state(dict(state, job_ends=ends))
    assert restarted.page_info()["ends"] == ends


async def test_the_reported_end_is_kept_in_the_state_across_a_hub_restart(fake):  # noqa: F811
    spawner = make_spawner(options={"profile": "small"})
    spawner.walltime_warning = 300
    ends = int(time.time()) + 3600
    await start_running(spawner, fake, ends=ends)
    _, files = fake.files["hpchub-alice-small"]
    assert "HPCHUB_WALLTIME_WARNING=300\n" in files["env"]
    state = json.loads(json.dumps(spawner.get_state()))  # as the hub's database keeps it
    assert state["job_ends"] == ends
    restarted = make_spawner(options={"profile": "small"})
    restarted.load_state(state)
    assert restarted.job_ends == ends
    info = restarted.page_info(now=ends - 4320)
    assert info["job_id"] == "100" and info["time_left"] == "1 h 12 min" and info["ends"] == ends
    assert info["state"] == "running on vm"  # from the shared poller's last answer


# -- why a job ended ------------------------------------------------------------------------------
def status(scheduler_state: str, state: JobState = JobState.FAILED) -> JobView:
    return JobView(Presence.KNOWN, JobStatus("7", state, scheduler_state))


@pytest.mark.parametrize(("view", "now", "reason"), [
    (status("TIMEOUT"), 900, "walltime reached"),  # Slurm says so, whatever the clock
    (status("COMPLETED", JobState.FINISHED), 1000, "the job ended (COMPLETED)"),  # the scheduler's word wins
    (status("CANCELLED", JobState.CANCELLED), 990, "the job ended (CANCELLED)"),
    (JobView(Presence.GONE), 1005, "walltime reached"),  # Grid Engine forgets the job: the clock decides
    (JobView(Presence.GONE), 1000 - walltime.END_SLACK_SECONDS, "walltime reached"),
    (JobView(Presence.GONE), 1000 - walltime.END_SLACK_SECONDS - 1, "the job ended"),
])
def test_the_end_reason_from_the_scheduler_and_the_clock(view, now, reason):
    assert walltime.end_reason(view, job_ends=1000, now=now) == reason


def test_an_unknown_end_is_never_the_walltime():
    assert walltime.end_reason(JobView(Presence.GONE), job_ends=0, now=10**10) == "the job ended"


async def test_walltime_reached_survives_clear_state_and_a_new_start_forgets_it(fake):  # noqa: F811
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake, ends=int(time.time()) + 5)  # ends within the slack
    del fake.jobs["100"]  # gone, as Grid Engine reports a job killed at its h_rt
    assert await poll_until_ended(spawner)
    await spawner.stop()  # what JupyterHub does after poll() said the job ended, then clear_state()
    spawner.clear_state()
    assert spawner.get_state() == {"end_reason": "walltime reached"}
    assert spawner.page_info()["end_reason"] == "walltime reached" and spawner.page_info()["job_id"] == ""
    spawner.api_token = TOKEN  # JupyterHub gives every spawn a new token (clear_state dropped the old one)
    await start_running(spawner, fake)
    assert spawner.end_reason == "" and "end_reason" not in spawner.get_state()


async def test_an_early_end_and_a_stop_are_told_apart_from_the_walltime(fake):  # noqa: F811
    spawner = make_spawner(options={"profile": "small"})
    await start_running(spawner, fake, ends=int(time.time()) + 3600)
    fake.set("100", JobState.FAILED)
    assert await poll_until_ended(spawner)
    assert spawner.end_reason == "the job ended (FAILED)"
    await spawner.stop()
    assert spawner.end_reason == "the job ended (FAILED)"
    spawner.clear_state()
    spawner.api_token = TOKEN
    await start_running(spawner, fake, ends=int(time.time()) + 3600)
    await spawner.stop()  # the user's stop
    assert spawner.end_reason == "stopped"


def test_durations_and_clock_times_for_people():
    assert [walltime.duration_text(s) for s in (-3, 40, 300, 4320, 90000)] == \
        ["0 s", "40 s", "5 min", "1 h 12 min", "1 d 1 h"]
    now = time.mktime((2024, 5, 2, 12, 0, 0, 0, 0, -1))
    assert walltime.clock_text(now + 9000, now) == "14:30"
    assert walltime.clock_text(now + 86400, now) == "2024-05-03 12:00"


def test_the_servers_walltime_answer_comes_from_the_jobs_environment():
    environ = {"HPCHUB_JOB_END": "1700000000", "HPCHUB_WALLTIME_WARNING": "120"}
    assert walltime_info(environ, now=1699999000) == {"ends": 1700000000, "warning": 120, "now": 1699999000}
    assert walltime_info({}, now=5) == {"ends": None, "warning": DEFAULT_WARNING, "now": 5}
    assert walltime_info({"HPCHUB_WALLTIME_WARNING": "0"}, now=5)["warning"] == 0


# -- the JupyterLab extension ---------------------------------------------------------------------
def test_jupyterlab_finds_the_extension_where_the_package_installs_it(tmp_path):
    from jupyterlab_server.config import get_federated_extensions, get_page_config

    shutil.copytree(EXTENSION, tmp_path / "hpchub-walltime")
    found = get_federated_extensions([str(tmp_path)])
    assert found["hpchub-walltime"]["install"]["packageName"] == "hpchub"
    (entry,) = [e for e in get_page_config([str(tmp_path)])["federated_extensions"] if e["name"] == "hpchub-walltime"]
    assert entry["extension"] == "./extension"
    script = tmp_path / "hpchub-walltime" / entry["load"]
    # The file name carries the content's hash: an edited file gets a new name, past browsers' caches.
    assert script.name == f"remoteEntry.{hashlib.sha256(script.read_bytes()).hexdigest()[:16]}.js"
    setup = (REPO / "setup.cfg").read_text()
    assert "share/jupyter/labextensions/hpchub-walltime/static = labextensions/hpchub-walltime/static/" in setup


NODE_HARNESS = textwrap.dedent("""
    // What JupyterLab's bootstrap does with a federated extension, with a stand-in app and page.
    const nodes = {};
    global.document = {
      cookie: '_xsrf=xsrf-value',
      getElementById: id => nodes[id] || null,
      createElement: () => ({style: {}, attributes: {}, setAttribute(k, v) { this.attributes[k] = v; },
                             appendChild() {}, remove() {}}),
      body: {appendChild: node => { nodes[node.id] = node; }},
    };
    global.window = {};
    const requests = [], executed = [];
    const now = Date.now() / 1000;
    const app = {
      restored: Promise.resolve(),
      commands: {hasCommand: id => id === 'docmanager:save-all', execute: id => { executed.push(id); return Promise.resolve(); }},
      serviceManager: {serverSettings: {baseUrl: '/user/bob/', token: '', init: {credentials: 'same-origin'},
        fetch: (url, init) => { requests.push([url, init]);
          return Promise.resolve({ok: true, json: () => ({ends: now + ENDS_IN, warning: 120, now: now})}); }}},
    };
    const intervals = [];
    global.setInterval = (f, ms) => intervals.push(ms);
    require(process.argv[2]);
    (async () => {
      const container = window._JUPYTERLAB['hpchub-walltime'];
      await container.init({});
      const module = (await container.get('./extension'))();
      const plugins = module.__esModule ? module.default : [module];
      plugins.forEach(p => p.activate(app));
      await new Promise(resolve => setTimeout(resolve, 50));
      console.log(JSON.stringify({ids: plugins.map(p => p.id), auto: plugins.map(p => p.autoStart),
        requests, executed, label: nodes['hpchub-walltime'] && nodes['hpchub-walltime'].textContent,
        warning: nodes['hpchub-walltime-warning'] && nodes['hpchub-walltime-warning'].textContent}));
    })();
""")


@pytest.mark.parametrize(("ends_in", "warned"), [(4320, False), (100, True)])
def test_the_extension_loads_as_jupyterlab_loads_it_shows_the_time_and_saves_at_the_warning(tmp_path, ends_in, warned):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    (script,) = (EXTENSION / "static").glob("remoteEntry.*.js")
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS.replace("ENDS_IN", str(ends_in)))
    result = subprocess.run(["node", str(harness), str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ids"] == ["hpchub-walltime:plugin"] and seen["auto"] == [True]
    ((url, init),) = seen["requests"]
    assert url == "/user/bob/hpchub/walltime" and init["headers"] == {"X-XSRFToken": "xsrf-value"}
    assert init["credentials"] == "same-origin"
    if warned:
        assert seen["label"].startswith("Time left: 1 min, ends ")
        assert "walltime ends" in seen["warning"] and seen["executed"] == ["docmanager:save-all"]
    else:
        assert seen["label"].startswith("Time left: 1 h 11 min, ends ") or seen["label"].startswith(
            "Time left: 1 h 12 min, ends ")
        assert seen.get("warning") is None and seen["executed"] == []


def test_the_home_page_info_needs_no_spawner():
    from hpchub.hub import pages
    from hpchub.schedulers import JobState, JobStatus

    assert pages.server_info("", "walltime reached", 0, None)["end_reason"] == "walltime reached"
    running = JobStatus("7", JobState.RUNNING, "RUNNING", nodes=("node1",))
    info = pages.server_info("7", "", 1_000 + 4320, running, now=1_000)
    assert info["state"] == "running on node1" and info["time_left"] == "1 h 12 min" and info["end_reason"] == ""
    assert pages.cached_status({}, "7") is None  # the state names no cluster: nothing to ask
