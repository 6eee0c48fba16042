"""The issue's failover scenario, end to end through the SDK on the real Temporal dev server.

On-prem (8 A100) + cloud pools, both simulated; four one-GPU jobs and one pii job run on-prem; the
on-prem pool fails. The pool monitor (default settings: probe every 1 s, unhealthy after 2 failed
probes) must move the four to the cloud within the failover target, keep the pii job out of the
cloud (it waits), and on recovery bring the pii job back on-prem and remove the orphan copies.
"""

from __future__ import annotations

import time

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import Health, PoolSpec, WorkloadState

from .util import FAILOVER_POLICY, eventually, job, running_on, sim_pool, suffix, wait_status

FAILOVER_TARGET_P99 = 10.0  # seconds from the outage to every movable workload running elsewhere


def backend(fabric, spec: dict) -> SimulatedBackend:  # type: ignore[no-untyped-def]
    return SimulatedBackend(PoolSpec.model_validate(spec), fabric.home)


async def test_onprem_outage_moves_work_to_cloud_and_pii_waits_for_recovery(fabric) -> None:  # type: ignore[no-untyped-def]
    client = fabric.client
    tag = suffix()
    onprem_spec = sim_pool(f"onprem-{tag}", "on-prem", 8, price=1.2)
    cloud_spec = sim_pool(f"cloud-{tag}", "cloud", 64, price=4.1)
    onprem, cloud = onprem_spec["name"], cloud_spec["name"]
    await client.register_pool(onprem_spec)  # default MonitorSettings: the figures the targets are for
    await client.register_pool(cloud_spec)
    await client.set_policy(FAILOVER_POLICY)

    train = [await client.submit(job(f"train-{tag}-{i}")) for i in range(4)]
    pii = await client.submit(job(f"pii-{tag}", classification="pii"))
    for handle in [*train, pii]:
        await wait_status(handle, running_on(onprem, attempts=1), 30, "running on-prem")

    started = time.monotonic()
    await client.fail_pool(onprem)
    moved = [await wait_status(h, running_on(cloud, attempts=2), 30, "running in the cloud") for h in train]
    elapsed = time.monotonic() - started
    print(f"failover: 4 workloads running in the cloud {elapsed:.1f}s after the outage")
    assert elapsed <= FAILOVER_TARGET_P99, f"failover took {elapsed:.1f}s (target {FAILOVER_TARGET_P99}s)"
    assert all(s.location == "cloud" and s.history[0].outcome.startswith("moved") for s in moved)

    # The pii job was moved off the dead pool too, but never into the cloud: it waits.
    waiting = await wait_status(pii, lambda s: s.state == WorkloadState.QUEUED, 15, "pii job queued")
    assert waiting.pool != cloud
    why = (await pii.explain()).queue
    assert why is not None and why.position >= 1
    assert f"{cloud}: denied by no-pii-in-cloud" in why.reason, why.reason
    assert f"{onprem}: pool is unhealthy" in why.reason or "failed during attempt 1" in why.reason, why.reason

    pools = {p.name: p for p in await client.pools()}
    assert pools[onprem].health == Health.UNHEALTHY
    assert pools[onprem].recent_health[0].to_health == Health.UNHEALTHY
    assert pools[onprem].recent_health[0].at is not None

    # Recovery: healthy again after 2 good probes; the pii job goes back on-prem (attempt 2).
    await client.restore_pool(onprem)

    async def healthy() -> bool:
        return any(p.name == onprem and p.health == Health.HEALTHY for p in await client.pools())

    await eventually(healthy, 15, "on-prem healthy again")
    back = await wait_status(pii, running_on(onprem, attempts=2), 20, "pii back on-prem")
    assert back.location == "on-prem"

    # The story, as explain() tells it.
    story = await client.get(train[0].id).explain()
    assert [d.mode for d in story.decisions] == ["default", "failover"]
    failover = story.decisions[-1]
    assert failover.pool == cloud and failover.inputs["pool_health"] == "unhealthy"
    assert failover.inputs["failover_condition"] == "true"
    rejected = {r.pool: r.reason for r in failover.rejected}
    assert onprem in rejected, rejected
    assert any("moved" in e and "became unhealthy" in e for e in story.events), story.events
    # The copy left on the dead pool is the monitor's to stop (one batched call for every copy
    # there, then the reconciler on recovery), not the workload's: its history says so.
    assert any(f"the copy left on {onprem} is stopped by its pool monitor" in e for e in story.events), story.events
    assert not any("could not cancel" in e for e in story.events), story.events
    pii_story = await pii.explain()
    assert [d.mode for d in pii_story.decisions if d.pool] == ["default", "fallback"]
    assert all(d.pool != cloud for d in pii_story.decisions)

    # No workload runs as two live copies: the monitor removed the orphans left on-prem.
    onprem_backend, cloud_backend = backend(fabric, onprem_spec), backend(fabric, cloud_spec)

    async def orphans_removed() -> bool:
        return sorted(onprem_backend.list_jobs()) == [f"pii-{tag}-a2"]

    await eventually(orphans_removed, 20, "orphan copies removed from on-prem")
    assert sorted(cloud_backend.list_jobs()) == sorted(f"{h.id}-a2" for h in train)
    launched = [e["job_id"] for e in onprem_backend.ledger() + cloud_backend.ledger()]
    assert len(launched) == len(set(launched)) == 10  # 5 first attempts + 5 second attempts, each once
    assert not any(e["workload_id"] == pii.id for e in cloud_backend.ledger())
    # Each workload holds exactly one active reservation, on the pool it runs on.
    active = {(r.workload_id, r.pool) for r in fabric.store.active_reservations()}
    assert active == {(h.id, cloud) for h in train} | {(pii.id, onprem)}

    for handle in [*train, pii]:
        assert (await handle.cancel()).state == WorkloadState.CANCELLED
