"""The front door, attacked as an outsider would: the plain temporalio SDK (and the `temporal` CLI)
against the door's address. Every attack is refused or contained and changes nothing (judged from
Temporal itself, the store and the pool's own job records); the mutating ones are in the audit log."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import Header, Payload, Payloads, WorkflowType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    PollActivityTaskQueueRequest,
    PollWorkflowTaskQueueRequest,
    StartWorkflowExecutionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import WorkloadSpec
from inferofabric.models.messages import ControlRequest, WorkloadRequest
from inferofabric.sdk.errors import PermissionDenied

from .conftest import Doorway


def spec(name: str, team: str, seconds: int = 600) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"name": name, "team": team, "image": "img",
                                        "resources": {"gpu": {"type": "A100", "count": 1}},
                                        "annotations": {"sim.inferofabric.io/duration": f"{seconds}s"}})


def json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def jobs_on(doorway: Doorway, pool: str) -> list[dict[str, Any]]:
    return SimulatedBackend(doorway.store.pool_spec(pool), doorway.home).job_records()


async def refused(call: Any, *codes: RPCStatusCode) -> Exception:
    """`call` fails with one of `codes` (a lazy client's first call fails in its connect's handshake)."""
    with pytest.raises((RPCError, RuntimeError)) as raised:
        await call
    error = raised.value
    wanted = codes or (RPCStatusCode.PERMISSION_DENIED,)
    if isinstance(error, RuntimeError):
        assert any(code.name.replace("_", "").lower() in str(error).replace(" ", "").lower() for code in wanted), error
    else:
        assert error.status in wanted, error
    return error


async def test_no_key_and_a_garbage_key_are_refused_for_writes_and_reads(doorway: Doorway, admin: Any) -> None:
    for key in (None, "garbage", doorway.token("admin").replace("~", "~x")):
        client = await doorway.client(key)
        await refused(client.start_workflow("WorkloadWorkflow", WorkloadRequest(spec=spec("nokey", "ads")),
                                            id=f"nokey-{uuid.uuid4().hex[:6]}", task_queue=doorway.queue),
                      RPCStatusCode.UNAUTHENTICATED)
        await refused(client.count_workflows(), RPCStatusCode.UNAUTHENTICATED)
        await refused(client.get_workflow_handle("anything").describe(), RPCStatusCode.UNAUTHENTICATED)
    assert (await doorway.engine.count_workflows(f"TaskQueue = '{doorway.queue}' AND WorkflowId STARTS_WITH 'nokey'"
                                                 )).count == 0


async def test_a_member_submits_through_the_door_and_history_holds_no_credential(doorway: Doorway,
                                                                                 admin: Any) -> None:
    token = doorway.token("member", "ads", subject="alice")
    alice = await doorway.fabric(token)
    handle = await alice.submit(spec("ads-through-door", "ads"))
    status = await handle.status()
    assert status.team == "ads"
    history = await doorway.engine.get_workflow_handle("ads-through-door").fetch_history()
    start = history.events[0].workflow_execution_started_event_attributes
    stamped = json.loads(start.header.fields["fabric-identity"].data)
    assert (stamped["sub"], stamped["role"], stamped["team"], stamped["door"]) == ("alice", "member", "ads", True)
    secret = token.split("~", 1)[1]
    assert secret not in history.to_json() and token.split("~")[0] not in history.to_json()
    [entry] = [e for e in await doorway.audit("submit") if e["target"] == "ads-through-door"]
    assert (entry["identity"], entry["result"]) == ("alice", "ok")


async def test_nobody_polls_the_fabric_queues_through_the_door(doorway: Doorway, admin: Any) -> None:
    for key in (doorway.token("admin"), doorway.token("member", "ads"), doorway.token("agent", pool="dc1")):
        client = await doorway.client(key)
        for queue in (doorway.queue, f"{doorway.queue}.system", f"{doorway.queue}.monitor"):
            await refused(client.workflow_service.poll_workflow_task_queue(PollWorkflowTaskQueueRequest(
                namespace=doorway.namespace, task_queue=TaskQueue(name=queue), identity="attacker")))
            await refused(client.workflow_service.poll_activity_task_queue(PollActivityTaskQueueRequest(
                namespace=doorway.namespace, task_queue=TaskQueue(name=queue), identity="attacker")))


async def test_an_agent_token_serves_its_own_pool_only(doorway: Doorway, admin: Any) -> None:
    agent = await doorway.client(doorway.token("agent", pool="dc1"))
    await refused(agent.workflow_service.poll_activity_task_queue(PollActivityTaskQueueRequest(
        namespace=doorway.namespace, task_queue=TaskQueue(name="pool.other"), identity="agent")))
    await refused(agent.start_workflow("WorkloadWorkflow", WorkloadRequest(spec=spec("agent-job", "ads")),
                                       id="agent-job", task_queue=doorway.queue))
    await refused(agent.get_workflow_handle("ads-through-door").signal("relocate", {}))


async def test_internal_types_other_queues_cron_and_eager_starts_are_refused(doorway: Doorway, admin: Any) -> None:
    client = await doorway.client(doorway.token("admin"))
    request = WorkloadRequest(spec=spec("sneaky-cron", "ads"))
    await refused(client.start_workflow("AdmissionWorkflow", {}, id="fake-admission", task_queue=doorway.queue))
    await refused(client.start_workflow("AttackerWorkflow", {}, id="attacker-wf", task_queue="attacker-queue"))
    await refused(client.start_workflow("WorkloadWorkflow", request, id="other-queue", task_queue="attacker-queue"))
    await refused(client.start_workflow("WorkloadWorkflow", request, id="sneaky-cron", task_queue=doorway.queue,
                                        cron_schedule="* * * * *"))
    await refused(client.start_workflow("WorkloadWorkflow", request, id=f"{doorway.queue}-sys",
                                        task_queue=f"{doorway.queue}.system"))
    for workflow_id in ("fake-admission", "attacker-wf", "other-queue", "sneaky-cron"):
        with pytest.raises(RPCError):
            await doorway.engine.get_workflow_handle(workflow_id).describe()


async def test_a_stamped_header_copied_from_history_grants_nothing(doorway: Doorway, admin: Any) -> None:
    await admin.pools()  # an admin's control call: its history holds the admin's stamped identity
    [control] = [w async for w in doorway.engine.list_workflows(
        f"WorkflowType = 'ControlWorkflow' AND TaskQueue = '{doorway.queue}'", limit=1)]
    history = await doorway.engine.get_workflow_handle(control.id, run_id=control.run_id).fetch_history()
    copied = history.events[0].workflow_execution_started_event_attributes.header.fields["fabric-identity"]
    assert json.loads(copied.data)["role"] == "admin"
    member = await doorway.client(doorway.token("member", "ads", subject="mallory"))
    policy_id = f"fabric-control-set_policy-{uuid.uuid4().hex[:8]}"
    request = StartWorkflowExecutionRequest(
        namespace=doorway.namespace, workflow_id=policy_id, workflow_type=WorkflowType(name="ControlWorkflow"),
        task_queue=TaskQueue(name=doorway.queue), request_id=uuid.uuid4().hex,
        input=Payloads(payloads=[json_payload(ControlRequest(op="set_policy", args={
            "policy": {"placement": {"default": "cloud"}}}).model_dump(mode="json"))]),
        header=Header(fields={"fabric-identity": copied}))
    await refused(member.workflow_service.start_workflow_execution(request))
    assert (await admin.policy())["default"]  # still the default policy
    [entry] = [e for e in await doorway.audit("set_policy") if e["identity"] == "mallory"]
    assert entry["result"] == "refused" and "may not set_policy" in entry["detail"]


async def test_a_payload_nested_too_deep_ends_at_the_door(doorway: Doorway, admin: Any) -> None:
    client = await doorway.client(doorway.token("admin"))
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    request = StartWorkflowExecutionRequest(
        namespace=doorway.namespace, workflow_id="deep-payload", workflow_type=WorkflowType(name="WorkloadWorkflow"),
        task_queue=TaskQueue(name=doorway.queue), request_id=uuid.uuid4().hex,
        input=Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"},
                                         data=b"[" * 100_000 + b"]" * 100_000)]))
    error = await refused(client.workflow_service.start_workflow_execution(request), RPCStatusCode.INVALID_ARGUMENT)
    assert "nested" in str(error)
    with pytest.raises(RPCError):
        await doorway.engine.get_workflow_handle("deep-payload").describe()


async def test_members_act_on_their_own_team_only_and_the_door_audits_it(doorway: Doorway, admin: Any) -> None:
    bob = await doorway.fabric(doorway.token("member", "vision", subject="bob"))
    with pytest.raises(PermissionDenied, match="may not submit work for team 'ads'"):
        await (await bob.submit(spec("bob-for-ads", "ads"))).status()
    with pytest.raises((PermissionDenied, RPCError)):
        await bob.get("ads-through-door").cancel()
    bob_client: Client = bob.temporal
    await refused(bob_client.get_workflow_handle("ads-through-door").fetch_history())
    refusals = [e for e in await doorway.audit("cancel") if e["identity"] == "bob"]
    assert refusals and refusals[0]["result"] == "refused"
    assert len(jobs_on(doorway, "dc1")) >= 1  # alice's job still runs: nothing of hers changed


async def test_schedules_carry_their_creators_identity_and_only_the_team_changes_them(doorway: Doorway,
                                                                                      admin: Any) -> None:
    alice = await doorway.fabric(doorway.token("member", "ads", subject="alice"))
    bob = await doorway.fabric(doorway.token("member", "vision", subject="bob"))
    with pytest.raises(PermissionDenied, match="may not submit work for team 'ads'"):
        await bob.schedule("bob-nightly-for-ads", spec("bob-nightly-for-ads", "ads"), "0 3 * * *")
    await alice.schedule("ads-nightly", spec("ads-nightly", "ads", seconds=1), "0 3 * * *")
    described = await doorway.engine.get_schedule_handle("ads-nightly").describe()
    header = described.schedule.action.headers["fabric-identity"]  # type: ignore[union-attr]
    assert json.loads(header.data)["sub"] == "alice"
    with pytest.raises(RPCError):
        await bob.temporal.get_schedule_handle("ads-nightly").delete()
    with pytest.raises(RPCError):
        await bob.temporal.get_schedule_handle("ads-nightly").trigger()
    await alice.temporal.get_schedule_handle("ads-nightly").trigger()  # a run now, as alice
    runs = [w async for w in doorway.engine.list_workflows("WorkflowId STARTS_WITH 'ads-nightly'")]
    for _ in range(50):
        if runs:
            break
        await asyncio.sleep(0.2)
        runs = [w async for w in doorway.engine.list_workflows("WorkflowId STARTS_WITH 'ads-nightly'")]
    history = await doorway.engine.get_workflow_handle(runs[0].id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert json.loads(started.header.fields["fabric-identity"].data)["sub"] == "alice"
    await alice.unschedule("ads-nightly")
    refusals = [e for e in await doorway.audit("schedule delete") if e["identity"] == "bob"]
    assert refusals and refusals[0]["result"] == "refused"


async def test_a_start_may_not_terminate_or_squat_another_workflow(doorway: Doorway, admin: Any) -> None:
    """A start with TERMINATE_EXISTING (or TERMINATE_IF_RUNNING) under another team's workload id, or
    the admission loop's, would end it: refused, and the victim runs on."""
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

    victor = await doorway.fabric(doorway.token("member", "vision", subject="victor"))
    victim = await victor.submit(spec("vision-victim", "vision"))
    await victim.status()
    mallory = await doorway.client(doorway.token("member", "ads", subject="mallory"))
    request = WorkloadRequest(spec=spec("vision-victim", "ads"))
    await refused(mallory.start_workflow("WorkloadWorkflow", request, id="vision-victim", task_queue=doorway.queue,
                                         id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING))
    await refused(mallory.start_workflow("WorkloadWorkflow", request, id="vision-victim", task_queue=doorway.queue,
                                         id_reuse_policy=WorkflowIDReusePolicy.TERMINATE_IF_RUNNING))
    for reserved in (f"fabric-admission-{doorway.queue}", "pool-monitor-dc1", "endpoint-chat"):
        await refused(mallory.start_workflow("WorkloadWorkflow", WorkloadRequest(spec=spec("squat", "ads")),
                                             id=reserved, task_queue=doorway.queue))
    await refused(mallory.start_workflow("ControlWorkflow", ControlRequest(op="list_pools", args={}),
                                         id=f"fabric-admission-{doorway.queue}", task_queue=doorway.queue))
    described = await doorway.engine.get_workflow_handle("vision-victim").describe()
    assert described.status is not None and described.status.name == "RUNNING"
    stamped = json.loads((await doorway.engine.get_workflow_handle("vision-victim").fetch_history())
                         .events[0].workflow_execution_started_event_attributes.header.fields["fabric-identity"].data)
    assert stamped["sub"] == "victor"
    refusals = [e for e in await doorway.audit("submit", 3) if e["identity"] == "mallory"]
    assert len(refusals) >= 3 and {e["result"] for e in refusals} == {"refused"}


async def test_every_refused_change_is_audited_and_stack_traces_are_the_operators(doorway: Doorway,
                                                                                 admin: Any) -> None:
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    mallory = await doorway.client(doorway.token("member", "ads", subject="mallory"))
    await refused(mallory.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=doorway.namespace, workflow_execution={"workflow_id": "ads-through-door"})))
    [entry] = [e for e in await doorway.audit("ResetWorkflowExecution") if e["identity"] == "mallory"]
    assert (entry["result"], entry["target"]) == ("refused", "ads-through-door")
    await refused(mallory.get_workflow_handle("ads-through-door").query("__stack_trace"))
    operator = await doorway.client(doorway.token("operator"))
    assert "workflow" in str(await operator.get_workflow_handle("ads-through-door").query("__stack_trace")).lower()


async def test_the_cli_through_the_door_says_a_bad_token_is_refused(doorway: Doorway, admin: Any,
                                                                   tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    ca = tmp_path / "ca.pem"
    ca.write_bytes(doorway.ca)
    env = {**os.environ, "FABRIC_TEMPORAL_ADDRESS": doorway.address, "FABRIC_TLS_CA": str(ca),
           "FABRIC_HOME": str(tmp_path / "elsewhere"), "FABRIC_TASK_QUEUE": doorway.queue,
           "FABRIC_NAMESPACE": doorway.namespace}
    for token in ("garbage", doorway.token("admin").replace("~", "~x")):
        done = subprocess.run([sys.executable, "-m", "inferofabric.cli.main", "list"],
                              env={**env, "FABRIC_TOKEN": token}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert "not a fabric token" in done.stderr or "not one this fabric issued" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    member = doorway.token("member", "ads")
    await (await doorway.fabric(member)).submit(spec("ads-listed", "ads"))
    done = subprocess.run([sys.executable, "-m", "inferofabric.cli.main", "list"], env={**env, "FABRIC_TOKEN": member},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "ads-listed" in done.stdout, done.stderr
