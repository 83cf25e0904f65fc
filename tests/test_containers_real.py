"""Rootless podman where the jobs run, as the user, in real batch jobs: no systemd, no login
session, XDG_RUNTIME_DIR unset (see docs/test-clusters.md, "Containers"). The image is the test
image of tests/clusters/image.sh (Debian bookworm with JupyterHub 5.x, no hpchub), podman is
configured by tests/clusters/containers.sh; tests/run.sh runs both. A missing or stale image fails
these tests, it never skips them.

Each job runs the probe script below: it loads the image into the user's own podman
storage the first time (per node and user), then runs the container as a job would start a server:
`podman run --rm --userns keep-id --network host -v $HOME:$HOME IMAGE ...`."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.jobs import cancel_and_remove_logs, submit, wait_for_file_text
from helpers.profiles import local_site_text
from helpers.support import CLUSTER_SCRIPTS, user_readable

from hpchub.core.config import SiteConfig, parse_site_config
from hpchub.transports.cluster import client_for

pytestmark = [pytest.mark.containers]

IMAGE_SCRIPT = CLUSTER_SCRIPTS / "image.sh"
IMAGES = Path(os.environ.get("HPCHUB_TEST_IMAGES", "/var/lib/hpchub-test/images"))  # as image.sh
ARCHIVE = IMAGES / "hpchub-test-lab.oci.tar"
REF_FILE = IMAGES / "hpchub-test-lab.ref"
USER = "alice"
# The first container of a user on a node loads the image and maps its files for --userns keep-id
# (about 15-30 s); later ones start in well under a second.
JOB_TIMEOUT = 180

PROBE = r"""#!/bin/bash
# usage: probe.sh IMAGE ARCHIVE NAME [serve]
set -u
image=$1 archive=$2 name=$3 mode=${4:-}
# A batch job has no login session: podman uses its own per-user directory under /tmp.
unset XDG_RUNTIME_DIR
echo "node: $(hostname) mnt=$(readlink /proc/self/ns/mnt) net=$(readlink /proc/self/ns/net)"
info='runtime={{.Host.OCIRuntime.Name}} cgroups={{.Host.CgroupManager}} graphroot={{.Store.GraphRoot}}'
echo "podman: $(podman info --format "$info")"
podman image exists "$image" || podman load -q -i "$archive" >/dev/null || { echo "podman exit: load failed"; exit 1; }
inside='echo "image: $(cat /etc/hpchub-test-image)"
echo "container: uid=$(id -u) mnt=$(readlink /proc/self/ns/mnt) net=$(readlink /proc/self/ns/net)"
echo "jupyterhub: $(python3 -c "import jupyterhub; print(jupyterhub.__version__)")"
python3 -c "import hpchub" 2>/dev/null && echo "hpchub: importable" || echo "hpchub: absent"
touch "$HOME/.hpchub-container-probe-'"$name"'" && echo "home: writable"'
if [ "$mode" = serve ]; then
    # A server on all of the node's addresses, as a job's server in --network host.
    inside="$inside
exec timeout 300 python3 -u -m http.server --bind 0.0.0.0 --directory /etc 0"
fi
# scancel sends SIGTERM to the job's processes: `podman run` dies of it without stopping the
# container, whose conmon runs outside the job's process tree; so the job stops it by name. Also
# when `podman run` got the signal first and this script sees only its end (then it may exit 0).
stop_container() {
    echo "job: $1, stopping the container"
    podman stop --ignore --time 2 "$name" >/dev/null
    echo "job: podman stop exit $?"
    exit 143
}
trap 'stop_container TERM' TERM
trap 'stop_container INT' INT
trap 'stop_container HUP' HUP
podman run --rm --name "$name" --userns keep-id --network host -v "$HOME:$HOME" -w "$HOME" "$image" \
    sh -c "$inside" &
wait "$!"
status=$?
echo "podman exit: $status"
! podman container exists "$name" || stop_container "podman run ended, its container did not"
"""

# The multi partition's nodes by name (tests/clusters/slurm.sh: node addresses 10.77.0.1N).
NODE_PROFILES = "".join(f"""
  - slug: container-{node}
    name: one core on {node}
    cluster: slurm
    queue: multi
    resources: {{cores: 1, memory: 100M, walltime: "00:10:00"}}
    directives: ["--nodelist={node}"]
""" for node in ("node1", "node2"))


@dataclass(frozen=True)
class LabImage:
    ref: str  # localhost/hpchub-test-lab:TAG, the name inside the archive
    archive: Path
    mark: str  # the text of /etc/hpchub-test-image


@pytest.fixture(scope="module")
def test_image() -> LabImage:
    status = subprocess.run(["bash", str(IMAGE_SCRIPT), "status"], capture_output=True, text=True, timeout=30)
    if status.returncode != 0:
        pytest.fail(f"the test image is missing or out of date: build it with `bash {IMAGE_SCRIPT} build` "
                    f"(tests/run.sh does): {status.stderr.strip()}")
    mark = re.search(r'^MARK="(.*)"$', IMAGE_SCRIPT.read_text(), re.MULTILINE)
    assert mark, f"no MARK= line in {IMAGE_SCRIPT}"
    return LabImage(ref=REF_FILE.read_text().strip(), archive=ARCHIVE, mark=mark.group(1))


@pytest.fixture(scope="module")
def probe() -> Path:
    return user_readable("container-probe.sh", PROBE)


# (site, job id, user, log) of the jobs a test submitted.
Submitted = list[tuple[SiteConfig, str, str, str]]


@pytest.fixture
async def submitted() -> AsyncIterator[Submitted]:
    """The test's jobs: cancelled with their logs at the end, even when it fails; and the files
    the probe leaves in the home."""
    jobs: Submitted = []
    yield jobs
    for site, job_id, user, log in jobs:
        await cancel_and_remove_logs(site, [(job_id, user, log)])
    for marker in Path(f"/home/{USER}").glob(".hpchub-container-probe-hpchub-test-*"):
        marker.unlink(missing_ok=True)


def slurm_site() -> SiteConfig:
    return parse_site_config(local_site_text("slurm", NODE_PROFILES), source=Path("local-slurm+containers.yaml"))


def sge_site() -> SiteConfig:
    return parse_site_config(local_site_text("sge"), source=Path("local-sge.yaml"))


def container_name() -> str:
    return f"hpchub-test-{uuid.uuid4().hex[:10]}"


def fields(text: str, key: str) -> dict[str, str]:
    """The `k=v` words of the log line that starts with ``key:``."""
    line = next(line for line in text.splitlines() if line.startswith(key + ":"))
    return dict(word.split("=", 1) for word in line.split()[1:] if "=" in word)


def check_log(text: str, image: LabImage, node: str) -> None:
    """The job ran on ``node`` with podman as the admin configured it, and its container in the
    image, in a mount namespace of its own, in the node's network namespace, as the user."""
    on_node, inside, podman = fields(text, "node"), fields(text, "container"), fields(text, "podman")
    # The admin's /etc/containers (tests/clusters/containers.sh), not flags, chose these.
    assert podman["runtime"] == "runc" and podman["cgroups"] == "cgroupfs", text
    assert podman["graphroot"] == f"/var/tmp/containers-{uid(USER)}/storage", text
    assert re.search(rf"^node: {node} ", text, re.MULTILINE), text
    assert f"image: {image.mark}" in text, text
    assert inside["mnt"] != on_node["mnt"], text
    assert inside["net"] == on_node["net"], text
    assert inside["uid"] == str(uid(USER)), text
    assert re.search(r"^jupyterhub: 5\.", text, re.MULTILINE) and "hpchub: absent" in text, text
    assert "home: writable" in text, text


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def netns_inode(name: str) -> str:
    return f"net:[{Path('/run/netns', name).stat().st_ino}]"


def container_exists(name: str) -> bool:
    result = subprocess.run(["sudo", "-n", "-u", USER, "env", "-u", "XDG_RUNTIME_DIR", "podman", "container", "exists",
                             name], capture_output=True, timeout=30, cwd="/")
    return result.returncode == 0


async def wait_for_server_or_exit(log: Path) -> str:
    """The log once the container's server listens, or once podman is done (then it fails at once)."""
    text = await wait_for_file_text(log, "\n", timeout=JOB_TIMEOUT)
    deadline = time.monotonic() + JOB_TIMEOUT
    while "Serving HTTP on" not in text:
        assert "podman exit:" not in text and time.monotonic() < deadline, f"no server in the container: {text}"
        await asyncio.sleep(0.3)
        text = log.read_text()
    return text


def fetch(url: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def run_probe(site: SiteConfig, profile: str, probe: Path, image: LabImage, submitted: Submitted,
                    *extra: str) -> tuple[str, Path, str]:
    """Submit the probe as the user; (job id, log, the container's name)."""
    name = container_name()
    command = f"bash {probe} {image.ref} {image.archive} {name} {' '.join(extra)}"
    job_id, log = await submit(site, profile, USER, command)
    submitted.append((site, job_id, USER, log))
    return job_id, Path(log), name


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
async def test_podman_in_a_slurm_job_on_the_head_node(test_image, probe, submitted):
    site = slurm_site()
    _, log, name = await run_probe(site, "small", probe, test_image, submitted)
    text = await wait_for_file_text(log, "podman exit:", timeout=JOB_TIMEOUT)
    assert "podman exit: 0" in text, text
    check_log(text, test_image, "vm")
    assert not container_exists(name)  # --rm


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.usefixtures("slurm_cluster")
async def test_podman_in_slurm_jobs_on_two_nodes_at_once_serves_on_the_nodes_address(test_image, probe, submitted):
    """Two jobs of one user start containers at the same time on node1 and node2 (one shared
    home, one podman storage per user): both run, each in its node's network namespace, and
    a server in each is reached at the node's address, as the hub reaches a job's server."""
    site = slurm_site()
    client = client_for(site, "slurm")
    jobs = {node: await run_probe(site, f"container-{node}", probe, test_image, submitted, "serve")
            for node in ("node1", "node2")}
    for index, (node, (_, log, _)) in enumerate(jobs.items(), start=1):
        text = await wait_for_server_or_exit(log)
        check_log(text, test_image, node)
        assert fields(text, "container")["net"] == netns_inode(f"hpchub-{node}"), text
        port = re.search(r"Serving HTTP on \S+ port (\d+)", text)
        assert port, text
        assert fetch(f"http://10.77.0.{10 + index}:{port.group(1)}/hpchub-test-image").strip() == test_image.mark
    # Cancelling the job ends its container too (the job's trap stops it; --rm removes it).
    await client.cancel(USER, [job_id for job_id, _, _ in jobs.values()])
    deadline = time.monotonic() + 30
    names = [name for _, _, name in jobs.values()]
    while any(container_exists(name) for name in names):
        if time.monotonic() > deadline:
            logs = "\n".join(f"{node}: {log.read_text()}" for node, (_, log, _) in jobs.items())
            raise AssertionError(f"containers {names} outlive their cancelled jobs:\n{logs}")
        time.sleep(0.5)


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
async def test_podman_in_a_grid_engine_job(test_image, probe, submitted):
    site = sge_site()
    _, log, name = await run_probe(site, "small", probe, test_image, submitted)
    text = await wait_for_file_text(log, "podman exit:", timeout=JOB_TIMEOUT)
    assert "podman exit: 0" in text, text
    check_log(text, test_image, "vm")
    assert not container_exists(name)



def test_the_images_bytecode_is_current(test_image):
    """A server start in the image compiles nothing: the venv's bytecode matches its sources. The
    image is read-only to its users, so stale bytecode is compiled again, in memory, at every start
    (about 1.5 s of a server's start, bench/container.py): mmdebstrap sets the mtime of what pip
    installed to its own start time, after pip compiled against the real ones."""
    as_user = ["sudo", "-n", "-u", USER, "env", "-u", "XDG_RUNTIME_DIR", "podman"]
    exists = subprocess.run([*as_user, "image", "exists", test_image.ref], capture_output=True, timeout=30, cwd="/")
    if exists.returncode != 0:
        subprocess.run([*as_user, "load", "-q", "-i", str(test_image.archive)], capture_output=True, timeout=300,
                       cwd="/", check=True)
    imports = "import jupyterhub.singleuser, jupyter_server.serverapp, jupyterlab, ipyparallel"
    verbose = subprocess.run([*as_user, "run", "--rm", "--network", "host", test_image.ref, "python3", "-v", "-c",
                              imports], capture_output=True, text=True, timeout=120, cwd="/")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    stale = [line for line in verbose.stderr.splitlines() if line.startswith("# bytecode is stale for")]
    assert not stale, f"{len(stale)} modules of the image compiled at import, e.g. {stale[:3]}"
