"""Random admission scenarios: fleets, running and waiting work, policies with classes, quotas,
budgets, constraints, bursts and approvals. One seed, one scenario (the same on every run)."""

from __future__ import annotations

import random
from typing import Any

from inferofabric.models.common import Health
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.status import PoolView
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.admission import CycleInput, CyclePlan, Held, Pending, resolve_class
from inferofabric.policies.budget import BudgetState
from inferofabric.policies.engine import CompiledPolicy

TEAMS = ["vision", "nlp", "ads"]
CLASSES = {"production": 1000, "research": 100, "batch": 10}


def _policy(rng: random.Random) -> CompiledPolicy:
    placement: dict[str, Any] = {"default": "on-prem"}
    if rng.random() < 0.7:
        burst: dict[str, Any] = {"when": rng.choice(["on_prem_utilization > 0.85", "true", "false",
                                                     "workload.priority < 100"]), "target": "cloud"}
        if rng.random() < 0.3:
            burst["approval"] = {"when": rng.choice(["workload.estimated_cost > 10", "true"]),
                                 "timeout": "1h", "default": rng.choice(["deny", "approve"])}
        placement["burst"] = burst
    if rng.random() < 0.4:
        placement["failover"] = {"when": "pool_health != healthy", "target": "cloud"}
    constraints: list[dict[str, Any]] = []
    if rng.random() < 0.7:
        pii: dict[str, Any] = {"deny": {"location": "cloud"}, "when": "workload.data_classification == 'pii'"}
        if rng.random() < 0.5:
            pii["name"] = "no-pii-in-cloud"
        constraints.append(pii)
    if rng.random() < 0.3:
        constraints.append({"require": {"location": "on-prem"}, "when": "workload.team == 'ads'"})
    if rng.random() < 0.2:
        constraints.append({"name": "no-spot", "deny": {"labels": {"tier": "spot"}}})
    research = rng.choice(["never", "reclaim_borrowed", "never"])
    classes = [{"name": "production", "value": 1000, "preemption": rng.choice(["lower_priority", "never"])},
               {"name": "research", "value": 100, "preemption": research, "default": True},
               {"name": "batch", "value": 10, "preemption": "never"}]
    teams: dict[str, Any] = {}
    cohort = rng.random() < 0.7
    for team in TEAMS:
        entry: dict[str, Any] = {"weight": rng.choice([1, 2, 3])}
        if rng.random() < 0.6:
            limit: dict[str, Any] = {"nominal": rng.choice([0, 2, 4, 8])}
            if rng.random() < 0.5:
                limit["borrowing_limit"] = rng.choice([0, 2, 4])
            if rng.random() < 0.5:
                limit["lending_limit"] = min(limit["nominal"], rng.choice([0, 1, 4]))
            entry["quota"] = {rng.choice(["A100", "H100"]): limit}
            if cohort:
                entry["cohort"] = "ml"
        if rng.random() < 0.3:
            entry["budget"] = {"cloud": {"monthly": rng.choice([5, 50, 500])}}
        teams[team] = entry
    document = {"placement": placement, "constraints": constraints, "priority_classes": classes,
                "teams": teams, "fair_share": {"half_life": "1h"}, "cost": {"default_runtime": "2h"}}
    return CompiledPolicy(PlacementPolicy.model_validate(document))


def _pools(rng: random.Random) -> list[PoolView]:
    pools = []
    for index in range(rng.randint(1, 5)):
        location = "on-prem" if index == 0 or rng.random() < 0.5 else "cloud"
        types = rng.choice([["A100"], ["H100"], ["A100", "H100"]])
        health = rng.choices(list(Health), weights=[8, 2, 1, 1])[0]
        pools.append(PoolView(
            name=f"p{index}", location=location, region=rng.choice(["dc1", "us-east-1", "eu-west-1"]),
            backend=rng.choice(["simulated", "simulated", "kubernetes", "aws-batch"]),
            gpus={t: rng.choice([2, 4, 8, 16]) for t in types},
            price_per_gpu_hour={t: rng.choice([0.0, 2.0, 4.0]) for t in types},
            labels={"tier": "spot"} if rng.random() < 0.15 else {}, health=health))
    return pools


def _held(rng: random.Random, pools: list[PoolView]) -> list[Held]:
    held = []
    for index in range(rng.randint(0, 12)):
        view = rng.choice(pools)
        gpu_type = rng.choice(sorted(view.gpus))
        free = view.gpus[gpu_type] - view.used.get(gpu_type, 0)
        if free <= 0:
            continue
        gpus = rng.randint(1, min(free, 4))
        view.used[gpu_type] = view.used.get(gpu_type, 0) + gpus
        name, value = rng.choice(list(CLASSES.items()))
        started = rng.uniform(0, 900)
        held.append(Held(f"r{index}", 1, rng.choice(TEAMS), view.name, str(view.location), gpu_type, gpus,
                         value, name, rng.choice([0, 50, 100]), started,
                         started + rng.choice([600, 3600]) if rng.random() < 0.6 else None,
                         borrowing=rng.random() < 0.3, preempting=rng.random() < 0.1, order=index))
    return held


def _pending(rng: random.Random, policy: CompiledPolicy, pools: list[PoolView]) -> list[Pending]:
    out = []
    for index in range(rng.randint(1, 25)):
        types = rng.choice([["A100"], ["H100"], ["A100", "H100"], ["B200"]] if rng.random() < 0.05
                           else [["A100"], ["H100"], ["A100", "H100"]])
        spec = WorkloadSpec.model_validate({
            "name": f"w{index}", "team": rng.choice(TEAMS), "image": "img", "priority": rng.choice([0, 50, 900]),
            "priority_class": rng.choice([None, *CLASSES]),
            "data_classification": rng.choice(["internal", "internal", "pii"]),
            "max_runtime_seconds": rng.choice([None, 300, 3600, 36000]),
            "replicas": 2 if rng.random() < 0.1 else 1,
            "resources": {"gpu": {"type": types, "count": rng.choice([0, 1, 1, 2, 4, 8, 32])}}})
        name, value, preemption = resolve_class(policy, spec)
        entry = Pending(spec.name or "", 1, index, spec.team, spec, name, value, preemption)
        if rng.random() < 0.1:
            entry.exclude = {rng.choice(pools).name: "failed during attempt 1: lost"}
        if rng.random() < 0.05:
            entry.failed_pool_health = Health.UNHEALTHY
        if rng.random() < 0.2:
            entry.approval = rng.choice(["approved", "burst denied by bob"])
        if rng.random() < 0.3:
            entry.approval_asked_at = rng.choice([0.0, 900.0])
        out.append(entry)
    return out


def scenario(seed: int) -> CycleInput:
    rng = random.Random(seed)
    policy = _policy(rng)
    pools = _pools(rng)
    held = _held(rng, pools)
    pending = _pending(rng, policy, pools)
    budgets = []
    if rng.random() < 0.4:
        budgets.append(BudgetState("team", rng.choice(TEAMS), "cloud", "monthly", rng.choice([10.0, 100.0]),
                                   spent=rng.choice([0.0, 5.0, 90.0])))
    usage = {team: rng.uniform(0, 3600) for team in TEAMS}
    return CycleInput(pending, held, pools, policy, usage, now=1000.0, explain=True, budgets=budgets)


def outcome(plan: CyclePlan) -> dict[str, Any]:
    """What admission decided, without any reason text: who goes where, whom it stops, what it keeps."""
    return {
        "admitted": [(a.pending.workload_id, a.decision.pool, a.decision.gpu_type, a.decision.mode,
                      a.decision.borrowing, a.decision.estimated_cost) for a in plan.admitted],
        "approvals": [(a.pending.workload_id, a.decision.pool) for a in plan.approvals],
        "preempted": [(p.victim.workload_id, p.preemptor) for p in plan.preemptions],
        "claims": [(c.claimant, c.pool, c.gpu_type, c.amount, c.shadow) for c in plan.claims],
        "waiting": [(w.workload_id, w.position, w.team_position, w.kind) for w in plan.waiting],
        "counts": (plan.waiting_total, plan.evaluations, plan.skipped, plan.next_deadline),
        "budgets": [round(b.reserved, 6) for b in plan.budgets],
        "quotas": plan.quotas,
    }
