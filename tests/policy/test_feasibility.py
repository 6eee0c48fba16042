"""What can never run, and targets that name nothing: the pure checks behind submit, `policy set`,
`policy check` and the admission loop's reasons."""

from __future__ import annotations

import pytest

from inferofabric.models.policy import PlacementPolicy
from inferofabric.policies.feasibility import KnownPool, target_problems, workload_problems

POOLS = [KnownPool("dc1", "on-prem", "dc1", {"A100": 8}),
         KnownPool("cloud-use1", "cloud", "us-east-1", {"A100": 64, "H100": 16})]


@pytest.mark.parametrize(("types", "gpus", "expected"), [
    (["A100"], 64, None),
    (["A100", "T4"], 2, None),  # one of the accepted types exists: fine
    (["a100"], 1, "GPU type 'a100' is not known: did you mean 'A100'? (types are case-sensitive)"),
    (["T4"], 1, "no registered pool has GPU type 'T4' (known: A100, H100)"),
    (["H10"], 1, "no registered pool has GPU type 'H10' (did you mean 'H100'? known: A100, H100)"),
    (["A100"], 65, "needs 65 x A100 on one pool, but the largest pool with it has 64 (cloud-use1)"),
    (["H100"], 17, "needs 17 x H100 on one pool, but the largest pool with it has 16 (cloud-use1)"),
])
def test_workload_problems(types: list[str], gpus: int, expected: str | None) -> None:
    assert workload_problems(types, gpus, POOLS) == ([expected] if expected else [])


def test_no_pools_and_no_gpus() -> None:
    assert workload_problems(["A100"], 1, []) == ["no pools are registered (`fabric pool add -f pool.yaml`)"]
    assert workload_problems([], 0, []) == []


def policy(placement: str) -> PlacementPolicy:
    return PlacementPolicy.from_yaml(f"placement:\n{placement}")


def test_targets_checked_against_the_registered_pools() -> None:
    good = policy("  default: on-prem\n  burst: {when: 'true', target: cloud, regions: [us-east-1, eu-west-1]}\n")
    assert target_problems(good, POOLS) == []
    by_name = policy("  default: dc1\n  burst: {when: 'true', target: [cloud-use1]}\n")
    assert target_problems(by_name, POOLS) == []
    bad = policy("  default: onprem\n  burst: {when: 'true', target: clouds}\n"
                 "  failover: {when: 'true', target: cloud, regions: [us-east1]}\n")
    assert target_problems(bad, POOLS) == [
        "placement.default: target 'onprem' names no location (on-prem, cloud) and no registered pool: "
        "did you mean 'on-prem'?",
        "placement.burst: target 'clouds' names no location (on-prem, cloud) and no registered pool: "
        "did you mean 'cloud'?",
        "placement.failover: region 'us-east1' is no registered pool's region: did you mean 'us-east-1'?"]
    # Regions of a target that has no registered pool yet are not judged (its pools come later).
    early = policy("  default: on-prem\n  burst: {when: 'true', target: cloud, regions: [eu-west-1]}\n")
    assert target_problems(early, POOLS[:1]) == []


def test_offline_only_a_mistyped_location_is_a_problem() -> None:
    bad = policy("  default: onprem\n  burst: {when: 'true', target: [gpu-farm-7]}\n")
    assert target_problems(bad, None) == [
        "placement.default: target 'onprem' is not a location (on-prem, cloud): did you mean 'on-prem'?"]
