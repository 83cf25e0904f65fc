"""`hpchub doctor`: a probe job as the user (carol), built like the profile's server job, and one
exit code per failure class. Every class is broken for real: a module that does not exist (Slurm)
and a venv that does not exist (Grid Engine), a venv with jupyterhub 4 (a package of that version),
a held job, and firewall rules inside the network namespace of the Slurm node node1 (the node
cannot reach the hub's API; the hub cannot reach the node's ports). The hub's API is stood in for
by a small HTTP server answering like JupyterHub's ``GET /hub/api``."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import jupyterhub
import pytest
from helpers.profiles import DEFAULT_QUEUE, broken_profile, held_profile, local_site_text, profile
from helpers.support import user_readable

from hpchub.admin.doctor import (
    EXIT_ENVIRONMENT,
    EXIT_HUB_UNREACHABLE,
    EXIT_JUPYTERHUB,
    EXIT_NODE_UNREACHABLE,
    EXIT_NOT_STARTED,
    EXIT_OK,
    Diagnosis,
    Problem,
    _judge_report,
)
from hpchub.core.config import load_site_config
from hpchub.transports.cluster import client_for

USER = "carol"
HOME = Path(f"~{USER}").expanduser()


def _local(address: str) -> bool:
    with contextlib.suppress(OSError), socket.socket() as probe:
        probe.bind((address, 0))
        return True
    return False


# The head node on the namespace nodes' bridge (tests/clusters/slurm.sh), as examples/jupyterhub_config.py's
# hub_ip; loopback while the Slurm cluster (which makes the bridge) is down: Grid Engine's jobs run here.
HUB_ADDRESS = "10.77.0.1" if _local("10.77.0.1") else "127.0.0.1"
NODE1_NETNS = "/run/netns/hpchub-node1"


def doctor(site: Path, profile: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "doctor", str(site), "--profile", profile, "--user", USER,
                           *extra], capture_output=True, text=True, timeout=240)


class _HubAPI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"version": jupyterhub.__version__}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hub_api() -> Iterator[str]:
    """A stand-in for the hub's API on the head node's bridge address: its URL."""
    server = http.server.ThreadingHTTPServer((HUB_ADDRESS, 0), _HubAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HUB_ADDRESS}:{server.server_address[1]}/hub/api"
    server.shutdown()
    server.server_close()


def site_with(scheduler: str, name: str, profiles: str) -> Path:
    return user_readable(f"doctor-{scheduler}-{name}.yaml", local_site_text(scheduler, profiles))


def _probe_leftovers() -> list[str]:
    """carol's probe files: job directories and logs of probe jobs."""
    found = [path.name for path in (HOME / ".hpchub" / "jobs").glob("hpchub-carol-*.doctor*")]
    return found + [path.name for path in (HOME / ".hpchub" / "logs").glob("hpchub-carol-*.doctor*")]


def _probe_jobs(site: Path) -> list[str]:
    """carol's probe jobs the scheduler still lists (running or waiting)."""
    loaded = load_site_config(site)
    client = client_for(loaded, next(iter(loaded.clusters)))
    names = asyncio.run(client.job_names(USER))
    statuses = asyncio.run(client.status([USER]))
    return [job_id for job_id, name in names.items() if name.endswith(".doctor")
            and job_id in statuses and statuses[job_id].state.is_active]


@pytest.fixture
def clean_probes() -> Iterator[list[Path]]:
    """Asserts the doctor left no probe files; yields a list for logs a test expects kept (removed after)."""
    assert _probe_leftovers() == [], "probe files from an earlier run"
    kept: list[Path] = []
    yield kept
    for path in kept:
        path.unlink(missing_ok=True)
    leftovers = _probe_leftovers()
    for name in leftovers:  # never leave them for the next run, but fail
        shutil.rmtree(HOME / ".hpchub" / "jobs" / name, ignore_errors=True)
        (HOME / ".hpchub" / "logs" / name).unlink(missing_ok=True)
    assert leftovers == []


def _kept_log(output: str) -> Path:
    (path,) = [word.rstrip(".") for word in output.split() if word.startswith(str(HOME)) and ".doctor." in word]
    return Path(path)


# --- what the doctor makes of a report (no cluster) -----------------------------------------------

def _report(**changes: object) -> dict:
    report = {"python": {"executable": "/venv/bin/python3", "version": "3.11.2"},
              "jupyterhub": {"importable": True, "version": jupyterhub.__version__, "path": "/venv/x"},
              "jupyter_server": {"importable": True, "version": "2.14.0", "path": "/venv/y"},
              "singleuser_command": "/venv/bin/jupyterhub-singleuser",
              "hpchub": {"importable": True, "version": "0.1.0"},
              "hub_api": {"asked": True, "url": "http://hub:8081/hub/api", "host": "hub", "port": 8081, "tcp": "ok",
                          "http": 200, "hub_version": jupyterhub.__version__},
              "node": "node7", "port": 40000}
    report.update(changes)
    return report


def test_the_exit_code_is_the_failure_that_comes_first_in_a_servers_start():
    diagnosis = Diagnosis()
    _judge_report(diagnosis, _report(), "slurm", "http://hub:8081/hub/api")
    assert diagnosis.problems == [] and diagnosis.exit_code == EXIT_OK
    unreachable = {"asked": True, "url": "http://hub:8081/hub/api", "host": "hub", "port": 8081,
                   "tcp": "ConnectionRefusedError: Connection refused"}
    diagnosis = Diagnosis()
    # hpchub need not be on the node (the job side travels with the server job): a fact, no problem.
    _judge_report(diagnosis, _report(hpchub={"importable": False, "error": "ModuleNotFoundError"},
                                      jupyter_server={"importable": True, "version": "1.24.0"},
                                      hub_api=unreachable), "slurm", "http://hub:8081/hub/api")
    assert [problem.code for problem in diagnosis.problems] == [EXIT_JUPYTERHUB, EXIT_HUB_UNREACHABLE]
    assert diagnosis.exit_code == EXIT_JUPYTERHUB
    assert diagnosis.problems[0].message.startswith("jupyter_server 1.24.0 in the environment of /venv/bin/python3 is "
                                                    "too old")
    assert "hpchub: not installed on the node (not needed: the job side travels with the job)" in diagnosis.facts
    assert "nothing listens there; is the hub running" in diagnosis.problems[1].message
    diagnosis.problems.append(Problem(EXIT_ENVIRONMENT, "..."))
    assert diagnosis.exit_code == EXIT_ENVIRONMENT
    # Another version than the hub's within the supported range (JupyterHub 4 to 6) works: a note, no
    # problem; JupyterHub 3 or none on the PATH is exit 4.
    diagnosis = Diagnosis()
    _judge_report(diagnosis, _report(jupyterhub={"importable": True, "version": "4.1.6"}), "slurm", "")
    assert diagnosis.problems == [] and any("another version than the hub's" in fact for fact in diagnosis.facts)
    _judge_report(diagnosis, _report(jupyterhub={"importable": True, "version": "3.1.1"},
                                     singleuser_command=""), "slurm", "")
    assert [problem.code for problem in diagnosis.problems] == [EXIT_JUPYTERHUB, EXIT_JUPYTERHUB]


# --- a server would start -------------------------------------------------------------------------

def test_a_healthy_profile_passes_every_check(scheduler, hub_api, clean_probes):
    site = site_with(scheduler, "healthy", "")
    result = doctor(site, "small", "--hub-api", hub_api)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    out = result.stdout
    assert f"jupyterhub: {jupyterhub.__version__} on the node, {jupyterhub.__version__} on the hub" in out
    assert "python: 3." in out and "/opt/hpchub/venv/bin/python" in out
    assert "hpchub: " in out and "not importable" not in out
    assert f"hub API: {hub_api} reached from " in out and f"JupyterHub {jupyterhub.__version__}" in out
    assert "node port: the hub reached the probe at " in out
    assert out.rstrip().endswith("ok: a server of this profile can start for this user")
    assert _probe_jobs(site) == []


def test_a_profile_whose_account_comes_from_the_scheduler_is_probed_with_the_users_default(scheduler, hub_api,
                                                                                         clean_probes):
    site = site_with(scheduler, "allocated", profile("mine", "mine", scheduler) + "    account: {from_scheduler: true}\n")
    result = doctor(site, "mine", "--hub-api", hub_api)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    word = {"slurm": "account", "sge": "project"}[scheduler]
    assert f"as {USER} (profile 'mine' (cluster {scheduler}, queue {DEFAULT_QUEUE[scheduler]}, {word} course))" \
        in result.stdout


# --- each failure class, for real ---------------------------------------------------------------

def test_an_environment_that_does_not_load_is_exit_3(scheduler, hub_api, clean_probes):
    site = site_with(scheduler, "broken", broken_profile(scheduler))
    result = doctor(site, "broken", "--hub-api", hub_api)
    assert result.returncode == EXIT_ENVIRONMENT, result.stdout + result.stderr
    words = {"slurm": "the 'module' command is not available", "sge": "cannot activate the virtual environment"}
    assert f"PROBLEM (3): The job's environment did not load on vm: hpchub: {words[scheduler]}" in result.stdout
    # The fix names the environment block's place in the site config.
    assert f"{site}:" in result.stdout and "(profiles[broken].environment)" in result.stdout
    log = _kept_log(result.stdout)  # it holds the error, so it is kept and named
    assert log.exists()
    clean_probes.append(log)


@pytest.fixture(scope="module")
def jupyterhub3_venv() -> Iterator[Path]:
    """A world-readable venv (no hpchub) whose importable jupyterhub is version 3: a package of that
    name and version, installed by hand in its site-packages (what the probe imports and reads), so
    the test needs neither the registry nor pip's 20-40 s."""
    directory = Path(tempfile.mkdtemp(prefix="hpchub-test-jupyterhub3-"))
    directory.chmod(0o755)
    venv = directory / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    (site_packages / "jupyterhub").mkdir()
    (site_packages / "jupyterhub" / "__init__.py").write_text('__version__ = "3.1.1"\n')
    (site_packages / "jupyterhub-3.1.1.dist-info").mkdir()
    (site_packages / "jupyterhub-3.1.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jupyterhub\nVersion: 3.1.1\n")
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    yield venv
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
def test_jupyterhub_older_than_the_supported_range_is_exit_4(jupyterhub3_venv, hub_api, clean_probes):
    profile = (f"\n  - slug: jh3\n    name: jupyterhub 3\n    cluster: sge\n    queue: short.q\n"
               f'    resources: {{cores: 1, memory: 1G, walltime: "00:10:00"}}\n'
               f"    environment:\n      venv: {jupyterhub3_venv}\n")
    site = site_with("sge", "jh3", profile)
    result = doctor(site, "jh3", "--hub-api", hub_api)
    assert result.returncode == EXIT_JUPYTERHUB, result.stdout + result.stderr
    assert f"python: 3.11.2 at {jupyterhub3_venv}/bin/python3" in result.stdout
    assert f"PROBLEM (4): jupyterhub 3.1.1 in the environment of {jupyterhub3_venv}/bin/python3 is too old" in result.stdout
    assert f"Fix: install jupyterhub (best the hub's {jupyterhub.__version__}; jupyterhub 4.x to 6.x with " \
           "jupyter_server 2.x work)" in result.stdout
    # That venv has no hpchub either: not needed, the job side travels with the server job.
    assert "hpchub: not installed on the node (not needed" in result.stdout


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_job_that_never_starts_is_exit_7(hub_api, clean_probes):
    site = site_with("slurm", "held", held_profile("slurm"))
    result = doctor(site, "held", "--hub-api", hub_api, "--start-timeout", "5")
    assert result.returncode == EXIT_NOT_STARTED, result.stdout + result.stderr
    assert "is held or in an error state (PENDING" in result.stdout and "release a hold" in result.stdout
    assert _probe_jobs(site) == []  # cancelled


# node1 (a network namespace) only: a firewall rule there touches nobody else's jobs on the head node.
NODE1_PROFILE = ("\n  - slug: node1\n    name: on node1\n    cluster: slurm\n    queue: multi\n"
                 '    resources: {cores: 1, memory: 100M, walltime: "00:10:00", nodes: 1}\n'
                 '    directives: ["--nodelist=node1"]\n')


@contextlib.contextmanager
def node1_rule(*rule: str) -> Iterator[None]:
    """An iptables rule inside node1's network namespace, removed afterwards whatever happens."""
    iptables = ["nsenter", f"--net={NODE1_NETNS}", "iptables"]
    subprocess.run([*iptables, "-A", *rule], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run([*iptables, "-D", *rule], check=True, timeout=30)


@pytest.fixture
def node1() -> None:
    if shutil.which("iptables") is None or not Path(NODE1_NETNS).exists():
        pytest.skip("needs iptables and the Slurm node namespaces (tests/clusters/slurm.sh)")


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.usefixtures("slurm_cluster", "node1")
def test_a_node_that_cannot_reach_the_hub_api_is_exit_5(hub_api, clean_probes):
    site = site_with("slurm", "node1", NODE1_PROFILE)
    port = hub_api.split(":")[2].split("/")[0]
    with node1_rule("OUTPUT", "-p", "tcp", "-d", HUB_ADDRESS, "--dport", port, "-j", "DROP"):
        result = doctor(site, "node1", "--hub-api", hub_api, "--connect-timeout", "3")
    assert result.returncode == EXIT_HUB_UNREACHABLE, result.stdout + result.stderr
    assert f"PROBLEM (5): The node node1 cannot reach the hub's API at {hub_api} (no answer within 3 s" in result.stdout
    assert f"Fix: let the compute nodes connect to {HUB_ADDRESS}:{port} (firewall)" in result.stdout
    assert "node port: the hub reached the probe at 10.77.0.11:" in result.stdout  # the other way works
    assert _probe_jobs(site) == []


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.usefixtures("slurm_cluster", "node1")
def test_a_node_port_the_hub_cannot_reach_is_exit_6(hub_api, clean_probes):
    site = site_with("slurm", "node1", NODE1_PROFILE)
    # New connections to the ports a listener on port 0 gets (the namespace's ip_local_port_range); slurmd's
    # port (6818) and the replies to node1's own connections pass.
    low, high = subprocess.run(["nsenter", f"--net={NODE1_NETNS}", "cat", "/proc/sys/net/ipv4/ip_local_port_range"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.split()
    with node1_rule("INPUT", "-p", "tcp", "--syn", "--dport", f"{low}:{high}", "-j", "DROP"):
        result = doctor(site, "node1", "--hub-api", hub_api, "--connect-timeout", "3")
    assert result.returncode == EXIT_NODE_UNREACHABLE, result.stdout + result.stderr
    assert "PROBLEM (6): The hub cannot connect to port " in result.stdout
    assert " on node1 (10.77.0.11): no answer within 3 s." in result.stdout
    assert f"hub API: {hub_api} reached from node1" in result.stdout  # the other way works
    assert _probe_jobs(site) == []


# --- check --live runs the same probe per profile environment -----------------------------------

@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
def test_check_live_probes_each_environment_and_names_the_broken_ones_line(clean_probes):
    site = site_with("sge", "check", broken_profile("sge"))
    lines = site.read_text().splitlines()
    environment_line = lines.index("    environment:", lines.index("  - slug: broken")) + 1
    result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", "--live", "--probe-user", USER, str(site)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"{site}:{environment_line}: profiles[broken].environment: The job's environment did not load on vm: "
            "hpchub: cannot activate the virtual environment /nonexistent/venv") in result.stderr, result.stderr
    # The cluster's own environment (profiles small and smp share it and the queue: one probe) loads.
    venv_line = lines.index("    environment:") + 1  # the cluster's
    assert f"info: {site}:{venv_line}: clusters.sge.environment: loads on vm (profile small, probe job " in result.stdout
    assert "profile smp" not in result.stdout
    assert f"info: {site}:8: clusters.sge.submit.via: /opt/hpchub/venv/bin/hpchub-job runs as {USER} through sudo" \
        in result.stdout
    clean_probes.append(_kept_log(result.stderr))
