"""End to end, servers in environments WITHOUT hpchub (issue 19): a profile's `environment.venv` is
one of tests/setup-envs.sh's venvs (JupyterHub 4, 5 or 6 with JupyterLab 4, nothing of hpchub); the
job side travels with the job (hpchub.core.bundle). On the real local Slurm and Grid Engine, through
a real hub and proxy: the port is reported, JupyterLab answers through the proxy, the walltime
endpoint and the labextension hpchub-walltime are served. An environment the server cannot run in
fails the spawn at once with the job's `hpchub: ...` line naming the missing piece."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.hub import Hub, run_hub, spawn, spawn_failure_message, stop
from helpers.profiles import local_site_text, profile

pytestmark = [pytest.mark.e2e]

ENVS = Path("/opt/hpchub-test/envs")  # made by tests/setup-envs.sh (tests/run.sh runs it)
POLL_INTERVAL = 5
# The user of each hub's spawns (the job names carry the env: hpchub-USER-env-jh4); "ssh": the hub
# submits to the local Slurm through the login node (tests/clusters/login.sh).
USER = {"slurm": "carol", "sge": "bob", "ssh": "alice"}
MEMORY = {"slurm": "1G", "sge": "2G", "ssh": "1G"}  # SGE's h_vmem is virtual memory: JupyterLab needs more of it
MARKS = {"slurm": [pytest.mark.slurm], "sge": [pytest.mark.sge], "ssh": [pytest.mark.slurm, pytest.mark.ssh]}
# One spawn per case: every env once, on both schedulers, the bundle over SSH too.
SERVES = [("slurm", "jh4"), ("sge", "jh5"), ("slurm", "jh6"), ("ssh", "jh5")]
FAILS = [("slurm", "no-singleuser", "jupyterhub-singleuser is not on the PATH"),
         ("sge", "jh3", "jupyterhub 3.")]


def env_profiles(scheduler: str, memory: str) -> str:
    return "".join(profile(f"env-{name}", f"JupyterHub in {name}, no hpchub", scheduler, memory,
                           environment=f"venv: {ENVS / name}")
                   for name in ("jh3", "jh4", "jh5", "jh6", "no-singleuser"))


def site_text(request: pytest.FixtureRequest, kind: str) -> str:
    """The local site of ``kind`` (its clusters required) with a profile per env."""
    if kind == "ssh":
        from test_e2e_ssh import ssh_site_text

        request.getfixturevalue("slurm_cluster")
        return ssh_site_text(request.getfixturevalue("login_node")) + env_profiles("slurm", MEMORY[kind])
    request.getfixturevalue(f"{kind}_cluster")
    return local_site_text(kind, env_profiles(kind, MEMORY[kind]))


@pytest.fixture(scope="module")
def hubs(tmp_path_factory) -> Iterator[Callable[[str, str], Hub]]:
    """A hub per kind (slurm, sge, ssh), started when a test first needs it."""
    for name in ("jh3", "jh4", "jh5", "jh6", "no-singleuser"):
        assert (ENVS / name / ".hpchub-test-spec").exists(), f"{ENVS / name} missing: run bash tests/setup-envs.sh"
    started: dict[str, Hub] = {}
    runs = []

    def hub_for(kind: str, text: str) -> Hub:
        if kind not in started:
            run = run_hub(tmp_path_factory.mktemp(f"hub-envs-{kind}"), text, (USER[kind],), poll_interval=POLL_INTERVAL)
            started[kind] = next(run)
            runs.append(run)
        return started[kind]

    yield hub_for
    for run in runs:
        run.close()


def job_log(server: dict) -> str:
    return Path(server["state"]["job_log"]).read_text()


def failure_lines(message: str) -> list[str]:
    """The lines of a failed spawn's message: the API's answer, or the progress stream's events
    (``data: {JSON}``) when the spawn outlasted the hub's slow_spawn_timeout."""
    events = [json.loads(line[len("data: "):]) for line in message.splitlines() if line.startswith("data: {")]
    texts = [event.get("message", "") for event in events] if events else [message]
    return [line for text in texts for line in text.splitlines()]


def server_job_dir(server: dict) -> str:
    return f"/home/{server['state']['job_user']}/.hpchub/jobs/{server['state']['job_key']}"


@pytest.mark.parametrize("kind, env", [pytest.param(k, e, marks=MARKS[k]) for k, e in SERVES])
def test_a_server_in_an_environment_without_hpchub_reports_its_port_and_serves_lab_and_the_walltime(
        request, hubs, kind, env):
    hub, user = hubs(kind, site_text(request, kind)), USER[kind]
    server = spawn(hub, user, {"profile": f"env-{env}"})
    try:
        log = job_log(server)
        # The server is the env's JupyterHub and JupyterLab; hpchub's extension came with the job.
        assert "hpchub_job.extension | extension was successfully loaded" in log, log
        assert f"JupyterLab extension loaded from {ENVS / env}/" in log, log
        assert re.search(rf"single-user server extension version {env[2]}\.", log), log
        lab = hub.get_user_url(user, "lab")
        assert lab.status_code == 200, lab.text[:500]
        # JupyterLab found the labextension on the job's JUPYTER_PATH (its bundle) and serves its code.
        page = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                    lab.text, re.S).group(1))
        (extension,) = [found for found in page["federated_extensions"] if found["name"] == "hpchub-walltime"]
        assert page["labextensionsPath"][0] == f"{server_job_dir(server)}/jupyter/labextensions"
        script = hub.get_user_url(user, f"lab/extensions/hpchub-walltime/{extension['load']}")
        assert script.status_code == 200 and "hpchub-walltime" in script.text
        walltime = hub.get_user_url(user, "hpchub/walltime")
        assert walltime.status_code == 200, walltime.text
        ends = walltime.json()["ends"]
        assert ends and 0 < ends - time.time() <= 10 * 60  # the profile's ten minutes
    finally:
        stop(hub, user)


@pytest.mark.parametrize("kind, env, missing", [pytest.param(k, e, m, marks=MARKS[k]) for k, e, m in FAILS])
def test_an_environment_the_server_cannot_run_in_fails_the_spawn_at_once_naming_the_missing_piece(
        request, hubs, kind, env, missing):
    hub, user = hubs(kind, site_text(request, kind)), USER[kind]
    started = time.monotonic()
    message = spawn_failure_message(hub, user, {"profile": f"env-{env}"})
    seconds = time.monotonic() - started
    assert seconds < 20 + POLL_INTERVAL, f"the failed spawn took {seconds:.0f} s"
    (line,) = [line for line in failure_lines(message) if line.startswith("hpchub: ") and missing in line]
    assert "JupyterHub" in line or "jupyterhub" in line
    hub.wait_for_server(user, ready=False, timeout=10)
