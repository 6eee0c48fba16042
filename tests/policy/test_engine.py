"""The placement engine against the semantics documented in policies/engine.py."""

from __future__ import annotations

import itertools

import pytest

from inferofabric.models import Location, PlacementPolicy, PoolSelector
from inferofabric.policies.engine import (
    CompiledPolicy,
    _matches,
    _selector_predicate,
    default_policy,
    utilization,
)

from .helpers import README_POLICY, compiled, decide, job, pool, reasons

ON_PREM_A = {"A100": 1.2}
CLOUD = {"A100": 4.1}


def fleet(on_prem_used: int = 0, cloud_used: int = 0) -> list:
    return [
        pool("onprem-a", gpus={"A100": 8}, used={"A100": on_prem_used}, price=ON_PREM_A),
        pool("cloud-use1", "cloud", "us-east-1", gpus={"A100": 64}, used={"A100": cloud_used}, price=CLOUD),
    ]


# -- default target and burst ----------------------------------------------------------------------


def test_default_target_when_it_fits_and_burst_condition_is_false() -> None:
    decision = decide(README_POLICY, job(), fleet(on_prem_used=2))
    assert decision.pool == "onprem-a" and decision.mode == "default"
    assert (
        decision.location == Location.ON_PREM and decision.region == "dc1" and decision.backend == "simulated"
    )
    assert decision.gpu_type == "A100" and decision.gpus == 1
    assert decision.price_per_hour == pytest.approx(1.2)
    assert decision.inputs["on_prem_utilization"] == 0.25
    assert decision.inputs["burst_condition"] == "false"
    assert decision.policy_version == 1
    assert "burst condition" in decision.reason and "is false" in decision.reason
    assert "not in the default target" in reasons(decision)["cloud-use1"]


def test_bursts_when_the_condition_is_true() -> None:
    decision = decide(README_POLICY, job(), fleet(on_prem_used=7))
    assert decision.pool == "cloud-use1" and decision.mode == "burst"
    assert decision.inputs["on_prem_utilization"] == 0.875
    assert decision.inputs["burst_condition"] == "true"
    assert "on_prem_utilization > 0.85 is true" in decision.reason
    assert "not in the burst target" in reasons(decision)["onprem-a"]


def test_condition_at_the_threshold_is_false() -> None:
    pools = [pool("onprem-a", gpus={"A100": 20}, used={"A100": 17}), *fleet()[1:]]
    decision = decide(README_POLICY, job(), pools)
    assert decision.inputs["on_prem_utilization"] == 0.85
    assert decision.pool == "onprem-a" and decision.mode == "default"


def test_bursts_when_nothing_in_the_default_target_fits_even_if_the_condition_is_false() -> None:
    decision = decide(README_POLICY, job(gpus=6), fleet(on_prem_used=4))
    assert decision.inputs["burst_condition"] == "false"
    assert decision.pool == "cloud-use1" and decision.mode == "burst"
    assert "no pool in the default target fits" in decision.reason
    assert "not enough free GPUs for 6 (A100: 4 of 8 free)" in reasons(decision)["onprem-a"]


def test_burst_regions_are_respected() -> None:
    pools = [
        pool("onprem-a", gpus={"A100": 8}, used={"A100": 8}),
        pool("cloud-aps1", "cloud", "ap-south-1", gpus={"A100": 64}, price={"A100": 1.0}),
        pool("cloud-euw1", "cloud", "eu-west-1", gpus={"A100": 64}, price={"A100": 3.0}),
    ]
    decision = decide(README_POLICY, job(), pools)
    assert decision.pool == "cloud-euw1" and decision.mode == "burst"
    assert (
        "not in the burst target (cloud in regions us-east-1, eu-west-1)" in reasons(decision)["cloud-aps1"]
    )


def test_burst_target_without_room_falls_back_to_default_that_has_room() -> None:
    pools = fleet(on_prem_used=7, cloud_used=64)
    decision = decide(README_POLICY, job(), pools)
    assert decision.pool == "onprem-a" and decision.mode == "fallback"
    assert "not enough free GPUs" in reasons(decision)["cloud-use1"]


def test_waits_when_nothing_fits_anywhere() -> None:
    decision = decide(README_POLICY, job(), fleet(on_prem_used=8, cloud_used=64))
    assert decision.pool is None and decision.mode == "wait" and not decision.placed
    assert decision.reason.startswith("waiting: ")
    assert decision.price_per_hour is None and decision.gpu_type is None
    assert set(reasons(decision)) == {"onprem-a", "cloud-use1"}


def test_without_a_burst_rule_a_full_default_target_waits() -> None:
    decision = decide({"placement": {"default": "on-prem"}}, job(), fleet(on_prem_used=8))
    assert decision.mode == "wait" and decision.pool is None
    assert "not in the default target" in reasons(decision)["cloud-use1"]
    assert "burst_condition" not in decision.inputs


def test_default_target_can_name_pools() -> None:
    policy = {"placement": {"default": ["cloud-use1"]}}
    decision = decide(policy, job(), fleet())
    assert decision.pool == "cloud-use1" and decision.mode == "default"


def test_burst_target_can_name_pools_and_mix_locations() -> None:
    policy = {
        "placement": {
            "default": "on-prem",
            "burst": {"when": "true", "target": ["onprem-b", "cloud"], "regions": ["dc2"]},
        }
    }
    pools = [
        pool("onprem-a", price={"A100": 1.0}),
        pool("onprem-b", region="dc2", price={"A100": 2.0}),
        pool("cloud-use1", "cloud", price=CLOUD),
    ]
    decision = decide(policy, job(), pools)
    assert decision.pool == "onprem-b" and decision.mode == "burst"


def test_a_runtime_error_in_the_burst_condition_counts_as_false_and_is_noted() -> None:
    policy = README_POLICY.replace("on_prem_utilization > 0.85", "workload.labels.burstable == 'yes'")
    decision = decide(policy, job(), fleet())
    assert decision.pool == "onprem-a" and decision.inputs["burst_condition"] == "false"
    assert "burst condition" in decision.reason and "could not be evaluated" in decision.reason
    decision = decide(policy, job(labels={"burstable": "yes"}), fleet())
    assert decision.pool == "cloud-use1" and decision.mode == "burst"


def test_zero_gpu_workloads_need_no_gpus() -> None:
    decision = decide(README_POLICY, job(gpus=0, types=()), fleet(on_prem_used=8))
    # on_prem_utilization is 1.0, so the burst condition sends it to the cloud: it fits anywhere.
    assert decision.pool == "cloud-use1" and decision.gpu_type is None and decision.gpus == 0
    decision = decide(README_POLICY, job(gpus=0, types=()), fleet(on_prem_used=1))
    assert decision.pool == "onprem-a" and decision.price_per_hour == 0


# -- compliance constraints --------------------------------------------------------------------------


def test_pii_stays_on_prem_when_it_has_room_even_if_burst_is_true() -> None:
    decision = decide(README_POLICY, job(classification="pii"), fleet(on_prem_used=7))
    assert decision.inputs["burst_condition"] == "true"
    assert decision.pool == "onprem-a" and decision.mode == "fallback"
    assert (
        "denied by constraint #1 (deny location cloud when workload.data_classification == 'pii')"
        in reasons(decision)["cloud-use1"]
    )


def test_pii_waits_when_on_prem_is_full() -> None:
    decision = decide(README_POLICY, job(classification="pii"), fleet(on_prem_used=8))
    assert decision.pool is None and decision.mode == "wait"
    why = reasons(decision)
    assert why["cloud-use1"].startswith("denied by")
    assert why["onprem-a"].startswith("not enough free GPUs")


def test_pii_never_bursts_when_default_does_not_fit() -> None:
    decision = decide(README_POLICY, job(gpus=4, classification="pii"), fleet(on_prem_used=6))
    assert decision.pool is None and decision.mode == "wait"


def test_non_pii_is_unaffected_by_the_pii_constraint() -> None:
    decision = decide(README_POLICY, job(classification="confidential"), fleet(on_prem_used=8))
    assert decision.pool == "cloud-use1"


def test_named_constraint_reasons_use_the_name() -> None:
    decision = decide(default_policy(), job(classification="pii"), fleet(on_prem_used=8))
    assert reasons(decision)["cloud-use1"].startswith("denied by no-pii-in-cloud (deny location cloud")


def test_constraint_without_when_applies_to_every_workload() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [{"deny": {"labels": {"maintenance": "true"}}}],
    }
    pools = [
        pool("onprem-a", labels={"maintenance": "true"}, price={"A100": 0.5}),
        pool("cloud-use1", "cloud", price=CLOUD),
    ]
    decision = decide(policy, job(), pools)
    assert decision.pool == "cloud-use1"
    assert reasons(decision)["onprem-a"] == "denied by constraint #1 (deny labels maintenance=true)"


def test_require_keeps_out_every_pool_that_does_not_match() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [
            {
                "name": "eu",
                "require": {"regions": ["eu-west-1", "dc-ams"]},
                "when": "has(workload.labels.residency) && workload.labels.residency == 'eu'",
            }
        ],
    }
    pools = [
        pool("onprem-a", region="dc1", price={"A100": 0.5}),
        pool("onprem-ams", region="dc-ams", price={"A100": 2.0}),
        pool("cloud-euw1", "cloud", "eu-west-1", price={"A100": 1.0}),
    ]
    eu = decide(policy, job(labels={"residency": "eu"}), pools)
    assert eu.pool == "cloud-euw1"
    assert (
        reasons(eu)["onprem-a"] == "not allowed by eu (require regions eu-west-1, dc-ams when "
        "has(workload.labels.residency) && workload.labels.residency == 'eu')"
    )
    # The condition is false for other workloads: the cheapest pool wins.
    assert decide(policy, job(), pools).pool == "onprem-a"
    assert decide(policy, job(labels={"residency": "us"}), pools).pool == "onprem-a"


def test_require_with_several_fields_needs_all_of_them() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [{"require": {"location": "cloud", "labels": {"tier": "ondemand", "net": "private"}}}],
    }
    pools = [
        pool("onprem-a", labels={"tier": "ondemand", "net": "private"}),
        pool("cloud-1", "cloud", labels={"tier": "ondemand"}),
        pool("cloud-2", "cloud", labels={"tier": "ondemand", "net": "private"}),
        pool("cloud-3", "cloud", labels={"tier": "spot", "net": "private"}),
    ]
    decision = decide(policy, job(), pools)
    assert decision.pool == "cloud-2"
    assert all(r.startswith("not allowed by") for r in reasons(decision).values())


def test_deny_by_pools_backends_and_regions() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [
            {"deny": {"pools": ["p1"]}},
            {"deny": {"backends": ["aws-batch"]}, "when": "workload.team == 'finance'"},
            {"deny": {"regions": ["ap-south-1"]}, "when": "workload.priority >= 500"},
        ],
    }
    pools = [
        pool("p1", price={"A100": 0.1}),
        pool("p2", "cloud", backend="aws-batch", price={"A100": 0.2}),
        pool("p3", "cloud", "ap-south-1", price={"A100": 0.3}),
        pool("p4", "cloud", price={"A100": 0.4}),
    ]
    assert decide(policy, job(), pools).pool == "p2"
    assert decide(policy, job(team="finance"), pools).pool == "p3"
    decision = decide(policy, job(team="finance", priority=900), pools)
    assert decision.pool == "p4"
    why = reasons(decision)
    assert why["p1"].startswith("denied by constraint #1")
    assert why["p2"].startswith("denied by constraint #2")
    assert why["p3"].startswith("denied by constraint #3")


def test_constraints_over_pool_fields() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [
            {
                "name": "owned-pools",
                "deny": {},
                "when": "has(pool.labels.owner) && pool.labels.owner != workload.team",
            },
            {
                "name": "ap-public-only",
                "deny": {"location": "cloud"},
                "when": "pool.region.startsWith('ap-') && workload.data_classification != 'public'",
            },
        ],
    }
    pools = [
        pool("nlp-owned", labels={"owner": "nlp"}, price={"A100": 0.1}),
        pool("cloud-aps1", "cloud", "ap-south-1", price={"A100": 0.2}),
        pool("cloud-use1", "cloud", price={"A100": 0.9}),
    ]
    assert decide(policy, job(team="nlp"), pools).pool == "nlp-owned"
    vision = decide(policy, job(team="vision"), pools)
    assert vision.pool == "cloud-use1"
    assert reasons(vision)["nlp-owned"].startswith("denied by owned-pools")
    assert reasons(vision)["cloud-aps1"].startswith("denied by ap-public-only")
    assert decide(policy, job(team="vision", classification="public"), pools).pool == "cloud-aps1"


def test_a_condition_that_fails_at_run_time_does_not_apply() -> None:
    policy = {
        "placement": {"default": ["on-prem", "cloud"]},
        "constraints": [
            {"require": {"location": "on-prem"}, "when": "workload.labels.export != 'ok'"},
        ],
    }
    pools = [pool("onprem-a", price={"A100": 2.0}), pool("cloud-use1", "cloud", price={"A100": 1.0})]
    # No label: the condition cannot be evaluated, counts as false, the cheaper cloud pool wins.
    unlabeled = decide(policy, job(), pools)
    assert unlabeled.pool == "cloud-use1"
    assert "constraint #1" in unlabeled.reason and "could not be evaluated" in unlabeled.reason
    assert decide(policy, job(labels={"export": "itar"}), pools).pool == "onprem-a"
    assert decide(policy, job(labels={"export": "ok"}), pools).pool == "cloud-use1"


def test_constraints_keep_work_out_of_the_default_target_too() -> None:
    policy = README_POLICY + "  - deny: {pools: [onprem-a]}\n    when: workload.team == 'ads'\n"
    pools = [*fleet(), pool("onprem-b", price={"A100": 5.0})]
    decision = decide(policy, job(team="ads"), pools)
    assert decision.pool == "onprem-b" and decision.mode == "default"
    assert reasons(decision)["onprem-a"].startswith("denied by constraint #2")


def test_constraint_reason_is_the_first_that_applies() -> None:
    policy = {
        "placement": {"default": "on-prem"},
        "constraints": [
            {"name": "first", "deny": {"location": "on-prem"}},
            {"name": "second", "deny": {"pools": ["onprem-a"]}},
        ],
    }
    decision = decide(policy, job(), [pool("onprem-a")])
    assert reasons(decision)["onprem-a"].startswith("denied by first")


def test_itar_work_stays_on_prem_even_when_bursting() -> None:
    policy = README_POLICY + "  - require: {location: on-prem}\n    when: workload.labels.export == 'itar'\n"
    decision = decide(policy, job(labels={"export": "itar"}), fleet(on_prem_used=7))
    assert decision.pool == "onprem-a" and decision.mode == "fallback"
    assert decide(policy, job(), fleet(on_prem_used=7)).pool == "cloud-use1"


# -- failover ----------------------------------------------------------------------------------------


def failover_fleet() -> list:
    return [
        pool("onprem-a", gpus={"A100": 8}, used={"A100": 1}, price={"A100": 1.0}, health="unhealthy"),
        pool("onprem-b", gpus={"A100": 8}, used={"A100": 1}, price={"A100": 1.5}),
        pool("cloud-use1", "cloud", "us-east-1", gpus={"A100": 64}, price=CLOUD),
        pool("cloud-aps1", "cloud", "ap-south-1", gpus={"A100": 64}, price={"A100": 2.0}),
    ]


def test_failover_goes_to_the_failover_target() -> None:
    decision = decide(
        README_POLICY,
        job(),
        failover_fleet(),
        exclude={"onprem-a": "failed during attempt 1"},
        failed="unhealthy",
        attempt=2,
    )
    # The failover rule has no regions: the cheapest cloud pool anywhere.
    assert decision.pool == "cloud-aps1" and decision.mode == "failover"
    assert decision.inputs["failover_condition"] == "true" and decision.inputs["pool_health"] == "unhealthy"
    assert "failover: pool_health != healthy is true (unhealthy)" in decision.reason
    assert reasons(decision)["onprem-a"] == "failed during attempt 1"
    assert "not in the failover target" in reasons(decision)["onprem-b"]
    assert decision.attempt == 2


def test_failover_regions_are_respected() -> None:
    policy = README_POLICY.replace(
        "    target: cloud\nconstraints", "    target: cloud\n    regions: [us-east-1]\nconstraints"
    )
    assert PlacementPolicy.from_yaml(policy).placement.failover.regions == ["us-east-1"]  # type: ignore[union-attr]
    decision = decide(policy, job(), failover_fleet(), exclude={"onprem-a": "x"}, failed="unhealthy")
    assert decision.pool == "cloud-use1" and decision.mode == "failover"


def test_failover_condition_false_uses_the_normal_rules() -> None:
    policy = README_POLICY.replace("pool_health != healthy", "pool_health == unhealthy")
    decision = decide(policy, job(), failover_fleet(), exclude={"onprem-a": "drained"}, failed="degraded")
    assert decision.inputs["failover_condition"] == "false"
    assert decision.pool == "onprem-b" and decision.mode == "default"


def test_excluded_pools_are_never_chosen() -> None:
    pools = [pool("onprem-a", price={"A100": 0.1}), pool("onprem-b", used={"A100": 8})]
    decision = decide({"placement": {"default": "on-prem"}}, job(), pools, exclude={"onprem-a": "job lost"})
    assert decision.pool is None and reasons(decision)["onprem-a"] == "job lost"
    # Even when it is healthy and the failover condition is false.
    decision = decide(
        README_POLICY,
        job(),
        [pool("onprem-a"), pool("onprem-b")],
        exclude={"onprem-a": "drained by operator"},
        failed="healthy",
    )
    assert decision.inputs["failover_condition"] == "false" and decision.pool == "onprem-b"


def test_pii_failover_falls_back_to_on_prem() -> None:
    decision = decide(
        README_POLICY,
        job(classification="pii"),
        failover_fleet(),
        exclude={"onprem-a": "failed"},
        failed="unhealthy",
    )
    assert decision.pool == "onprem-b" and decision.mode == "fallback"
    assert reasons(decision)["cloud-use1"].startswith("denied by")


def test_pii_failover_waits_when_on_prem_has_no_room() -> None:
    pools = failover_fleet()
    pools[1] = pool("onprem-b", gpus={"A100": 8}, used={"A100": 8})
    decision = decide(
        README_POLICY, job(classification="pii"), pools, exclude={"onprem-a": "failed"}, failed="unhealthy"
    )
    assert decision.pool is None and decision.mode == "wait"
    assert decision.reason.startswith("waiting: failover")


def test_without_a_failover_rule_a_re_placement_follows_default_and_burst() -> None:
    policy = {
        "placement": {
            "default": "on-prem",
            "burst": {"when": "on_prem_utilization > 0.85", "target": "cloud"},
        }
    }
    decision = decide(policy, job(), failover_fleet(), exclude={"onprem-a": "failed"}, failed="unhealthy")
    assert decision.pool == "onprem-b" and "failover_condition" not in decision.inputs


def test_pool_health_outside_failover_is_the_default_targets_health() -> None:
    assert decide(README_POLICY, job(), fleet()).inputs["pool_health"] == "healthy"
    pools = [pool("onprem-a", health="degraded"), pool("onprem-b", health="unhealthy"), *fleet()[1:]]
    assert decide(README_POLICY, job(), pools).inputs["pool_health"] == "degraded"
    pools = [pool("onprem-a", health="cordoned"), *fleet()[1:]]
    assert decide(README_POLICY, job(), pools).inputs["pool_health"] == "unhealthy"


# -- ranking -----------------------------------------------------------------------------------------

OPEN = {"placement": {"default": ["on-prem", "cloud"]}}


def ranked_fleet() -> list:
    return [
        pool("cheap", "cloud", "us-west-2", gpus={"A100": 8}, used={"A100": 6}, price={"A100": 1.0}),
        pool("mid-a", "cloud", "eu-west-1", gpus={"A100": 8}, used={"A100": 6}, price={"A100": 2.0}),
        pool("mid-b", "cloud", "eu-west-1", gpus={"A100": 8}, used={"A100": 2}, price={"A100": 2.0}),
        pool("mid-c", "cloud", "eu-west-1", gpus={"A100": 8}, used={"A100": 2}, price={"A100": 2.0}),
        pool("dear", "cloud", "ap-south-1", gpus={"A100": 8}, price={"A100": 9.0}),
        pool("unpriced", "cloud", "ap-south-1", gpus={"A100": 64}),
    ]


def test_lowest_price_first() -> None:
    decision = decide(OPEN, job(), ranked_fleet())
    assert decision.pool == "cheap"
    assert "lowest price" in decision.reason
    assert (
        reasons(decision)["mid-a"].startswith("allowed and fits")
        and "ranked below cheap" in reasons(decision)["mid-a"]
    )


def test_then_most_free_then_name() -> None:
    pools = [p for p in ranked_fleet() if p.name != "cheap"]
    assert (
        decide(OPEN, job(), pools).pool == "mid-b"
    )  # mid-b and mid-c: 6 free each, mid-a 2: name breaks the tie


def test_unpriced_pools_rank_after_priced_ones() -> None:
    pools = [p for p in ranked_fleet() if p.name in ("dear", "unpriced")]
    decision = decide(OPEN, job(), pools)
    assert decision.pool == "dear"
    decision = decide(OPEN, job(), [p for p in pools if p.name == "unpriced"])
    assert decision.price_per_hour is None and "no price" in decision.reason


def test_preferred_pools_first_in_their_order() -> None:
    spec = job(placement={"prefer_pools": ["dear", "mid-a"]})
    decision = decide(OPEN, spec, ranked_fleet())
    assert decision.pool == "dear" and "preferred by the workload" in decision.reason
    pools = [
        p if p.name != "dear" else pool("dear", "cloud", "ap-south-1", used={"A100": 8})
        for p in ranked_fleet()
    ]
    assert decide(OPEN, spec, pools).pool == "mid-a"


def test_preferred_regions_before_price() -> None:
    decision = decide(OPEN, job(placement={"regions": ["ap-south-1"]}), ranked_fleet())
    assert decision.pool == "dear" and "preferred region" in decision.reason


def test_preferred_pool_before_preferred_region() -> None:
    spec = job(placement={"regions": ["ap-south-1"], "prefer_pools": ["mid-c"]})
    assert decide(OPEN, spec, ranked_fleet()).pool == "mid-c"


def test_hints_never_override_constraints_or_tiers() -> None:
    spec = job(classification="pii", placement={"prefer_pools": ["cloud-use1"], "regions": ["us-east-1"]})
    assert decide(README_POLICY, spec, fleet(on_prem_used=7)).pool == "onprem-a"
    # A preferred pool outside the current tier is not chosen either.
    assert decide(README_POLICY, job(placement={"prefer_pools": ["cloud-use1"]}), fleet()).pool == "onprem-a"


def test_cheapest_acceptable_gpu_type_and_workload_order_breaks_ties() -> None:
    mixed = pool("mixed", gpus={"A100": 8, "H100": 8, "L4": 8}, price={"A100": 3.0, "H100": 2.0, "L4": 2.0})
    assert decide(OPEN, job(types=["A100", "H100"]), [mixed]).gpu_type == "H100"
    assert decide(OPEN, job(types=["L4", "H100"]), [mixed]).gpu_type == "L4"
    assert decide(OPEN, job(types=["H100", "L4"]), [mixed]).gpu_type == "H100"
    full = pool("mixed", gpus={"A100": 8, "H100": 8}, used={"H100": 8}, price={"A100": 3.0, "H100": 2.0})
    decision = decide(OPEN, job(types=["H100", "A100"]), [full])
    assert decision.gpu_type == "A100" and decision.price_per_hour == pytest.approx(3.0)


def test_price_is_per_gpu_hour_times_gpus() -> None:
    decision = decide(OPEN, job(gpus=4), [pool("p", price={"A100": 2.5})])
    assert decision.price_per_hour == pytest.approx(10.0) and decision.gpus == 4


def test_gpu_type_must_be_offered_and_free() -> None:
    pools = [
        pool("h100s", gpus={"H100": 8}),
        pool("busy", gpus={"A100": 8}, used={"A100": 6}),
        pool("empty", gpus={}),
    ]
    decision = decide(OPEN, job(gpus=4), pools)
    assert decision.pool is None
    why = reasons(decision)
    assert why["h100s"] == "has no A100 GPUs (has H100)"
    assert why["busy"] == "not enough free GPUs for 4 (A100: 2 of 8 free)"
    assert why["empty"] == "has no A100 GPUs (has none)"


def test_overcommitted_pools_report_zero_free() -> None:
    decision = decide(OPEN, job(), [pool("p", gpus={"A100": 4}, used={"A100": 6})])
    assert reasons(decision)["p"] == "not enough free GPUs for 1 (A100: 0 of 4 free)"


# -- workload constraints ----------------------------------------------------------------------------


def test_require_location_is_a_hard_constraint() -> None:
    decision = decide(README_POLICY, job(placement={"require_location": "cloud"}), fleet())
    assert decision.pool == "cloud-use1" and decision.mode == "burst"
    assert reasons(decision)["onprem-a"] == "workload requires location cloud"
    decision = decide(README_POLICY, job(placement={"require_location": "on-prem"}), fleet(on_prem_used=7))
    assert decision.pool == "onprem-a"
    assert (
        decide(README_POLICY, job(placement={"require_location": "on-prem"}), fleet(on_prem_used=8)).pool
        is None
    )


def test_allowed_regions_are_a_hard_constraint() -> None:
    spec = job(placement={"allowed_regions": ["eu-west-1", "ap-south-1"]})
    decision = decide(OPEN, spec, ranked_fleet())
    assert decision.pool == "mid-b"
    assert reasons(decision)["cheap"] == "region us-west-2 not in the workload's allowed regions"


# -- pool health ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("health", ["unhealthy", "cordoned"])
def test_unhealthy_and_cordoned_pools_are_never_chosen(health: str) -> None:
    pools = [pool("sick", price={"A100": 0.1}, health=health), pool("well", price={"A100": 9.0})]
    decision = decide(OPEN, job(), pools)
    assert decision.pool == "well"
    assert reasons(decision)["sick"] == f"pool is {health}"
    assert decide(OPEN, job(), pools[:1]).pool is None


def test_degraded_pools_are_allowed() -> None:
    pools = [pool("degraded", price={"A100": 0.1}, health="degraded"), pool("well", price={"A100": 9.0})]
    assert decide(OPEN, job(), pools).pool == "degraded"


# -- utilization ---------------------------------------------------------------------------------------


def test_utilization_is_the_share_of_in_service_on_prem_gpus_in_use() -> None:
    pools = [
        pool("a", gpus={"A100": 8, "H100": 2}, used={"A100": 4, "H100": 1}),
        pool("b", gpus={"A100": 10}, used={"A100": 5}, health="degraded"),
        pool("c", gpus={"A100": 100}, used={"A100": 0}, health="unhealthy"),
        pool("d", gpus={"A100": 100}, used={"A100": 100}, health="cordoned"),
        pool("cloud", "cloud", gpus={"A100": 100}, used={"A100": 100}),
    ]
    assert utilization(pools, Location.ON_PREM) == pytest.approx(10 / 20)
    assert utilization(pools, Location.CLOUD) == 1.0
    assert decide(README_POLICY, job(), pools).inputs["on_prem_utilization"] == 0.5


def test_utilization_is_one_without_in_service_on_prem_pools() -> None:
    assert utilization([], Location.ON_PREM) == 1.0
    pools = [pool("a", health="unhealthy"), pool("cloud-use1", "cloud", price=CLOUD)]
    decision = decide(README_POLICY, job(), pools)
    assert decision.inputs["on_prem_utilization"] == 1.0 and decision.mode == "burst"
    assert utilization([pool("zero", gpus={})], Location.ON_PREM) == 1.0


def test_utilization_is_measured_before_placing() -> None:
    # 6 of 8 used: 0.75 before, 0.875 after placing this job; the condition sees 0.75.
    decision = decide(README_POLICY, job(), fleet(on_prem_used=6))
    assert decision.inputs["on_prem_utilization"] == 0.75 and decision.pool == "onprem-a"


def test_utilization_variables_are_visible_to_conditions() -> None:
    policy = {
        "placement": {
            "default": "on-prem",
            "burst": {"when": "cloud_utilization < 0.5 && attempt == 1", "target": "cloud"},
        }
    }
    assert decide(policy, job(), fleet(cloud_used=10)).mode == "burst"
    assert decide(policy, job(), fleet(cloud_used=10), attempt=2).mode == "default"
    assert decide(policy, job(), fleet(cloud_used=40)).mode == "default"


# -- the default policy and determinism -----------------------------------------------------------------


def test_default_policy_is_the_readme_policy() -> None:
    readme = PlacementPolicy.from_yaml(README_POLICY)
    ours = default_policy()
    assert ours.placement == readme.placement
    assert [c.model_copy(update={"name": None}) for c in ours.constraints] == readme.constraints


def test_decisions_are_deterministic_and_independent_of_pool_order() -> None:
    engine = compiled()
    pools = ranked_fleet() + fleet()
    spec = job(placement={"regions": ["eu-west-1"]})
    first = decide(engine, spec, pools)
    assert decide(engine, spec, pools) == first
    assert decide(engine, spec, list(reversed(pools))) == first
    assert decide(CompiledPolicy(default_policy(), 1), spec, pools).pool == first.pool


def test_rejections_are_sorted_by_pool_name() -> None:
    decision = decide(OPEN, job(), ranked_fleet())
    names = [r.pool for r in decision.rejected]
    assert names == sorted(names)


def test_decision_serializes() -> None:
    decision = decide(README_POLICY, job(), fleet(on_prem_used=7))
    again = type(decision).model_validate_json(decision.model_dump_json())
    assert again == decision


def test_compiled_selectors_match_like_the_reference() -> None:
    pools = [
        pool(f"p{i}", location, region, backend=backend, labels=labels)
        for i, (location, region, backend, labels) in enumerate(
            itertools.product(
                ["on-prem", "cloud"],
                ["dc1", "us-east-1"],
                ["simulated", "aws-batch"],
                [{}, {"tier": "spot"}, {"tier": "spot", "net": "private"}, {"tier": "ondemand"}],
            )
        )
    ]
    fields = {
        "location": [None, "on-prem", "cloud"],
        "regions": [[], ["us-east-1"], ["dc1", "eu-west-1"]],
        "pools": [[], ["p1", "p7"]],
        "backends": [[], ["aws-batch"]],
        "labels": [{}, {"tier": "spot"}, {"tier": "spot", "net": "private"}],
    }
    for values in itertools.product(*fields.values()):
        selector = PoolSelector.model_validate(dict(zip(fields, values, strict=True)))
        predicate = _selector_predicate(selector)
        assert [predicate(p) for p in pools] == [_matches(selector, p) for p in pools], selector
