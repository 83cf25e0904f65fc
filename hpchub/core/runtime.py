"""Per-process shared state for one cluster: its command client, its status poller, cached queue
numbers and node addresses."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..schedulers.base import Allocations
from ..transports.cluster import ClusterClient, ClusterSpec, ssh_pool
from . import metrics
from .poller import CachedQuery, StatusPoller

log = logging.getLogger("hpchub.runtime")

NODE_ADDRESS_TTL = 300.0  # seconds a node's address is reused (nodes are renamed or re-addressed rarely)
HUB_FORWARD_UNCLAIMED = 600.0
"""Seconds after which a reverse forward that is not the one new jobs get, and that no running job
claimed (each running server claims its port at every poll), is closed."""


@dataclass(frozen=True)
class AllocationsAnswer:
    """A user's allocations as last asked: ``allocations`` None means unknown (the query failed;
    ``error`` says why). ``age``: seconds since the scheduler was asked."""

    allocations: Allocations | None
    age: float
    error: str | None = None


class ClusterRuntime:
    """The client and shared status poller of one cluster, shared by everything in this process
    that watches jobs there (all spawners of a hub; all engine sets of a notebook). Keyed by the
    cluster's spec, not by the site config: an edit of the config that leaves the cluster as it
    was keeps the same poller, and a job is watched with the spec it was submitted with."""

    registry: ClassVar[dict[tuple[ClusterSpec, int], ClusterRuntime]] = {}

    def __init__(self, client: ClusterClient, poller: StatusPoller):
        self.name = client.name
        self.client = client
        self.poller = poller
        self.task: asyncio.Task | None = None
        self.queues: CachedQuery | None = None
        self._node_addresses: dict[str, tuple[str, float]] = {}
        self._node_address_inflight: dict[str, asyncio.Task[str]] = {}  # node -> the one query about it
        self._allocations: dict[str, tuple[AllocationsAnswer, float]] = {}  # user -> (answer, when asked)
        self._allocations_inflight: dict[str, asyncio.Task] = {}
        # (user, job id) -> sshpool.LocalForward (to_servers: tunnel): one user's server never
        # shares, nor closes, another user's tunnel, whatever job id it was told.
        self._tunnels: dict[tuple[str, str], Any] = {}
        # to_hub: reverse: login node port -> sshpool.RemoteForward, held or being asked for again;
        # the port new jobs are given; when each port was last claimed by a job (or given out).
        self._hub_forwards: dict[int, Any] = {}
        self._hub_forward_port = 0
        self._hub_forward_claims: dict[int, float] = {}
        self._hub_forward_lock = asyncio.Lock()
        self._hub_forward_refusals_closed = 0
        self._closing: set[asyncio.Future[None]] = set()
        metrics.REVERSE_FORWARDS.track(self)

    @classmethod
    def get(cls, spec: ClusterSpec, interval: float, min_interval: float) -> ClusterRuntime:
        key = (spec, id(asyncio.get_running_loop()))
        runtime = cls.registry.get(key)
        if runtime is None:
            client = ClusterClient(spec)
            poller = StatusPoller(client.status, interval=interval, min_interval=min_interval, cluster=spec.name)
            runtime = cls.registry[key] = cls(client, poller)
        if runtime.task is None or runtime.task.done():
            runtime.task = asyncio.get_running_loop().create_task(runtime.poller.run_forever())
        return runtime

    def queue_numbers(self, ttl: float) -> CachedQuery:
        if self.queues is None:
            self.queues = CachedQuery(self.client.queue_info, ttl=ttl)
        return self.queues

    async def allocations(self, user: str, groups: Sequence[str], ttl: float) -> AllocationsAnswer:
        """``user``'s allocations on this cluster, asked as the hub at most once per ``ttl`` seconds
        (``queue_info_ttl``; concurrent callers share one query). A failed query is "unknown", not the
        last good answer: a user removed from an account must not be offered it again."""
        now = time.monotonic()
        cached = self._allocations.get(user)
        if cached is not None and now - cached[1] < ttl:
            answer, asked = cached
            return AllocationsAnswer(answer.allocations, now - asked, answer.error)
        task = self._allocations_inflight.get(user)
        if task is None:
            task = self._allocations_inflight[user] = asyncio.get_running_loop().create_task(
                self._ask_allocations(user, tuple(groups)))
        answer = await asyncio.shield(task)
        return AllocationsAnswer(answer.allocations, time.monotonic() - self._allocations[user][1], answer.error)

    async def _ask_allocations(self, user: str, groups: tuple[str, ...]) -> AllocationsAnswer:
        asked = time.monotonic()
        try:
            answer = AllocationsAnswer(await self.client.allocations(user, groups), 0.0)
        except Exception as error:  # the form says "unknown"; a from_scheduler spawn is refused
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("allocations of %s on %s unavailable: %s", user, self.name, message)
            answer = AllocationsAnswer(None, 0.0, message)
        finally:
            self._allocations_inflight.pop(user, None)
        self._allocations[user] = (answer, asked)
        return answer

    async def queue_addresses(self, queue: str) -> list[str]:
        """The addresses the hub would connect to for every node of ``queue``."""
        addresses = []
        for node, address in await self.client.queue_nodes(queue):
            if address and address != node:
                self._node_addresses[node] = (address, time.monotonic())
            addresses.append(await self.node_address(node))
        return addresses

    async def node_address(self, node: str) -> str:
        """The address the hub connects to for ``node``: the scheduler's (Slurm NodeAddr), else DNS,
        else the name; never anything the job says. Cached for NODE_ADDRESS_TTL; concurrent callers
        share one query (a class's servers start on the same nodes in the same second)."""
        cached = self._node_addresses.get(node)
        if cached is not None and time.monotonic() - cached[1] < NODE_ADDRESS_TTL:
            return cached[0]
        task = self._node_address_inflight.get(node)
        if task is None:
            # A task of its own: a caller that is cancelled does not cancel the others' query.
            task = self._node_address_inflight[node] = asyncio.get_running_loop().create_task(
                self._look_up_node_address(node))
        return await asyncio.shield(task)

    async def _look_up_node_address(self, node: str) -> str:
        try:
            address: str | None = None
            try:
                address = await self.client.node_address(node)
            except Exception:  # the scheduler not answering is no reason to fail: DNS may know
                address = None
            if not address or address == node:
                try:
                    address = await asyncio.get_running_loop().run_in_executor(None, socket.gethostbyname, node)
                except OSError:
                    address = node
            self._node_addresses[node] = (address, time.monotonic())
            return address
        finally:
            self._node_address_inflight.pop(node, None)

    # -- the hub off the cluster (via: ssh) ------------------------------------------------------
    async def tunnel(self, job_id: str, user: str, address: str, port: int, local_port: int = 0) -> int:
        """A port on the hub's loopback that reaches the job's server at ``address:port`` through
        the login node (``to_servers: tunnel``); ``local_port``: the one it had before a hub restart,
        so the proxy's route stays right. Returns the local port."""
        forward = self._tunnels.get((user, job_id))
        if forward is None:
            forward = await ssh_pool().open_local_forward(self.client.ssh_target(user), address, port,
                                                          local_port=local_port)
            self._tunnels[(user, job_id)] = forward
        return int(forward.port)

    def has_tunnel(self, job_id: str, user: str) -> bool:
        return (user, job_id) in self._tunnels

    def close_tunnel(self, job_id: str, user: str) -> None:
        forward = self._tunnels.pop((user, job_id), None)
        if forward is not None:
            forward.close()

    async def hub_api_for_jobs(self, hub_api_url: str) -> tuple[str, int] | None:
        """The hub's API URL as a new job of this cluster reaches it (``to_hub``), and the login
        node's port of the reverse forward (0 if none); None: the hub's own URL (direct).

        A job is only ever given a port the hub holds: when the forward new jobs were given is dead
        (the login node refused it after a reconnect: someone may have taken the port), new jobs get
        a fresh one, and the dead one is asked for again in the background for the jobs that have it.
        Raises LoginUnreachable (ForwardRefused among them) when there is none to give."""
        spec = self.client.spec
        if spec.to_hub == "direct":
            return None
        if spec.to_hub != "reverse":
            return spec.to_hub.rstrip("/"), 0
        from ..transports.sshpool import ForwardRefused  # paramiko: only for clusters reached over SSH

        hub = urlsplit(hub_api_url)
        async with self._hub_forward_lock:  # concurrent spawns share one request
            self._forget_unclaimed_hub_forwards()
            forward = self._hub_forwards.get(self._hub_forward_port)
            if forward is not None:
                try:
                    await forward.ensure_held()
                except ForwardRefused as error:
                    log.warning("%s: the reverse forward on port %s is not held (%s); new jobs get a new one",
                                self.name, forward.port, error)
                    forward = None
            if forward is None:
                assert spec.host is not None and hub.hostname is not None
                forward = await ssh_pool().open_remote_forward(
                    self.client.ssh_target(None), spec.host, 0, hub.hostname, hub.port or 80)
                self._hub_forwards[forward.port] = forward
                self._hub_forward_port = forward.port
            self._hub_forward_claims[forward.port] = time.monotonic()
        port = int(forward.port)
        return urlunsplit(hub._replace(netloc=f"{spec.host}:{port}")).rstrip("/"), port

    async def keep_hub_forward(self, hub_api_url: str, port: int) -> bool:
        """For a running job that calls the hub at the login node's ``port`` (after a hub restart, and
        at each poll): make sure the hub holds that port or keeps asking for it. True: held. A refused
        request is never handed out; it is asked for again with backoff (LoginUnreachable: the
        login node did not answer, try again later)."""
        spec = self.client.spec
        hub = urlsplit(hub_api_url)
        async with self._hub_forward_lock:
            self._hub_forward_claims[port] = time.monotonic()
            forward = self._hub_forwards.get(port)
            if forward is None:
                assert spec.host is not None and hub.hostname is not None
                forward = await ssh_pool().open_remote_forward(
                    self.client.ssh_target(None), spec.host, port, hub.hostname, hub.port or 80, keep_refused=True)
                self._hub_forwards[port] = forward
                if not self._hub_forward_port and forward.held:
                    self._hub_forward_port = port  # new jobs share it, as before the restart
        return bool(forward.held)

    def _forget_unclaimed_hub_forwards(self) -> None:
        """Close the reverse forwards no running job has claimed for HUB_FORWARD_UNCLAIMED seconds
        (their jobs are over): a dead one would be asked for forever otherwise."""
        now = time.monotonic()
        for port, forward in list(self._hub_forwards.items()):
            if port != self._hub_forward_port and now - self._hub_forward_claims.get(port, now) > HUB_FORWARD_UNCLAIMED:
                del self._hub_forwards[port]
                self._hub_forward_claims.pop(port, None)
                self._hub_forward_refusals_closed += forward.refusals
                self._closing.add(asyncio.ensure_future(forward.close()))
                self._closing = {task for task in self._closing if not task.done()}

    def hub_forward_counts(self) -> tuple[int, int, int]:
        """(held, dead, refusals) of this cluster's reverse forwards, for hpchub's metrics."""
        forwards = list(self._hub_forwards.values())
        held = sum(1 for forward in forwards if forward.held)
        return held, len(forwards) - held, self._hub_forward_refusals_closed + sum(f.refusals for f in forwards)
