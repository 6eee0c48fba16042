"""The spine's acceptance scenario, end to end on the real Temporal dev server."""

from __future__ import annotations

import asyncio

from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.policies.engine import EXAMPLE_POLICY_YAML

POLICY = EXAMPLE_POLICY_YAML  # the brief's policy, as written


def job(name: str, classification: str = "internal", duration: str = "600s") -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": "vision", "image": "ghcr.io/acme/resnet:1.4",
        "resources": {"gpu": {"type": "A100", "count": 1}}, "data_classification": classification,
        "annotations": {"sim.inferofabric.io/duration": duration},
    })


async def wait_state(handle, states, timeout=30.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.status()
        if status.state in states and (status.pool or status.state == WorkloadState.QUEUED):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{handle.id} stuck in {status.state}: {status.message}")
        await asyncio.sleep(0.2)


async def test_seven_on_prem_then_burst_then_pii_stays_and_waits(fabric) -> None:  # type: ignore[no-untyped-def]
    client = fabric.client
    await client.register_pool({"name": "onprem-a", "location": "on-prem", "backend": "simulated", "region": "dc1",
                                "gpus": {"A100": 8}, "price_per_gpu_hour": {"A100": 1.2}})
    await client.register_pool({"name": "cloud-use1", "location": "cloud", "backend": "simulated",
                                "region": "us-east-1", "gpus": {"A100": 64}, "price_per_gpu_hour": {"A100": 4.1}})
    await client.set_policy(POLICY)

    placed = []
    for i in range(10):
        handle = await client.submit(job(f"train-{i}"))
        placed.append(await wait_state(handle, {WorkloadState.RUNNING}))
    assert [s.pool for s in placed] == ["onprem-a"] * 7 + ["cloud-use1"] * 3
    assert all(s.region == "us-east-1" for s in placed[7:])

    explanation = await client.get("train-7").explain()
    assert explanation.decisions[-1].mode == "burst"
    assert explanation.decisions[-1].inputs["on_prem_utilization"] == 0.875
    six = await client.get("train-6").explain()
    assert six.decisions[-1].inputs["on_prem_utilization"] == 0.75

    pii_1 = await client.submit(job("pii-1", "pii"))
    status = await wait_state(pii_1, {WorkloadState.RUNNING})
    assert status.pool == "onprem-a"
    pii_2 = await client.submit(job("pii-2", "pii"))
    await asyncio.sleep(1.5)
    waiting = await pii_2.status()
    assert waiting.state == WorkloadState.QUEUED and waiting.pool is None
    assert waiting.position == 1
    why = (await pii_2.explain()).queue
    assert why is not None and why.position == 1
    assert "onprem-a has 0 of 8 A100 free" in why.reason
    assert "cloud-use1: denied by constraint #1 (deny location cloud" in why.reason

    # Other tests share this Temporal server: look only at this test's pools.
    burst = [w.id for w in await client.list(pool="cloud-use1") if w.id.startswith("train-")]
    assert sorted(burst) == ["train-7", "train-8", "train-9"]
    assert {w.id for w in await client.list(location="cloud")} >= {"train-7", "train-8", "train-9"}

    cancelled = await pii_2.cancel()
    assert cancelled.state == WorkloadState.CANCELLED
