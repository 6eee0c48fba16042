"""Builders for the pure admission-core tests: pools, waiting and running work, a policy."""

from __future__ import annotations

import itertools

from inferofabric.models.common import Health
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.status import PoolView
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.admission import Held, Pending, resolve_class
from inferofabric.policies.engine import CompiledPolicy

_seq = itertools.count(1)

POLICY = """
placement:
  default: on-prem
  burst: {when: on_prem_utilization > 0.85, target: cloud}
constraints:
  - {name: no-pii-in-cloud, deny: {location: cloud}, when: "workload.data_classification == 'pii'"}
priority_classes:
  - {name: production, value: 1000, preemption: lower_priority}
  - {name: research, value: 100, preemption: never, default: true}
  - {name: batch, value: 10, preemption: never}
fair_share: {half_life: 1h}
teams:
  vision: {weight: 2, cohort: ml, quota: {A100: {nominal: 4, borrowing_limit: 4, lending_limit: 2}}}
  nlp:    {weight: 1, cohort: ml, quota: {A100: {nominal: 4}}}
"""


def policy(text: str = POLICY) -> CompiledPolicy:
    return CompiledPolicy(PlacementPolicy.from_yaml(text))


def pool(name: str = "dc1", gpus: int = 8, location: str = "on-prem", used: int = 0, gpu_type: str = "A100",
         price: float = 0.0, health: Health = Health.HEALTHY) -> PoolView:
    return PoolView(name=name, location=location, backend="simulated", region=name, gpus={gpu_type: gpus},
                    used={gpu_type: used} if used else {}, price_per_gpu_hour={gpu_type: price}, health=health)


def waiting(compiled: CompiledPolicy, name: str, team: str = "vision", gpus: int = 1, cls: str | None = None,
            runtime: int | None = None, classification: str = "internal", priority: int = 50,
            seq: int | None = None) -> Pending:
    spec = WorkloadSpec.model_validate({
        "name": name, "team": team, "image": "img", "priority": priority, "priority_class": cls,
        "data_classification": classification, "max_runtime_seconds": runtime,
        "resources": {"gpu": {"type": "A100", "count": gpus}}})
    class_name, value, preemption = resolve_class(compiled, spec)
    return Pending(name, 1, seq if seq is not None else next(_seq), team, spec, class_name, value, preemption)


def running(name: str, pool_name: str = "dc1", team: str = "vision", gpus: int = 1, value: int = 100,
            started: float = 0.0, end: float | None = None, borrowing: bool = False,
            location: str = "on-prem", cls: str = "research") -> Held:
    return Held(name, 1, team, pool_name, location, "A100", gpus, class_value=value, priority_class=cls,
                started_at=started, expected_end=end, borrowing=borrowing)


def with_used(view: PoolView, held: list[Held]) -> PoolView:
    used = sum(h.gpus for h in held if h.pool == view.name)
    return view.model_copy(update={"used": {"A100": used} if used else {}})
