"""Per-process shared state for one cluster: its command client and its status poller."""

from __future__ import annotations

import asyncio

from .cluster import ClusterClient
from .config import SiteConfig
from .poller import CachedQuery, StatusPoller


class ClusterRuntime:
    """The client and shared status poller of one cluster, shared by everything in this process
    that watches jobs there (all spawners of a hub; all engine sets of a notebook)."""

    registry: dict[tuple[str, str, int], "ClusterRuntime"] = {}

    def __init__(self, name: str, client: ClusterClient, poller: StatusPoller):
        self.name = name
        self.client = client
        self.poller = poller
        self.task: asyncio.Task | None = None
        self.node_addresses: dict[str, str] = {}
        self.queues: CachedQuery | None = None

    @classmethod
    def get(cls, site: SiteConfig, cluster_name: str, interval: float, min_interval: float) -> "ClusterRuntime":
        key = (str(site.source), cluster_name, id(asyncio.get_running_loop()))
        runtime = cls.registry.get(key)
        if runtime is None:
            client = ClusterClient(cluster_name, site.clusters[cluster_name])
            poller = StatusPoller(client.status, interval=interval, min_interval=min_interval)
            runtime = cls.registry[key] = cls(cluster_name, client, poller)
        if runtime.task is None or runtime.task.done():
            runtime.task = asyncio.get_running_loop().create_task(runtime.poller.run_forever())
        return runtime
