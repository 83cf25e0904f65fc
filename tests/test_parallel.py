"""ipyparallel engines as batch jobs: rendered from the site config, run on the real multi-node
Slurm and on Grid Engine as an ordinary user, watched, stopped, and noticed when cancelled."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers.support import REPO, SITE_CONFIGS, run_as_user, user_readable

from hpchub.parallel import HPCEngineSetLauncher

LOCAL_SLURM = user_readable("local-slurm.yaml", (SITE_CONFIGS / "local-slurm.yaml").read_text())
LOCAL_SGE = user_readable("local-sge.yaml", (SITE_CONFIGS / "local-sge.yaml").read_text())
# The Python environment of run_as_user (tests/setup-python.sh made it with hpchub installed).
JOB_VENV = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv")


def test_slurm_engine_script_spreads_tasks_and_stops_before_walltime():
    launcher = HPCEngineSetLauncher(site_config=str(SITE_CONFIGS / "local-slurm.yaml"), profile="multi",
                                    options={"nodes": "3"}, engine_set_id="1")
    job = launcher.prepare(6, user="alice")
    script = job.script
    assert "#SBATCH --nodes=3\n#SBATCH --ntasks=6\n#SBATCH --cpus-per-task=1\n" in script
    assert "#SBATCH --job-name=hpchub-alice-multi.e-" in script
    assert "exec timeout --signal=TERM 3540 srun --kill-on-bad-exit=0 " in script and "-m ipyparallel.engine" in script
    assert f". /home/alice/.hpchub/jobs/{job.key}/env\n" in script  # connection info from a user-only file
    assert "IPP_CONNECTION_INFO" not in script and launcher.cluster_name == "slurm"


def test_sge_engine_script_is_an_array_job():
    launcher = HPCEngineSetLauncher(site_config=str(SITE_CONFIGS / "local-sge.yaml"), profile="small")
    script = launcher.prepare(3, user="bob").script
    assert "#$ -t 1-3\n" in script and "#$ -q short.q\n" in script
    assert "exec timeout --signal=TERM 3540 " in script


def test_engine_options_are_validated_like_the_form():
    launcher = HPCEngineSetLauncher(site_config=str(SITE_CONFIGS / "local-slurm.yaml"), profile="multi", options={"nodes": 9})
    with pytest.raises(ValueError, match="nodes: 9 is above the maximum 3"):
        launcher.prepare(4, user="alice")


def run_as(user: str, code: str) -> dict:
    """Run ``code`` as ``user`` (as a notebook kernel would); it prints one JSON line at the end."""
    return json.loads(run_as_user(user, code))


def active_slurm_jobs_named(user: str, fragment: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "-u", user, "-o", "%i %j %T"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if fragment in line]


@pytest.mark.slurm
@pytest.mark.multinode
def test_engines_on_several_namespace_nodes(slurm_cluster):
    result = run_as("alice", f"""
        import asyncio, json, socket, time
        import hpchub.parallel

        async def main():
            started = time.monotonic()
            cluster = hpchub.parallel.Cluster(profile="multi", n=4, site_config={str(LOCAL_SLURM)!r},
                                              options={{"nodes": 3}}, controller_location="10.77.0.1")
            rc = await cluster.start_and_connect()
            up = time.monotonic() - started
            hosts = rc[:].apply_sync(socket.gethostname)
            squares = rc[:].map_sync(lambda x: x * x, range(10))
            (engine_set,) = cluster.engines.values()
            job_id = engine_set.job_id
            await cluster.stop_cluster()
            print(json.dumps({{"hosts": hosts, "squares": squares, "job_id": job_id, "seconds": up}}))

        asyncio.run(main())
    """)
    assert len(result["hosts"]) == 4 and len(set(result["hosts"])) == 3
    assert set(result["hosts"]) == {"node1", "node2", "node3"}
    assert result["squares"] == [x * x for x in range(10)]
    assert not [line for line in active_slurm_jobs_named("alice", "-engines-") if line.split()[0] == result["job_id"]]


@pytest.mark.slurm
def test_an_engine_job_cancelled_from_outside_is_reported(slurm_cluster):
    result = run_as("alice", f"""
        import asyncio, json, subprocess, time
        import hpchub.parallel

        async def main():
            cluster = hpchub.parallel.Cluster(profile="small", n=1, site_config={str(LOCAL_SLURM)!r})
            rc = await cluster.start_and_connect()
            (engine_set,) = cluster.engines.values()
            subprocess.run(["scancel", engine_set.job_id], check=True)
            started = time.monotonic()
            while engine_set.state != "after" and time.monotonic() - started < 20:
                await asyncio.sleep(0.2)
            noticed = time.monotonic() - started
            stop_data = engine_set.stop_data
            await cluster.stop_cluster()
            print(json.dumps({{"state": engine_set.state, "stop_data": stop_data, "noticed": noticed}}))

        asyncio.run(main())
    """)
    assert result["state"] == "after" and result["noticed"] < 10
    assert result["stop_data"]["exit_code"] == 1 and result["stop_data"]["state"] in ("CANCELLED", "gone")


@pytest.mark.sge
def test_engines_as_a_grid_engine_array_job(sge_cluster):
    result = run_as("bob", f"""
        import asyncio, json
        import hpchub.parallel

        async def main():
            cluster = hpchub.parallel.Cluster(profile="small", n=2, site_config={str(LOCAL_SGE)!r})
            rc = await cluster.start_and_connect()
            tasks = sorted(rc[:].apply_sync(lambda: int(__import__("os").environ["SGE_TASK_ID"])))
            total = sum(rc[:].map_sync(lambda x: x + 1, range(10)))
            (engine_set,) = cluster.engines.values()
            job_id = engine_set.job_id
            await cluster.stop_cluster()
            print(json.dumps({{"tasks": tasks, "total": total, "job_id": job_id}}))

        asyncio.run(main())
    """)
    assert result["tasks"] == [1, 2] and result["total"] == 55
    qstat = subprocess.run(["qstat", "-u", "bob"], capture_output=True, text=True).stdout
    assert not any(line.split()[0] == result["job_id"] for line in qstat.splitlines()[2:])


def test_entry_points_name_the_launchers():
    from importlib.metadata import entry_points

    engines = {e.name: e.value for e in entry_points(group="ipyparallel.engine_launchers")}
    controllers = {e.name: e.value for e in entry_points(group="ipyparallel.controller_launchers")}
    assert engines["hpchub"] == "hpchub.parallel:HPCEngineSetLauncher"
    assert controllers["hpchub"] == "hpchub.parallel:HPCControllerLauncher"


PACKAGED_IPCLUSTER_CONFIG = "etc/ipython/ipcluster_config.py"


def default_controllers(env: dict[str, str], ipython_dir: Path) -> dict:
    """The controller settings of plain ipyparallel Clusters made by this Python environment
    (with its installed hpchub) under ``env``, with an empty IPython directory."""
    code = """
import json
import ipyparallel as ipp
found = {}
for engines in (None, "hpchub"):
    cluster = ipp.Cluster(engines=engines, n=1)
    found[str(engines)] = {"controller": cluster.controller_launcher_class.__name__,
                           "ip": cluster.controller_ip, "location": cluster.controller_location}
print(json.dumps(found))
"""
    outside = {key: value for key, value in os.environ.items() if not key.startswith(("HPCHUB_", "JUPYTERHUB_", "IPYTHON"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=ipython_dir.parent, env={**outside, "IPYTHONDIR": str(ipython_dir), **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_outside_hpchub_jobs_ipyparallel_defaults_are_unchanged(tmp_path):
    found = default_controllers({}, tmp_path / "ipython")
    for engines in ("None", "hpchub"):
        assert found[engines] == {"controller": "LocalControllerLauncher", "ip": "", "location": ""}


def test_inside_a_server_job_the_default_controller_is_hpchubs(tmp_path):
    found = default_controllers({"HPCHUB_SITE_CONFIG": str(LOCAL_SLURM), "HPCHUB_ENGINE_PROFILE": "multi"},
                                tmp_path / "ipython")
    assert found["hpchub"]["controller"] == "HPCControllerLauncher"
    assert found["None"]["controller"] == "HPCControllerLauncher"


def test_pip_install_hpchub_brings_the_ipcluster_config():
    """The file ipyparallel reads is the installed package's own (in its RECORD), not one copied by hand."""
    (installed,) = importlib.metadata.distributions(name="hpchub", path=[sysconfig.get_path("purelib")])
    (recorded,) = [f for f in installed.files or [] if str(f).endswith(PACKAGED_IPCLUSTER_CONFIG)]
    path = Path(recorded.locate()).resolve()
    assert path == (Path(sys.prefix) / PACKAGED_IPCLUSTER_CONFIG).resolve()
    assert path.read_text() == (REPO / PACKAGED_IPCLUSTER_CONFIG).read_text()


@pytest.mark.slurm
@pytest.mark.multinode
def test_plain_ipyparallel_cluster_in_a_three_node_server_registers_engines_on_every_node(slurm_cluster):
    """What a notebook writes, ipp.Cluster(engines="hpchub", n=3), in the environment of a server
    whose profile spans 3 nodes; jobs use this pytest's venv, which has nothing but pip's install
    of hpchub (and an empty IPython directory): engines on all 3 nodes, none on this one, register."""
    site = (SITE_CONFIGS / "local-slurm.yaml").read_text()
    three_nodes = site.replace("venv: /opt/hpchub/venv", f"venv: {JOB_VENV}").replace(
        'walltime: "01:00:00", nodes: 2}', 'walltime: "01:00:00", nodes: 3}')
    assert three_nodes.count(JOB_VENV) == 1 and "nodes: 3}" in three_nodes
    site_config = user_readable("three-node-server.yaml", three_nodes)
    result = run_as("alice", f"""
        import asyncio, importlib.metadata, json, os, socket, sys
        os.environ.update(HPCHUB_SITE_CONFIG={str(site_config)!r}, HPCHUB_ENGINE_PROFILE="multi",
                          JUPYTERHUB_API_URL="http://10.77.0.1:8081/hub/api", IPYTHONDIR=os.path.abspath("ipython"))
        import ipyparallel as ipp

        async def main():
            cluster = ipp.Cluster(engines="hpchub", n=3)
            rc = await cluster.start_and_connect()
            hosts = rc[:].apply_sync(socket.gethostname)
            controller = type(cluster.controller).__name__
            job_id = cluster.engine_set.job_id
            await cluster.stop_cluster()
            config_files = [str(f.locate().resolve()) for f in importlib.metadata.files("hpchub")
                            if str(f).endswith({PACKAGED_IPCLUSTER_CONFIG!r})]
            print(json.dumps({{"hosts": hosts, "controller": controller, "job_id": job_id, "prefix": sys.prefix,
                               "config_files": config_files}}))

        asyncio.run(main())
    """)
    assert result["prefix"] == JOB_VENV
    assert result["controller"] == "HPCControllerLauncher"
    assert sorted(result["hosts"]) == ["node1", "node2", "node3"]
    assert result["config_files"] == [f"{JOB_VENV}/{PACKAGED_IPCLUSTER_CONFIG}"]  # pip's, not a hand-copied file
    assert not [line for line in active_slurm_jobs_named("alice", "-engines-") if line.split()[0] == result["job_id"]]
