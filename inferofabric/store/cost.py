"""What `fabric cost` shows: the ledger's reports (store/ledger.py) with idle on-prem cost (store/idle.py).

The two stay apart underneath: idle cost is computed from the ledger's report, and the ledger knows
nothing of idle cost. This module is the one that combines them (docs/cost.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from inferofabric.store import idle as idle_cost
from inferofabric.store.db import Store
from inferofabric.store.ledger import STEPS, lines, report


def cost_view(store: Store, by: str = "team", start: str | None = None, end: str | None = None,
              step: str | None = None, workload_id: str | None = None, idle: bool = False) -> dict[str, Any]:
    """What `fabric cost` shows, as JSON: report rows (with idle on-prem cost shared to the teams when
    the policy says `cost.share_idle`), one workload's lines (`workload_id`), or idle cost per pool."""
    begin = datetime.fromisoformat(start) if start else None
    until = datetime.fromisoformat(end) if end else None
    if idle:
        if step is not None and step not in STEPS:
            raise ValueError(f"--step {step!r}: one of {', '.join(STEPS)}")
        return {"from": start, "to": end, "step": step, "idle": idle_cost.idle_rows(store, begin, until, step=step)}
    if workload_id is not None:
        found = lines(store, begin, until, workload_id=workload_id)
        return {"workload": workload_id, "lines": [line.as_json() for line in found],
                "cost_total": round(sum(line.cost for line in found), 6)}
    rows = report(store, by, begin, until, step)
    if by == "team" and step is None and _shares_idle(store):
        rows = idle_cost.share_idle(store, rows, begin, until)
    return {"by": by, "step": step, "from": start, "to": end, "rows": rows}


def _shares_idle(store: Store) -> bool:
    _, policy = store.active_policy()
    return bool(policy is not None and policy.cost.share_idle)
