"""Policy constraints and targets prepared for screening, and the variables conditions read (pure:
no I/O, no temporalio). Used by the placement engine (engine.py)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from inferofabric.models.common import Health, Location
from inferofabric.models.expressions import Expression
from inferofabric.models.policy import Constraint, PoolSelector
from inferofabric.models.status import PoolView
from inferofabric.models.workload import WorkloadSpec


def matches(selector: PoolSelector, pool: PoolView) -> bool:
    if selector.location is not None and pool.location != selector.location:
        return False
    if selector.regions and pool.region not in selector.regions:
        return False
    if selector.pools and pool.name not in selector.pools:
        return False
    if selector.backends and pool.backend not in selector.backends:
        return False
    return all(pool.labels.get(key) == value for key, value in selector.labels.items())


def selector_predicate(selector: PoolSelector) -> Callable[[PoolView], bool]:
    """`matches(selector, pool)` as one specialized function (screening runs it for every pool)."""
    checks: list[Callable[[PoolView], bool]] = []
    if selector.location is not None:
        location = selector.location
        checks.append(lambda pool: pool.location == location)
    if selector.regions:
        regions = frozenset(selector.regions)
        checks.append(lambda pool: pool.region in regions)
    if selector.pools:
        names = frozenset(selector.pools)
        checks.append(lambda pool: pool.name in names)
    if selector.backends:
        backends = frozenset(selector.backends)
        checks.append(lambda pool: pool.backend in backends)
    if len(selector.labels) == 1:
        ((key, value),) = selector.labels.items()
        checks.append(lambda pool: pool.labels.get(key) == value)
    elif selector.labels:
        wanted = tuple(selector.labels.items())
        checks.append(lambda pool: all(pool.labels.get(k) == v for k, v in wanted))
    if not checks:
        return lambda pool: True
    if len(checks) == 1:
        return checks[0]
    return lambda pool: all(check(pool) for check in checks)


class ScreeningRule:
    """A constraint prepared for screening: its selector as one predicate, its rejection reason rendered."""

    __slots__ = ("deny", "expression", "index", "matches", "reason", "rejects")

    def __init__(self, index: int, constraint: Constraint, expression: Expression | None) -> None:
        selector = constraint.deny if constraint.deny is not None else constraint.require
        assert selector is not None
        self.index = index
        self.deny = constraint.deny is not None
        self.expression = expression
        self.matches = selector_predicate(selector)
        matches = self.matches
        # Whether the constraint keeps the pool out, if it applies.
        self.rejects: Callable[[PoolView], bool] = matches if self.deny else (lambda pool: not matches(pool))
        self.reason = f"{'denied by' if self.deny else 'not allowed by'} {constraint.describe(index)}"


def in_target(target: Collection[str], regions: Collection[str], pool: PoolView) -> bool:
    """A target names locations (`on-prem`, `cloud`) or pools; `regions` narrows it."""
    if pool.location not in target and pool.name not in target:  # Location is a StrEnum: "cloud" == CLOUD
        return False
    return not regions or pool.region in regions


def workload_vars(spec: WorkloadSpec, workload_id: str) -> dict[str, Any]:
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
        "replicas": spec.replicas,
    }


_NAMES: dict[Any, str] = {member: member.value for member in (*Location, *Health)}


def pool_variables(pool: PoolView) -> dict[str, Any]:
    return {
        "name": pool.name,
        "location": _NAMES.get(pool.location, pool.location),
        "region": pool.region,
        "backend": pool.backend,
        "labels": pool.labels,  # read only: expressions never modify their inputs
        "health": _NAMES.get(pool.health, pool.health),
    }
