"""What a server start costs in CPU: a bare ``jupyter-lab``, a bare ``jupyterhub-singleuser``, and the
server as hpchub's job runs it, side by side from the same environment, so that what hpchub adds to
the server is a number. Then the server extensions a site may turn off for a class, one at a time.

Each start is one process (and what it runs and waits for) from exec until it serves: the first
``GET .../api`` it answers (for hpchub's server, after its port report has reached the hub). Then
it is killed (SIGKILL: its shutdown is not counted) and reaped with ``os.wait4``, whose rusage is
the CPU (user + sys) of the process, all its threads and the children it waited for (hpchub's
``start-server.sh`` runs its environment check as such a child before it execs the server).

- ``jupyter-lab``: ``jupyter-lab --no-browser`` on a fixed port, no token;
- ``jupyterhub-singleuser``: with the environment a hub gives its servers, against a stand-in hub
  (a thread that answers the version check, the token check and the port report);
- ``hpchub extension``: the same plus hpchub's server arguments (``hpchub.core.jobs.SERVER_ARGS``)
  with the job's bundle (``hpchub.core.bundle``, written as hpchub-job writes it) first on
  PYTHONPATH/JUPYTER_PATH, and the job's variables (scheduler, node, job end);
- ``hpchub job``: the same through the bundle's ``start-server.sh``, as the job script runs it.

Once per environment, the hpchub job runs once more with ``PYTHONPROFILEIMPORTTIME=1`` and a
``sitecustomize`` that makes the server write its ``sys.modules`` on SIGUSR2, sent once it serves:
its modules that start with ``hpchub`` (only ``hpchub_job.*`` may: no hub-side module), and the
import times of the job side's modules.

    $HPCHUB_VENV/bin/python bench/startcost.py [--repeat 7] [--env /opt/hpchub/venv ...]

The bundle comes from the hpchub installed with the Python that runs this; the servers from each
``--env``. Writes bench/results/startcost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from hpchub import job as job_side
from hpchub.core import bundle
from hpchub.core.jobs import SERVER_ARGS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.fakehub import HUB_VERSION, HubAPIHandler, ServedHubAPI  # noqa: E402

RESULTS = REPO / "bench" / "results" / "startcost.json"
USER = "bench"
TOKEN = "startcost-token"
ENVS = ("/opt/hpchub/venv", "/opt/hpchub-test/envs/teach")
# Extensions a site may turn off for a class without breaking JupyterLab itself (jupyterlab stays).
OPTIONAL_EXTENSIONS = ("jupyter_lsp", "jupyter_server_terminals", "notebook_shim", "ipyparallel",
                       "jupyter_server_ydoc", "jupyter_server_fileid", "jupyterlab_jupytext")
ALONE = ("environment check", "python -c pass")  # not servers: shown apart
IMPORT_RE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


class StandInHub(ServedHubAPI):
    """The least hub a singleuser server starts against: every GET is the version (or, with the
    server's token, its user), every POST is accepted; the port report is kept."""

    def __init__(self) -> None:
        self.port_report = threading.Event()
        self.reported_port = 0
        hub = self

        class Handler(HubAPIHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/hub/api/user"):
                    self.reply(200, {"kind": "user", "name": USER, "admin": False, "groups": [],
                                     "scopes": [f"access:servers!user={USER}"]})
                else:
                    self.reply(200, {"version": HUB_VERSION})

            def do_POST(self) -> None:
                body = self.read_body()
                if self.path == "/hub/api/hpchub/port":
                    hub.reported_port = json.loads(body)["port"]
                    hub.port_report.set()
                self.reply(200, {})

        super().__init__(Handler)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Starts:
    """The command lines and environments of the kinds of start, for one server environment."""

    def __init__(self, env_dir: Path, work: Path, hub: StandInHub):
        self.env_dir, self.work, self.hub = env_dir, work, hub
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        job_dir = work / "job"
        for name, text in bundle.job_side_files().items():
            path = job_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.job_dir = job_dir
        self.as_root = ["--allow-root"] if os.geteuid() == 0 else []

    def base_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("JUPYTER", "HPCHUB_", "PYTHON", "VIRTUAL_ENV"))}
        env.update(HOME=str(self.home), JUPYTER_CONFIG_DIR=str(self.home / ".jupyter"),
                   JUPYTER_RUNTIME_DIR=str(self.work / "runtime"), PATH=f"{self.env_dir}/bin:/usr/bin:/bin")
        return env

    def hub_env(self, port: int) -> dict[str, str]:
        prefix = f"/user/{USER}/"
        env = self.base_env()
        env.update(JUPYTERHUB_API_URL=self.hub.url, JUPYTERHUB_API_TOKEN=TOKEN, JUPYTERHUB_USER=USER,
                   JUPYTERHUB_CLIENT_ID=f"jupyterhub-user-{USER}", JUPYTERHUB_BASE_URL="/",
                   JUPYTERHUB_SERVICE_PREFIX=prefix, JUPYTERHUB_OAUTH_CALLBACK_URL=f"{prefix}oauth_callback",
                   JUPYTERHUB_ACTIVITY_URL=f"{self.hub.url}/users/{USER}/activity",
                   JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}{prefix}")
        return env

    def command(self, kind: str, port: int, extra: list[str]) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and the URL that answers once it serves (``{port}`` filled in later
        for hpchub's servers, which choose their port)."""
        singleuser = str(self.env_dir / "bin" / "jupyterhub-singleuser")
        if kind == "jupyter-lab":
            argv = [str(self.env_dir / "bin" / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1",
                    f"--ServerApp.port={port}", "--IdentityProvider.token=", *self.as_root, *extra]
            return argv, self.base_env(), f"http://127.0.0.1:{port}/api"
        env = self.hub_env(port)
        url = f"http://127.0.0.1:{{port}}/user/{USER}/api"
        if kind == "jupyterhub-singleuser":
            argv = [singleuser, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", *self.as_root, *extra]
            return argv, env, url.format(port=port)
        env.update(PYTHONPATH=str(self.job_dir / bundle.PYTHON_DIR), JUPYTER_PATH=str(self.job_dir / bundle.JUPYTER_DIR),
                   HPCHUB_SCHEDULER="slurm", HPCHUB_NODE_NAME=os.uname().nodename,  # a Slurm node here
                   HPCHUB_JOB_END=str(int(time.time()) + 3600))
        server = [singleuser, *SERVER_ARGS, *self.as_root, *extra]
        if kind == "hpchub extension":
            return server, env, url
        if kind == "hpchub job":
            return ["/bin/sh", str(self.job_dir / bundle.START_SCRIPT), *server], env, url
        python = str(self.env_dir / "bin" / "python3")
        if kind == "environment check":  # what start-server.sh runs before it execs the server
            return [python, "-m", f"{job_side.BUNDLE_PACKAGE}.requirements", *server], env, ""
        if kind == "python -c pass":  # an interpreter's own start, for scale
            return [python, "-c", "pass"], env, ""
        raise ValueError(kind)


# On the PYTHONPATH of the profiled start only: the server writes its sys.modules on SIGUSR2.
MODULES_HOOK = """import signal, sys
def _write_modules(signum, frame):
    with open({path!r}, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
signal.signal(signal.SIGUSR2, _write_modules)
"""


def one_start(starts: Starts, kind: str, extra: list[str], import_log: Path | None = None) -> float:
    """CPU seconds (user + sys) of one start until it serves. With ``import_log``: the start's import
    profile there, and the server's sys.modules in ``import_log.with_suffix(".modules")``."""
    port = free_port()
    argv, env, url = starts.command(kind, port, extra)
    modules_file = None
    if import_log is not None:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
        modules_file = import_log.with_suffix(".modules")
        hook_dir = import_log.parent / "hook"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "sitecustomize.py").write_text(MODULES_HOOK.format(path=str(modules_file)))
        env["PYTHONPATH"] = ":".join(filter(None, [env.get("PYTHONPATH"), str(hook_dir)]))
    starts.hub.port_report.clear()
    with open(import_log or os.devnull, "w") as stderr:
        process = subprocess.Popen(argv, env=env, cwd=starts.home, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    if not url:  # runs to its end
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = 0  # reaped here, not by Popen
        if status:
            raise RuntimeError(f"{kind} exited with status {status}")
        return usage.ru_utime + usage.ru_stime
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} {extra} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} {extra} not serving after 120 s")
            if "{port}" in url:
                if starts.hub.port_report.wait(0.01):
                    url = url.format(port=starts.hub.reported_port)
            elif answers(url):
                break
            else:
                time.sleep(0.01)
        if modules_file is not None:
            os.kill(process.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not modules_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)  # written whole
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0  # reaped here, not by Popen
    return usage.ru_utime + usage.ru_stime


def enabled_extensions(env_dir: Path) -> list[str]:
    done = subprocess.run([str(env_dir / "bin" / "jupyter"), "server", "extension", "list"], capture_output=True,
                          text=True, env={"PATH": f"{env_dir}/bin:/usr/bin:/bin", "HOME": "/nonexistent"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    return sorted(set(re.findall(r"^\s+(\S+) enabled$", text, re.M)))


def imports(import_log: Path) -> dict[str, Any]:
    """The server's modules of hpchub (sys.modules, written on SIGUSR2: jupyter_server takes SIGUSR1),
    and the import times of the job side's modules in the start's PYTHONPROFILEIMPORTTIME log."""
    hpchub_modules: dict[str, int] = {}
    for line in import_log.read_text(errors="replace").splitlines():
        if match := IMPORT_RE.match(line):
            name = match.group(4)
            if name.startswith("hpchub"):
                # cumulative microseconds of each top-level-of-hpchub import (the largest is its whole cost)
                hpchub_modules[name] = max(hpchub_modules.get(name, 0), int(match.group(2)))
    modules_file = import_log.with_suffix(".modules")
    in_server = modules_file.read_text().split() if modules_file.exists() else []
    if not in_server:
        raise RuntimeError("the server did not write its sys.modules")
    return {"import_time_us": hpchub_modules,
            "server_modules_of_hpchub": [name for name in in_server if name.startswith("hpchub")],
            "server_hub_side_modules": [name for name in in_server if name == "hpchub" or name.startswith("hpchub.")],
            "server_modules": len(in_server)}


def measure_env(env_dir: Path, repeat: int) -> dict[str, Any]:
    hub = StandInHub()
    work = Path(tempfile.mkdtemp(prefix="hpchub-startcost-"))
    os.chmod(work, 0o755)
    try:
        starts = Starts(env_dir, work, hub)
        extensions = enabled_extensions(env_dir)
        variants: list[tuple[str, str, list[str]]] = [(kind, kind, []) for kind in
                                                      ("jupyter-lab", "jupyterhub-singleuser", "hpchub extension", "hpchub job",
                                                       "environment check", "python -c pass")]
        variants += [(f"hpchub job, {name} off", "hpchub job", [f"--ServerApp.jpserver_extensions={name}=False"])
                     for name in OPTIONAL_EXTENSIONS if name in extensions]
        off_all = [f"--ServerApp.jpserver_extensions={name}=False" for name in OPTIONAL_EXTENSIONS if name in extensions]
        if len(off_all) > 1:
            variants.append(("hpchub job, all of those off", "hpchub job", off_all))
        one_start(starts, "jupyterhub-singleuser", [])  # warm the page cache and bytecode
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for round_number in range(repeat):  # the kinds take turns, so drift in the machine hits all alike
            for label, kind, extra in variants:
                cpu[label].append(one_start(starts, kind, extra))
            print(f"  {env_dir}: round {round_number + 1}/{repeat} done", file=sys.stderr)
        import_log = work / "importtime.log"
        one_start(starts, "hpchub job", [], import_log)
        import_profile = imports(import_log)
    finally:
        hub.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"extensions_enabled": extensions, "imports": import_profile,
            "cpu_s": {label: {"median": statistics.median(values), "min": min(values), "max": max(values),
                              "all": values} for label, values in cpu.items()}}


def print_env(env_dir: str, result: dict[str, Any]) -> None:
    rows = result["cpu_s"]
    base = rows["jupyterhub-singleuser"]["median"]
    print(f"\n{env_dir} (server extensions enabled: {', '.join(result['extensions_enabled'])})")
    print(f"{'CPU to serving (user+sys)':44}{'median':>9}{'min':>9}{'vs singleuser':>15}{'ratio':>8}")
    for label, row in rows.items():
        if label in ALONE:
            continue
        print(f"{label:44}{row['median']:8.3f}s{row['min']:8.3f}s{(row['median'] - base) * 1000:+13.0f}ms"
              f"{row['median'] / base:8.2f}")
    job = rows["hpchub job"]["median"]
    print(f"hpchub adds {(job - base) * 1000:+.0f} ms of CPU to jupyterhub-singleuser "
          f"(extension alone {(rows['hpchub extension']['median'] - base) * 1000:+.0f} ms; target <= 20 ms)")
    print(f"of which start-server.sh's environment check, alone: {rows['environment check']['median'] * 1000:.0f} ms "
          f"(an interpreter's own start, python -c pass: {rows['python -c pass']['median'] * 1000:.0f} ms)")
    imported = result["imports"]
    hub_side = ", ".join(imported["server_hub_side_modules"]) or "none"
    print(f"the server's modules of hpchub ({imported['server_modules']} modules in all): "
          f"{', '.join(imported['server_modules_of_hpchub'])}; hub-side: {hub_side}")
    print("import times (us, cumulative): " + ", ".join(f"{name} {us}" for name, us in imported["import_time_us"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--env", action="append", help=f"a server environment (default: {', '.join(ENVS)})")
    args = parser.parse_args()
    results: dict[str, Any] = {"host": os.uname().nodename, "cores": os.cpu_count(), "repeat": args.repeat,
                               "environments": {}}
    for env_dir in args.env or ENVS:
        results["environments"][env_dir] = measure_env(Path(env_dir), args.repeat)
        print_env(env_dir, results["environments"][env_dir])
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
