"""A job is tracked with its owner, on the real schedulers through the real login node: alice's
submission reports the id of bob's real job, and her spawn is refused without touching it.

How alice makes hpchub-job's output say what she likes: over SSH the command runs in her own shell
on the login node, so her ~/.bashrc can, say, `trap 'echo 4711' EXIT`, and the hub reads the job id
from the last line. Here the site's `jobfiles` is a wrapper that runs the real hpchub-job and then
prints bob's job id: the hub sees exactly the same bytes over the same SSH channel, and neither the
test users' dotfiles (other tests use them concurrently) nor the login node change."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.jobs import submit, wait_for
from helpers.support import user_readable
from test_e2e_ssh import ssh_site_text

from hpchub.core.runtime import ClusterRuntime
from hpchub.hub import porthandler
from hpchub.hub.spawner import HPCSpawner, SpawnFailed
from hpchub.transports import cluster
from hpchub.transports.cluster import client_for

pytestmark = [pytest.mark.ssh]

JOBFILES = "/opt/hpchub/venv/bin/hpchub-job"
SERVER = "owner-test"  # alice's job name is this test's own: hpchub-alice-small.s-owner-test


def jobfiles_that_also_prints(job_id: str) -> Path:
    """hpchub-job as alice's shell can make it look: the real call, then ``job_id`` on a last line."""
    directory = Path(tempfile.mkdtemp(prefix="hpchub-test-owner-"))
    directory.chmod(0o755)
    script = directory / "hpchub-job"
    script.write_text(f'#!/bin/sh\n{JOBFILES} "$@"\nstatus=$?\n[ "$1" = submit ] && echo {job_id}\nexit $status\n')
    script.chmod(0o755)
    return script


async def test_a_submission_over_ssh_that_reports_bobs_job_is_refused_and_bobs_job_untouched(
        scheduler, local_site, cleanup, login_node, request):
    bob_job, bob_log = await submit(local_site, "held", "bob", "sleep 300")  # waits, held, never runs
    cleanup.append((bob_job, "bob", bob_log))
    jobfiles = jobfiles_that_also_prints(bob_job)
    request.addfinalizer(lambda: shutil.rmtree(jobfiles.parent, ignore_errors=True))
    text = ssh_site_text(login_node, scheduler=scheduler).replace(f"jobfiles: {JOBFILES}", f"jobfiles: {jobfiles}")
    assert f"jobfiles: {jobfiles}" in text
    site_file = user_readable(f"owner-{scheduler}.yaml", text)
    alice = HPCSpawner(user=SimpleNamespace(name="alice", groups=[], url="/user/alice/"), site_config=str(site_file),
                       startup_poll_interval=0.2, poll_interval=5, user_options={"profile": "small"},
                       orm_spawner=SimpleNamespace(name=SERVER, server=None))
    alice.api_token = "a" * 32
    alice.get_env = lambda: {"JUPYTERHUB_API_TOKEN": alice.api_token, "JUPYTERHUB_API_URL": "http://10.77.0.1:8081/hub/api"}
    local = client_for(local_site, scheduler)
    try:
        with pytest.raises(SpawnFailed) as refused:
            await asyncio.wait_for(alice.start(), 60)
        message = refused.value.message
        assert f"reported job {bob_job}, but the scheduler lists no job {bob_job} of alice's" in message, message
        # Her real submission, found under its name and cancelled (Slurm still lists earlier runs' ended jobs).
        cancelled = re.search(r"cancelled job ([\d, ]+) it had submitted", message)
        assert cancelled, message
        alices_job = max(cancelled[1].split(", "), key=int)
        name = f"hpchub-alice-small.s-{SERVER}"
        cleanup.append((alices_job, "alice", f"/home/alice/.hpchub/logs/{name}.{scheduler}.{alices_job}.log"))
        named = {job_id for job_id, job_name in (await local.job_names("alice")).items() if job_name == name}
        await wait_for(local, lambda jobs: not any(jobs[job_id].state.is_active for job_id in named | {alices_job}
                                                   if job_id in jobs),
                       timeout=30, what=f"alice's jobs named {name} cancelled")
        assert alice.job_id == "" and porthandler.waiting_for(alice.api_token) is None
        await alice.stop()  # what JupyterHub does after a failed spawn: bob's job stays untouched
        bobs = (await local.status(["bob"]))[bob_job]
        assert bobs.user == "bob" and bobs.state.is_active, bobs
        runtime = ClusterRuntime.registry[next(key for key in ClusterRuntime.registry
                                                if key[0].scheduler == scheduler and key[0].via == "ssh")]
        assert bob_job not in runtime.poller.watched
    finally:
        loop = asyncio.get_running_loop()
        for key in [key for key in ClusterRuntime.registry if key[1] == id(loop)]:
            task = ClusterRuntime.registry.pop(key).task
            if task:
                task.cancel()
        pool = cluster._pools.pop(id(loop), None)
        if pool is not None:
            await pool.close()
