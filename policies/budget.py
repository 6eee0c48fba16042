"""Budgets by reserve-then-commit (pure: no I/O, no temporalio).

A budget is a USD limit per team or project, for cloud spend (`scope: cloud`, burst) or all spend
(`scope: all`), per UTC week, calendar month or in total. Its standing, read from the ledger by the
store (inferofabric/store/budget.py), is

    spent     = the cost of its lines in the period (ended lines: their committed cost; running
                lines: their cost to date)
    reserved  = what running (or launching) attempts may still cost: their estimate minus their
                cost to date, never below 0
    remaining = limit - spent - reserved

Admission asks `BudgetBook.check` before it places work on a pool the budget counts: the work's
estimate (`max_runtime_seconds`, or the policy's `cost.default_runtime`, x GPUs x the pool's price)
must fit `remaining`. `charge` reserves it at once, so a cycle that admits 200 bursts judges each
against what the ones before it reserved: the overspend of a budget is bounded by how much the
actual cost of running work exceeds its estimate (none for work with `max_runtime_seconds`, which
the back end stops at that limit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from inferofabric.models.status import PoolView, RejectionKind
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.reasons import Refusal

CLOUD = "cloud"


@dataclass
class BudgetState:
    """One budget and where it stands (`fabric budget list`)."""

    kind: str  # team | project
    name: str
    scope: str  # cloud | all
    period: str  # weekly | monthly | total
    limit: float
    alert_at: list[float] = field(default_factory=list)
    period_start: datetime | None = None
    spent: float = 0.0
    reserved: float = 0.0

    @property
    def remaining(self) -> float:
        return self.limit - self.spent - self.reserved

    def counts(self, location: str) -> bool:
        return self.scope != CLOUD or location == CLOUD

    def label(self) -> str:
        return f"{self.kind} {self.name}'s {self.scope} budget ({self.period} ${self.limit:,.2f})"

    def as_json(self) -> dict[str, object]:
        return {"team" if self.kind == "team" else "project": self.name, "kind": self.kind, "scope": self.scope,
                "period": self.period, "limit": round(self.limit, 2), "spent": round(self.spent, 2),
                "reserved": round(self.reserved, 2), "remaining": round(self.remaining, 2),
                "period_start": self.period_start.isoformat() if self.period_start else None,
                "alert_at": self.alert_at}


def period_start(period: str, now: datetime) -> datetime | None:
    """Where the current period began (UTC): Monday 00:00 for weekly, the 1st for monthly."""
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def hourly_rate(pool: PoolView, gpu_type: str | None, spec: WorkloadSpec) -> float:
    """What the work costs per hour it holds the pool: its GPUs at the pool's price for the type,
    plus its CPUs and memory (every replica's) where the pool prices them."""
    rate = 0.0
    price = pool.price_per_gpu_hour.get(gpu_type) if gpu_type else None
    if price is not None and not math.isinf(price):
        rate += spec.total_gpus * price
    if pool.price_per_cpu_hour:
        rate += spec.replicas * spec.resources.cpu * pool.price_per_cpu_hour
    if pool.price_per_gib_hour:
        rate += spec.replicas * spec.resources.memory_bytes / 2**30 * pool.price_per_gib_hour
    return rate


def estimate(rate_per_hour: float, runtime_s: float) -> float:
    """What an attempt is expected to cost: its runtime at its hourly rate."""
    return runtime_s / 3600 * rate_per_hour


class BudgetBook:
    """The budgets of one admission cycle; answers "may this work cost that much on that pool?"."""

    def __init__(self, states: Sequence[BudgetState]) -> None:
        self.states = list(states)
        self._by_owner: dict[tuple[str, str], list[BudgetState]] = {}
        for state in self.states:
            self._by_owner.setdefault((state.kind, state.name), []).append(state)

    @property
    def limited(self) -> bool:
        return bool(self.states)

    def _applying(self, team: str, project: str, location: str) -> Iterable[BudgetState]:
        for owner in (("team", team), ("project", project)):
            for state in self._by_owner.get(owner, ()):
                if state.counts(location):
                    yield state

    def check(self, team: str, project: str, location: str, cost: float) -> str | None:
        """None when the work fits every budget that counts it there, else why not."""
        refusal = self.refusal(team, project, location, cost)
        return refusal.reason if refusal is not None else None

    def refusal(self, team: str, project: str, location: str, cost: float) -> Refusal | None:
        """`check` as a rejection's kind (budget) and text."""
        for state in self._applying(team, project, location):
            if cost > state.remaining + 1e-9:
                return Refusal(RejectionKind.BUDGET,
                               f"{state.label()} has ${max(state.remaining, 0):,.2f} left "
                               f"(${state.spent:,.2f} spent, ${state.reserved:,.2f} reserved); "
                               f"this needs an estimated ${cost:,.2f}")
        return None

    def charge(self, team: str, project: str, location: str, cost: float) -> None:
        for state in self._applying(team, project, location):
            state.reserved += cost

    def remaining(self, team: str, scope: str = CLOUD) -> float:
        """The least left in the team's budgets of that scope (infinite when it has none)."""
        found = [s.remaining for s in self._by_owner.get(("team", team), ()) if s.scope == scope]
        return min(found) if found else math.inf


def crossed(state: BudgetState) -> list[float]:
    """The alert shares the budget's spend has reached."""
    if state.limit <= 0:
        return list(state.alert_at) if state.spent > 0 else []
    return [share for share in state.alert_at if state.spent >= share * state.limit - 1e-9]
