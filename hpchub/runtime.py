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

from .cluster import ClusterClient, ClusterSpec, ssh_pool
from .poller import CachedQuery, StatusPoller
from .schedulers.base import Allocations

log = logging.getLogger("hpchub.runtime")

NODE_ADDRESS_TTL = 300.0  # seconds a node's address is reused (nodes are renamed or re-addressed rarely)


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
        self._allocations: dict[str, tuple[AllocationsAnswer, float]] = {}  # user -> (answer, when asked)
        self._allocations_inflight: dict[str, asyncio.Task] = {}
        # (user, job id) -> sshpool.LocalForward (to_servers: tunnel): one user's server never
        # shares, nor closes, another user's tunnel, whatever job id it was told.
        self._tunnels: dict[tuple[str, str], Any] = {}
        self._hub_forward: Any = None  # sshpool.RemoteForward (to_hub: reverse)

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
        else the name; never anything the job says. Cached for NODE_ADDRESS_TTL."""
        cached = self._node_addresses.get(node)
        if cached is not None and time.monotonic() - cached[1] < NODE_ADDRESS_TTL:
            return cached[0]
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

    async def hub_api_for_jobs(self, hub_api_url: str, remote_port: int = 0) -> tuple[str, int] | None:
        """The hub's API URL as jobs of this cluster reach it (``to_hub``), and the login node's port
        of the reverse forward (0 if none); None: the hub's own URL (direct)."""
        spec = self.client.spec
        if spec.to_hub == "direct":
            return None
        if spec.to_hub != "reverse":
            return spec.to_hub.rstrip("/"), 0
        hub = urlsplit(hub_api_url)
        if self._hub_forward is None:
            assert spec.host is not None and hub.hostname is not None
            self._hub_forward = await ssh_pool().open_remote_forward(
                self.client.ssh_target(None), spec.host, remote_port, hub.hostname, hub.port or 80)
        port = int(self._hub_forward.port)
        return urlunsplit(hub._replace(netloc=f"{spec.host}:{port}")).rstrip("/"), port
