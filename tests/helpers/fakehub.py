"""A stand-in for the hub's API served in a thread: what a singleuser server and the job side talk to
when a test or a benchmark starts one without a real JupyterHub (tests/test_singleuser.py,
bench/startcost.py). Each subclasses the handler with the answers it needs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_VERSION = "6.1.1"


class HubAPIHandler(BaseHTTPRequestHandler):
    """Answers as JupyterHub's API does (JSON and its version header); logs nothing."""

    def log_message(self, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, payload: dict) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()  # a 204 has no body
        self.send_response(status)
        self.send_header("X-JupyterHub-Version", HUB_VERSION)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ServedHubAPI:
    """``handler`` served on 127.0.0.1 in a thread of its own; ``url`` is the API's (…/hub/api)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hub/api"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
