#!/opt/hpchub/venv/bin/python
"""A stand-in for a single-user server in bench/hub500.py: what the hub sees of a server, at a
fraction of its cost, so that 500 of them fit on the test VM next to the hub being measured.

It listens, reports its port to the hub the way the spawner expects, answers every HTTP request
with 200, the JSON ``{"version": ...}`` and the ``X-JupyterHub-Version`` header (what JupyterHub 6.1
polls at ``{server url}api`` before it calls a server up, and what the bench asks through the proxy),
and exits on SIGTERM. Standard library only (socket, json, signal), one thread, no event loop:
about 20 ms of CPU to start. ``--report``:

- ``hpchub``: listens on all interfaces on a port the OS picks, then POSTs ``{"port": N}`` (with
  ``"ends"`` from ``HPCHUB_JOB_END``, as hpchub's server extension does) to
  ``$JUPYTERHUB_API_URL/hpchub/port`` with ``$JUPYTERHUB_API_TOKEN``;
- ``batchspawner``: the same to ``$JUPYTERHUB_API_URL/batchspawner`` (batchspawner-singleuser's
  report, which names no end);
- ``none``: listens where ``$JUPYTERHUB_SERVICE_URL`` says (JupyterHub's LocalProcessSpawner picks
  the port) and reports nothing.

Other arguments (the server arguments hpchub appends) are ignored. Plain HTTP only: the bench's hubs
run without internal_ssl.
"""

import json
import os
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

REPORT_ATTEMPTS = 5
REPORT_RETRY_SECONDS = 2.0
REPORT_PATHS = {"hpchub": "/hpchub/port", "batchspawner": "/batchspawner"}


def option(argv, name, default=""):
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv``."""
    for index, arg in enumerate(argv):
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return default


def listen(report):
    """The listening socket: where JupyterHub said (``none``) or all interfaces, a free port."""
    if report == "none":
        url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
        address = (url.hostname or "127.0.0.1", url.port or 0)
    else:
        address = ("0.0.0.0", 0)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(128)
    return server


def post(url, token, body):
    """POST JSON ``body`` to ``url`` (http) with ``token``; the response's status code."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: token {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=60) as connection:
        connection.sendall(request + data)
        status_line = connection.makefile("rb").readline()
    return int(status_line.split()[1])


def report_port(report, port):
    """Tell the hub the port (retried while it does not answer or answers 5xx); exit 1 on a refusal."""
    url = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + REPORT_PATHS[report]
    body = {"port": port}
    ends = os.environ.get("HPCHUB_JOB_END", "")
    if report == "hpchub" and ends.isdigit():
        body["ends"] = int(ends)
    last = ""
    for _attempt in range(REPORT_ATTEMPTS):
        try:
            status = post(url, os.environ["JUPYTERHUB_API_TOKEN"], body)
        except OSError as error:
            last = str(error)
        else:
            if status < 300:
                return
            last = f"HTTP {status}"
            if status < 500:
                break
        time.sleep(REPORT_RETRY_SECONDS)
    print(f"standin: reporting port {port} to {url} failed: {last}", file=sys.stderr, flush=True)
    sys.exit(1)


def answer(connection, body, version):
    """Read one request (headers and body) and answer it with ``body``; the connection is closed."""
    connection.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = connection.recv(4096)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            missing = int(value.strip() or 0) - len(rest)
            while missing > 0:
                chunk = connection.recv(min(missing, 65536))
                if not chunk:
                    break
                missing -= len(chunk)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       + f"X-JupyterHub-Version: {version}\r\nContent-Length: {len(body)}\r\n".encode()
                       + b"Connection: close\r\n\r\n" + body)


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    report = option(argv, "report", "none")
    version = option(argv, "hub-version", "0")
    server = listen(report)
    port = server.getsockname()[1]
    if report != "none":
        report_port(report, port)  # the socket listens already: the hub's first check queues
    body = json.dumps({"version": version, "standin": True, "port": port}).encode()
    while True:
        connection, _ = server.accept()
        with connection:
            try:
                answer(connection, body, version)
            except OSError:  # a caller that went away or sent nothing in time: the next one
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
