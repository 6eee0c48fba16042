"""Budgets and burst approval end to end, on simulated pools and the real admission loop: a budget
blocks the burst that would cross it (and the wait says which budget), `fabric budget list` shows
limit / spent / reserved / remaining, a burst that needs approval waits queued until `fabric approve`
(audited with who approved) or `fabric deny`, and the approval's timeout takes the policy's default."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from inferofabric.auth.audit import audit_entries
from inferofabric.models import WorkloadSpec, WorkloadState

from .test_ledger_live import cli

PRICE_CLOUD = 360.0  # $/GPU-h: 10 cents per GPU-second


def pool(name: str, location: str, gpus: int, price: float) -> dict[str, Any]:
    return {"name": name, "location": location, "backend": "simulated", "region": f"r-{name}",
            "gpus": {"A100": gpus}, "price_per_gpu_hour": {"A100": price}}


def job(name: str, gpus: int, runtime: int | None = None, team: str = "vision") -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": team, "image": "img", "max_runtime_seconds": runtime,
        "resources": {"gpu": {"type": "A100", "count": gpus}},
        "annotations": {"sim.inferofabric.io/duration": "600s"}})


async def until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.25)


async def _setup(fabric: Any, policy: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:6]
    dc, cloud = f"dc-{suffix}", f"cloud-{suffix}"
    client = fabric.client
    await client.register_pool(pool(dc, "on-prem", 2, 0.0))
    await client.register_pool(pool(cloud, "cloud", 16, PRICE_CLOUD))
    await client.set_policy(policy)
    filler = await client.submit(job(f"filler-{suffix}", 2))  # on-prem full: everything else bursts
    await until(lambda: _on(filler, dc))
    return suffix, cloud


async def _on(handle: Any, pool_name: str) -> bool:
    status = await handle.status()
    return status.state == WorkloadState.RUNNING and status.pool == pool_name


async def _reason(fabric: Any, workload_id: str) -> str:
    view = await fabric.client.queue(workload_id=workload_id)
    return view.entries[0].reason if view.entries else ""


BUDGET = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.85", target: cloud}
teams:
  vision: {budget: {cloud: {monthly: 20, alert_at: [0.5]}}}
"""


async def test_a_budget_blocks_the_burst_that_would_cross_it(fabric: Any) -> None:
    suffix, cloud = await _setup(fabric, BUDGET)
    client = fabric.client
    # 2 GPUs x 60 s x $360/GPU-h = $12 each: the first fits $20, the second does not.
    first = await client.submit(job(f"first-{suffix}", 2, runtime=60))
    await until(lambda: _on(first, cloud))
    second = await client.submit(job(f"second-{suffix}", 2, runtime=60))
    reason = await until(lambda: _reason(fabric, second.id))
    assert "team vision's cloud budget (monthly $20.00) has $" in reason, reason
    assert "this needs an estimated $12.00" in reason
    assert (await second.status()).state == WorkloadState.QUEUED
    other = await client.submit(job(f"other-team-{suffix}", 2, runtime=60, team="nlp"))
    await until(lambda: _on(other, cloud))  # another team's burst is not held back

    code, out, err = await cli(fabric, "budget", "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["team"], row["scope"], row["period"], row["limit"]) == ("vision", "cloud", "monthly", 20)
    assert row["spent"] + row["reserved"] == pytest.approx(12.0, abs=0.01)
    assert row["remaining"] == pytest.approx(8.0, abs=0.01)
    code, out, err = await cli(fabric, "cost", "--idle", "--json")  # the on-prem pool's idle time: none
    assert code == 0, err
    (idle,) = [r for r in json.loads(out) if r["pool"] == f"dc-{suffix}"]
    assert idle["capacity_gpu_hours"] > 0 and idle["idle_cost"] == 0  # a $0 pool costs nothing idle
    code, _, err = await cli(fabric, "cost", "--idle", "--step", "hour")
    assert code == 2 and "--step 'hour'" in err
    await asyncio.gather(first.cancel(), second.cancel(), other.cancel())


APPROVAL = """
placement:
  default: on-prem
  burst:
    when: "on_prem_utilization > 0.85"
    target: cloud
    approval: {when: "workload.estimated_cost > 5.0", timeout: 1h, default: deny}
"""


async def test_a_burst_waits_for_approval_then_runs_and_the_audit_log_says_who(fabric: Any) -> None:
    suffix, cloud = await _setup(fabric, APPROVAL)
    client = fabric.client
    cheap = await client.submit(job(f"cheap-{suffix}", 1, runtime=20))  # $2: no approval needed
    dear = await client.submit(job(f"dear-{suffix}", 2, runtime=600))  # $120
    await until(lambda: _on(cheap, cloud))
    reason = await until(lambda: _reason(fabric, dear.id))
    assert f"waiting for approval to burst to {cloud} (estimated $120.00" in reason, reason
    assert f"fabric approve {dear.id} or fabric deny {dear.id}" in reason
    assert (await dear.status()).state == WorkloadState.QUEUED

    code, _, err = await cli(fabric, "approve", dear.id, "--note", "deadline friday")
    assert code == 0, err
    await until(lambda: _on(dear, cloud))
    entries = [e for e in audit_entries(fabric.store, limit=50) if e["action"] == "approve"]
    assert entries and entries[-1]["target"] == dear.id and entries[-1]["identity"] == "admin"
    assert entries[-1]["result"] == "ok" and entries[-1]["detail"] == "approved"
    explanation = await client.get(dear.id).explain()
    assert any("approved by admin: deadline friday" in e for e in explanation.events)

    denied = await client.submit(job(f"denied-{suffix}", 2, runtime=600))
    await until(lambda: _reason(fabric, denied.id))
    code, _, err = await cli(fabric, "deny", denied.id)
    assert code == 0, err
    reason = await until(lambda: _after_denial(fabric, denied.id))
    assert reason.startswith("burst denied by admin"), reason
    await asyncio.sleep(1)
    assert (await denied.status()).state == WorkloadState.QUEUED  # stays queued for on-prem
    code, _, err = await cli(fabric, "approve", cheap.id)  # running: nothing to approve
    assert code == 2 and "nothing to approve" in err
    await asyncio.gather(cheap.cancel(), dear.cancel(), denied.cancel())


async def _after_denial(fabric: Any, workload_id: str) -> str:
    reason = await _reason(fabric, workload_id)
    return reason if "denied" in reason else ""


async def test_the_approval_timeout_takes_the_default(fabric: Any) -> None:
    policy = APPROVAL.replace("timeout: 1h, default: deny", "timeout: 3s, default: approve")
    suffix, cloud = await _setup(fabric, policy)
    handle = await fabric.client.submit(job(f"late-{suffix}", 2, runtime=600))
    assert "waiting for approval" in await until(lambda: _reason(fabric, handle.id))
    started = time.monotonic()
    await until(lambda: _on(handle, cloud), timeout=30)
    assert time.monotonic() - started >= 1.0  # not before the timeout (3 s from the first ask)
    explanation = await fabric.client.get(handle.id).explain()
    assert any("approved by default" in d.reason for d in explanation.decisions)
    await handle.cancel()


async def test_budget_alerts_reach_the_audit_log_and_the_webhook(fabric: Any) -> None:
    from aiohttp import web
    from cli.util import free_port

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        suffix = uuid.uuid4().hex[:6]
        client = fabric.client
        await client.register_pool(pool(f"cloud-{suffix}", "cloud", 4, PRICE_CLOUD))
        await client.set_policy(f"""
placement: {{default: cloud}}
teams:
  vision: {{budget: {{cloud: {{monthly: 1, alert_at: [0.25, 0.9]}}}}}}
cost: {{alert_webhook: "http://127.0.0.1:{port}/hook"}}
""")
        # 1 GPU x 3 s x $360/GPU-h = $0.30: past 25% of $1 when it ends (its estimate, 8 s, fits $1).
        spec = job(f"spender-{suffix}", 1, runtime=8)
        spec.annotations["sim.inferofabric.io/duration"] = "3s"
        done = await (await client.submit(spec)).result()
        assert done.state == WorkloadState.SUCCEEDED
        alerts = await until(lambda: _alerts(fabric))
        assert len(alerts) == 1 and alerts[0]["target"] == "team vision cloud monthly"
        assert alerts[0]["result"] == "25%" and "reached the alert at 25%" in alerts[0]["detail"]
        hooked = await until(lambda: _async(received))
        assert hooked[0]["team"] == "vision" and hooked[0]["share"] == 0.25 and hooked[0]["limit"] == 1
        again = job(f"again-{suffix}", 1, runtime=1)
        again.annotations["sim.inferofabric.io/duration"] = "0s"
        await (await client.submit(again)).result()  # another cycle: the alert is not raised twice
        assert len(await _alerts(fabric)) == 1 and len(received) == 1
    finally:
        await runner.cleanup()


async def _alerts(fabric: Any) -> list[dict[str, Any]]:
    return [e for e in audit_entries(fabric.store, limit=200) if e["action"] == "budget_alert"]


async def _async(value: Any) -> Any:
    return value
