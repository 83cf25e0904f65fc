"""A Python environment like a user's kernel in a server job: ipyparallel, no hpchub installed, and
the job side first on its path as it travels with the job: the bundle the server job wrote into its
directory (kernel_in_server_job), or the same bundle written here (hpchub.core.bundle, for a kernel
with a stand-in hub).

The environment is the test venv's site-packages without hpchub, as symlinks, run with ``python -S``
(no site-packages of its own), so ``import hpchub`` fails in it."""

from __future__ import annotations

import json
import os
import sysconfig
import tempfile
from pathlib import Path

from helpers.support import write_job_side


def kernel_environment(with_hpchub: bool = False, job_side: bool = True) -> tuple[list[str], dict[str, str], Path]:
    """(argv of its Python, environment variables to add, its directory: remove it when done), readable
    by the test users. ``with_hpchub``: the venv as it is (hpchub installed) plus the job side first.
    ``job_side``: write the job side's bundle here (without: the server job's own comes first, see
    kernel_in_server_job)."""
    top = Path(tempfile.mkdtemp(prefix="hpchub-kernel-env-"))
    top.chmod(0o755)
    bundle = [write_job_side(top / "job")["PYTHONPATH"]] if job_side else []
    python = str(Path(os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv")) / "bin" / "python")
    if with_hpchub:
        argv, path = [python], bundle
    else:
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(Path(python).parent.parent)}))
        site = top / "site"
        site.mkdir()
        for entry in purelib.iterdir():
            if entry.name != "hpchub" and not entry.name.startswith("hpchub-"):
                (site / entry.name).symlink_to(entry)
        argv, path = [python, "-S"], [*bundle, str(site)]
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return argv, {"PYTHONPATH": ":".join(path)}, top


ENGINES_KERNEL = """
import asyncio, importlib.util, json, socket, sys
assert importlib.util.find_spec("hpchub") is None, "hpchub is importable in this kernel"
import ipyparallel as ipp
from traitlets.config import Config

config = Config()
config.HPCEngineSetLauncher.options = json.loads(sys.argv[2])


async def main():
    cluster = ipp.Cluster(engines="hpchub", n=int(sys.argv[1]), config=config)
    rc = await cluster.start_and_connect()
    hosts = rc[:].apply_sync(socket.gethostname)
    found = {"hosts": sorted(set(hosts)), "engines": len(hosts), "job_id": cluster.engine_set.job_id,
             "launcher": type(cluster.engine_set).__module__, "controller": type(cluster.controller).__name__,
             "kernel": socket.gethostname()}
    await cluster.stop_cluster()
    print(json.dumps(found))

asyncio.run(main())
"""
"""What a notebook does (argv: n and the options as JSON): engines from hpchub, where they run, stopped."""


def kernel_in_server_job(user: str, env_file: str, argv: list[str], env: dict[str, str], scratch: Path,
                         n: int, options: dict, prefix: tuple[str, ...] = ()) -> list[str]:
    """The command that runs ENGINES_KERNEL as ``user`` with the server job's environment (its
    user-only env file, as the job sources it: the hub's URL and the server's token; the job side's
    bundle the job wrote next to it first on PYTHONPATH, as the job script puts it), ``prefix`` first
    (e.g. an ``srun`` into the server's job)."""
    script = scratch / "kernel.py"
    script.write_text(ENGINES_KERNEL)
    script.chmod(0o644)
    bundle = f"{Path(env_file).parent}/python"
    path = ":".join(part for part in (bundle, env.get("PYTHONPATH", "")) if part)
    exports = " ".join(f"{name}={value}" for name, value in
                       {**env, "PYTHONPATH": path, "IPYTHONDIR": str(scratch / "ipython")}.items())
    shell = (f"set -a; . {env_file}; set +a; cd {scratch} && exec env {exports} "
             f"{' '.join(argv)} {script} {n} '{json.dumps(options)}'")
    return ["sudo", "-n", "-u", user, *prefix, "bash", "-c", shell]


def engine_logs(user: str, server_job: str) -> str:
    """The output of the user's engine jobs of ``server_job`` (for a failing test's message)."""
    logs = sorted(Path(f"/home/{user}/.hpchub/logs").glob(f"hpchub-{user}-*.e-{server_job}*"))
    return "".join(f"\n== {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
