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
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferofabric.models.common import Health, Location
from inferofabric.models.expressions import Expression, compile_expression
from inferofabric.models.policy import Constraint, PlacementPolicy, Rule
from inferofabric.models.status import Decision, PoolView, Rejection, RejectionKind, WaitKind
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.budget import estimate, hourly_rate
from inferofabric.policies.reasons import Refusal, wait_kind_of
from inferofabric.policies.selectors import (
    ScreeningRule,
    in_target,
    matches,
    pool_variables,
    selector_predicate,
    workload_vars,
)

_matches, _selector_predicate = matches, selector_predicate  # their earlier names (tests/policy)

IN_SERVICE = (Health.HEALTHY, Health.DEGRADED)
# Back ends that launch a gang (`replicas: N`) as one job group: an Indexed Job on Kubernetes; one
# simulated job holding every replica's GPUs.
GANG_BACKENDS = ("kubernetes", "simulated")
_by_pool = operator.attrgetter("pool")
_TOO_SMALL = Refusal(RejectionKind.OTHER, "too small")  # `eligible`: no pool that could ever hold it


@dataclass
class PlacementRequest:
    workload_id: str
    attempt: int
    spec: WorkloadSpec
    pools: Sequence[PoolView]
    exclude: Mapping[str, str] = field(default_factory=dict)  # pool -> why (e.g. failed in attempt 1)
    failed_pool_health: Health | None = None  # set when re-placing off a pool that failed
    # Admission's quota and budget check: (pool, GPU type, count) -> why that type may not be taken
    # there (its kind and text), or None.
    admissible: Callable[[PoolView, str, int], Refusal | None] | None = None
    runtime_s: float | None = None  # what cost estimates assume (max_runtime_seconds or the policy's default)
    team_vars: Mapping[str, Any] | None = None  # `team.*` in conditions (budget_remaining)
    burst_denied: str | None = None  # an approver (or the approval's timeout) said no: why


@dataclass
class _Candidate:
    pool: PoolView
    gpu_type: str | None
    free: int
    price: float


def utilization(pools: Sequence[PoolView], location: Location) -> float:
    total = used = 0
    for pool in pools:
        if pool.location == location and pool.health in IN_SERVICE:
            total += pool.total_gpus
            used += pool.used_gpus
    return used / total if total else 1.0


_ON_PREM, _CLOUD = Location.ON_PREM, Location.CLOUD


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
        self._rules = [ScreeningRule(index, c, expression) for index, c, expression in self._constraints]
        self._default_target = frozenset(placement.default)
        self._approvals = {id(rule): (rule.approval, compile_expression(rule.approval.when, where="approval.when"))
                           for rule in (placement.burst, placement.failover)
                           if rule is not None and rule.approval is not None}
        texts = [c.when or "" for c in policy.constraints]
        texts += [r.when for r in (placement.burst, placement.failover) if r is not None]
        self._reads_estimate = any("estimated_cost" in t for t in texts)
        self._targets = {id(rule): (frozenset(rule.target), frozenset(rule.regions))
                         for rule in (placement.burst, placement.failover) if rule is not None}

    @staticmethod
    def _compile_rule(rule: Rule | None, where: str) -> tuple[Rule, Expression] | None:
        return (rule, compile_expression(rule.when, where=where)) if rule else None

    def decide(self, request: PlacementRequest) -> Decision:
        pools = list(request.pools)
        placement = self.policy.placement
        workload = workload_vars(request.spec, request.workload_id)
        runtime_s = request.runtime_s or self.policy.cost.default_runtime_seconds
        if self._reads_estimate:
            workload["estimated_cost"] = self._burst_estimate(pools, request.spec, runtime_s)
        on_prem, cloud, default_health = self._survey(pools)
        variables: dict[str, Any] = {
            "on_prem_utilization": on_prem,
            "cloud_utilization": cloud,
            "pool_health": (request.failed_pool_health or default_health).value,
            "attempt": request.attempt,
            "workload": workload,
            "team": dict(request.team_vars) if request.team_vars is not None else {"budget_remaining": math.inf},
        }
        inputs: dict[str, float | str] = {
            "on_prem_utilization": round(on_prem, 4),
            "pool_health": variables["pool_health"],
        }
        notes: list[str] = []

        eligible, rejected = self._screen(request, pools, variables, notes)
        by_name = {c.pool.name: c for c in eligible}

        default_target = self._default_target
        default_fit = [c for c in eligible if in_target(default_target, (), c.pool)]
        tiers: list[tuple[str, list[_Candidate], str]] = []
        failover_on = False
        if request.failed_pool_health is not None and self._failover is not None:
            rule, expression = self._failover
            failover_on, error = expression.evaluate(variables)
            if error:
                notes.append(f"failover condition: {error}")
            inputs["failover_condition"] = str(failover_on).lower()
            if failover_on:
                target, regions = self._targets[id(rule)]
                targets = [c for c in eligible if in_target(target, regions, c.pool)]
                tiers.append(("failover", targets,
                              f"failover: {rule.when} is true ({variables['pool_health']})"))
                tiers.append(("fallback", default_fit, "failover target has no allowed pool that fits; "
                              "stays with the default target"))
        denied = False  # the first tier is the default target because an approver said no to the burst
        if not failover_on:
            burst_on = False
            if self._burst is not None:
                rule, expression = self._burst
                burst_on, error = expression.evaluate(variables)
                if error:
                    notes.append(f"burst condition: {error}")
                inputs["burst_condition"] = str(burst_on).lower()
            if self._burst is not None and request.burst_denied and (burst_on or not default_fit):
                denied = True
                tiers.append(("default", default_fit, f"{request.burst_denied}; stays with the default target"))
            elif self._burst is not None and (burst_on or not default_fit):
                rule = self._burst[0]
                why = (f"burst: {rule.when} is true (on_prem_utilization={on_prem:.3f})" if burst_on
                       else "burst: no pool in the default target fits")
                target, regions = self._targets[id(rule)]
                targets = [c for c in eligible if in_target(target, regions, c.pool)]
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
            policy_version=self.version, gpus=request.spec.total_gpus,
        )
        for mode, candidates, why in tiers:
            if not candidates:
                continue
            ranked = sorted(candidates, key=self._rank_key(request.spec))
            chosen = ranked[0]
            decision.pool = chosen.pool.name
            decision.location = chosen.pool.location
            decision.region = chosen.pool.region
            decision.backend = chosen.pool.backend
            decision.gpu_type = chosen.gpu_type
            decision.price_per_hour = (None if math.isinf(chosen.price)
                                       else chosen.price * request.spec.total_gpus)
            decision.mode = mode
            decision.reason = (f"{why}; chose {chosen.pool.name}: "
                               f"{self._rank_reason(request.spec, chosen, ranked)}")
            decision.estimated_cost = round(estimate(hourly_rate(chosen.pool, chosen.gpu_type, request.spec),
                                                     runtime_s), 6)
            self._ask_approval(decision, mode, variables, workload, notes)
            for other in ranked[1:]:
                rejected.append(Rejection(pool=other.pool.name, reason=self._lower_rank_reason(chosen, other),
                                          kind=RejectionKind.RANKED_LOWER))
            break
        else:
            decision.mode = "wait"
            decision.reason = "waiting: " + "; ".join(why for _, _, why in tiers[:1]) + (
                "; no allowed pool fits now (queued until capacity or health changes)")

        placed = {decision.pool} | {r.pool for r in rejected}
        outside = None
        for name in by_name:
            if name not in placed:
                outside = outside or self._outside_tiers_reason(tiers)
                rejected.append(Rejection(pool=name, reason=outside, kind=RejectionKind.OUTSIDE_TARGET))
        if decision.mode == "wait":
            decision.wait_kind = WaitKind.APPROVAL_DENIED if denied else wait_kind_of(rejected)
        if notes:
            decision.reason += " [" + "; ".join(notes) + "]"
        decision.rejected = sorted(rejected, key=_by_pool)
        return decision

    def _ask_approval(self, decision: Decision, mode: str, variables: dict[str, Any], workload: dict[str, Any],
                      notes: list[str]) -> None:
        """Mark a burst that the rule's `approval.when` says a person must approve."""
        rule = self.policy.placement.burst if mode == "burst" else None
        found = self._approvals.get(id(rule)) if rule is not None else None
        if found is None:
            return
        approval, expression = found
        needed, error = expression.evaluate({**variables, "workload": {**workload,
                                                                     "estimated_cost": decision.estimated_cost}})
        if error:
            notes.append(f"approval condition: {error}")
        if needed:
            decision.approval = f"{approval.when} (timeout {approval.timeout}, then {approval.default})"

    @staticmethod
    def _burst_estimate(pools: Sequence[PoolView], spec: WorkloadSpec, runtime_s: float) -> float:
        """`workload.estimated_cost` in the burst condition: its cost on the cheapest cloud pool that
        offers its GPUs (0 when none does)."""
        rates = [hourly_rate(pool, t, spec) for pool in pools if pool.location == _CLOUD for t in spec.gpu_types
                 if pool.gpus.get(t, 0)]
        return round(estimate(min(rates), runtime_s), 6) if rates else 0.0

    def eligible(self, request: PlacementRequest) -> list[str]:
        """Pools the workload may use whatever their free capacity (health, exclusions, constraints,
        hints and GPU types hold): where admission keeps a claim for a workload that does not fit yet."""
        pools = list(request.pools)
        on_prem, cloud, default_health = self._survey(pools)
        variables: dict[str, Any] = {
            "on_prem_utilization": on_prem, "cloud_utilization": cloud,
            "pool_health": (request.failed_pool_health or default_health).value, "attempt": request.attempt,
            "workload": workload_vars(request.spec, request.workload_id),
        }
        gpu = request.spec.resources.gpu

        total = request.spec.total_gpus

        def holds(spec: WorkloadSpec, pool: PoolView, _: Any) -> tuple[_Candidate | None, Refusal | None]:
            if any(pool.gpus.get(t, 0) >= total for t in gpu.type) or total == 0:
                return _Candidate(pool, None, 0, 0.0), None
            return None, _TOO_SMALL

        eligible, _ = self._screen(request, pools, variables, [], fit=holds)
        return [c.pool.name for c in eligible]

    def _survey(self, pools: Sequence[PoolView]) -> tuple[float, float, Health]:
        """On-prem and cloud utilization (as `utilization(...)`) and the default target's health (healthy
        if any of its pools is, else degraded if any is, else unhealthy), in one pass over the pools."""
        on_prem_total = on_prem_used = cloud_total = cloud_used = 0
        default_target = self._default_target
        default_health = Health.UNHEALTHY
        for pool in pools:
            health = pool.health
            if health in IN_SERVICE:
                location = pool.location
                if location == _ON_PREM:
                    on_prem_total += sum(pool.gpus.values())
                    on_prem_used += sum(pool.used.values())
                elif location == _CLOUD:
                    cloud_total += sum(pool.gpus.values())
                    cloud_used += sum(pool.used.values())
                in_default = location in default_target or pool.name in default_target
                if in_default and default_health != Health.HEALTHY:
                    default_health = Health.HEALTHY if health == Health.HEALTHY else Health.DEGRADED
        return (on_prem_used / on_prem_total if on_prem_total else 1.0,
                cloud_used / cloud_total if cloud_total else 1.0, default_health)

    def _screen(
        self, request: PlacementRequest, pools: list[PoolView], variables: dict[str, Any], notes: list[str],
        fit: Callable[..., tuple[_Candidate | None, Refusal | None]] | None = None,
    ) -> tuple[list[_Candidate], list[Rejection]]:
        """Split pools into those allowed that fit, and rejections with the first reason that applies."""
        spec = request.spec
        active: list[ScreeningRule] = []
        per_pool: list[ScreeningRule] = []
        for rule in self._rules:
            expression = rule.expression
            if expression is None:
                active.append(rule)
            elif expression.reads_pool:
                per_pool.append(rule)
            else:
                applies, error = expression.evaluate(variables)
                if error:
                    notes.append(f"constraint #{rule.index + 1}: {error}")
                if applies:
                    active.append(rule)

        eligible: list[_Candidate] = []
        rejected: list[Rejection] = []
        hints = spec.placement
        exclude = request.exclude
        require_location = hints.require_location
        allowed_regions = hints.allowed_regions
        # Conditions that read pool.* are bound to this decision's variables once, then run per pool.
        bound = [(rule, rule.expression.bind(variables)) for rule in per_pool if rule.expression is not None]
        fit = fit or self._fit
        admissible = request.admissible
        for pool in pools:
            kind = RejectionKind.OTHER
            reason = exclude.get(pool.name) if exclude else None
            if reason is not None:
                kind = RejectionKind.EXCLUDED
            elif pool.health not in IN_SERVICE:
                kind, reason = RejectionKind.UNHEALTHY, f"pool is {pool.health.value}"
            elif require_location and pool.location != require_location:
                kind, reason = RejectionKind.LOCATION, f"workload requires location {require_location.value}"
            elif allowed_regions and pool.region not in allowed_regions:
                kind, reason = RejectionKind.REGION, f"region {pool.region} not in the workload's allowed regions"
            elif spec.replicas > 1 and pool.backend not in GANG_BACKENDS:
                kind, reason = RejectionKind.GANG, (f"a {pool.backend} pool cannot launch a gang of {spec.replicas} "
                                                    f"replicas ({', '.join(GANG_BACKENDS)} can)")
            else:
                # The first applicable constraint that keeps the pool out: those decided without the
                # pool first, then those whose condition reads pool.*, each in policy order.
                for rule in active:
                    if rule.rejects(pool):
                        kind, reason = RejectionKind.COMPLIANCE, rule.reason
                        break
                else:
                    pool_vars = None
                    for rule, condition in bound:
                        # The condition only matters where the selector would keep the pool out.
                        if rule.rejects(pool):
                            if pool_vars is None:
                                pool_vars = pool_variables(pool)
                            if condition(pool_vars):
                                kind, reason = RejectionKind.COMPLIANCE, rule.reason
                                break
                if reason is None:
                    candidate, refusal = fit(spec, pool, admissible)
                    if candidate is not None:
                        eligible.append(candidate)
                        continue
                    if refusal is not None:
                        kind, reason = refusal.kind, refusal.reason
            rejected.append(Rejection(pool=pool.name, reason=reason or "not eligible", kind=kind))
        return eligible, rejected

    @staticmethod
    def _fit(spec: WorkloadSpec, pool: PoolView,
             admissible: Callable[[PoolView, str, int], Refusal | None] | None = None,
             ) -> tuple[_Candidate | None, Refusal | None]:
        request = spec.resources.gpu
        count = request.count * spec.replicas  # a gang takes all its replicas' GPUs on this one pool
        if count == 0:
            return _Candidate(pool, None, 0, 0.0), None
        gpus, used, prices = pool.gpus, pool.used, pool.price_per_gpu_hour
        # Cheapest acceptable type that fits here; the workload's own order breaks ties.
        best: tuple[float, str, int] | None = None
        offered = False
        refused: Refusal | None = None
        for gpu_type in request.type:
            total = gpus.get(gpu_type, 0)
            if total <= 0:
                continue
            offered = True
            free = total - used.get(gpu_type, 0)
            if free >= count:
                if admissible is not None:
                    why = admissible(pool, gpu_type, count)
                    if why is not None:
                        refused = refused or why
                        continue
                price = prices.get(gpu_type, math.inf)
                if best is None or price < best[0]:
                    best = (price, gpu_type, free)
        if best is not None:
            return _Candidate(pool, best[1], best[2], best[0]), None
        if refused is not None:
            return None, refused
        if not offered:
            return None, Refusal(RejectionKind.NO_GPU_TYPE,
                                 f"has no {'/'.join(request.type)} GPUs (has {', '.join(pool.gpus) or 'none'})")
        offered_types = [t for t in dict.fromkeys(request.type) if gpus.get(t, 0) > 0]
        detail = ", ".join(f"{t}: {max(pool.free(t), 0)} of {gpus[t]} free" for t in offered_types)
        return None, Refusal(RejectionKind.CAPACITY, f"not enough free GPUs for {count} ({detail})")

    @staticmethod
    def _rank_key(spec: WorkloadSpec) -> Callable[[_Candidate], tuple[Any, ...]]:
        """Hinted pools first (prefer_pools in order, then preferred regions), then the lowest price
        per GPU-hour, then the most free GPUs of the chosen type, then the name."""
        hints = spec.placement
        prefer: dict[str, int] = {}
        for index, name in enumerate(hints.prefer_pools):
            prefer.setdefault(name, index)
        unhinted = len(hints.prefer_pools)
        regions = frozenset(hints.regions)

        def key(c: _Candidate) -> tuple[Any, ...]:
            pool = c.pool
            return (prefer.get(pool.name, unhinted), 0 if pool.region in regions else 1, c.price, -c.free,
                    pool.name)

        return key

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

    def _outside_tiers_reason(self, tiers: list[tuple[str, list[_Candidate], str]]) -> str:
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


EXAMPLE_POLICY_YAML = """\
placement:
  default: on-prem
  burst:
    when: on_prem_utilization > 0.85
    target: cloud
    regions: [us-east-1, eu-west-1]
  failover:
    when: pool_health != healthy
    target: cloud
constraints:
  - deny: {location: cloud}
    when: workload.data_classification == 'pii'
"""


def policy_document(version: int | None, policy: PlacementPolicy | None) -> dict[str, Any]:
    """What `fabric policy show` and the SDK's `policy()` return for the store's active policy."""
    return {"version": version, "default": policy is None,
            "policy": (policy or default_policy()).model_dump(mode="json", exclude_none=True)}


def default_policy() -> PlacementPolicy:
    """The policy used until one is set: the brief's example (EXAMPLE_POLICY_YAML), its constraint named."""
    policy = PlacementPolicy.from_yaml(EXAMPLE_POLICY_YAML)
    policy.constraints[0].name = "no-pii-in-cloud"
    return policy
