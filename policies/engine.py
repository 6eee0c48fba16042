"""The placement decision: a pure function of (policy, workload, pools' capacity and health).

Semantics (README "Policy reference"):
- `on_prem_utilization` is the share of in-service (healthy or degraded) on-prem GPUs in use or
  reserved at the moment of the decision, before the workload being placed (1.0 when there are none).
- A workload goes to the default target when a pool there fits it and the burst condition is
  false. It bursts to the burst target's pools (in the listed regions) when the condition is true
  or nothing in the default target fits.
- When a workload is re-placed because its pool failed, the failover rule is evaluated with
  `pool_health` = the failed pool's health; when true it moves to the failover target.
- Compliance constraints apply to every decision. Work they keep out of the burst/failover target
  stays with the default target when a pool there fits, else it waits: it is never placed against
  its constraints.
- Among allowed pools: hinted pools first (prefer_pools, then preferred regions), then the lowest
  price per GPU-hour, then the most free GPUs of the chosen type, then the name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferofabric.models.common import Health, Location
from inferofabric.models.policy import Constraint, PlacementPolicy, PoolSelector, Rule
from inferofabric.models.status import Decision, PoolView, Rejection
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.expressions import Expression, compile_expression

IN_SERVICE = (Health.HEALTHY, Health.DEGRADED)


@dataclass
class PlacementRequest:
    workload_id: str
    attempt: int
    spec: WorkloadSpec
    pools: Sequence[PoolView]
    exclude: Mapping[str, str] = field(default_factory=dict)  # pool -> why (e.g. failed in attempt 1)
    failed_pool_health: Health | None = None  # set when re-placing off a pool that failed


@dataclass
class _Candidate:
    pool: PoolView
    gpu_type: str | None
    free: int
    price: float


def _matches(selector: PoolSelector, pool: PoolView) -> bool:
    if selector.location is not None and pool.location != selector.location:
        return False
    if selector.regions and pool.region not in selector.regions:
        return False
    if selector.pools and pool.name not in selector.pools:
        return False
    if selector.backends and pool.backend not in selector.backends:
        return False
    return all(pool.labels.get(key) == value for key, value in selector.labels.items())


def _in_target(target: Sequence[str], regions: Sequence[str], pool: PoolView) -> bool:
    """A target names locations (`on-prem`, `cloud`) or pools; `regions` narrows it."""
    if pool.location.value not in target and pool.name not in target:
        return False
    return not regions or pool.region in regions


def _workload_vars(spec: WorkloadSpec, workload_id: str) -> dict[str, Any]:
    return {
        "id": workload_id,
        "name": spec.name or workload_id,
        "team": spec.team,
        "project": spec.project,
        "image": spec.image,
        "data_classification": spec.data_classification.value,
        "priority": spec.priority,
        "labels": dict(spec.labels),
        "annotations": dict(spec.annotations),
        "gpu_types": list(spec.gpu_types),
        "gpus": spec.gpu_count,
    }


def _pool_vars(pool: PoolView) -> dict[str, Any]:
    return {
        "name": pool.name,
        "location": pool.location.value,
        "region": pool.region,
        "backend": pool.backend,
        "labels": dict(pool.labels),
        "health": pool.health.value,
    }


def utilization(pools: Sequence[PoolView], location: Location) -> float:
    total = used = 0
    for pool in pools:
        if pool.location == location and pool.health in IN_SERVICE:
            total += pool.total_gpus
            used += pool.used_gpus
    return used / total if total else 1.0


class CompiledPolicy:
    """A policy with its conditions compiled once; `decide` is called for every placement."""

    def __init__(self, policy: PlacementPolicy, version: int | None = None) -> None:
        self.policy = policy
        self.version = version
        placement = policy.placement
        self._burst = self._compile_rule(placement.burst, "placement.burst.when")
        self._failover = self._compile_rule(placement.failover, "placement.failover.when")
        self._constraints: list[tuple[int, Constraint, Expression | None]] = [
            (index, c, compile_expression(c.when, where=f"constraints[{index}].when") if c.when else None)
            for index, c in enumerate(policy.constraints)
        ]

    @staticmethod
    def _compile_rule(rule: Rule | None, where: str) -> tuple[Rule, Expression] | None:
        return (rule, compile_expression(rule.when, where=where)) if rule else None

    def decide(self, request: PlacementRequest) -> Decision:
        pools = list(request.pools)
        placement = self.policy.placement
        workload = _workload_vars(request.spec, request.workload_id)
        on_prem = utilization(pools, Location.ON_PREM)
        default_health = self._default_health(pools)
        variables: dict[str, Any] = {
            "on_prem_utilization": on_prem,
            "cloud_utilization": utilization(pools, Location.CLOUD),
            "pool_health": (request.failed_pool_health or default_health).value,
            "attempt": request.attempt,
            "workload": workload,
        }
        inputs: dict[str, float | str] = {
            "on_prem_utilization": round(on_prem, 4),
            "pool_health": variables["pool_health"],
        }
        notes: list[str] = []

        eligible, rejected = self._screen(request, pools, variables, notes)
        by_name = {c.pool.name: c for c in eligible}

        default_fit = [c for c in eligible if _in_target(placement.default, (), c.pool)]
        tiers: list[tuple[str, list[_Candidate], str]] = []
        failover_on = False
        if request.failed_pool_health is not None and self._failover is not None:
            rule, expression = self._failover
            failover_on, error = expression.evaluate(variables)
            if error:
                notes.append(f"failover condition: {error}")
            inputs["failover_condition"] = str(failover_on).lower()
            if failover_on:
                targets = [c for c in eligible if _in_target(rule.target, rule.regions, c.pool)]
                tiers.append(("failover", targets, f"failover: {rule.when} is true ({variables['pool_health']})"))
                tiers.append(("fallback", default_fit, "failover target has no allowed pool that fits; "
                              "stays with the default target"))
        if not failover_on:
            burst_on = False
            if self._burst is not None:
                rule, expression = self._burst
                burst_on, error = expression.evaluate(variables)
                if error:
                    notes.append(f"burst condition: {error}")
                inputs["burst_condition"] = str(burst_on).lower()
            if self._burst is not None and (burst_on or not default_fit):
                rule = self._burst[0]
                why = (f"burst: {rule.when} is true (on_prem_utilization={on_prem:.3f})" if burst_on
                       else "burst: no pool in the default target fits")
                targets = [c for c in eligible if _in_target(rule.target, rule.regions, c.pool)]
                tiers.append(("burst", targets, why))
                tiers.append(("fallback", default_fit, "burst target has no allowed pool that fits; "
                              "stays with the default target, which has room"))
            else:
                tiers.append(("default", default_fit, (
                    f"default target {', '.join(placement.default)}"
                    + (f"; burst condition {self._burst[0].when} is false (on_prem_utilization={on_prem:.3f})"
                       if self._burst else ""))))

        decision = Decision(
            workload_id=request.workload_id, attempt=request.attempt, inputs=inputs,
            policy_version=self.version, gpus=request.spec.gpu_count,
        )
        for mode, candidates, why in tiers:
            if not candidates:
                continue
            ranked = sorted(candidates, key=lambda c: self._rank_key(request.spec, c))
            chosen = ranked[0]
            decision.pool = chosen.pool.name
            decision.location = chosen.pool.location
            decision.region = chosen.pool.region
            decision.backend = chosen.pool.backend
            decision.gpu_type = chosen.gpu_type
            decision.price_per_hour = None if math.isinf(chosen.price) else chosen.price * request.spec.gpu_count
            decision.mode = mode
            decision.reason = f"{why}; chose {chosen.pool.name}: {self._rank_reason(request.spec, chosen, ranked)}"
            for other in ranked[1:]:
                rejected.append(Rejection(pool=other.pool.name, reason=self._lower_rank_reason(chosen, other)))
            break
        else:
            decision.mode = "wait"
            decision.reason = "waiting: " + "; ".join(why for _, _, why in tiers[:1]) + (
                "; no allowed pool fits now (queued until capacity or health changes)")

        placed = {decision.pool} | {r.pool for r in rejected}
        for name, candidate in by_name.items():
            if name not in placed:
                rejected.append(Rejection(pool=name, reason=self._outside_tiers_reason(candidate, tiers)))
        if notes:
            decision.reason += " [" + "; ".join(notes) + "]"
        decision.rejected = sorted(rejected, key=lambda r: r.pool)
        return decision

    def _default_health(self, pools: Sequence[PoolView]) -> Health:
        targets = [p for p in pools if _in_target(self.policy.placement.default, (), p)]
        if any(p.health == Health.HEALTHY for p in targets):
            return Health.HEALTHY
        if any(p.health == Health.DEGRADED for p in targets):
            return Health.DEGRADED
        return Health.UNHEALTHY

    def _screen(
        self, request: PlacementRequest, pools: list[PoolView], variables: dict[str, Any], notes: list[str]
    ) -> tuple[list[_Candidate], list[Rejection]]:
        """Split pools into those allowed that fit, and rejections with the first reason that applies."""
        spec = request.spec
        active: list[tuple[int, Constraint, Expression | None]] = []
        per_pool: list[tuple[int, Constraint, Expression]] = []
        for index, constraint, expression in self._constraints:
            if expression is None:
                active.append((index, constraint, None))
            elif expression.reads_pool:
                per_pool.append((index, constraint, expression))
            else:
                applies, error = expression.evaluate(variables)
                if error:
                    notes.append(f"constraint #{index + 1}: {error}")
                if applies:
                    active.append((index, constraint, expression))

        eligible: list[_Candidate] = []
        rejected: list[Rejection] = []
        hints = spec.placement
        for pool in pools:
            reason = request.exclude.get(pool.name)
            if reason is None and pool.health not in IN_SERVICE:
                reason = f"pool is {pool.health.value}"
            if reason is None and hints.require_location and pool.location != hints.require_location:
                reason = f"workload requires location {hints.require_location.value}"
            if reason is None and hints.allowed_regions and pool.region not in hints.allowed_regions:
                reason = f"region {pool.region} not in the workload's allowed regions"
            if reason is None:
                reason = self._constraint_rejection(active, per_pool, variables, pool)
            candidate = None
            if reason is None:
                candidate, reason = self._fit(spec, pool)
            if candidate is not None:
                eligible.append(candidate)
            else:
                rejected.append(Rejection(pool=pool.name, reason=reason or "not eligible"))
        return eligible, rejected

    @staticmethod
    def _constraint_rejection(
        active: list[tuple[int, Constraint, Expression | None]],
        per_pool: list[tuple[int, Constraint, Expression]],
        variables: dict[str, Any],
        pool: PoolView,
    ) -> str | None:
        applicable = list(active)
        if per_pool:
            scoped = {**variables, "pool": _pool_vars(pool)}
            applicable += [(i, c, e) for i, c, e in per_pool if e.evaluate(scoped)[0]]
        for index, constraint, _ in applicable:
            if constraint.deny is not None and _matches(constraint.deny, pool):
                return f"denied by {constraint.describe(index)}"
            if constraint.require is not None and not _matches(constraint.require, pool):
                return f"not allowed by {constraint.describe(index)}"
        return None

    @staticmethod
    def _fit(spec: WorkloadSpec, pool: PoolView) -> tuple[_Candidate | None, str | None]:
        if spec.gpu_count == 0:
            return _Candidate(pool, None, 0, 0.0), None
        offered = [t for t in spec.gpu_types if pool.gpus.get(t, 0) > 0]
        if not offered:
            return None, f"has no {'/'.join(spec.gpu_types)} GPUs (has {', '.join(pool.gpus) or 'none'})"
        fitting = [t for t in offered if pool.free(t) >= spec.gpu_count]
        if not fitting:
            detail = ", ".join(f"{t}: {max(pool.free(t), 0)} of {pool.gpus[t]} free" for t in offered)
            return None, f"not enough free GPUs for {spec.gpu_count} ({detail})"
        # Cheapest acceptable type here; the workload's own order breaks ties.
        gpu_type = min(fitting, key=lambda t: (pool.price_per_gpu_hour.get(t, math.inf), spec.gpu_types.index(t)))
        price = pool.price_per_gpu_hour.get(gpu_type, math.inf)
        return _Candidate(pool, gpu_type, pool.free(gpu_type), price), None

    @staticmethod
    def _rank_key(spec: WorkloadSpec, c: _Candidate) -> tuple[Any, ...]:
        prefer = spec.placement.prefer_pools
        hinted = prefer.index(c.pool.name) if c.pool.name in prefer else len(prefer)
        region_hint = 0 if c.pool.region in spec.placement.regions else 1
        return (hinted, region_hint, c.price, -c.free, c.pool.name)

    @staticmethod
    def _describe(c: _Candidate) -> str:
        price = "no price" if math.isinf(c.price) else f"${c.price:.2f}/GPU-h"
        gpu = f"{c.gpu_type}, {c.free} free" if c.gpu_type else "no GPUs needed"
        return f"{gpu}, {price}, region {c.pool.region}"

    def _rank_reason(self, spec: WorkloadSpec, chosen: _Candidate, ranked: list[_Candidate]) -> str:
        text = self._describe(chosen)
        if chosen.pool.name in spec.placement.prefer_pools:
            return f"{text} (preferred by the workload)"
        if chosen.pool.region in spec.placement.regions:
            return f"{text} (in a preferred region)"
        if len(ranked) == 1:
            return f"{text} (the only allowed pool that fits)"
        return f"{text} (lowest price, then most free GPUs, of {len(ranked)} allowed pools)"

    def _lower_rank_reason(self, chosen: _Candidate, other: _Candidate) -> str:
        return f"allowed and fits ({self._describe(other)}) but ranked below {chosen.pool.name}"

    def _outside_tiers_reason(self, candidate: _Candidate, tiers: list[tuple[str, list[_Candidate], str]]) -> str:
        used = [mode for mode, candidates, _ in tiers if candidates]
        first = used[0] if used else (tiers[0][0] if tiers else "default")
        placement = self.policy.placement
        if first == "default":
            return (f"fits, but not in the default target ({', '.join(placement.default)}) "
                    "and the burst condition is false")
        if first == "burst" and placement.burst:
            regions = f" in regions {', '.join(placement.burst.regions)}" if placement.burst.regions else ""
            return f"fits, but not in the burst target ({', '.join(placement.burst.target)}{regions})"
        if first == "failover" and placement.failover:
            return f"fits, but not in the failover target ({', '.join(placement.failover.target)})"
        return "fits, but the default target was preferred"


def default_policy() -> PlacementPolicy:
    """The policy used until one is set: the brief's example, with no pii in the cloud."""
    return PlacementPolicy.model_validate(
        {
            "placement": {
                "default": "on-prem",
                "burst": {"when": "on_prem_utilization > 0.85", "target": "cloud",
                          "regions": ["us-east-1", "eu-west-1"]},
                "failover": {"when": "pool_health != healthy", "target": "cloud"},
            },
            "constraints": [
                {"name": "no-pii-in-cloud", "deny": {"location": "cloud"},
                 "when": "workload.data_classification == 'pii'"},
            ],
        }
    )
