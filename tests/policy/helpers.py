"""Builders shared by the policy tests: pools as the engine sees them, workloads, decisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from inferofabric.models import Decision, Health, PlacementPolicy, PoolView, WorkloadSpec
from inferofabric.policies.engine import EXAMPLE_POLICY_YAML, CompiledPolicy, PlacementRequest

README_POLICY = EXAMPLE_POLICY_YAML  # the brief's policy, as written


def pool(
    name: str,
    location: str = "on-prem",
    region: str | None = None,
    gpus: Mapping[str, int] | None = None,
    used: Mapping[str, int] | None = None,
    price: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
    health: str | Health = "healthy",
    backend: str = "simulated",
) -> PoolView:
    return PoolView(
        name=name,
        location=location,
        backend=backend,
        region=region or ("dc1" if location == "on-prem" else "us-east-1"),
        gpus=dict(gpus if gpus is not None else {"A100": 8}),
        used=dict(used or {}),
        price_per_gpu_hour=dict(price or {}),
        labels=dict(labels or {}),
        health=Health(health),
    )


def job(
    gpus: int = 1,
    types: Iterable[str] = ("A100",),
    classification: str = "internal",
    team: str = "vision",
    name: str = "job-1",
    **fields: Any,
) -> WorkloadSpec:
    document: dict[str, Any] = {
        "name": name,
        "team": team,
        "image": "ghcr.io/acme/train:1",
        "resources": {"gpu": {"type": list(types), "count": gpus}},
        "data_classification": classification,
    }
    document.update(fields)
    return WorkloadSpec.model_validate(document)


def compiled(
    policy: str | Mapping[str, Any] | PlacementPolicy = README_POLICY, version: int | None = 1
) -> CompiledPolicy:
    if isinstance(policy, str):
        policy = PlacementPolicy.from_yaml(policy)
    elif not isinstance(policy, PlacementPolicy):
        policy = PlacementPolicy.model_validate(policy)
    return CompiledPolicy(policy, version)


def decide(
    policy: CompiledPolicy | str | Mapping[str, Any],
    spec: WorkloadSpec,
    pools: list[PoolView],
    exclude: Mapping[str, str] | None = None,
    failed: Health | str | None = None,
    attempt: int = 1,
) -> Decision:
    engine = policy if isinstance(policy, CompiledPolicy) else compiled(policy)
    decision = engine.decide(
        PlacementRequest(
            workload_id=spec.name or "job",
            attempt=attempt,
            spec=spec,
            pools=pools,
            exclude=dict(exclude or {}),
            failed_pool_health=Health(failed) if failed is not None else None,
        )
    )
    assert_accounted(decision, pools)
    return decision


def reasons(decision: Decision) -> dict[str, str]:
    return {r.pool: r.reason for r in decision.rejected}


def assert_accounted(decision: Decision, pools: list[PoolView]) -> None:
    """Every pool is either the chosen one or rejected exactly once, with a non-empty reason."""
    names = [r.pool for r in decision.rejected]
    assert len(names) == len(set(names)), f"a pool is rejected twice: {names}"
    expected = {p.name for p in pools} - ({decision.pool} if decision.pool else set())
    assert set(names) == expected
    assert decision.pool not in names
    assert all(r.reason.strip() for r in decision.rejected), decision.rejected
    assert decision.reason.strip()
