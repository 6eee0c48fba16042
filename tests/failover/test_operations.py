"""Drain, fail-back, cordon and a silent agent, end to end through the SDK on the dev server."""

from __future__ import annotations

import time

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import Health, PoolSpec, WorkloadState
from inferofabric.models.messages import MonitorSettings

from .util import BURST_AND_FAILOVER_POLICY, FAILOVER_POLICY, eventually, job, running_on, sim_pool, suffix, wait_status

FAST = MonitorSettings(period_seconds=0.5, probe_timeout_seconds=2.0, unhealthy_after=2, healthy_after=2)


async def setup(fabric, onprem_gpus: int = 8, cloud_gpus: int = 64, policy: str = FAILOVER_POLICY,  # type: ignore[no-untyped-def]
                monitor: MonitorSettings | None = FAST) -> tuple[str, str, str]:
    tag = suffix()
    onprem = sim_pool(f"onprem-{tag}", "on-prem", onprem_gpus, price=1.2)
    cloud = sim_pool(f"cloud-{tag}", "cloud", cloud_gpus, price=4.1)
    await fabric.client.register_pool(onprem, monitor=monitor)
    await fabric.client.register_pool(cloud, monitor=monitor)
    await fabric.client.set_policy(policy)
    return tag, onprem["name"], cloud["name"]


def live_jobs(fabric, pool: str) -> list[str]:  # type: ignore[no-untyped-def]
    spec = PoolSpec(name=pool, location="on-prem", backend="simulated")
    return SimulatedBackend(spec, fabric.home).list_jobs()


async def pool_health(fabric, pool: str) -> Health:  # type: ignore[no-untyped-def]
    return next(p.health for p in await fabric.client.pools() if p.name == pool)


async def test_drain_moves_running_work_off_the_pool(fabric) -> None:  # type: ignore[no-untyped-def]
    tag, onprem, cloud = await setup(fabric)
    client = fabric.client
    jobs = [await client.submit(job(f"drain-{tag}-{i}")) for i in range(3)]
    pii = await client.submit(job(f"drain-pii-{tag}", classification="pii"))
    for handle in [*jobs, pii]:
        await wait_status(handle, running_on(onprem, 1), 30, "running on-prem")

    moved = await client.drain(onprem)
    assert sorted(moved) == sorted(h.id for h in [*jobs, pii])
    for handle in jobs:
        status = await wait_status(handle, running_on(cloud, 2), 20, "running in the cloud")
        assert status.history[0].outcome.startswith("moved: pool " + onprem)
    story = await jobs[0].explain()
    assert story.decisions[-1].mode == "failover" and story.decisions[-1].inputs["pool_health"] == "cordoned"
    # The pii job may not go to the cloud: it waits for the pool to be uncordoned.
    await wait_status(pii, lambda s: s.state == WorkloadState.QUEUED, 15, "pii queued")
    assert await pool_health(fabric, onprem) == Health.CORDONED
    # The pool answers, so the moved copies were stopped right away (no orphans).
    await eventually(lambda: _async(not live_jobs(fabric, onprem)), 15, "drained pool empty")

    await client.uncordon(onprem)
    await wait_status(pii, running_on(onprem, 2), 20, "pii back on-prem after uncordon")
    for handle in [*jobs, pii]:
        await handle.cancel()


async def test_queued_workload_fails_back_to_onprem_as_soon_as_it_is_healthy(fabric) -> None:  # type: ignore[no-untyped-def]
    # The cloud has room for one: the second moved workload has nowhere to go and waits.
    tag, onprem, cloud = await setup(fabric, onprem_gpus=4, cloud_gpus=1)
    client = fabric.client
    a = await client.submit(job(f"fb-{tag}-a"))
    b = await client.submit(job(f"fb-{tag}-b"))
    for handle in (a, b):
        await wait_status(handle, running_on(onprem, 1), 30, "running on-prem")

    await client.fail_pool(onprem)

    async def one_in_cloud_one_queued() -> list:  # type: ignore[type-arg]
        statuses = [await a.status(), await b.status()]
        states = sorted((s.state.value, s.pool or "") for s in statuses)
        return statuses if states == [("queued", ""), ("running", cloud)] else []

    statuses = await eventually(one_in_cloud_one_queued, 20, "one moved to the cloud, one queued")
    queued = a if statuses[0].state == WorkloadState.QUEUED else b
    why = (await queued.explain()).queue
    assert why is not None, "a queued workload's explanation says why it waits"
    assert "has 0 of" in why.reason, why.reason

    await client.restore_pool(onprem)
    healthy_at = await eventually(
        lambda: _healthy_at(fabric, onprem), 15, "on-prem healthy", interval=0.1)
    back = await wait_status(queued, running_on(onprem, 2), 15, "back on-prem")
    delay = time.monotonic() - healthy_at
    print(f"fail-back: queued workload running on-prem {delay:.1f}s after the pool turned healthy")
    assert delay <= 8.0  # the pool's health transition wakes the admission loop
    assert back.history[0].pool == onprem and back.history[0].outcome.startswith("moved")
    assert [d.mode for d in (await queued.explain()).decisions if d.pool] == ["default", "fallback"]
    for handle in (a, b):
        await handle.cancel()


async def test_cordon_keeps_new_work_off_and_pools_show_transitions(fabric) -> None:  # type: ignore[no-untyped-def]
    tag, onprem, cloud = await setup(fabric, policy=BURST_AND_FAILOVER_POLICY)
    client = fabric.client
    await client.cordon(onprem)
    first = await client.submit(job(f"cordon-{tag}-1"))
    status = await wait_status(first, running_on(cloud, 1), 20, "placed in the cloud")
    why = (await first.explain()).decisions[-1]
    assert {r.pool: r.reason for r in why.rejected}[onprem] == "pool is cordoned"
    pii = await client.submit(job(f"cordon-pii-{tag}", classification="pii"))
    await wait_status(pii, lambda s: s.state == WorkloadState.QUEUED and bool(s.message), 15, "pii waits")

    await client.uncordon(onprem)
    await wait_status(pii, running_on(onprem, 1), 20, "pii placed on-prem once uncordoned")
    second = await client.submit(job(f"cordon-{tag}-2"))
    status = await wait_status(second, running_on(onprem, 1), 20, "new work on-prem again")
    assert status.location == "on-prem"

    # A failure and a recovery, then the pool's recent transitions, newest first, with reasons.
    await client.fail_pool(onprem)
    await eventually(lambda: _is(fabric, onprem, Health.UNHEALTHY), 15, "unhealthy")
    await client.restore_pool(onprem)
    await eventually(lambda: _is(fabric, onprem, Health.HEALTHY), 15, "healthy again")
    pool = next(p for p in await client.pools() if p.name == onprem)
    events = [(e.from_health, e.to_health) for e in pool.recent_health]
    assert events[:4] == [(Health.UNHEALTHY, Health.HEALTHY), (Health.HEALTHY, Health.UNHEALTHY),
                          (Health.CORDONED, Health.HEALTHY), (Health.HEALTHY, Health.CORDONED)]
    reasons = [e.reason for e in pool.recent_health]
    assert "not answering" in reasons[1]
    assert reasons[2:4] == ["uncordoned", "cordoned by operator"]
    times = [e.at for e in pool.recent_health]
    assert times == sorted(times, reverse=True) and pool.health_since is not None
    for handle in (first, pii, second):
        await handle.cancel()


async def test_cordoned_pool_that_dies_still_moves_its_work(fabric) -> None:  # type: ignore[no-untyped-def]
    """Cordon keeps running work in place; if the pool then fails, that work must still move."""
    tag, onprem, cloud = await setup(fabric)
    client = fabric.client
    handle = await client.submit(job(f"cordon-dies-{tag}"))
    await wait_status(handle, running_on(onprem, 1), 30, "running on-prem")
    await client.cordon(onprem)
    await client.fail_pool(onprem)
    await wait_status(handle, running_on(cloud, 2), 20, "moved to the cloud")
    await client.restore_pool(onprem)
    # The orphan left on the cordoned pool goes once the monitor sees it answer again.
    await eventually(lambda: _async(not live_jobs(fabric, onprem)), 20, "orphan removed from cordoned pool")
    await handle.cancel()


async def test_silent_agent_makes_a_kubernetes_pool_unhealthy_and_work_moves(fabric) -> None:  # type: ignore[no-untyped-def]
    """No agent polls `pool.<name>`: every probe times out, the pool turns unhealthy, work moves."""
    tag = suffix()
    client = fabric.client
    k8s = f"k8s-{tag}"
    cloud = f"cloud-{tag}"
    await client.register_pool({"name": k8s, "location": "on-prem", "backend": "kubernetes", "region": "dc2",
                                "gpus": {"A100": 8}, "price_per_gpu_hour": {"A100": 1.0}, "kubernetes": {}},
                               monitor=FAST)
    await client.register_pool(sim_pool(cloud, "cloud", 8, price=4.0), monitor=FAST)
    await client.set_policy(FAILOVER_POLICY)
    # Placed before the monitor has judged the pool: its launch waits on a queue nobody polls.
    handle = await client.submit(job(f"silent-{tag}"))
    started = time.monotonic()
    await eventually(lambda: _is(fabric, k8s, Health.UNHEALTHY), 20, "silent pool unhealthy")
    detected = time.monotonic() - started
    pool = next(p for p in await client.pools() if p.name == k8s)
    assert pool.health_reason == "no answer from the pool's agent"
    status = await wait_status(handle, running_on(cloud, 2), 20, "moved to the cloud")
    assert status.history[0].pool == k8s and "became unhealthy" in status.history[0].outcome
    print(f"silent agent: unhealthy {detected:.1f}s after registration")
    await handle.cancel()


async def _async(value):  # type: ignore[no-untyped-def]
    return value


async def _is(fabric, pool: str, health: Health) -> bool:  # type: ignore[no-untyped-def]
    return await pool_health(fabric, pool) == health


async def _healthy_at(fabric, pool: str) -> float | None:  # type: ignore[no-untyped-def]
    return time.monotonic() if await pool_health(fabric, pool) == Health.HEALTHY else None
