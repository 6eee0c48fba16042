"""Property tests: random fleets, workloads and policies against an independent oracle.

The oracle below re-derives, in plain Python, what the documented semantics allow: which pools a
workload may use (health, exclusions, its own hard constraints, the policy's constraints with
their conditions), which fit, and which tiers (default / burst / failover / fallback) apply. The
engine's choice must be allowed, fit, belong to the tier it claims and be the best-ranked pool
there; a "wait" must mean that no allowed pool fits in any tier. Conditions are drawn from a fixed
set whose meaning the oracle evaluates itself, so a wrong CEL result or a stale memo entry shows up
as a violation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inferofabric.models import Decision, Health, PlacementPolicy, PoolView, WorkloadSpec
from inferofabric.models.expressions import compile_expression
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest

from .helpers import assert_accounted

REGIONS = ["dc1", "dc2", "us-east-1", "eu-west-1", "ap-south-1"]
GPU_TYPES = ["A100", "H100", "L4"]
TEAMS = ["vision", "ads", "nlp"]
BACKENDS = ["simulated", "kubernetes", "aws-batch"]
IN_SERVICE = ("healthy", "degraded")

Vars = dict[str, Any]


def _label(labels: dict[str, str], key: str) -> str | None:
    return labels.get(key)


# condition text -> its meaning over (workload vars, pool vars or None, global vars)
WHEN: dict[str, Callable[[Vars, Vars | None, Vars], bool]] = {
    "workload.data_classification == 'pii'": lambda w, p, g: w["data_classification"] == "pii",
    "workload.team == 'ads'": lambda w, p, g: w["team"] == "ads",
    "workload.priority >= 500": lambda w, p, g: w["priority"] >= 500,
    "has(workload.labels.residency) && workload.labels.residency == 'eu'": lambda w, p, g: (
        _label(w["labels"], "residency") == "eu"
    ),
    "workload.labels.export == 'itar'": lambda w, p, g: _label(w["labels"], "export") == "itar",
    # A missing label is an evaluation error: the condition counts as false, whatever the operator.
    "workload.labels.export != 'ok'": lambda w, p, g: (
        "export" in w["labels"] and w["labels"]["export"] != "ok"
    ),
    "workload.gpus >= 4": lambda w, p, g: w["gpus"] >= 4,
    "'H100' in workload.gpu_types": lambda w, p, g: "H100" in w["gpu_types"],
    "workload.gpu_types.exists(t, t == 'L4')": lambda w, p, g: "L4" in w["gpu_types"],
    "on_prem_utilization > 0.5": lambda w, p, g: g["on_prem_utilization"] > 0.5,
    "has(pool.labels.owner) && pool.labels.owner != workload.team": lambda w, p, g: (
        p is not None and "owner" in p["labels"] and p["labels"]["owner"] != w["team"]
    ),
    "pool.region.startsWith('ap-') && workload.data_classification != 'public'": lambda w, p, g: (
        p is not None and p["region"].startswith("ap-") and w["data_classification"] != "public"
    ),
    "pool.labels.tier == 'spot'": lambda w, p, g: p is not None and p["labels"].get("tier") == "spot",
    "pool.health == degraded": lambda w, p, g: p is not None and p["health"] == "degraded",
}
BURST_WHEN: dict[str, Callable[[Vars, Vars | None, Vars], bool]] = {
    "on_prem_utilization > 0.85": lambda w, p, g: g["on_prem_utilization"] > 0.85,
    "true": lambda w, p, g: True,
    "false": lambda w, p, g: False,
    "workload.priority < 100": lambda w, p, g: w["priority"] < 100,
    "cloud_utilization < 0.5": lambda w, p, g: g["cloud_utilization"] < 0.5,
    "workload.labels.burst == 'yes'": lambda w, p, g: w["labels"].get("burst") == "yes",
}
FAILOVER_WHEN: dict[str, Callable[[Vars, Vars | None, Vars], bool]] = {
    "pool_health != healthy": lambda w, p, g: g["pool_health"] != "healthy",
    "pool_health == unhealthy": lambda w, p, g: g["pool_health"] == "unhealthy",
    "true": lambda w, p, g: True,
    "false": lambda w, p, g: False,
}
ALL_WHEN = {**WHEN, **BURST_WHEN, **FAILOVER_WHEN}


# -- strategies ------------------------------------------------------------------------------------------


def subsets(values: list[str], max_size: int | None = None) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), unique=True, max_size=max_size or len(values))


@st.composite
def pools_strategy(draw: st.DrawFn) -> list[PoolView]:
    count = draw(st.integers(min_value=1, max_value=8))
    pools = []
    for index in range(count):
        location = draw(st.sampled_from(["on-prem", "cloud"]))
        types = draw(st.lists(st.sampled_from(GPU_TYPES), unique=True, min_size=1, max_size=2))
        gpus = {t: draw(st.sampled_from([8, 16, 2, 8, 0])) for t in types}
        # Mostly room to spare, sometimes full, now and then over-committed (capacity shrank).
        used = {t: min(draw(st.sampled_from([0, 1, 4, 0, n, n + 1])), n + 1) for t, n in gpus.items()}
        price = {t: draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])) for t in types if draw(st.booleans())}
        labels = {}
        if draw(st.booleans()):
            labels["tier"] = draw(st.sampled_from(["spot", "ondemand"]))
        if draw(st.booleans()):
            labels["owner"] = draw(st.sampled_from(TEAMS))
        pools.append(
            PoolView(
                name=f"{'op' if location == 'on-prem' else 'cl'}-{index}",
                location=location,
                region=draw(st.sampled_from(REGIONS)),
                backend=draw(st.sampled_from(BACKENDS)),
                gpus=gpus,
                used=used,
                price_per_gpu_hour=price,
                labels=labels,
                health=draw(st.sampled_from(["healthy"] * 5 + ["degraded", "unhealthy", "cordoned"])),
            )
        )
    return pools


@st.composite
def workload_strategy(draw: st.DrawFn, names: list[str]) -> WorkloadSpec:
    types = draw(st.lists(st.sampled_from(GPU_TYPES), unique=True, min_size=1, max_size=3))
    labels = {}
    for key, values in (("residency", ["eu", "us"]), ("export", ["itar", "ok"]), ("burst", ["yes", "no"])):
        if draw(st.booleans()):
            labels[key] = draw(st.sampled_from(values))
    placement: dict[str, Any] = {
        "prefer_pools": draw(subsets([*names, "no-such-pool"], 2)),
        "regions": draw(subsets(REGIONS, 2)),
        "require_location": draw(st.sampled_from([None] * 6 + ["on-prem", "cloud"])),
        "allowed_regions": draw(st.sampled_from([[]] * 6 + [REGIONS[:3], REGIONS[2:]])),
    }
    return WorkloadSpec.model_validate(
        {
            "name": "w-1",
            "team": draw(st.sampled_from(TEAMS)),
            "image": "ghcr.io/acme/x:1",
            "resources": {"gpu": {"type": types, "count": draw(st.sampled_from([1, 1, 2, 1, 4, 0, 1, 8]))}},
            "data_classification": draw(st.sampled_from(["public", "internal", "confidential", "pii"])),
            "priority": draw(st.sampled_from([10, 50, 500, 900])),
            "labels": labels,
            "placement": placement,
        }
    )


@st.composite
def selector_strategy(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    for field, values in (
        ("location", ["on-prem", "cloud"]),
        ("regions", REGIONS),
        ("pools", names),
        ("backends", BACKENDS),
        ("labels", None),
    ):
        if draw(st.integers(0, 3)) != 0:
            continue
        if field == "location":
            selector[field] = draw(st.sampled_from(values))  # type: ignore[arg-type]
        elif field == "labels":
            selector[field] = {"tier": draw(st.sampled_from(["spot", "ondemand"]))}
        else:
            selector[field] = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))  # type: ignore[arg-type]
    return selector


@st.composite
def policy_strategy(draw: st.DrawFn, names: list[str]) -> PlacementPolicy:
    placement: dict[str, Any] = {
        "default": draw(
            st.sampled_from([["on-prem"], ["on-prem", "cloud"], ["on-prem"], ["cloud"], names[:1]])
        )
    }
    if draw(st.integers(0, 4)) != 0:
        placement["burst"] = {
            "when": draw(st.sampled_from(sorted(BURST_WHEN))),
            "target": draw(st.sampled_from([["cloud"], ["cloud"], ["on-prem"], names[-1:]])),
            "regions": draw(subsets(REGIONS, 3)),
        }
    if draw(st.booleans()):
        placement["failover"] = {
            "when": draw(st.sampled_from(sorted(FAILOVER_WHEN))),
            "target": draw(st.sampled_from([["cloud"], ["on-prem", "cloud"]])),
            "regions": draw(subsets(REGIONS, 2)),
        }
    constraints = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        constraint: dict[str, Any] = {
            draw(st.sampled_from(["deny", "deny", "deny", "require"])): draw(selector_strategy(names))
        }
        # Conditions over pool.* twice as likely: they take the per-pool path through the engine.
        when = draw(st.sampled_from([None, *sorted(WHEN), *sorted(t for t in WHEN if "pool." in t)]))
        if when:
            constraint["when"] = when
        constraints.append(constraint)
    return PlacementPolicy.model_validate({"placement": placement, "constraints": constraints})


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[PlacementPolicy, PlacementRequest]:
    pools = draw(pools_strategy())
    names = [p.name for p in pools]
    spec = draw(workload_strategy(names))
    policy = draw(policy_strategy(names))
    exclude = {name: "failed during attempt 1" for name in draw(subsets(names, 1))}
    failed = draw(st.sampled_from([None, None, *Health])) if exclude or draw(st.booleans()) else None
    request = PlacementRequest(
        workload_id="w-1",
        attempt=2 if failed else 1,
        spec=spec,
        pools=pools,
        exclude=exclude,
        failed_pool_health=failed,
    )
    return policy, request


# -- the oracle ---------------------------------------------------------------------------------------------


def matches(selector: Any, pool: PoolView) -> bool:
    return (
        (selector.location is None or pool.location.value == selector.location.value)
        and (not selector.regions or pool.region in selector.regions)
        and (not selector.pools or pool.name in selector.pools)
        and (not selector.backends or pool.backend in selector.backends)
        and all(pool.labels.get(k) == v for k, v in selector.labels.items())
    )


def in_target(target: list[str], regions: list[str], pool: PoolView) -> bool:
    return (pool.location.value in target or pool.name in target) and (not regions or pool.region in regions)


@dataclass
class Oracle:
    policy: PlacementPolicy
    request: PlacementRequest

    def __post_init__(self) -> None:
        spec = self.request.spec
        self.workload: Vars = {
            "team": spec.team,
            "data_classification": spec.data_classification.value,
            "priority": spec.priority,
            "labels": dict(spec.labels),
            "gpus": spec.gpu_count,
            "gpu_types": list(spec.gpu_types),
        }
        self.globals: Vars = {
            "on_prem_utilization": self._utilization("on-prem"),
            "cloud_utilization": self._utilization("cloud"),
            "pool_health": (self.request.failed_pool_health or self._default_health()).value,
        }

    def _utilization(self, location: str) -> float:
        serving = [
            p for p in self.request.pools if p.location.value == location and p.health.value in IN_SERVICE
        ]
        total = sum(n for p in serving for n in p.gpus.values())
        return sum(n for p in serving for n in p.used.values()) / total if total else 1.0

    def _default_health(self) -> Health:
        healths = {p.health for p in self.request.pools if in_target(self.policy.placement.default, [], p)}
        for health in (Health.HEALTHY, Health.DEGRADED):
            if health in healths:
                return health
        return Health.UNHEALTHY

    def condition(self, text: str | None, pool: PoolView | None = None) -> bool:
        if text is None:
            return True
        pool_vars = (
            None
            if pool is None
            else {
                "region": pool.region,
                "labels": pool.labels,
                "health": pool.health.value,
                "name": pool.name,
            }
        )
        return ALL_WHEN[text](self.workload, pool_vars, self.globals)

    def allowed(self, pool: PoolView) -> bool:
        hints = self.request.spec.placement
        if pool.name in self.request.exclude or pool.health.value not in IN_SERVICE:
            return False
        if hints.require_location is not None and pool.location != hints.require_location:
            return False
        if hints.allowed_regions and pool.region not in hints.allowed_regions:
            return False
        for constraint in self.policy.constraints:
            if not self.condition(constraint.when, pool):
                continue
            if constraint.deny is not None and matches(constraint.deny, pool):
                return False
            if constraint.require is not None and not matches(constraint.require, pool):
                return False
        return True

    def fitting_types(self, pool: PoolView) -> list[str]:
        count = self.request.spec.gpu_count
        return [
            t
            for t in self.request.spec.gpu_types
            if pool.gpus.get(t, 0) > 0 and pool.gpus[t] - pool.used.get(t, 0) >= count
        ]

    def fits(self, pool: PoolView) -> bool:
        return self.request.spec.gpu_count == 0 or bool(self.fitting_types(pool))

    def usable(self, target: list[str], regions: list[str]) -> list[PoolView]:
        return [
            p
            for p in self.request.pools
            if in_target(target, regions, p) and self.allowed(p) and self.fits(p)
        ]

    def tiers(self) -> list[tuple[str, list[PoolView]]]:
        placement = self.policy.placement
        default = self.usable(placement.default, [])
        failover = placement.failover
        if (
            self.request.failed_pool_health is not None
            and failover is not None
            and self.condition(failover.when)
        ):
            return [("failover", self.usable(failover.target, failover.regions)), ("fallback", default)]
        burst = placement.burst
        if burst is not None and (self.condition(burst.when) or not default):
            return [("burst", self.usable(burst.target, burst.regions)), ("fallback", default)]
        return [("default", default)]

    def rank(self, pool: PoolView) -> tuple[Any, ...]:
        spec = self.request.spec
        prefer = spec.placement.prefer_pools
        if spec.gpu_count == 0:
            price, free = 0.0, 0
        else:
            fitting = self.fitting_types(pool)
            price = min(pool.price_per_gpu_hour.get(t, math.inf) for t in fitting)
            gpu_type = next(t for t in fitting if pool.price_per_gpu_hour.get(t, math.inf) == price)
            free = pool.gpus[gpu_type] - pool.used.get(gpu_type, 0)
        return (
            prefer.index(pool.name) if pool.name in prefer else len(prefer),
            0 if pool.region in spec.placement.regions else 1,
            price,
            -free,
            pool.name,
        )


def decide(
    policy: CompiledPolicy, request: PlacementRequest, pools: list[PoolView] | None = None
) -> Decision:
    if pools is not None:
        request = PlacementRequest(
            workload_id=request.workload_id,
            attempt=request.attempt,
            spec=request.spec,
            pools=pools,
            exclude=request.exclude,
            failed_pool_health=request.failed_pool_health,
        )
    return policy.decide(request)


# No example database: it would be a .hypothesis/ folder in the shared working tree; a failure prints
# its falsifying example (and a @reproduce_failure line) anyway.
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(scenarios())
def test_decisions_follow_the_documented_semantics(
    scenario: tuple[PlacementPolicy, PlacementRequest],
) -> None:
    document, request = scenario
    decision = decide(CompiledPolicy(document, 1), request)
    assert_accounted(decision, list(request.pools))
    oracle = Oracle(document, request)
    tiers = oracle.tiers()
    event(f"mode: {decision.mode}")
    assert decision.inputs["on_prem_utilization"] == round(oracle.globals["on_prem_utilization"], 4)

    if decision.pool is None:
        # Wait: nothing allowed fits in any tier that applies, nor in the default target.
        assert decision.mode == "wait"
        assert all(not candidates for _, candidates in tiers), (tiers, decision)
        assert not oracle.usable(document.placement.default, [])
        return

    chosen = next(p for p in request.pools if p.name == decision.pool)
    spec = request.spec
    # Never against a constraint, never on an unusable, excluded or full pool.
    assert chosen.health.value in IN_SERVICE and chosen.name not in request.exclude
    assert oracle.allowed(chosen), decision
    assert oracle.fits(chosen)
    if spec.gpu_count:
        assert decision.gpu_type in spec.gpu_types
        assert chosen.gpus[decision.gpu_type] - chosen.used.get(decision.gpu_type, 0) >= spec.gpu_count
        assert decision.gpu_type in oracle.fitting_types(chosen)
    else:
        assert decision.gpu_type is None
    assert decision.location == chosen.location and decision.region == chosen.region

    # It is in the first tier that has a usable pool, and the best-ranked pool there.
    mode, candidates = next((mode, c) for mode, c in tiers if c)
    assert decision.mode == mode, (tiers, decision)
    assert chosen in candidates
    assert oracle.rank(chosen) == min(oracle.rank(p) for p in candidates)


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False), st.booleans())
def test_decisions_are_deterministic(
    scenario: tuple[PlacementPolicy, PlacementRequest], rng: random.Random, recompile: bool
) -> None:
    document, request = scenario
    policy = CompiledPolicy(document, 1)
    first = decide(policy, request)
    assert decide(policy, request) == first
    shuffled = list(request.pools)
    rng.shuffle(shuffled)
    assert decide(policy, request, shuffled) == first
    if recompile:
        # Fresh expressions with empty memos give the same decision as the warm ones.
        compile_expression.cache_clear()
        assert decide(CompiledPolicy(document, 1), request) == first
