"""Regenerate tests/histories/*.json: run real scenarios on a dev server and save each workflow's
history, for tests/replay/test_replay.py to replay against the current workflow code.

    .venv/bin/python tests/replay/record_histories.py [--only-endpoints]

Re-record only for an intentional change to workflow code (and say so in the commit): a history
recorded by the old code that no longer replays is exactly what the replay test exists to catch.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared helpers

from cli.util import free_port
from conftest import binary, search_attribute_keys
from failover.util import FAILOVER_POLICY, eventually, job, running_on, sim_pool, wait_status
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from inferofabric.activities.admission import admission_id
from inferofabric.backends.registry import system_queue
from inferofabric.models import Health, WorkloadState
from inferofabric.models.messages import AdmissionInput, MonitorSettings
from inferofabric.sdk.client import FabricClient
from inferofabric.store.db import get_store
from inferofabric.worker.main import build_worker

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
REPLAY_AUTH_KEY = "replay-histories-signing-key-not-a-secret-0123456789"  # also in test_replay.py
FAST = MonitorSettings(period_seconds=0.5, probe_timeout_seconds=1.0, unhealthy_after=2, healthy_after=2,
                       iterations_per_run=20)


async def save(client: Client, name: str, workflow_id: str, run_id: str | None = None) -> None:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json())
    print(f"{path.relative_to(HISTORIES.parents[1])}: {workflow_id}, {len(history.events)} events")


CLASSES = """
priority_classes:
  - {name: production, value: 1000, preemption: lower_priority}
  - {name: standard, value: 100, default: true}
  - {name: batch, value: 10}
"""


APPROVAL_POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization >= 0.0", target: cloud, approval: {when: "true", timeout: 1h, default: deny}}
  failover: {when: "pool_health != healthy", target: cloud}
"""


async def _asks(fabric: FabricClient, workload_id: str) -> bool:
    entries = (await fabric.queue(workload_id=workload_id)).entries
    return bool(entries) and "waiting for approval" in entries[0].reason


async def _waiting(fabric: FabricClient, workload_id: str) -> bool:
    return bool((await fabric.queue(workload_id=workload_id)).entries)


async def control_ids(client: Client, op: str) -> list[str]:
    query = f"WorkflowType = 'ControlWorkflow' AND WorkflowId STARTS_WITH 'fabric-control-{op}-'"
    return [w.id async for w in client.list_workflows(query)]


async def record(env: WorkflowEnvironment, home: Path, store_url: str) -> None:
    client = env.client
    queue = f"record-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, queue=queue, home=home, store_url=store_url):
        fabric = FabricClient(client, task_queue=queue, store_url=store_url)  # the admin token it wrote
        # The admission loop, with a small history bound so that the recording covers continue-as-new.
        await fabric.temporal.start_workflow("AdmissionWorkflow", AdmissionInput(history_limit=150),
                                             id=admission_id(queue), task_queue=system_queue(queue))
        await fabric.register_pool(sim_pool("onprem", "on-prem", 8, price=1.2), monitor=FAST)
        await fabric.register_pool(sim_pool("cloud", "cloud", 16, price=4.1), monitor=FAST)
        await fabric.set_policy(FAILOVER_POLICY)

        # A workload that runs to success on its first pool.
        ok = await fabric.submit(job("replay-succeeded", duration="2s"))
        assert (await ok.result()).state == WorkloadState.SUCCEEDED

        # Failed over: on-prem fails while it runs; it finishes in the cloud. A pii workload on the
        # same pool waits and comes back on-prem after the recovery.
        moved = await fabric.submit(job("replay-failed-over", duration="20s"))
        pii = await fabric.submit(job("replay-pii-waits", classification="pii", duration="3s"))
        for handle in (moved, pii):
            await wait_status(handle, running_on("onprem"), 30, "running on-prem")
        await fabric.fail_pool("onprem")
        await wait_status(moved, running_on("cloud", 2), 30, "moved to the cloud")
        await wait_status(pii, lambda s: s.state == WorkloadState.QUEUED, 30, "pii queued")
        await asyncio.sleep(5)  # the moved copy's best-effort cancel gives up: an orphan for the monitor
        await fabric.restore_pool("onprem")
        final = await moved.result()
        assert final.state == WorkloadState.SUCCEEDED and final.attempts == 2
        final = await pii.result()
        assert final.state == WorkloadState.SUCCEEDED and final.pool == "onprem" and final.attempts == 2

        # A step that fails for good: a secret nobody stored. The workload ends failed, cleanly.
        broken = await fabric.submit(job("replay-step-failed", duration="2s", env={"PW": {"secret": "missing"}}))
        final = await broken.result()
        assert final.state == WorkloadState.FAILED and "no secret named 'missing'" in final.message

        # Cancelled while running.
        cancelled = await fabric.submit(job("replay-cancelled", duration="600s"))
        await wait_status(cancelled, running_on("onprem"), 30, "running")
        assert (await cancelled.cancel()).state == WorkloadState.CANCELLED

        # Priority classes from here on.
        await fabric.set_policy(FAILOVER_POLICY + CLASSES)

        # Queued (the only pool it may use is cordoned), its class changed while it waits, then placed
        # once the pool is uncordoned.
        await fabric.cordon("onprem")
        queued = await fabric.submit(job("replay-queued-then-placed", classification="pii", duration="2s"))
        await wait_status(queued, lambda s: s.state == WorkloadState.QUEUED and bool(s.message), 30, "queued")
        await eventually(lambda: _waiting(fabric, "replay-queued-then-placed"), 15, "in the queue")
        assert (await queued.set_priority("production")).priority_class == "production"
        await asyncio.sleep(2)
        await fabric.uncordon("onprem")
        assert (await queued.result()).state == WorkloadState.SUCCEEDED

        # Preempted: a batch job holds all of on-prem; a production pii job takes it back; the batch job
        # re-queues in its place and runs again when the GPUs are free.
        victim = await fabric.submit(job("replay-preempted", duration="6s", gpus=8, priority_class="batch"))
        await wait_status(victim, running_on("onprem"), 30, "running")
        preemptor = await fabric.submit(job("replay-preemptor", classification="pii", duration="2s",
                                            priority_class="production"))
        assert (await preemptor.result()).state == WorkloadState.SUCCEEDED
        final = await victim.result()
        assert final.state == WorkloadState.SUCCEEDED and final.history[0].outcome.startswith("preempted")

        # Reclaimed: the pool takes the running job back (a spot reclaim); it runs again, not charged.
        reclaimed = await fabric.submit(job("replay-reclaimed", duration="600s"))
        await wait_status(reclaimed, running_on("onprem"), 30, "running")
        await fabric.reclaim_pool("onprem")
        await wait_status(reclaimed, lambda s: s.state == WorkloadState.RUNNING and s.attempts == 2, 30, "again")
        assert (await reclaimed.cancel()).state == WorkloadState.CANCELLED

        # Drained: moved on purpose (ControlWorkflow signals it).
        drained = await fabric.submit(job("replay-drained", duration="6s"))
        await wait_status(drained, running_on("onprem"), 30, "running")
        await fabric.drain("onprem")
        assert (await drained.result()).attempts == 2
        await fabric.uncordon("onprem")

        # Approval: every burst asks a person. Approved, it runs in the cloud; denied, it stays on-prem.
        await fabric.set_policy(APPROVAL_POLICY + CLASSES)
        approved = await fabric.submit(job("replay-approved", duration="2s"))
        denied = await fabric.submit(job("replay-denied", duration="2s"))
        for name in ("replay-approved", "replay-denied"):
            await eventually(lambda name=name: _asks(fabric, name), 15, f"{name} asks for approval")
        await fabric.approve("replay-approved", note="replay")
        await fabric.deny("replay-denied")
        final = await approved.result()
        assert final.state == WorkloadState.SUCCEEDED and final.pool == "cloud"
        final = await denied.result()
        assert final.state == WorkloadState.SUCCEEDED and final.pool == "onprem"

        async def recovered() -> bool:
            return all(p.health == Health.HEALTHY for p in await fabric.pools())

        await eventually(recovered, 30, "every pool healthy")
        await asyncio.sleep(1)

        for name in ("succeeded", "failed-over", "pii-waits", "cancelled", "queued-then-placed", "drained",
                     "preempted", "preemptor", "reclaimed", "step-failed", "approved", "denied"):
            await save(client, f"workload-{name}", f"replay-{name}")
        loop = [w async for w in client.list_workflows(f"WorkflowId = '{admission_id(queue)}'")]
        for index, run in enumerate(sorted(loop, key=lambda r: r.start_time)[:3], start=1):
            await save(client, f"admission-run{index}", run.id, run.run_id)
        for op, name in (("register_pool", "control-register-pool"), ("drain", "control-drain"),
                         ("simulate", "control-simulate")):
            ids = await eventually(lambda op=op: control_ids(client, op), 15, f"{op} in visibility")
            await save(client, name, ids[-1])
        # The on-prem monitor's runs (it continues as new every 20 probes): healthy -> unhealthy
        # (relocate signals) -> healthy (orphan removal), and a drain, across them.
        await save(client, "watcher-onprem", f"pool-watcher-{queue}-onprem")
        runs = [w async for w in client.list_workflows("WorkflowId = 'pool-monitor-onprem'")]
        for index, run in enumerate(sorted(runs, key=lambda r: r.start_time), start=1):
            await save(client, f"monitor-onprem-run{index}", run.id, run.run_id)


ENDPOINT_POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.85", target: cloud}
  failover: {when: "pool_health != healthy", target: cloud}
"""


async def record_endpoints(env: WorkflowEnvironment, home: Path, store_url: str) -> None:
    """An endpoint's life: deployed, scaled out under load (on-prem, then a burst replica), a scale
    request, a rolling update, load gone (the cloud replica goes first), deleted; with a small
    history bound so that the recording covers continue-as-new. Its replicas are child workloads."""
    import aiohttp

    from inferofabric.gateway.server import start as start_gateway
    from inferofabric.models.endpoint import EndpointSpec
    from inferofabric.models.endpoint_status import EndpointRequest
    from inferofabric.workflows.endpoint import endpoint_id

    client = env.client
    queue = f"record-{uuid.uuid4().hex[:6]}"
    port = free_port()
    os.environ["FABRIC_GATEWAY_URL"] = f"http://127.0.0.1:{port}"
    async with build_worker(client, queue=queue, home=home, store_url=store_url):
        fabric = FabricClient(client, task_queue=queue, store_url=store_url)
        await fabric.register_pool(sim_pool("dc", "on-prem", 2), monitor=FAST)
        await fabric.register_pool(sim_pool("cloud", "cloud", 8), monitor=FAST)
        await fabric.set_policy(ENDPOINT_POLICY)
        gateway = await start_gateway(fabric, port, hold_timeout=30)
        spec = EndpointSpec.model_validate({
            "name": "replay-endpoint", "team": "nlp", "image": "ghcr.io/acme/echo:1",
            "resources": {"gpu": {"type": "A100", "count": 1}}, "replicas": {"min": 1, "max": 3},
            "autoscale": {"metric": "in_flight", "target": 2, "scale_up_delay": "1s", "scale_down_delay": "2s"},
            "annotations": {"sim.inferofabric.io/latency": "200ms"}, "access": "public"})
        await fabric.temporal.start_workflow("EndpointWorkflow", EndpointRequest(spec=spec, history_limit=120),
                                             id=endpoint_id(spec.name), task_queue=queue)
        handle = fabric.endpoint(spec.name)
        stop = asyncio.Event()

        async def caller(session: aiohttp.ClientSession) -> None:
            while not stop.is_set():
                async with session.get(handle.url + "x") as answer:
                    await answer.read()
                    if answer.status != 200:
                        await asyncio.sleep(0.3)

        async def count(n: int) -> bool:
            status = await handle.status()
            serving = [r for r in status.replicas if r.live and r.state != "stopping" and r.role.value == "serving"]
            return status.ready >= n and len(serving) == n

        try:
            await eventually(lambda: count(1), 30, "one replica ready")
            async with aiohttp.ClientSession() as session:
                callers = [asyncio.create_task(caller(session)) for _ in range(6)]
                await eventually(lambda: count(3), 45, "three replicas ready (one in the cloud)")
                await handle.scale(max=4)
                update = spec.model_copy(update={"annotations": {"sim.inferofabric.io/latency": "100ms"}})
                await handle.update(update)

                async def rolled() -> bool:
                    status = await handle.status()
                    live = [r for r in status.replicas if r.live and r.state != "stopping" and r.pool]
                    return status.ready >= 3 and all(r.version == 2 for r in live)

                await eventually(rolled, 60, "version 2 rolled out")
                stop.set()
                await asyncio.gather(*callers)
            await eventually(lambda: count(1), 45, "back to one replica")
            await handle.delete()
        finally:
            await gateway.close()
        runs = sorted([w async for w in client.list_workflows(f"WorkflowId = '{endpoint_id(spec.name)}'")],
                      key=lambda r: r.start_time)
        assert len(runs) >= 2, "the recording should cover a continue-as-new"
        for index, run in enumerate(runs[:2], start=1):
            await save(client, f"endpoint-run{index}", run.id, run.run_id)
        await save(client, "endpoint-last-run", runs[-1].id, runs[-1].run_id)
        replicas = sorted([w async for w in client.list_workflows("WorkflowId STARTS_WITH 'replay-endpoint-'")],
                          key=lambda r: r.start_time)
        await save(client, "workload-endpoint-replica", replicas[0].id)


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fabric-record-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        os.environ["FABRIC_HOME"] = str(home)
        os.environ["FABRIC_AUTH_KEY"] = REPLAY_AUTH_KEY  # the replay test replays the gate with it
        store_url = f"sqlite:///{Path(folder) / 'fabric.db'}"
        get_store(store_url)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"), data_converter=pydantic_data_converter,
            search_attributes=search_attribute_keys(), dev_server_log_level="error",
            dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"])
        try:
            if "--only-endpoints" not in sys.argv:
                await record(env, home, store_url)
            await record_endpoints(env, home, store_url)
        finally:
            await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
