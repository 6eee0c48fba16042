"""Policy documents: the README example as written, and readable errors for bad ones."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferofabric.models import Location, PlacementPolicy
from inferofabric.policies.engine import CompiledPolicy, default_policy

from .helpers import README_POLICY, decide, job, pool


def test_readme_policy_parses_as_written() -> None:
    policy = PlacementPolicy.from_yaml(README_POLICY)
    placement = policy.placement
    assert placement.default == ["on-prem"]
    assert placement.burst is not None and placement.burst.when == "on_prem_utilization > 0.85"
    assert placement.burst.target == ["cloud"] and placement.burst.regions == ["us-east-1", "eu-west-1"]
    assert placement.failover is not None and placement.failover.when == "pool_health != healthy"
    assert placement.failover.target == ["cloud"] and placement.failover.regions == []
    [constraint] = policy.constraints
    assert constraint.deny is not None and constraint.deny.location == Location.CLOUD
    assert constraint.require is None and constraint.when == "workload.data_classification == 'pii'"
    CompiledPolicy(policy)


def test_readme_policy_round_trips_through_json_and_yaml() -> None:
    import yaml

    policy = PlacementPolicy.from_yaml(README_POLICY)
    assert PlacementPolicy.model_validate_json(policy.model_dump_json()) == policy
    dumped = yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True))
    assert PlacementPolicy.from_yaml(dumped) == policy


def test_readme_policy_decides_the_readme_story() -> None:
    pools = [
        pool("onprem-a", gpus={"A100": 8}, used={"A100": 7}),
        pool("cloud-use1", "cloud", "us-east-1", gpus={"A100": 64}),
    ]
    assert decide(README_POLICY, job(), pools).pool == "cloud-use1"
    assert decide(README_POLICY, job(classification="pii"), pools).pool == "onprem-a"


def test_empty_document_is_the_minimal_policy() -> None:
    policy = PlacementPolicy.from_yaml("")
    assert (
        policy.placement.default == ["on-prem"]
        and policy.placement.burst is None
        and policy.constraints == []
    )


def test_default_policy_compiles() -> None:
    CompiledPolicy(default_policy())


def error_text(document: str) -> str:
    with pytest.raises((ValidationError, ValueError)) as raised:
        PlacementPolicy.from_yaml(document)
    return str(raised.value)


def test_unknown_field_names_where_and_what() -> None:
    text = error_text(README_POLICY.replace("    regions: [us-east-1", "    region: [us-east-1"))
    assert "placement.burst.region" in text and "Extra inputs are not permitted" in text
    text = error_text("placment:\n  default: on-prem\n")
    assert "placment" in text and "Extra inputs are not permitted" in text
    text = error_text("constraints:\n  - deny: {locaton: cloud}\n")
    assert "constraints.0.deny.locaton" in text


def test_missing_target() -> None:
    text = error_text("placement:\n  burst:\n    when: on_prem_utilization > 0.85\n")
    assert "placement.burst.target" in text and "Field required" in text
    text = error_text("placement:\n  failover:\n    when: pool_health != healthy\n    target: []\n")
    assert "placement.failover.target" in text


def test_missing_condition() -> None:
    text = error_text("placement:\n  burst:\n    target: cloud\n")
    assert "placement.burst.when" in text and "Field required" in text


def test_bad_expression_names_its_place_in_the_document() -> None:
    text = error_text(README_POLICY.replace("on_prem_utilization > 0.85", "on_prem_utilization >"))
    assert "placement.burst.when: cannot parse 'on_prem_utilization >': syntax error at column" in text
    text = error_text(README_POLICY.replace("pool_health != healthy", "pool_health != helthy"))
    assert "placement.failover.when" in text and "unknown name(s) helthy" in text
    text = error_text(README_POLICY.replace("== 'pii'", "== pii"))
    assert "constraints[0].when" in text and "unknown name(s) pii" in text and "quote strings" in text


def test_constraint_needs_exactly_one_effect() -> None:
    text = error_text("constraints:\n  - when: workload.team == 'a'\n")
    assert "exactly one of 'deny:' or 'require:'" in text
    text = error_text("constraints:\n  - deny: {location: cloud}\n    require: {location: on-prem}\n")
    assert "exactly one of 'deny:' or 'require:'" in text


def test_bad_location() -> None:
    text = error_text("constraints:\n  - deny: {location: moon}\n")
    assert "constraints.0.deny.location" in text and "'on-prem' or 'cloud'" in text


def test_document_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match="must be a mapping"):
        PlacementPolicy.from_yaml("- placement\n- constraints\n")


def test_single_values_become_lists() -> None:
    policy = PlacementPolicy.from_yaml(
        "placement:\n  default: on-prem\n  burst: {when: 'true', target: cloud, regions: us-east-1}\n"
        "constraints:\n  - require: {regions: eu-west-1, pools: p1, backends: aws-batch}\n"
    )
    assert policy.placement.burst is not None and policy.placement.burst.regions == ["us-east-1"]
    selector = policy.constraints[0].require
    assert selector is not None and selector.pools == ["p1"] and selector.backends == ["aws-batch"]
