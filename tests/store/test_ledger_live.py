"""The cost ledger end to end: real workloads on simulated pools whose back-end records give the true
start, end and size of every job; the ledger must charge exactly `held seconds x GPUs x price`, keep
launch-pending time apart, and split a failover's cost. (SQLite store here; the ledger's SQL runs on
PostgreSQL too in test_ledger_store.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import pytest

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.store import ledger

PRICE_ON_PREM, PRICE_CLOUD = 36.0, 360.0  # $/GPU-h: 1 cent and 10 cents per GPU-second
POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.4", target: cloud}
  failover: {when: "pool_health != healthy", target: cloud}
"""


@pytest.fixture(autouse=True)
def _fresh_names() -> None:
    global SUFFIX
    SUFFIX = uuid.uuid4().hex[:6]


def pool(name: str, location: str, gpus: int, price: float) -> dict[str, Any]:
    return {"name": name, "location": location, "backend": "simulated", "region": f"r-{name}",
            "gpus": {"A100": gpus}, "price_per_gpu_hour": {"A100": price}}


SUFFIX = uuid.uuid4().hex[:6]  # workflow ids are per namespace: each store's run has its own


def job(name: str, gpus: int, duration: str, team: str = "vision", pending: str = "0s") -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": f"{name}-{SUFFIX}", "team": team, "project": "imagenet", "image": "img",
        "resources": {"gpu": {"type": "A100", "count": gpus}},
        "annotations": {"sim.inferofabric.io/duration": duration, "sim.inferofabric.io/pending": pending}})


def truth(fabric: Any, pool_name: str) -> dict[str, dict[str, Any]]:
    """job id -> the back end's own record (start, duration: what it really ran)."""
    records = SimulatedBackend(fabric.store.pool_spec(pool_name), fabric.home).job_records()
    return {r["job_id"]: r for r in records}


async def test_burst_lines_cost_duration_times_gpus_times_price(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("dc1", "on-prem", 4, PRICE_ON_PREM))
    await client.register_pool(pool("cloud", "cloud", 16, PRICE_CLOUD))
    await client.set_policy(POLICY)
    first = await client.submit(job("on-prem-job", 2, "3s", pending="1s"))
    await asyncio.sleep(1.5)  # its 2 of 4 GPUs: utilization 0.5 > 0.4, so the next one bursts
    second = await client.submit(job("burst-job", 4, "2s", team="nlp"))
    done = await asyncio.gather(first.result(), second.result())
    assert [s.state for s in done] == [WorkloadState.SUCCEEDED] * 2 and done[1].location == "cloud"

    lines = {line.workload_id.removesuffix(f"-{SUFFIX}"): line for line in ledger.lines(fabric.store, None, None)}
    runs = {**truth(fabric, "dc1"), **truth(fabric, "cloud")}
    for name, price in (("on-prem-job", PRICE_ON_PREM), ("burst-job", PRICE_CLOUD)):
        line, record = lines[name], runs[f"{name}-{SUFFIX}-a1"]
        pending = float(record.get("pending", 0) or 0)
        held = record["duration"] - pending  # the back end's running time, launch-pending excluded
        expected = held * line.gpus * price / 3600
        assert round(line.cost, 2) == round(expected, 2), (name, line.cost, expected)
        assert line.reason == ("default" if name == "on-prem-job" else "burst")
    assert lines["on-prem-job"].pending_seconds >= 0.9  # launch-pending kept apart, not charged

    rows = {r["key"]: r for r in ledger.report(fabric.store, by="team")}
    assert rows["vision"]["cost_cloud"] == 0
    assert rows["vision"]["cost_on_prem"] == pytest.approx(lines["on-prem-job"].cost, abs=1e-6)
    assert rows["nlp"]["cost_on_prem"] == 0 and rows["nlp"]["gpu_hours_cloud"] == pytest.approx(
        lines["burst-job"].gpu_hours, abs=1e-6)

    # The CLI shows the same numbers (exit 0, the documented fields).
    code, out, err = await cli(fabric, "cost", "--by", "workload", "--json")
    assert code == 0, err
    shown = {r["key"].removesuffix(f"-{SUFFIX}"): r for r in json.loads(out)}
    assert shown["burst-job"]["pool"] == "cloud" and shown["burst-job"]["team"] == "nlp"
    assert round(shown["burst-job"]["cost_total"], 2) == round(lines["burst-job"].cost, 2)
    code, out, _ = await cli(fabric, "cost", "--explain", f"burst-job-{SUFFIX}")
    assert code == 0 and "attempt 1 on cloud" in out and "burst" in out


async def test_a_failover_splits_the_cost_across_both_pools(fabric: Any) -> None:
    client = fabric.client
    # Pool monitors are named after their pool in the namespace: names of this test's own.
    dc, cloud = f"dc-{SUFFIX}", f"cloud-{SUFFIX}"
    await client.register_pool(pool(dc, "on-prem", 4, PRICE_ON_PREM), monitor=_fast())
    await client.register_pool(pool(cloud, "cloud", 16, PRICE_CLOUD))
    await client.set_policy(POLICY)
    handle = await client.submit(job("moving-job", 1, "600s"))
    await _until(lambda: _running_on(handle, dc))
    await asyncio.sleep(1)
    await client.fail_pool(dc)
    await _until(lambda: _running_on(handle, cloud), timeout=90)
    await asyncio.sleep(1)
    await handle.cancel()
    lines = ledger.lines(fabric.store, None, None, workload_id=f"moving-job-{SUFFIX}")
    assert [(line.attempt, line.pool) for line in lines] == [(1, dc), (2, cloud)]
    assert all(line.ended_at is not None and line.cost > 0 for line in lines)
    for line in lines:  # each line charges its own pool's price for its own held time
        assert line.cost == pytest.approx(line.gpu_hours * line.price_per_gpu_hour, rel=1e-9)
    assert lines[0].ended_at <= lines[1].started_at  # type: ignore[operator]


async def test_running_work_accrues_cost_to_date(fabric: Any) -> None:
    client = fabric.client
    dc = f"dc3-{SUFFIX}"
    await client.register_pool(pool(dc, "on-prem", 4, PRICE_ON_PREM))
    handle = await client.submit(job("long-job", 2, "600s"))
    await _until(lambda: _running_on(handle, dc))
    await asyncio.sleep(2)
    first = ledger.lines(fabric.store, None, None, workload_id=f"long-job-{SUFFIX}")[0]
    await asyncio.sleep(1)
    later = ledger.lines(fabric.store, None, None, workload_id=f"long-job-{SUFFIX}")[0]
    assert first.ended_at is None and 0 < first.cost < later.cost
    await handle.cancel()


def _fast() -> Any:
    from inferofabric.models.messages import MonitorSettings

    return MonitorSettings(period_seconds=0.5, unhealthy_after=2, healthy_after=2, probe_timeout_seconds=1)


async def _running_on(handle: Any, pool_name: str) -> bool:
    status = await handle.status()
    return status.state == WorkloadState.RUNNING and status.pool == pool_name


async def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def cli(fabric: Any, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "FABRIC_TASK_QUEUE": fabric.task_queue, "FABRIC_HOME": str(fabric.home),
           "FABRIC_TEMPORAL_ADDRESS": fabric.temporal.service_client.config.target_host,
           "FABRIC_NAMESPACE": fabric.temporal.namespace, "FABRIC_DATABASE_URL": fabric.store.url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferofabric.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
