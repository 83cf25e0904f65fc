"""End to end, servers and engines in a container image (issue 19): profiles whose
`environment.container` is rootless podman with the test image of tests/clusters/image.sh (Debian
bookworm, JupyterHub 5.x, JupyterLab 4, ipyparallel, nothing of hpchub), through a real hub and
proxy, on the real local Slurm and Grid Engine. The server becomes ready (the port comes from the
job side's extension, which travelled with the job into the container), JupyterLab and the walltime
endpoint answer through the proxy, the server's process runs in the image (its mount namespace is
not the node's, its root has the file only the image has), and stopping the server removes the
container. A kernel in the server's container gets engines on two nodes from the hub, in the same image.

podman is configured as tests/clusters/containers.sh does (runc, cgroupfs, the users' stores under
/var/tmp). The users' stores already hold the image after tests/test_containers_real.py; else a
user's first container costs about 20 s (podman loads the archive)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.hub import Hub, run_hub, spawn, stop
from helpers.jobs import accounted_as
from helpers.kernel_env import engine_logs
from helpers.profiles import local_site_text
from test_containers_real import LabImage
from test_containers_real import test_image as test_image  # noqa: F401  (the module's fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.containers]

POLL_INTERVAL = 3
# One user, whose podman store has the image already (tests/test_containers_real.py loads it): paid once.
USER = {"slurm": "alice", "sge": "alice"}
# Slurm: the head node's partition and the multi-node one; Grid Engine: the head node's queue.
# SGE's h_vmem is virtual memory: JupyterLab needs more of it.
PROFILES = {
    "slurm": [("ctr-lab", "debug", "1G", ""),
              ("ctr-multi", "multi", "512M", "\n    user_adjustable:\n      nodes: {min: 1, max: 3}")],
    "sge": [("ctr-lab", "short.q", "2G", "")],
}
JOB_TIMEOUT = 180  # a user's first container on a node loads the image (about 20 s); later ones start in 1-2 s


def container_site_text(scheduler: str, image: LabImage) -> str:
    """The local site of ``scheduler`` with profiles that run in the test image. The cluster's
    venv goes: a venv of the node means nothing inside an image (the site config refuses both)."""
    base = local_site_text(scheduler)
    assert "      venv: /opt/hpchub/venv\n" in base
    base = base.replace("      venv: /opt/hpchub/venv\n", "")
    profiles = "".join(
        f"\n  - slug: {slug}\n    name: JupyterLab in the test image\n    cluster: {scheduler}\n    queue: {queue}\n"
        f'    resources: {{cores: 1, memory: {memory}, walltime: "00:10:00"}}{adjustable}\n'
        f"    environment:\n      container: {{runtime: podman, image: {image.archive}}}\n"
        # The course's choices (issue 20): editing together and notebooks paired with a text file.
        f'      collaboration: true\n      jupytext: "ipynb,py:percent"\n'
        for slug, queue, memory, adjustable in PROFILES[scheduler])
    return base + profiles


@pytest.fixture(scope="module")
def hubs(request, tmp_path_factory, test_image) -> Iterator[Callable[[str], Hub]]:  # noqa: F811
    """A hub per scheduler, started when a test first needs it."""
    started: dict[str, Hub] = {}
    runs = []

    def hub_for(scheduler: str) -> Hub:
        if scheduler not in started:
            request.getfixturevalue(f"{scheduler}_cluster")
            run = run_hub(tmp_path_factory.mktemp(f"hub-containers-{scheduler}"),
                          container_site_text(scheduler, test_image), (USER[scheduler],),
                          poll_interval=POLL_INTERVAL, start_timeout=JOB_TIMEOUT,
                          leftover_slurm_profiles=[slug for slug, *_ in PROFILES["slurm"]] if scheduler == "slurm" else ())
            started[scheduler] = next(run)
            runs.append(run)
        return started[scheduler]

    yield hub_for
    for run in runs:
        run.close()


def podman(user: str, *args: str) -> subprocess.CompletedProcess:
    """podman as ``user`` on this host, with the runtime directory a job uses (none set: /tmp/podman-run-UID)."""
    return subprocess.run(["sudo", "-n", "-u", user, "env", "-u", "XDG_RUNTIME_DIR", "podman", *args],
                          capture_output=True, text=True, timeout=60, cwd="/")


def job_containers(user: str, job_id: str) -> list[str]:
    """The names of the user's containers (running or not) of the job ``job_id`` (hpchub-JOB-NODE-PID)."""
    listed = podman(user, "ps", "--all", "--filter", f"name=^hpchub-{job_id}-", "--format", "{{.Names}}")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def server_container(user: str, job_id: str) -> str:
    deadline = time.monotonic() + 30
    while not (names := job_containers(user, job_id)):
        assert time.monotonic() < deadline, f"no container of job {job_id} in {user}'s podman"
        time.sleep(0.5)
    (name,) = names
    return name


def job_dir(server: dict) -> str:
    return f"/home/{server['state']['job_user']}/.hpchub/jobs/{server['state']['job_key']}"


@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
def test_a_server_in_a_podman_container_serves_lab_through_the_proxy_and_its_container_goes_with_it(
        hubs, test_image, scheduler):  # noqa: F811
    hub, user = hubs(scheduler), USER[scheduler]
    server = spawn(hub, user, {"profile": "ctr-lab"}, timeout=JOB_TIMEOUT)
    job_id = server["state"]["job_id"]
    try:
        log = Path(server["state"]["job_log"]).read_text()
        # The image's JupyterHub (5.x, not the hub's), with hpchub's extension from the job's bundle.
        assert "hpchub_job.extension | extension was successfully loaded" in log, log
        assert re.search(r"single-user server extension version 5\.", log), log
        assert "JupyterLab extension loaded from /opt/lab/" in log, log
        # The image's jupyter-collaboration and jupytext, turned on by the profile's environment.
        for extension in ("jupyter_server_ydoc", "jupyterlab_jupytext"):
            assert f"{extension} | extension was successfully loaded" in log, log
        lab = hub.get_user_url(user, "lab")
        assert lab.status_code == 200, lab.text[:500]
        # JupyterLab in the image found the labextension hpchub-walltime in the job's bundle.
        page = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                    lab.text, re.S).group(1))
        assert "hpchub-walltime" in [found["name"] for found in page["federated_extensions"]]
        assert page["labextensionsPath"][0] == f"{job_dir(server)}/jupyter/labextensions"
        walltime = hub.get_user_url(user, "hpchub/walltime")
        assert walltime.status_code == 200, walltime.text
        assert 0 < walltime.json()["ends"] - time.time() <= 10 * 60  # the profile's ten minutes
        # The server's process: the container's first process, which execs jupyterhub-singleuser.
        name = server_container(user, job_id)
        inspected = podman(user, "inspect", "--format", "{{.State.Pid}}", name)
        assert inspected.returncode == 0, inspected.stderr
        pid = inspected.stdout.strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"jupyterhub-singleuser") for part in command), command
        uids = re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
        assert uids and int(uids.group(1)) == pwd.getpwnam(user).pw_uid  # the user's own uid (--userns keep-id)
        # In the image: another mount namespace than this node's (vm: this process), and its file.
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert Path(f"/proc/{pid}/root/etc/hpchub-test-image").read_text().strip() == test_image.mark
        assert not Path("/etc/hpchub-test-image").exists()
    finally:
        stopping = time.monotonic()
        stop(hub, user)
    # The job stopped and removed its container as it ended: at once, also on Grid Engine, whose USR2
    # ends podman's conmon too (then `podman run` alone would wait 20 s for an exit no one records).
    stopped = time.monotonic() - stopping
    wait_until_gone(user, job_id, server)
    assert stopped < 5 + 2 * POLL_INTERVAL, f"stopping the server took {stopped:.0f} s"


def wait_until_gone(user: str, job_id: str, server: dict, timeout: float = 30) -> None:
    """Wait until the user's podman has no container of job ``job_id`` left."""
    deadline = time.monotonic() + timeout
    while left := job_containers(user, job_id):
        assert time.monotonic() < deadline, f"containers {left} outlive job {job_id}:\n{log_of(server)}"
        time.sleep(0.5)


def log_of(server: dict) -> str:
    try:
        return Path(server["state"]["job_log"]).read_text(errors="replace")[-3000:]
    except OSError as error:
        return str(error)


# What a notebook in the image does: engines from hpchub on two nodes, and what each engine sees.
IMAGE_KERNEL = """
import asyncio, importlib.util, json, socket, sys
assert importlib.util.find_spec("hpchub") is None, "hpchub is importable in this kernel"
import ipyparallel as ipp
from traitlets.config import Config

config = Config()
config.HPCEngineSetLauncher.options = json.loads(sys.argv[2])


def where():
    import os, socket, sys
    with open("/etc/hpchub-test-image") as mark:
        return {"host": socket.gethostname(), "image": mark.read().strip(), "python": sys.executable,
                "mnt": os.readlink("/proc/self/ns/mnt")}


async def main():
    cluster = ipp.Cluster(engines="hpchub", n=int(sys.argv[1]), config=config)
    rc = await cluster.start_and_connect()
    engines = rc[:].apply_sync(where)
    found = {"engines": engines, "job_id": cluster.engine_set.job_id, "launcher": type(cluster.engine_set).__module__,
             "kernel": where()}
    await cluster.stop_cluster()
    print(json.dumps(found))

asyncio.run(main())
"""


@pytest.mark.slurm
@pytest.mark.multinode
def test_a_kernel_in_the_servers_container_gets_engines_on_two_nodes_in_the_same_image(hubs, test_image):  # noqa: F811
    """The kernel runs where a notebook's kernel runs: in the server's container (podman exec into it,
    from an srun step of the server job on its node), with the server's environment (the container's
    variables and the job's secrets file, as the server has them). It has ipyparallel and the job
    side, not hpchub; the hub submits the engines as the user, in the same image, on two nodes."""
    hub, user = hubs("slurm"), USER["slurm"]
    started = time.time()
    server = spawn(hub, user, {"profile": "ctr-multi", "nodes": 1}, timeout=JOB_TIMEOUT)
    server_job = server["state"]["job_id"]
    # In the home: the container sees it (the job binds it), /tmp is the container's own.
    scratch = Path(f"/home/{user}/.hpchub-test-kernel-{uuid.uuid4().hex[:8]}")
    scratch.mkdir(mode=0o700)
    shutil.chown(scratch, user, user)
    script = scratch / "kernel.py"
    script.write_text(IMAGE_KERNEL)
    shutil.chown(script, user, user)
    try:
        name = server_container(user, server_job)
        inside = (f'set -a; . {job_dir(server)}/env; set +a; cd {scratch} && IPYTHONDIR={scratch}/ipython '
                  f"exec python3 {script} 2 '{json.dumps({'nodes': 2})}'")
        command = ["sudo", "-n", "-u", user, "srun", f"--jobid={server_job}", "--overlap", "-N1", "-n1",
                   "env", "-u", "XDG_RUNTIME_DIR", "podman", "exec", name, "/bin/sh", "-c", inside]
        result = subprocess.run(command, capture_output=True, text=True, timeout=JOB_TIMEOUT, cwd="/")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + engine_logs(user, server_job)
        found = json.loads(result.stdout.strip().splitlines()[-1])
        kernel, engines = found["kernel"], found["engines"]
        assert found["launcher"] == "hpchub_job.engines"
        assert kernel["image"] == test_image.mark and kernel["python"].startswith("/opt/lab/")
        assert len(engines) == 2 and len({engine["host"] for engine in engines}) == 2, engines
        assert {engine["host"] for engine in engines} <= {"node1", "node2", "node3"}, engines
        for engine in engines:  # each engine in the image, in a container of its own
            assert engine["image"] == test_image.mark and engine["python"].startswith("/opt/lab/"), engine
            assert engine["mnt"] != os.readlink("/proc/self/ns/mnt"), engine
        expected = [f"{user}|hpchub-{user}-ctr-multi.e-{server_job}"]
        assert accounted_as(found["job_id"], since=started, expected=expected) == expected  # submitted by the hub, as the user
        wait_until_gone(user, found["job_id"], server)  # stop_cluster cancelled the engines: their containers go
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        stop(hub, user)
    wait_until_gone(user, server_job, server)
