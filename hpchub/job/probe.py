"""``hpchub doctor``'s probe: runs on a compute node, as the user, inside a job built like the
user's server job (its environment block ran first), with whatever ``python3`` that environment
gives. It imports nothing of hpchub (whether hpchub is importable is one of its questions) and only
the standard library, so it runs wherever a Python 3 does.

It prints one line, ``hpchub-doctor-report {JSON}``: the Python, the ``jupyterhub``, ``jupyter_server``
and ``hpchub`` it can import, the versions of what a profile's environment may turn on in the server
(jupyter-collaboration, jupytext; ``optional``), ``jupyterhub-singleuser`` on the PATH, the kernels the environment offers
(``jupyter kernelspec list --json``, if ``jupyter`` is there), whether it reaches the hub's API, the node's
name, and the port it listens on. Then it waits for ``hpchub doctor`` to connect to that port,
greets it, and removes its own output file (the job's log) before it ends, also when it is
cancelled, so a probe leaves nothing in the user's home.

    python3 probe.py --hub-api URL --node-variable SLURMD_NODENAME --wait SECONDS [--connect-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

REPORT_MARK = "hpchub-doctor-report "
GREETING = b"hpchub-doctor-probe\n"
CONNECT_TIMEOUT = 10.0


def _module_version(name: str) -> dict[str, Any]:
    try:
        module = __import__(name)
    except Exception as error:  # an import can fail in any way: report it, never stop the probe
        return {"importable": False, "error": f"{type(error).__name__}: {error}"}
    return {"importable": True, "version": str(getattr(module, "__version__", "")),
            "path": str(getattr(module, "__file__", ""))}


# What a profile's environment.collaboration and environment.jupytext need (hpchub.job.requirements
# judges them): the distributions' versions, and whether the collaboration's server extension is there.
OPTIONAL_DISTRIBUTIONS = ("jupyterlab", "jupyter-collaboration", "jupytext")
OPTIONAL_MODULES = ("jupyter_server_ydoc",)


def _optional() -> dict[str, Any]:
    """Found without importing them (an import may be slow or fail): versions, None where missing."""
    from importlib import metadata, util

    versions: dict[str, str | None] = {}
    for name in OPTIONAL_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except Exception:  # PackageNotFoundError, or broken metadata: either way not usable
            versions[name] = None
    modules = {}
    for name in OPTIONAL_MODULES:
        try:
            modules[name] = util.find_spec(name) is not None
        except Exception:
            modules[name] = False
    return {"versions": versions, "modules": modules}


KERNELSPEC_TIMEOUT = 60.0


def _kernelspecs(timeout: float = KERNELSPEC_TIMEOUT) -> dict[str, Any]:
    """``jupyter kernelspec list --json`` as this environment answers it; ``{"error": ...}`` when
    there is no ``jupyter`` on the PATH or it fails: the rest of the report stands either way.

    The kernels of the environment, not of the probing user: their own (``~/.local/share/jupyter``)
    would end up on everybody's card, so jupyter gets an empty data directory instead."""
    jupyter = shutil.which("jupyter")
    if jupyter is None:
        return {"error": "jupyter is not on the PATH"}
    try:
        with tempfile.TemporaryDirectory(prefix="hpchub-probe-") as empty:
            # Not capture_output=/text= (Python 3.7): the node's Python may be older.
            result = subprocess.run([jupyter, "kernelspec", "list", "--json"], stdout=subprocess.PIPE,  # noqa: UP022
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout,
                                    env=dict(os.environ, JUPYTER_DATA_DIR=empty),
                                    universal_newlines=True)  # noqa: UP021
    except (OSError, subprocess.SubprocessError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        return {"error": f"jupyter kernelspec list exited with {result.returncode}: {last}"}
    try:
        listed = json.loads(result.stdout)
    except ValueError:
        return {"error": "jupyter kernelspec list --json printed no JSON"}
    if not isinstance(listed, dict) or not isinstance(listed.get("kernelspecs"), dict):
        return {"error": "jupyter kernelspec list --json printed no kernelspecs"}
    # Only what a card shows: the argv and resource paths stay on the node.
    return {"kernelspecs": {name: {"spec": {key: entry.get("spec", {}).get(key) for key in ("display_name", "language")}}
                            for name, entry in listed["kernelspecs"].items() if isinstance(entry, dict)}}


def _hub_api(url: str, timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """Can this node open a TCP connection to the hub API's host and port, and what does GET answer?"""
    if not url:
        return {"asked": False}
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    result: dict[str, Any] = {"asked": True, "url": url, "host": host, "port": port}
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:  # noqa: UP041  (not TimeoutError before Python 3.10: the node may be older)
        result["tcp"] = f"no answer within {timeout:g} s (a firewall dropping the connection?)"
        return result
    except OSError as error:
        result["tcp"] = f"{type(error).__name__}: {error.strerror or error}"
        return result
    result["tcp"] = "ok"
    result["tcp_seconds"] = round(time.monotonic() - started, 3)
    try:  # JupyterHub answers GET /hub/api with its version, no token needed
        context = ssl.create_default_context()
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout, context=context) as answer:
            result["http"] = answer.status
            body = answer.read(4096)
        result["hub_version"] = str(json.loads(body.decode()).get("version", ""))
    except urllib.error.HTTPError as error:
        result["http"] = error.code
    except Exception as error:  # TLS, a proxy, not JSON: TCP worked, report what HTTP said
        result["http"] = f"{type(error).__name__}: {error}"
    return result


def _own_log() -> str | None:
    """The job's output file (this process's stdout), if it is an hpchub log of this user."""
    try:
        path = os.readlink("/proc/self/fd/1")
    except OSError:
        return None
    logs = os.path.join(os.path.expanduser("~"), ".hpchub", "logs") + os.sep
    return path if path.startswith(logs) and path.endswith(".log") else None


def _remove_own_log() -> None:
    path = _own_log()
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _on_signal(signum: int, frame: Any) -> None:
    _remove_own_log()
    os._exit(128 + signum)


def report(hub_api: str, node_variable: str, listener: socket.socket,
           connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    return {
        "python": {"executable": sys.executable, "version": ".".join(str(part) for part in sys.version_info[:3]),
                   "python3_on_path": shutil.which("python3") or ""},
        "jupyterhub": _module_version("jupyterhub"),
        "jupyter_server": _module_version("jupyter_server"),
        "optional": _optional(),
        "singleuser_command": shutil.which("jupyterhub-singleuser") or "",
        "kernelspecs": _kernelspecs(),
        "hpchub": _module_version("hpchub"),
        "hub_api": _hub_api(hub_api, connect_timeout),
        "node": os.environ.get(node_variable, "") or socket.gethostname(),
        "hostname": socket.gethostname(),
        "port": listener.getsockname()[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py")
    parser.add_argument("--hub-api", default="")
    parser.add_argument("--node-variable", default="HOSTNAME")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for hpchub doctor to connect")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT,
                        help="seconds a connection to the hub may take to be answered")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("0.0.0.0", 0))  # a free port, as the server's port 0
        listener.listen(1)
        print(REPORT_MARK + json.dumps(report(args.hub_api, args.node_variable, listener, args.connect_timeout)), flush=True)
        listener.settimeout(args.wait)
        try:
            connection, peer = listener.accept()
        except socket.timeout:  # noqa: UP041  (not TimeoutError before Python 3.10: the node may be older)
            print(f"hpchub doctor did not connect within {args.wait:.0f} s", flush=True)
            return 0
        with connection:
            connection.settimeout(args.connect_timeout)
            connection.sendall(GREETING)
            try:
                connection.recv(64)  # "done", or the doctor closing the connection
            except OSError:
                pass
        print(f"hpchub doctor connected from {peer[0]}", flush=True)
        return 0
    finally:
        listener.close()
        _remove_own_log()


if __name__ == "__main__":
    sys.exit(main())
