"""The hub endpoint where a starting job reports the port its server listens on.

It accepts ``{"port": N}``, optionally with ``"ends": EPOCH`` (when the job's walltime ends, as the
job computed it), and only with the API token of a server that is starting (the token hpchub gave
that job): no other key, no other user's token, not even the same user's other tokens. The host is
never taken from the job; it comes from the scheduler.

A spawner registers what it waits for (``expect_port``) before it submits the job; the endpoint
only looks the token up in that table, so it needs to know nothing about spawners or wrappers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import NamedTuple

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from . import walltime

log = logging.getLogger("hpchub.porthandler")

ROUTE = "/api/hpchub/port"  # below the hub prefix: /hub/api/hpchub/port



class PortReport(NamedTuple):
    """What a starting job reports: its server's port and, if it knows it, its end (epoch seconds)."""

    port: int
    ends: int | None = None


# sha256(token) -> the future the waiting spawner awaits. Hashes, so the table holds no tokens.
_expected: dict[str, asyncio.Future[PortReport]] = {}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expect_port(token: str) -> asyncio.Future[PortReport]:
    """Register a starting server's token; the returned future gets what its job reports."""
    future: asyncio.Future[PortReport] = asyncio.get_running_loop().create_future()
    _expected[_digest(token)] = future
    return future


def waiting_for(token: str) -> asyncio.Future[PortReport] | None:
    """The future of the starting server with this token, if one waits for its port."""
    return _expected.get(_digest(token))


def forget(token: str) -> None:
    """The server is no longer waiting for its port (started, failed or stopped)."""
    future = _expected.pop(_digest(token), None)
    if future is not None and not future.done():
        future.cancel()


def read_report(body: bytes) -> PortReport:
    """The report in a request body: ``{"port": N}`` or ``{"port": N, "ends": EPOCH}``, else HTTP 400
    (``ends`` only within walltime's bounds: the hub shows it on every load of the home page)."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise web.HTTPError(400, "body must be JSON: {\"port\": N}") from None
    if not isinstance(data, dict) or "port" not in data or not set(data) <= {"port", "ends"}:
        raise web.HTTPError(400, "body must be {\"port\": N} or {\"port\": N, \"ends\": EPOCH}")
    port, ends = data["port"], data.get("ends")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise web.HTTPError(400, "port must be an integer from 1 to 65535")
    if ends is not None and (isinstance(ends, bool) or not isinstance(ends, int) or ends <= 0):
        raise web.HTTPError(400, "ends must be a positive integer (epoch seconds)")
    if ends is not None and not walltime.reported_end_is_plausible(ends):
        raise web.HTTPError(400, "ends must be within a day before and a year after now (epoch seconds)")
    return PortReport(port, ends)


class PortReportHandler(APIHandler):
    # The caller is a batch job, not a browser: token auth only, no XSRF cookie dance.
    def check_xsrf_cookie(self):
        return

    @web.authenticated
    async def post(self):
        token = self.get_auth_token()
        if not token or self.current_user is None:
            raise web.HTTPError(403, "a server's own API token is required")
        report = read_report(self.request.body)
        future = waiting_for(token)
        if future is None:
            raise web.HTTPError(403, "this token does not belong to a starting hpchub server")
        if future.done():
            raise web.HTTPError(409, "this server is not waiting for a port")
        future.set_result(report)
        self.set_status(204)


HANDLERS = [(ROUTE, PortReportHandler)]
