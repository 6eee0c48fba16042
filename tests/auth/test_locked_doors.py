"""The gate behind the door, on the real dev server and worker, reached straight through Temporal as
only the control plane can (tests/door attacks the door itself): every request that changes something without a
token, with a wrong one, or with a member token for another team is refused, changes nothing (judged
from the queue, the store and the simulated pool's own job records) and is in the audit log."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from inferofabric.auth.client import with_token
from inferofabric.auth.tokens import AuthError, create_token, signing_key
from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.models.messages import RelocateSignal, WorkloadRequest
from inferofabric.sdk.client import FabricClient
from inferofabric.sdk.errors import PermissionDenied


def spec(name: str, team: str) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"name": name, "team": team, "image": "img",
                                        "resources": {"gpu": {"type": "A100", "count": 1}},
                                        "annotations": {"sim.inferofabric.io/duration": "600s"}})


def token(fabric: Any, role: str, team: str | None = None, subject: str | None = None) -> str:
    return create_token(signing_key(fabric.home), role, team=team, subject=subject, now=time.time())


def as_(fabric: Any, token_text: str | None) -> FabricClient:
    client = FabricClient(fabric.temporal, task_queue=fabric.task_queue, store_url=fabric.client.store_url)
    client.temporal = with_token(fabric.temporal, token_text)  # exactly this token (or none)
    return client


async def audit_of(fabric: Any, action: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:  # the audit sink writes every 200 ms
        entries = [e for e in await fabric.client.audit(limit=500) if e["action"] == action]
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.2)


@pytest.fixture
async def pool(fabric: Any) -> str:
    await fabric.client.register_pool({"name": "dc1", "location": "on-prem", "backend": "simulated",
                                       "region": "dc1", "gpus": {"A100": 8}})
    return "dc1"


def jobs_on(fabric: Any, pool_name: str) -> list[dict[str, Any]]:
    return SimulatedBackend(fabric.store.pool_spec(pool_name), fabric.home).job_records()


async def test_a_start_without_a_token_is_refused_like_the_temporal_cli_would_send_it(fabric: Any, pool: str) -> None:
    request = WorkloadRequest(spec=spec("sneaky", "ads"))
    handle = await fabric.temporal.start_workflow("WorkloadWorkflow", request.model_dump(mode="json"), id="sneaky",
                                                  task_queue=fabric.task_queue)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "permission denied: no identity" in str(failure.value.cause)
    assert (await fabric.client.queue()).total == 0 and not jobs_on(fabric, pool)
    [entry] = await audit_of(fabric, "submit")
    assert (entry["identity"], entry["result"], entry["target"]) == ("-", "refused", "sneaky")


async def test_a_member_submits_for_its_team_only_and_cancels_its_own_work_only(fabric: Any, pool: str) -> None:
    ads = as_(fabric, token(fabric, "member", "ads", subject="alice"))
    vision = as_(fabric, token(fabric, "member", "vision", subject="bob"))
    mine = await ads.submit(spec("ads-job", "ads"))
    assert (await mine.status()).team == "ads"
    with pytest.raises(PermissionDenied, match="may not submit work for team 'vision'"):
        await (await ads.submit(spec("not-mine", "vision"))).status()
    with pytest.raises(PermissionDenied, match="may not cancel"):
        await vision.get("ads-job").cancel()
    assert (await mine.status()).state != WorkloadState.CANCELLED  # still there, still the owner's
    assert (await mine.cancel()).state == WorkloadState.CANCELLED
    assert {r["workload_id"] for r in jobs_on(fabric, pool)} <= {"ads-job"}
    submits = await audit_of(fabric, "submit", 2)
    assert {(e["identity"], e["target"], e["result"]) for e in submits} == {
        ("alice", "ads-job", "ok"), ("alice", "not-mine", "refused")}
    cancels = await audit_of(fabric, "cancel", 2)
    assert [(e["result"]) for e in cancels] == ["refused", "ok"]


async def test_pools_and_policy_need_the_admin_and_a_wrong_token_changes_nothing(fabric: Any, pool: str) -> None:
    member = as_(fabric, token(fabric, "member", "ads"))
    operator = as_(fabric, token(fabric, "operator", subject="ops"))
    foreign = as_(fabric, create_token(b"z" * 48, "admin", now=time.time()))
    new_pool = {"name": "rogue", "location": "cloud", "backend": "simulated", "region": "x", "gpus": {"A100": 1}}
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        await member.register_pool(new_pool)
    with pytest.raises(AuthError, match="not one this fabric issued"):  # refused before anything is sent
        await foreign.set_policy({"placement": {"default": "cloud"}})
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        await operator.set_secret("hf", "v")
    with pytest.raises(PermissionDenied, match="needs the operator or admin role"):
        await member.drain(pool)
    assert [p.name for p in await fabric.client.pools()] == [pool]
    assert (await operator.drain(pool)) == []  # an operator may
    entries = await fabric.client.audit(limit=50)
    refused = [e for e in entries if e["result"] == "refused"]
    # The foreign token's set_policy never left the client (nothing reached the fabric to audit).
    assert {e["action"] for e in refused} >= {"register_pool", "put_secret", "drain"}
    assert {"time", "identity", "role", "action", "target", "result"} <= set(entries[0])


async def test_internal_signals_from_outside_are_dropped(fabric: Any, pool: str) -> None:
    handle = await fabric.client.submit(spec("steady", "ads"))
    deadline = time.monotonic() + 20
    while (await handle.status()).state != WorkloadState.RUNNING and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    raw = fabric.temporal.get_workflow_handle("steady")  # no token: the plain `temporal` CLI
    await raw.signal("relocate", RelocateSignal(pool=pool, reason="fake outage"))
    await raw.signal("request_cancel")
    await asyncio.sleep(1.5)
    status = await handle.status()
    assert status.state == WorkloadState.RUNNING and status.attempts == 1
    assert len(jobs_on(fabric, pool)) == 1
    refused = [e for e in await fabric.client.audit(limit=50) if e["result"] == "refused"]
    assert {e["action"] for e in refused} >= {"signal:relocate", "cancel"}
    await handle.cancel()
