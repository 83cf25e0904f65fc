"""The address the hub connects to for a job's node, asked of the scheduler once per node and
NODE_ADDRESS_TTL: a class whose servers start on one node in the same second (bench/hub500.py) costs
one `scontrol show node`, not one per spawn."""

from __future__ import annotations

import asyncio

from hpchub.core.poller import StatusPoller
from hpchub.core.runtime import ClusterRuntime


class FakeClient:
    name = "fake"

    def __init__(self, address: str | None = "10.77.0.1", error: Exception | None = None):
        self.address, self.error = address, error
        self.asked: list[str] = []

    async def node_address(self, node):
        self.asked.append(node)
        await asyncio.sleep(0.01)  # a scheduler command takes a while: other spawns ask meanwhile
        if self.error is not None:
            raise self.error
        return self.address

    async def status(self, users=None):
        return {}


def runtime_of(client) -> ClusterRuntime:
    return ClusterRuntime(client, StatusPoller(client.status, interval=60, cluster=client.name))


async def test_concurrent_spawns_on_one_node_share_one_scheduler_query():
    client = FakeClient()
    runtime = runtime_of(client)
    addresses = await asyncio.gather(*(runtime.node_address("vm") for _ in range(50)),
                                     runtime.node_address("node1"))
    assert addresses == ["10.77.0.1"] * 51
    assert sorted(client.asked) == ["node1", "vm"]
    assert await runtime.node_address("vm") == "10.77.0.1" and len(client.asked) == 2  # cached after


async def test_a_cancelled_caller_does_not_cancel_the_query_the_others_wait_for():
    client = FakeClient()
    runtime = runtime_of(client)
    first = asyncio.ensure_future(runtime.node_address("vm"))
    second = asyncio.ensure_future(runtime.node_address("vm"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "10.77.0.1" and client.asked == ["vm"]


async def test_a_scheduler_that_does_not_answer_falls_back_to_dns_for_every_waiting_caller():
    client = FakeClient(error=RuntimeError("scontrol: error: slurm_load_node: Socket timed out"))
    runtime = runtime_of(client)
    addresses = await asyncio.gather(*(runtime.node_address("localhost") for _ in range(5)))
    assert addresses == ["127.0.0.1"] * 5 and client.asked == ["localhost"]
