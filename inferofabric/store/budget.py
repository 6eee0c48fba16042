"""Budgets' standing from the ledger, the alerts they raise, and approvals on queue rows.

Read inside the admission cycle's transaction (so the standing it judges is the one it commits
against) and by `fabric budget list`. A budget's period counts what ended lines held inside it
(from the daily sums, `ledger_days`: periods begin at midnight UTC) and the running lines' cost
since it began; what a running or launching line may still cost (its estimate minus its cost to
date) is `reserved`.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from inferofabric.models.policy import PlacementPolicy
from inferofabric.policies.budget import BudgetState, crossed, period_start
from inferofabric.store.db import Store, as_utc, line_rate
from inferofabric.store.tables import AuditRow, BudgetAlertRow, LedgerDayRow, LedgerRow, QueueRow, utcnow

log = logging.getLogger(__name__)
_L = LedgerRow.__table__  # type: ignore[attr-defined]
_D = LedgerDayRow.__table__  # type: ignore[attr-defined]
_Q = QueueRow.__table__  # type: ignore[attr-defined]
_A = BudgetAlertRow.__table__  # type: ignore[attr-defined]
_AUDIT = AuditRow.__table__  # type: ignore[attr-defined]
_Owner = tuple[str, str, bool]  # (team, project, on a cloud pool)


def budget_states(session: Any, policy: PlacementPolicy, now: datetime) -> list[BudgetState]:
    """Every budget the policy sets, with what was spent in its current period and what is reserved."""
    states = [BudgetState(kind, name, scope, period, limit, alerts, period_start(period, now))
              for kind, name, scope, period, limit, alerts in policy.budgets()]
    if not states:
        return []
    teams = sorted({s.name for s in states if s.kind == "team"})
    projects = sorted({s.name for s in states if s.kind == "project"})
    ended: dict[datetime | None, dict[_Owner, float]] = {}
    for start in {s.period_start for s in states}:  # periods start at midnight: whole days of daily sums
        query = (select(_D.c.team, _D.c.project, _D.c.location, func.sum(_D.c.cost))
                 .where(_D.c.team.in_(teams) | _D.c.project.in_(projects))
                 .group_by(_D.c.team, _D.c.project, _D.c.location))
        if start is not None:
            query = query.where(_D.c.day >= start.date().isoformat())
        sums: dict[_Owner, float] = defaultdict(float)
        for team, project, location, total in session.execute(query):
            sums[(team, project, location == "cloud")] += float(total or 0.0)
        ended[start] = sums
    # Running lines (the ended_at index), folded per owner and period start before the budgets read them.
    running: dict[_Owner, dict[datetime | None, list[float]]] = defaultdict(
        lambda: {start: [0.0, 0.0] for start in ended})
    wanted_teams, wanted_projects = set(teams), set(projects)
    for line in session.execute(select(_L.c.team, _L.c.project, _L.c.location, _L.c.started_at, _L.c.gpus,
                                       _L.c.price_per_gpu_hour, _L.c.rate_per_hour, _L.c.estimated_cost)
                                .where(_L.c.ended_at.is_(None))):
        if line.team not in wanted_teams and line.project not in wanted_projects:
            continue
        began = as_utc(line.started_at) if line.started_at else None
        rate = line_rate(line)
        left = max(0.0, line.estimated_cost - _hours(began, now) * rate)
        for start, figures in running[(line.team, line.project, line.location == "cloud")].items():
            since = max(began, start) if began and start else began
            figures[0] += _hours(since, now) * rate
            figures[1] += left
    for state in states:
        for (team, project, cloud), total in ended[state.period_start].items():
            if _owns(state, team, project) and state.counts("cloud" if cloud else "on-prem"):
                state.spent += total
        for (team, project, cloud), periods in running.items():
            if _owns(state, team, project) and state.counts("cloud" if cloud else "on-prem"):
                state.spent += periods[state.period_start][0]
                state.reserved += periods[state.period_start][1]
    return states


def _owns(state: BudgetState, team: str, project: str) -> bool:
    return (team if state.kind == "team" else project) == state.name


def _hours(began: datetime | None, now: datetime) -> float:
    return max(0.0, (now - began).total_seconds() / 3600) if began else 0.0


def raise_alerts(session: Any, states: list[BudgetState], now: datetime) -> list[dict[str, Any]]:
    """Record each alert share a budget's spend has newly reached (once per period): a budget_alerts
    row and an audit-log event. Returns the new alerts (for the webhook)."""
    raised = []
    for state in states:
        shares = crossed(state)
        if not shares:
            continue
        key = f"{state.kind}:{state.name}:{state.scope}:{state.period}"
        period = state.period_start.date().isoformat() if state.period_start else "total"
        known = {row.share for row in session.execute(select(_A.c.share).where(_A.c.budget == key,
                                                                              _A.c.period_start == period))}
        for share in shares:
            if any(abs(share - k) < 1e-9 for k in known):
                continue
            detail = (f"{state.label()}: ${state.spent:,.2f} spent ({state.spent / state.limit:.0%}) "
                      f"reached the alert at {share:.0%}" if state.limit else f"{state.label()}: spending")
            session.execute(_A.insert().values(budget=key, period_start=period, share=share, raised_at=now,
                                               spent=state.spent))
            session.execute(_AUDIT.insert().values(
                at=now, identity="fabric", role="system", team=state.name if state.kind == "team" else None,
                action="budget_alert", target=f"{state.kind} {state.name} {state.scope} {state.period}",
                result=f"{share:.0%}", detail=detail, dedupe=f"budget:{key}:{period}:{share}"))
            raised.append({"event": "budget_alert", **state.as_json(), "share": share, "message": detail,
                           "at": now.isoformat()})
    return raised


def post_alerts(url: str | None, alerts: list[dict[str, Any]]) -> None:
    """POST each alert as JSON to the policy's webhook, off the caller's thread; failures are logged
    (the audit log already holds the alert)."""
    if not url or not alerts:
        return

    def send() -> None:
        for alert in alerts:
            request = urllib.request.Request(url, data=json.dumps(alert).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5):
                    pass
            except Exception as error:  # a dead webhook must not stop admission
                log.warning("budget alert webhook %s failed: %s", url, error)

    threading.Thread(target=send, name="fabric-budget-webhook", daemon=True).start()


def budget_view(store: Store, policy: PlacementPolicy) -> list[dict[str, Any]]:
    """`fabric budget list`: every budget's limit, spent, reserved and remaining now."""
    with store.session() as s:
        return [state.as_json() for state in budget_states(s, policy, utcnow())]


def set_approval(store: Store, workload_id: str, answer: str) -> bool:
    """Record a person's answer on the workload's waiting row; False when it is not waiting."""
    with store.session(write=True) as s:
        result = s.execute(update(_Q).where(_Q.c.workload_id == workload_id, _Q.c.state == "waiting")
                           .values(approval=answer, version=_Q.c.version + 1))
        s.commit()
        return bool(getattr(result, "rowcount", 0))


def approval_of(store: Store, workload_id: str) -> tuple[str | None, datetime | None] | None:
    """(answer, when it was first asked) of a waiting row; None when the workload does not wait."""
    with store.session() as s:
        row = s.execute(select(_Q.c.approval, _Q.c.approval_asked_at).where(_Q.c.workload_id == workload_id,
                                                                            _Q.c.state == "waiting")).first()
    if row is None:
        return None
    return row.approval, as_utc(row.approval_asked_at) if row.approval_asked_at else None
