"""Endpoints end to end: a real worker, admission loop and gateway, requests over real HTTP.

Simulated pools answer through the gateway with a fixed body after `sim.inferofabric.io/latency`;
a `local` pool runs the example model server as a real process on a port of its own. What is
judged is what a caller and an operator see: the answers, and where the replicas run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cli.util import free_port
from failover.util import eventually, sim_pool

from inferofabric.gateway.server import Gateway
from inferofabric.gateway.server import start as start_gateway
from inferofabric.models.common import Location

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The local pool serving the example model server: the host's network (it serves on a host port), and
# the checkout and virtualenv visible to its sandboxed jobs even where they sit under /tmp (a CI clone).
LOCAL = {"discover_gpus": False, "network": "host", "read_only": ["/", str(EXAMPLES.parent), sys.prefix]}
POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.85", target: cloud}
  failover: {when: "pool_health != healthy", target: cloud}
constraints:
  - name: no-pii-in-cloud
    deny: {location: cloud}
    when: workload.data_classification == 'pii'
"""


def endpoint(name: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name, "team": "nlp", "image": "ghcr.io/acme/sentiment:2.0", "port": 8080,
        "resources": {"gpu": {"type": "A100", "count": 1}},
        "replicas": {"min": 1, "max": 6},
        "autoscale": {"metric": "in_flight", "target": 2, "scale_up_delay": "1s", "scale_down_delay": "3s"},
        "annotations": {"sim.inferofabric.io/latency": "200ms"},
        "access": "public",  # who may call is test_endpoint_access.py's and test_gateway_http.py's subject
    }
    spec.update(changes)
    return spec


@pytest_asyncio.fixture
async def gateway(fabric: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    port = free_port()
    monkeypatch.setenv("FABRIC_GATEWAY_URL", f"http://127.0.0.1:{port}")
    served = await start_gateway(fabric.client, port, hold_timeout=30)
    try:
        yield served
    finally:
        await served.close()


class Load:
    """`concurrency` callers, each sending its next request when the last one is answered."""

    def __init__(self, url: str, concurrency: int, retry_503: bool = True) -> None:
        self.url, self.concurrency, self.retry_503 = url, concurrency, retry_503
        self.answers: list[int] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _caller(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            for attempt in range(5):
                try:
                    async with session.post(self.url + "predict", data=b"a lovely day") as answer:
                        await answer.read()
                        if answer.status == 503 and self.retry_503 and attempt < 4:
                            await asyncio.sleep(0.5)
                            continue
                        self.answers.append(answer.status)
                        break
                except aiohttp.ClientError as error:
                    self.failures.append(str(error))
                    break

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._tasks = [asyncio.create_task(self._caller(self._session)) for _ in range(self.concurrency)]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


def live(status: Any) -> list[Any]:
    return [r for r in status.replicas if r.live and r.state != "stopping"]


async def on_prem_and_cloud(client: Any) -> None:
    """2 A100 on-prem, 8 in the cloud, and the burst/pii policy."""
    await client.register_pool(sim_pool("dc", "on-prem", 2))
    await client.register_pool(sim_pool("cloud", "cloud", 8))
    await client.set_policy(POLICY)


async def test_replicas_scale_out_on_prem_then_burst_come_home_and_scale_to_zero(fabric: Any, gateway: Gateway) -> None:
    client = fabric.client
    await on_prem_and_cloud(client)
    handle = await client.deploy_endpoint(endpoint("chat", scale_to_zero_after="8s"))
    assert handle.url.endswith("/e/chat/")

    first = await eventually(lambda: _ready(handle, 1), 30, "one replica ready")
    assert [r.location for r in live(first)] == [Location.ON_PREM], (first.replicas, first.events)

    async with Load(handle.url, concurrency=10) as load:
        # 10 in flight at 2 per replica: 5 wanted; on-prem holds 2, the rest burst.
        scaled = await eventually(lambda: _ready(handle, 5), 45, "five replicas ready")
        await asyncio.sleep(1)
    where = [r.location for r in live(scaled)]
    assert where.count(Location.ON_PREM) == 2 and where.count(Location.CLOUD) == 3, scaled.replicas
    assert load.answers and set(load.answers) == {200} and not load.failures

    # The load is gone: the cloud replicas go first, on-prem stays.
    async def shrunk() -> Any:
        status = await handle.status()
        return status if len(live(status)) == 1 else None

    low = await eventually(shrunk, 30, "back to one replica")
    assert [r.location for r in live(low)] == [Location.ON_PREM], low.replicas

    # No request for 8 s: zero replicas; the next request waits for a cold start and is answered.
    async def suspended() -> Any:
        status = await handle.status()
        return status if status.state.value == "suspended" else None

    await eventually(suspended, 40, "suspended")
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(handle.url + "predict", data=b"hello") as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["simulated"] is True
        assert time.monotonic() - started < 20
    await handle.delete()


async def test_a_pii_endpoint_never_gets_a_cloud_replica(fabric: Any, gateway: Gateway) -> None:
    client = fabric.client
    await on_prem_and_cloud(client)
    handle = await client.deploy_endpoint(endpoint("private", data_classification="pii"))
    await eventually(lambda: _ready(handle, 1), 30, "one replica ready")
    async with Load(handle.url, concurrency=10) as load:
        async def three_wanted() -> Any:
            status = await handle.status()
            return status if status.desired >= 4 and len(live(status)) >= 4 else None

        status = await eventually(three_wanted, 30, "more replicas wanted than on-prem holds")
        await asyncio.sleep(2)
        status = await handle.status()
    placed = [r for r in live(status) if r.location is not None]
    assert {r.location for r in placed} == {Location.ON_PREM} and len(placed) == 2, status.replicas
    assert any(r.state == "queued" for r in live(status))  # waits for on-prem rather than burst
    assert set(load.answers) == {200}
    await handle.delete()


async def test_a_local_replica_serves_real_requests_and_rolls_to_a_new_version(
        fabric: Any, gateway: Gateway) -> None:
    client = fabric.client
    await client.register_pool({"name": "here", "location": "on-prem", "backend": "local", "gpus": {"A100": 2},
                                "local": LOCAL})
    server = [sys.executable, str(EXAMPLES / "model_server.py")]
    spec = endpoint("sentiment", command=server, replicas={"min": 1, "max": 1}, env={"LOAD_MS": "100"},
                    readiness={"path": "/healthz", "initial_delay_seconds": 0.2, "period_seconds": 0.5})
    handle = await client.deploy_endpoint(spec)
    status = await eventually(lambda: _ready(handle, 1), 30, "the local replica ready")
    first = live(status)[0]
    assert first.address and first.address.startswith("127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.post(handle.url + "predict",
                                                                data=b"what a lovely day") as answer:
        body = await answer.json()
    assert answer.status == 200 and body["label"] == "positive" and body["replica"] == first.id

    # A rolling update: a new replica answers before the old one goes; no request fails meanwhile.
    async with Load(handle.url, concurrency=3, retry_503=False) as load:
        await handle.update({**spec, "env": {"LOAD_MS": "100", "COMPUTE_MS": "5"}})

        async def rolled() -> Any:
            status = await handle.status()
            current = live(status)
            return status if len(current) == 1 and current[0].version == 2 and status.ready == 1 else None

        rolled_status = await eventually(rolled, 40, "version 2 serving alone")
        await asyncio.sleep(1)
    assert live(rolled_status)[0].id != first.id
    assert load.answers and set(load.answers) == {200} and not load.failures, (load.failures, set(load.answers))
    await handle.delete()


async def _ready(handle: Any, count: int) -> Any:
    status = await handle.status()
    return status if status.ready >= count else None


async def test_a_replica_s_pool_fails_and_the_endpoint_keeps_answering(fabric: Any, gateway: Gateway) -> None:
    from inferofabric.models.messages import MonitorSettings

    fast = MonitorSettings(period_seconds=0.5, probe_timeout_seconds=2.0, unhealthy_after=2, healthy_after=2)
    client = fabric.client
    await client.register_pool(sim_pool("dc-a", "on-prem", 1), monitor=fast)
    await client.register_pool(sim_pool("dc-b", "on-prem", 1), monitor=fast)
    await client.register_pool(sim_pool("cloud", "cloud", 8), monitor=fast)
    await client.set_policy(POLICY)
    handle = await client.deploy_endpoint(endpoint("steady", replicas={"min": 2, "max": 2}))
    before = await eventually(lambda: _ready(handle, 2), 30, "two replicas ready")
    assert sorted(str(r.pool) for r in live(before)) == ["dc-a", "dc-b"], before.replicas

    async with Load(handle.url, concurrency=4) as load:
        await asyncio.sleep(1)
        await client.fail_pool("dc-a")

        async def moved() -> Any:
            status = await handle.status()
            pools = sorted(str(r.pool) for r in live(status) if r.pool)
            return status if status.ready == 2 and pools == ["cloud", "dc-b"] else None

        try:
            after = await eventually(moved, 60, "the replica of dc-a serving in the cloud")
        except AssertionError:
            status = await handle.status()
            raise AssertionError(f"{status.replicas}\n{status.events}\n{status.reason}") from None
        await asyncio.sleep(1)
    # The caller's ordinary retry on 503 is all it took: every request was answered.
    assert load.answers and set(load.answers) == {200} and not load.failures, (set(load.answers), load.failures)
    moved_replica = next(r for r in live(after) if r.pool == "cloud")
    assert moved_replica.id == next(r.id for r in live(before) if r.pool == "dc-a")  # the same replica, moved
    # One more replica waits for on-prem room to bring it home (dc-a is down, dc-b is full).
    assert [r.role.value for r in live(after) if not r.pool] == ["homecoming"]

    # dc-a is back: the waiting replica serves there first, then the cloud replica goes.
    await client.restore_pool("dc-a")

    async def home() -> Any:
        status = await handle.status()
        return status if status.ready == 2 and sorted(str(r.pool) for r in live(status)) == ["dc-a", "dc-b"] else None

    back = await eventually(home, 60, "both replicas on-prem again")
    assert not any(r.location == Location.CLOUD for r in live(back))
    assert any("the burst replica goes home" in e for e in back.events), back.events
    await handle.delete()


async def test_replicas_that_keep_failing_stop_the_endpoint_with_the_reason(fabric: Any, gateway: Gateway) -> None:
    client = fabric.client
    await client.register_pool({"name": "here", "location": "on-prem", "backend": "local", "gpus": {"A100": 2},
                                "local": LOCAL})
    spec = endpoint("broken", command=[sys.executable, "-c", "import sys; sys.exit(3)"],
                    replicas={"min": 1, "max": 1})
    handle = await client.deploy_endpoint(spec)

    async def failed() -> Any:
        status = await handle.status()
        return status if status.state.value == "failed" else None

    status = await eventually(failed, 60, "the endpoint failed")
    ended = [r for r in status.replicas if r.state == "failed"]
    assert len(ended) == 3 and not [r for r in status.replicas if r.live], status.replicas
    assert "3 replicas in a row failed before serving" in status.reason
    assert "exited with code 3" in ended[-1].message
    await asyncio.sleep(2)
    assert len((await handle.status()).replicas) == 3  # no fourth one
    # A fixed spec starts it again.
    fixed = endpoint("broken", command=[sys.executable, str(EXAMPLES / "model_server.py")],
                     replicas={"min": 1, "max": 1}, readiness={"path": "/healthz", "initial_delay_seconds": 0.2})
    await handle.update(fixed)
    await eventually(lambda: _ready(handle, 1), 30, "the fixed endpoint ready")
    await handle.delete()
