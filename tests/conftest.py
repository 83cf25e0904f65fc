"""Shared fixtures. Real-cluster tests are marked `slurm` / `sge` (and `ssh` for the login node);
tests/run.sh starts those clusters and sets HPCHUB_REQUIRE_CLUSTERS=1 so that a cluster that is
not up fails the run instead of skipping (CI must never pass by skipping them).

A test that does the same on both schedulers takes `scheduler` (it runs once per scheduler, each
run marked like the modules about that scheduler) and `local_site`; a module about one scheduler
overrides `scheduler` with a fixture that returns that scheduler's name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from helpers.jobs import cancel_and_remove_logs, local_site_with_test_profiles
from helpers.support import CLUSTER_SCRIPTS

from hpchub.core.config import SiteConfig, load_site_config
from hpchub.transports.cluster import ClusterClient, client_for

# Modules that touch no scheduler, no test user, no home and no cluster daemon: tests/run.sh runs
# them (marker `beside`) in a second pytest process while the rest waits on the real clusters, whose
# tests mostly wait (a scheduler's interval, a server's start) rather than compute.
# tests/test_suite_lanes.py checks that each stays so.
BESIDE_MODULES = frozenset({
    "test_choices", "test_cli", "test_compose_file", "test_dependencies", "test_docs", "test_engines_endpoint",
    "test_estimate", "test_forwards", "test_job_owner", "test_job_side", "test_packaging", "test_poller", "test_progress",
    "test_public_names", "test_requeue_render", "test_runner", "test_sharing", "test_singleuser", "test_spawn",
    "test_spawn_path", "test_teaching", "test_units", "test_waiting", "test_walltime",
})


# The second lane (tests/run.sh): Grid Engine's own tests, then these modules. Their Slurm tests start
# only once the first lane has run the tests that need Slurm and the login node to themselves
# (ALONE), and they assert nothing about a user's whole job list; the first lane's tests do neither.
SECOND_LANE_MODULES = frozenset({"test_e2e_collaboration", "test_e2e_containers", "test_e2e_sharing",
                                 "test_pages_class", "test_pages_walltime"})
# Markers of the tests that need the clusters' queues to themselves, which tests/run.sh runs after its
# lanes: `busy` fills a cluster (every other test's jobs would wait), `empty_queue` asserts what the
# scheduler answers for a new job ("starts now"), which any lane's waiting or running job would change.
AFTER_THE_LANES = ("busy", "empty_queue")
# (module, test): they stop slurmctld, cut the login node off, or count slurmctld's calls.
ALONE = frozenset({("test_e2e_slurm", "test_a_scheduler_outage_stops_no_server"),
                   ("test_e2e_slurm", "test_one_status_query_per_interval_for_all_users"),
                   ("test_e2e_ssh", "test_the_login_node_down_for_a_while_stops_no_server"),
                   ("test_sshpool", "test_login_node_down_fails_fast_with_backoff_then_recovers")})
# Fixtures of the tests that reach the login node: never in the second lane (the first cuts it off).
NOT_IN_THE_SECOND_LANE = frozenset({"login_node"})
# Modules whose tests of both schedulers share one user's files and so run in one lane:
# test_doctor's probes of either scheduler are carol's, and each test checks that none is left over.
BOTH_SCHEDULERS_IN_ONE_LANE = frozenset({"test_doctor"})
# Set by tests/run.sh: which lane this pytest is ("first" or "second"), and the file the first lane
# makes once its ALONE tests have run (or at its end), which the second lane's Slurm modules wait for.
LANE = os.environ.get("HPCHUB_LANE") if os.environ.get("HPCHUB_LANE_BARRIER") else None
LANE_BARRIER = Path(os.environ.get("HPCHUB_LANE_BARRIER", "."))
BARRIER_TIMEOUT = 20 * 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in AFTER_THE_LANES):
            pass  # tests/run.sh runs them after the lanes
        elif item.path.stem in BESIDE_MODULES:
            item.add_marker(pytest.mark.beside)
        elif _in_the_second_lane(item):
            item.add_marker(pytest.mark.second_lane)
        if (item.path.stem, getattr(item, "originalname", item.name)) in ALONE:
            item.add_marker(pytest.mark.alone)
    if LANE:
        # The first lane's ALONE tests first; the second lane's Grid Engine modules before the modules
        # that wait for them (a stable sort: otherwise the files' order).
        items.sort(key=lambda item: 0 if item.get_closest_marker("alone") else
                   2 if item.path.stem in SECOND_LANE_MODULES else 1)


def _in_the_second_lane(item: pytest.Item) -> bool:
    """Grid Engine's own tests (marked sge, not slurm or ssh), and the tests of SECOND_LANE_MODULES.
    A test marked sge alone that takes a Slurm fixture is a mistake in its marks; no test of the
    second lane may reach the login node."""
    marks = {mark.name for mark in item.iter_markers()}
    fixtures = set(getattr(item, "fixturenames", ()))
    if item.path.stem in SECOND_LANE_MODULES:
        reached = NOT_IN_THE_SECOND_LANE & fixtures
    elif "sge" not in marks or marks & {"slurm", "ssh"} or item.path.stem in BOTH_SCHEDULERS_IN_ONE_LANE:
        return False
    else:
        reached = (NOT_IN_THE_SECOND_LANE | {"slurm_cluster"}) & fixtures
    if reached:
        raise pytest.UsageError(f"{item.nodeid} runs in the second lane (tests/run.sh), yet takes {sorted(reached)}: "
                                "mark it with what it uses, or take its module out of conftest.SECOND_LANE_MODULES")
    return True


_last_alone_test: list[str] = []  # the node id of the first lane's last ALONE test, once collected


def pytest_collection_finish(session: pytest.Session) -> None:
    if LANE != "first":
        return
    alone = [item.nodeid for item in session.items if item.get_closest_marker("alone")]
    if alone:
        _last_alone_test.append(alone[-1])
    else:
        LANE_BARRIER.touch()


def pytest_runtest_logfinish(nodeid: str) -> None:
    if LANE == "first" and nodeid in _last_alone_test:
        LANE_BARRIER.touch()


def pytest_sessionfinish() -> None:
    if LANE == "first":
        LANE_BARRIER.touch()  # however the lane ended: the second never waits for nothing


@pytest.fixture(scope="module", autouse=True)
def _after_the_alone_tests(request: pytest.FixtureRequest) -> None:
    """In the second lane, a module of SECOND_LANE_MODULES starts (its hubs, its jobs) only once the
    first lane's ALONE tests have run: before any other module-scoped fixture (autouse comes first)."""
    if LANE != "second" or request.module.__name__.rsplit(".", 1)[-1] not in SECOND_LANE_MODULES:
        return
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while not LANE_BARRIER.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the first lane did not make {LANE_BARRIER} in {BARRIER_TIMEOUT} s")
        time.sleep(1)


# A pytest started in the background by a script (the lanes of tests/run.sh) begins with SIGINT
# ignored, and every process it starts would inherit that: the hubs' services (the idle culler)
# would ignore JupyterHub's SIGINT, and each hub would take 30 s to stop.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# A command that answers only when the cluster is up.
CLUSTER_PROBES = {"slurm": ["sinfo", "--noheader"], "sge": ["qstat", "-g", "c"]}


def _cluster_answers(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _require(name: str) -> None:
    if _cluster_answers(CLUSTER_PROBES[name]):
        return
    message = f"the local {name} cluster is not up (start it with tests/clusters/{name}.sh up)"
    _fail_or_skip(message)


def _fail_or_skip(message: str) -> NoReturn:
    if os.environ.get("HPCHUB_REQUIRE_CLUSTERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    _require("slurm")


@pytest.fixture(scope="session")
def sge_cluster() -> None:
    _require("sge")


@pytest.fixture(scope="session", params=[pytest.param("slurm", marks=pytest.mark.slurm),
                                         pytest.param("sge", marks=pytest.mark.sge)])
def scheduler(request: pytest.FixtureRequest) -> str:
    """Each real scheduler in turn; its local cluster must be up."""
    _require(request.param)
    return request.param


@pytest.fixture
def local_site(scheduler: str) -> SiteConfig:
    """site-configs/local-<scheduler>.yaml with the real-scheduler tests' own profiles (helpers.profiles)."""
    return local_site_with_test_profiles(scheduler)


@pytest.fixture
async def cleanup(local_site: SiteConfig) -> AsyncIterator[list[tuple[str, str, str]]]:
    """The (job id, user, log) a test submitted: cancelled and removed at the end, even when it fails."""
    submitted: list[tuple[str, str, str]] = []
    yield submitted
    await cancel_and_remove_logs(local_site, submitted)


@pytest.fixture(scope="module")
def client(hub) -> ClusterClient:
    """The cluster of the e2e module's `hub` (its site has the one cluster of a local site config)."""
    site = load_site_config(hub.site_config)
    return client_for(site, next(iter(site.clusters)))


# The login node of tests/clusters/login.sh (its paths are fixed there).
LOGIN_STATE = Path(os.environ.get("HPCHUB_TEST_STATE", "/var/lib/hpchub-test"))


@dataclass(frozen=True)
class LoginNode:
    """sshd as a login node in front of the local Slurm and Grid Engine (tests/clusters/login.sh)."""

    host: str  # the address the hub connects to; known_hosts lists the key under it
    port: int
    hostname: str  # what `hostname` prints on the login node
    keys: dict[str, Path]  # remote account -> private key (ed25519, mode 600, root only)
    service_account: str  # may `sudo -n -u alice|bob|carol` hpchub-job, scancel and qdel
    known_hosts: Path  # the login node's real host key
    wrong_known_hosts: Path  # the same host with another key: every connection must be refused
    sshd_log: Path  # LogLevel VERBOSE: one "Accepted publickey for USER" line per login
    netns: str  # the login node's network namespace (/run/netns/NAME)
    script: Path  # tests/clusters/login.sh: `cut` takes the node off the network, `mend` puts it back

    def ssh_argv(self, user: str, *command: str, known_hosts: Path | None = None) -> list[str]:
        """The system ssh client as ``user`` (a new connection, strict host key checking); the
        remote shell joins ``command`` into one line, as ssh always does."""
        return ["ssh", "-F", "none", "-n", "-p", str(self.port), "-i", str(self.keys[user]),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
                f"{user}@{self.host}", "--", *command]

    def session_pids(self, user: str) -> list[int]:
        """sshd's processes of ``user``'s open connections: the monitor ("sshd: USER [priv]") and
        the session ("sshd: USER@notty"); killing them drops the connections as a crash of the login
        node would (the session alone can outlive a killed monitor for a while)."""
        netns = os.stat(f"/run/netns/{self.netns}").st_ino
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                ours = cmdline == f"sshd: {user} [priv]" or cmdline.startswith(f"sshd: {user}@")
                if ours and os.stat(proc / "ns" / "net").st_ino == netns:
                    pids.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile
        return sorted(pids)

    def log_offset(self) -> int:
        """The sshd log's current size: count logins after this point with accepted_logins()."""
        return self.sshd_log.stat().st_size

    def accepted_logins(self, since: int = 0, user: str | None = None) -> int:
        """``Accepted publickey`` lines written after byte offset ``since`` (of ``user`` if given)."""
        with self.sshd_log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        needle = "Accepted publickey for " + (f"{user} " if user else "")
        return sum(needle in line for line in text.splitlines())


@pytest.fixture(scope="session")
def login_node() -> LoginNode:
    script = CLUSTER_SCRIPTS / "login.sh"
    try:
        status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        _fail_or_skip(f"{script} status did not answer in 60 s")
    if status.returncode != 0:
        _fail_or_skip(f"the SSH login node is not up (start it with tests/clusters/login.sh up): {status.stderr}")
    keys = LOGIN_STATE / "keys"
    return LoginNode(
        host="10.77.0.20", port=22, hostname="login",
        keys={user: keys / f"{user}.key" for user in ("alice", "bob", "carol", "hpchub-svc")},
        service_account="hpchub-svc",
        known_hosts=LOGIN_STATE / "known_hosts", wrong_known_hosts=LOGIN_STATE / "known_hosts.wrong",
        sshd_log=LOGIN_STATE / "login" / "sshd.log", netns="hpchub-login", script=script)
