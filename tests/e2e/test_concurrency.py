"""Many workloads at once through the SDK, on the real Temporal dev server and the real worker.

200 short simulated jobs are submitted together against 40 GPUs (on-prem 8, two cloud pools of
16). Every workload must succeed; the store's reservation rows must show that no pool ever held
more GPUs than it has (a sweep over the reservation intervals), and each simulated pool's launch
ledger must show every workload launched exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from datetime import UTC, datetime

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.service import RPCError

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.policies.engine import EXAMPLE_POLICY_YAML
from inferofabric.store.tables import ReservationRow

WORKLOADS = 200
POLICY = EXAMPLE_POLICY_YAML  # the brief's policy, as written
POOLS = [
    {
        "name": "onprem-a",
        "location": "on-prem",
        "backend": "simulated",
        "region": "dc1",
        "gpus": {"A100": 8},
        "price_per_gpu_hour": {"A100": 1.2},
    },
    {
        "name": "cloud-use1",
        "location": "cloud",
        "backend": "simulated",
        "region": "us-east-1",
        "gpus": {"A100": 16},
        "price_per_gpu_hour": {"A100": 4.1},
    },
    {
        "name": "cloud-euw1",
        "location": "cloud",
        "backend": "simulated",
        "region": "eu-west-1",
        "gpus": {"A100": 16},
        "price_per_gpu_hour": {"A100": 3.9},
    },
]
CAPACITY = {p["name"]: sum(p["gpus"].values()) for p in POOLS}  # type: ignore[attr-defined]


def workloads(count: int) -> list[WorkloadSpec]:
    rng = random.Random(20240601)
    specs = []
    for i in range(count):
        specs.append(
            WorkloadSpec.model_validate(
                {
                    "name": f"conc-{i:03d}",
                    "team": rng.choice(["vision", "nlp", "ads"]),
                    "image": "ghcr.io/acme/x:1",
                    "resources": {
                        "gpu": {"type": "A100", "count": rng.choices([1, 2, 4], weights=[70, 20, 10])[0]}
                    },
                    "data_classification": "pii" if i % 10 == 0 else "internal",
                    "annotations": {"sim.inferofabric.io/duration": f"{rng.choice([1, 2, 3])}s"},
                }
            )
        )
    return specs


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def peak_usage(rows: list[ReservationRow]) -> dict[str, int]:
    """Per pool, the most GPUs held at any instant (releases before reservations at equal times)."""
    events: dict[str, list[tuple[datetime, int, int]]] = {}
    for row in rows:
        events.setdefault(row.pool, []).append((aware(row.created_at), 1, row.gpus))
        assert row.released_at is not None, f"{row.workload_id} attempt {row.attempt} was never released"
        assert aware(row.released_at) >= aware(row.created_at)
        events[row.pool].append((aware(row.released_at), 0, -row.gpus))
    peaks = {}
    for pool, pool_events in events.items():
        held = peak = 0
        for _, _, delta in sorted(pool_events):
            held += delta
            peak = max(peak, held)
        peaks[pool] = peak
    return peaks


async def forget(fabric, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Delete the workflows again: the Temporal server is shared by the session, and other tests list
    workloads by location (visibility is not scoped to a fabric's task queue)."""
    service = fabric.temporal.workflow_service
    namespace = fabric.temporal.namespace

    async def delete(workflow_id: str) -> None:
        with contextlib.suppress(RPCError):
            await service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
                )
            )

    await asyncio.gather(*(delete(i) for i in ids))


async def test_two_hundred_concurrent_workloads_never_overcommit(fabric) -> None:  # type: ignore[no-untyped-def]
    specs = workloads(WORKLOADS)
    try:
        await run_and_check(fabric, specs)
    finally:
        await forget(fabric, [s.name for s in specs])  # type: ignore[misc]


async def run_and_check(fabric, specs: list[WorkloadSpec]) -> None:  # type: ignore[no-untyped-def]
    client = fabric.client
    for pool in POOLS:
        await client.register_pool(pool)
    await client.set_policy(POLICY)

    started = time.monotonic()
    handles = await asyncio.gather(*(client.submit(spec) for spec in specs))
    submitted = time.monotonic() - started
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=150)
    elapsed = time.monotonic() - started
    print(f"\n{WORKLOADS} workloads: submitted in {submitted:.1f}s, all ended after {elapsed:.1f}s")

    states = Counter(r.state for r in results)
    assert states == {WorkloadState.SUCCEEDED: WORKLOADS}, states
    by_id = {r.id: r for r in results}
    for spec in specs:
        status = by_id[spec.name]  # type: ignore[index]
        assert status.attempts == 1 and status.gpus == spec.gpu_count
        if spec.data_classification.value == "pii":
            assert status.pool == "onprem-a", status
        else:
            assert status.pool in CAPACITY and status.region in ("dc1", "us-east-1", "eu-west-1")

    # The store: one reservation per workload, all released, never above a pool's capacity.
    rows = fabric.store.all_reservations()
    assert len(rows) == WORKLOADS
    assert {r.workload_id for r in rows} == {s.name for s in specs}
    assert not [r for r in rows if r.active]
    peaks = peak_usage(rows)
    print(f"peak GPUs held per pool: {peaks} (capacity {CAPACITY})")
    for pool, peak in peaks.items():
        assert peak <= CAPACITY[pool], f"{pool} held {peak} GPUs, has {CAPACITY[pool]}"
    assert set(peaks) == set(CAPACITY)  # the burst happened: every pool was used

    # The simulated back ends: each workload launched exactly once, where it was reserved.
    launches: Counter[str] = Counter()
    for pool in POOLS:
        ledger = SimulatedBackend(fabric.store.pool_spec(pool["name"]), fabric.home).ledger()  # type: ignore[arg-type]
        for entry in ledger:
            launches[entry["workload_id"]] += 1
            assert by_id[entry["workload_id"]].pool == pool["name"]
    assert launches == Counter({s.name: 1 for s in specs})  # type: ignore[misc]
