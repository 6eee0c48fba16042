"""Idle on-prem cost: owned GPUs that sat idle, per pool, and (the policy's `cost.share_idle`) shared
across teams in proportion to their use of each pool (OpenCost's shareIdle).

An on-prem pool's GPUs cost what it declares (`price_per_gpu_hour`) whether they run work or not.
Over a window, per on-prem pool:

    capacity  = its GPUs (each type) x the hours of the window since the pool was registered
    used      = the GPU-hours the ledger charged on it (the same figures `fabric cost --by pool` shows)
    idle      = capacity - used, in GPU-hours, and in USD at the pool's price per type

The pool's inventory as registered now is taken for the whole window (a pool whose inventory
changed part way is counted with its current one). Cloud pools have no idle cost: the fabric pays
for what it runs there.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from inferofabric.models.common import Location
from inferofabric.models.pool import PoolSpec
from inferofabric.store import ledger
from inferofabric.store.db import Store, as_utc
from inferofabric.store.tables import PoolRow, utcnow

_P = PoolRow.__table__  # type: ignore[attr-defined]


def idle_rows(store: Store, start: datetime | None = None, end: datetime | None = None,
              now: datetime | None = None, step: str | None = None) -> list[dict[str, Any]]:
    """Per on-prem pool (and per UTC day or week with `step`): capacity, used and idle GPU-hours,
    idle cost (USD) and utilization."""
    now = now or utcnow()
    until = min(end or now, now)
    with store.session() as s:
        pools = [(PoolSpec.model_validate_json(row.spec), as_utc(row.created_at))
                 for row in s.execute(select(_P.c.spec, _P.c.created_at))]
    used = {(row.get("period", ""), row["key"]): row
            for row in ledger.report(store, by="pool", start=start, end=end, step=step, now=now)}
    out = []
    for spec, registered in sorted(pools, key=lambda item: item[0].name):
        if spec.location != Location.ON_PREM:
            continue
        since = max(start, registered) if start else registered
        gpus = sum(spec.gpus.values())
        per_hour = sum(count * spec.price_per_gpu_hour.get(gpu_type, 0.0) for gpu_type, count in spec.gpus.items())
        for period, hours in ledger.split_hours(since, until, step):
            row = used.get((period, spec.name), {})
            used_hours, used_cost = row.get("gpu_hours_on_prem", 0.0), row.get("cost_on_prem", 0.0)
            capacity = gpus * hours
            item: dict[str, Any] = {"period": period} if step else {}
            item.update({"pool": spec.name, "capacity_gpu_hours": round(capacity, 6),
                         "used_gpu_hours": round(used_hours, 6),
                         "idle_gpu_hours": round(max(0.0, capacity - used_hours), 6),
                         "idle_cost": round(max(0.0, per_hour * hours - used_cost), 6),
                         "utilization": round(used_hours / capacity, 4) if capacity else 0.0})
            out.append(item)
    return out


def share_idle(store: Store, rows: list[dict[str, Any]], start: datetime | None = None,
               end: datetime | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Team rows (`fabric cost --by team`) with each pool's idle cost shared in proportion to the teams'
    GPU-hours on it: `cost_idle` per row, added to `cost_on_prem` and `cost_total`."""
    idle = {row["pool"]: row["idle_cost"] for row in idle_rows(store, start, end, now)}
    usage: dict[str, dict[str, float]] = defaultdict(dict)
    for row in ledger.report(store, by="team+pool", start=start, end=end, now=now):
        team, pool = row["key"].split(ledger.PAIR_SEPARATOR, 1)
        if row["gpu_hours_on_prem"] > 0:
            usage[pool][team] = row["gpu_hours_on_prem"]
    shares: dict[str, float] = defaultdict(float)
    for pool, cost in idle.items():
        total = sum(usage[pool].values())
        for team, hours in usage[pool].items():
            shares[team] += cost * hours / total if total else 0.0
    out = []
    for row in rows:
        extra = round(shares.get(row["key"], 0.0), 6)
        out.append({**row, "cost_idle": extra, "cost_on_prem": round(row["cost_on_prem"] + extra, 6),
                    "cost_total": round(row["cost_total"] + extra, 6)})
    return out
