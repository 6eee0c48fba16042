"""Helpers shared by the failover, replay and chaos tests: unique names, specs, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.models.status import WorkloadStatus

T = TypeVar("T")

FAILOVER_POLICY = """
placement:
  default: on-prem
  failover:
    when: pool_health != healthy
    target: cloud
constraints:
  - name: no-pii-in-cloud
    deny: {location: cloud}
    when: workload.data_classification == 'pii'
"""
# The same, with bursting on (no region filter).
BURST_AND_FAILOVER_POLICY = """
placement:
  default: on-prem
  burst:
    when: on_prem_utilization > 0.85
    target: cloud
  failover:
    when: pool_health != healthy
    target: cloud
constraints:
  - name: no-pii-in-cloud
    deny: {location: cloud}
    when: workload.data_classification == 'pii'
"""


def suffix() -> str:
    """Pool monitors have namespace-wide ids (pool-monitor-<pool>): every test uses its own pool names."""
    return uuid.uuid4().hex[:6]


def sim_pool(name: str, location: str, gpus: int, *, gpu_type: str = "A100", price: float = 1.0,
             region: str | None = None) -> dict[str, Any]:
    return {"name": name, "location": location, "backend": "simulated",
            "region": region or ("dc1" if location == "on-prem" else "us-east-1"),
            "gpus": {gpu_type: gpus}, "price_per_gpu_hour": {gpu_type: price}}


def job(name: str, *, classification: str = "internal", duration: str = "600s", gpus: int = 1,
        gpu_type: str = "A100", team: str = "vision", **extra: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": team, "image": "ghcr.io/acme/train:1.0",
        "resources": {"gpu": {"type": gpu_type, "count": gpus}}, "data_classification": classification,
        "annotations": {"sim.inferofabric.io/duration": duration}, **extra,
    })


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str,
                     interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = await check()
        except AssertionError as error:
            value, last = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


async def wait_status(handle: Any, predicate: Callable[[WorkloadStatus], bool], timeout: float,
                      what: str = "") -> WorkloadStatus:
    last: list[WorkloadStatus] = []

    async def check() -> WorkloadStatus | None:
        status: WorkloadStatus = await handle.status()
        last[:] = [status]
        return status if predicate(status) else None

    try:
        return await eventually(check, timeout, what or f"{handle.id}")
    except AssertionError:
        status = last[0] if last else None
        detail = (f"{status.state} on {status.pool} attempt {status.attempts}: {status.message}"
                  if status else "-")
        raise AssertionError(f"{handle.id}: timed out waiting for {what or 'state'}; now {detail}") from None


def running_on(pool: str, attempts: int | None = None) -> Callable[[WorkloadStatus], bool]:
    def predicate(status: WorkloadStatus) -> bool:
        return (status.state == WorkloadState.RUNNING and status.pool == pool
                and (attempts is None or status.attempts == attempts))
    return predicate


def in_states(states: Iterable[WorkloadState]) -> Callable[[WorkloadStatus], bool]:
    wanted = set(states)
    return lambda status: status.state in wanted
