"""Durability: the worker (kill -9) and the Temporal server (killed, then started again on the same
port with its SQLite file) go away while simulated jobs run. Every workload finishes, none is lost,
none is launched twice: the workflows re-attach to the jobs already running."""

from __future__ import annotations

import asyncio
import time

from failover.util import FAILOVER_POLICY, job, sim_pool
from temporalio.api.enums.v1 import EventType

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import PoolSpec, WorkloadState
from inferofabric.models.status import WorkloadStatus

from .harness import completed, final_status, retrying

JOBS = 8
DURATION = 25.0


async def all_running(stack, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while True:
        states = [await retrying(lambda i=i: stack.fabric.get(i).status()) for i in ids]
        if all(s.state == WorkloadState.RUNNING for s in states):
            return
        assert time.monotonic() < deadline, [(s.id, s.state, s.message) for s in states]
        await asyncio.sleep(0.3)


async def test_worker_and_server_restarts_lose_nothing_and_launch_nothing_twice(stack) -> None:  # type: ignore[no-untyped-def]
    onprem = sim_pool("dur-onprem", "on-prem", 8)
    cloud = sim_pool("dur-cloud", "cloud", 16)
    await stack.fabric.register_pool(onprem)
    await stack.fabric.register_pool(cloud)
    await stack.fabric.set_policy(FAILOVER_POLICY)
    ids = [f"dur-{i}" for i in range(JOBS)]
    for i, name in enumerate(ids):
        spec = job(name, duration=f"{DURATION}s", classification="pii" if i % 3 == 0 else "internal")
        await stack.fabric.submit(spec)
    await all_running(stack, ids)
    launched_at = time.time()

    # The worker dies hard mid-run and a new one takes over the same task queue.
    await stack.worker.restart(kill=True, down_for=1.0)
    await asyncio.sleep(1.0)
    # The Temporal server dies hard and comes back on the same port with its SQLite file.
    await stack.server.restart(kill=True, down_for=2.0)
    await asyncio.sleep(2.0)
    # Both at once: the server stops cleanly, the worker is killed while it is down.
    stack.server.stop(kill=False)
    stack.worker.stop(kill=True)
    await asyncio.sleep(1.0)
    stack.server.start()
    await stack.server.wait_ready()
    await stack.worker.begin()

    finals: list[WorkloadStatus] = []
    for name in ids:
        finals.append(await final_status(stack.fabric.temporal, name))
    elapsed = time.time() - launched_at

    assert [f.state for f in finals] == [WorkloadState.SUCCEEDED] * JOBS, [(f.id, f.message) for f in finals]
    assert all(f.attempts == 1 and f.pool == "dur-onprem" for f in finals)
    pool = SimulatedBackend(PoolSpec.model_validate(onprem), stack.home)
    ledger = pool.ledger()
    assert sorted(e["job_id"] for e in ledger) == sorted(f"{n}-a1" for n in ids)  # each launched once
    records = {r["job_id"]: r for r in pool.job_records()}
    for name in ids:
        record = records[f"{name}-a1"]
        assert completed(record) and not record.get("cancelled"), record
        assert record["started_at"] < launched_at  # the same job, re-attached to, not a relaunch
    assert SimulatedBackend(PoolSpec.model_validate(cloud), stack.home).ledger() == []
    # The pool's watcher died with the first worker and was retried (from its heartbeat): the retry
    # followed the same jobs (re-attached) and told each workload its job ended.
    watcher = await stack.fabric.temporal.get_workflow_handle(f"pool-watcher-{stack.queue}-dur-onprem").describe()
    pending = [(a.activity_type.name, a.attempt) for a in watcher.raw_description.pending_activities]
    assert pending and pending[0][0] == "watch_pool" and pending[0][1] > 1, pending
    for name in ids:
        history = await stack.fabric.temporal.get_workflow_handle(name).fetch_history()
        told = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        assert "job_state" in told, name
    assert stack.store.active_reservations() == []
    print(f"durability: {JOBS} workloads of {DURATION:.0f}s through 2 worker kills and 2 server restarts, "
          f"all done {elapsed:.0f}s after launch")
