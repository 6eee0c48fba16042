"""Reasons as types (pure: no I/O, no temporalio).

Every rejection of a pool carries a `RejectionKind` and every wait a `WaitKind`, set where the reason
is made (the engine's screening and fit, `QuotaBook`, `BudgetBook`, the approval rule, feasibility).
The admission core decides claims, preemption and the shape of its explanations on these kinds
alone; the reason text is for people and may be worded any way (tests/admission/test_kinds.py
rewords every message and checks that admission decides exactly as before).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inferofabric.models.status import Rejection, RejectionKind, WaitKind

# Rejections that say what the team may spend (quota) or afford (budget) there: one of them is quoted
# in a wait reason next to the free capacity.
ALLOWANCE = frozenset({RejectionKind.QUOTA, RejectionKind.BUDGET})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reason a pool may not be used, before it is tied to the pool: its kind and its text."""

    kind: RejectionKind
    reason: str

    def at(self, pool: str) -> Rejection:
        return Rejection(pool=pool, reason=self.reason, kind=self.kind)


# What a wait is, from the rejections of a decision that placed nothing: the first of these kinds
# that any pool was rejected for (the closest to fitting first).
_WAIT_ORDER: tuple[tuple[RejectionKind, WaitKind], ...] = (
    (RejectionKind.CAPACITY, WaitKind.CAPACITY),
    (RejectionKind.QUOTA, WaitKind.QUOTA),
    (RejectionKind.BUDGET, WaitKind.BUDGET),
    (RejectionKind.COMPLIANCE, WaitKind.COMPLIANCE),
    (RejectionKind.UNHEALTHY, WaitKind.UNHEALTHY),
    (RejectionKind.EXCLUDED, WaitKind.EXCLUDED),
    (RejectionKind.OUTSIDE_TARGET, WaitKind.NO_POOL),
    (RejectionKind.NO_GPU_TYPE, WaitKind.NO_POOL),
    (RejectionKind.LOCATION, WaitKind.NO_POOL),
    (RejectionKind.REGION, WaitKind.NO_POOL),
    (RejectionKind.GANG, WaitKind.NO_POOL),
)


def wait_kind_of(rejected: Iterable[Rejection]) -> WaitKind:
    """The kind of a wait whose decision rejected these pools (NO_POOL when there were none)."""
    kinds = {r.kind for r in rejected}
    if not kinds:
        return WaitKind.NO_POOL
    for rejection_kind, wait_kind in _WAIT_ORDER:
        if rejection_kind in kinds:
            return wait_kind
    return WaitKind.OTHER
