"""Why a workload waits, in words (pure: no I/O, no temporalio).

The texts `fabric queue`, `fabric status` and `fabric explain` show. They are built from the kinds
of a decision's rejections and from the cycle's capacity and quotas; nothing decides on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from inferofabric.models.status import Decision, RejectionKind
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.capacity import Capacity
from inferofabric.policies.cycle import Pending
from inferofabric.policies.quota import QuotaBook
from inferofabric.policies.reasons import ALLOWANCE

_GROUPED = ALLOWANCE | {RejectionKind.CAPACITY}


def need(spec: WorkloadSpec) -> str:
    types = "/".join(spec.gpu_types)
    if spec.replicas > 1:
        return f"{spec.total_gpus} x {types} on one pool (a gang of {spec.replicas} x {spec.gpu_count})"
    return f"{spec.gpu_count} x {types}"


def capacity_pools(decision: Decision) -> list[str]:
    """The pools the decision rejected for free capacity only (where a claim or preemption can help)."""
    return [r.pool for r in decision.rejected if r.kind == RejectionKind.CAPACITY]


class Explainer:
    """Wait reasons over one cycle's capacity and quotas."""

    def __init__(self, capacity: Capacity, quota: QuotaBook, locations: Mapping[str, str]) -> None:
        self.capacity = capacity
        self.quota = quota
        self.locations = locations

    def wait_reason(self, entry: Pending, decision: Decision) -> str:
        """A decision that placed nothing: the need, the free GPUs where it could fit, the quota or
        budget that stops it, and up to two other reasons with the pools they apply to."""
        spec = entry.spec
        parts = [f"needs {need(spec)}" if spec.gpu_count else "needs no GPU"]
        capacity = capacity_pools(decision)
        for name in capacity[:3]:
            view = self.capacity.views[name]
            gpu_type = max(spec.gpu_types, key=lambda t, v=view: (v.free(t), v.gpus.get(t, 0)))  # type: ignore[misc]
            held = self.capacity.claimed(name, gpu_type)
            free = max(0, view.free(gpu_type) - held)
            text = f"{name} has {free} of {view.gpus.get(gpu_type, 0)} {gpu_type} free"
            if held:
                text += f" ({held} held for work ordered before it)"
            parts.append(text)
        allowance = next((r.reason for r in decision.rejected if r.kind in ALLOWANCE), None)
        if allowance is None:
            allowance = self.quota_note(entry, capacity[0]) if capacity else None
        if allowance:
            parts.append(allowance)
        others: dict[str, tuple[RejectionKind, list[str]]] = {}
        for rejection in decision.rejected:
            if rejection.kind not in _GROUPED:
                others.setdefault(rejection.reason, (rejection.kind, []))[1].append(rejection.pool)
        for why, (kind, names) in list(others.items())[:2]:
            if kind == RejectionKind.COMPLIANCE and "constraint #" not in why:
                why = why.split(" (", 1)[0]  # a named constraint: its name says it
            parts.append(f"{', '.join(names[:3])}{' and more' if len(names) > 3 else ''}: {why}")
        if len(parts) == 1:
            parts.append("no pools registered")
        return "; ".join(parts)

    def no_room_reason(self, entry: Pending, free: int, pool: str | None, gpu_type: str) -> str:
        """No in-service pool has enough of its GPUs free (before the policy engine is asked)."""
        spec = entry.spec
        if pool is None:
            where = f"no pool in service has {gpu_type}"
        else:
            total = self.capacity.views[pool].gpus.get(gpu_type, 0)
            where = f"{pool} has {free} of {total} {gpu_type} free, the most of any pool"
        raw = self.capacity.most_free(self.capacity.base, spec.gpu_types)
        if raw[0] > free and raw[1] is not None:
            held = self.capacity.claimed(raw[1], raw[2])
            where = f"{raw[1]} has {raw[0]} {raw[2]} free, {held} held for work ordered before it"
        text = f"needs {need(spec)}; {where}"
        quota = self.quota_note(entry, pool) if pool else None
        return f"{text}; {quota}" if quota else text

    def quota_note(self, entry: Pending, pool: str) -> str | None:
        """Capacity is checked first; say so too when the team's quota would stop it anyway."""
        spec = entry.spec
        if not self.quota.limited or not spec.gpu_count:
            return None
        verdicts = [self.quota.check(entry.team, self.locations[pool], t, spec.total_gpus) for t in spec.gpu_types]
        return verdicts[0].reason if verdicts and not any(v.allowed for v in verdicts) else None

    @staticmethod
    def infeasible(spec: WorkloadSpec, problems: list[str]) -> str:
        return f"needs {need(spec)}; it cannot run on any registered pool: {'; '.join(problems)}"

    @staticmethod
    def claim(pool: str, gpu_type: str, amount: int, shadow: float, now: float) -> str:
        when = "" if math.isinf(shadow) else f", expected to start in {max(0, shadow - now):.0f}s"
        if amount == 0:
            return f"next in line for {gpu_type} on {pool}{when}"
        return f"holds its claim on {pool} ({amount} {gpu_type} kept for it{when})"
