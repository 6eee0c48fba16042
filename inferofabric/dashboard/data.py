"""What the dashboard shows, gathered through the SDK: the page shows the numbers the API returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from inferofabric.sdk.client import FabricClient

DAYS = 30
TOP = 10


async def summary(fabric: FabricClient, days: int = DAYS, now: datetime | None = None) -> dict[str, Any]:
    """Pools with health and use, the queue's head, and cost: per team, per day (on-prem vs burst),
    the top workloads and the budgets."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    pools = await fabric.pools()
    queue = await fabric.queue()
    teams = await fabric.cost(by="team")
    daily = await fabric.cost(by="location", start=since, step="day")
    workloads = await fabric.cost(by="workload")
    budgets = await fabric.budgets()
    top = sorted(workloads, key=lambda row: row["cost_total"], reverse=True)[:TOP]
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "pools": [{"name": p.name, "location": p.location.value, "backend": p.backend, "region": p.region,
                   "health": p.health.value, "used": sum(p.used.values()), "total": sum(p.gpus.values())}
                  for p in pools],
        "queue": {"waiting": queue.total, "head": [{"id": e.id, "team": e.team, "position": e.position,
                                                    "reason": e.reason} for e in queue.entries[:10]]},
        "teams": teams,
        "totals": {key: round(sum(row[key] for row in teams), 6)
                   for key in ("gpu_hours_on_prem", "gpu_hours_cloud", "cost_on_prem", "cost_cloud", "cost_total")},
        "daily": _per_day(daily),
        "top_workloads": top,
        "budgets": budgets,
        "days": days,
    }


def _per_day(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per (day, location) folded into one row per day: on-prem and burst spend side by side."""
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = days.setdefault(row["period"], {"day": row["period"], "cost_on_prem": 0.0, "cost_cloud": 0.0})
        day["cost_on_prem"] += row["cost_on_prem"]
        day["cost_cloud"] += row["cost_cloud"]
    out = []
    for day in sorted(days.values(), key=lambda d: d["day"]):
        total = day["cost_on_prem"] + day["cost_cloud"]
        day["burst_share"] = round(day["cost_cloud"] / total, 4) if total else 0.0
        out.append(day)
    return out
