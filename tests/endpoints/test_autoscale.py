"""The endpoint spec and the autoscaler core on their own (no Temporal, no gateway): need per metric,
scale-up and scale-down delays, the replica range, scale to zero and the cold start."""

from __future__ import annotations

import pytest

from inferofabric.models.endpoint import EndpointSpec
from inferofabric.policies.autoscale import Sample, ScaleState, recommend

SPEC = {
    "name": "sentiment", "team": "nlp", "image": "ghcr.io/acme/sentiment:2.0",
    "command": ["python", "-m", "examples.model_server"], "port": 8080,
    "resources": {"gpu": {"type": "A100", "count": 1}}, "data_classification": "internal",
    "readiness": {"path": "/healthz", "initial_delay_seconds": 1, "timeout_seconds": 2},
    "replicas": {"min": 1, "max": 6},
    "autoscale": {"metric": "in_flight", "target": 4, "scale_up_delay": "5s", "scale_down_delay": "30s"},
    "scale_to_zero_after": "5m",
}


def spec(**changes: object) -> EndpointSpec:
    return EndpointSpec.model_validate({**SPEC, **changes})


def test_the_issue_s_endpoint_yaml_is_valid_and_a_replica_is_a_workload() -> None:
    endpoint = spec()
    assert endpoint.scale_to_zero_after_s == 300 and endpoint.autoscale.scale_up_delay_s == 5
    replica = endpoint.replica_workload("sentiment-v1-r0", version=1)
    assert replica.env["PORT"] == "8080" and replica.team == "nlp" and replica.gpu_count == 1
    assert replica.labels["inferofabric.io/endpoint"] == "sentiment"
    for bad, message in (({"replicas": {"min": 3, "max": 2}}, "cannot exceed"),
                         ({"readiness": {"path": "healthz"}}, "start with '/'"),
                         ({"autoscale": {"metric": "qps"}}, "in_flight"),
                         ({"scale_to_zero_after": "0s"}, "positive duration")):
        with pytest.raises(ValueError, match=message):
            spec(**bad)


def test_scale_up_waits_for_its_delay_then_takes_the_need() -> None:
    endpoint = spec()
    state = ScaleState(desired=1)
    state, why = recommend(endpoint, state, Sample(at=0, in_flight=14))  # 14 / 4 -> 4 replicas
    assert state.desired == 1 and "scale up to 4 in 5s" in why
    state, why = recommend(endpoint, state, Sample(at=3, in_flight=14))
    assert state.desired == 1
    state, why = recommend(endpoint, state, Sample(at=5, in_flight=30))  # 30 / 4 -> 8, capped at max 6
    assert state.desired == 6 and "1 -> 6" in why and "30 in flight" in why


def test_a_brief_peak_does_not_scale_and_scale_down_keeps_the_window_s_highest_need() -> None:
    endpoint = spec()
    state = ScaleState(desired=1)
    state, _ = recommend(endpoint, state, Sample(at=0, in_flight=14))
    state, _ = recommend(endpoint, state, Sample(at=2, in_flight=2))  # the peak is gone: no scale-up
    assert state.desired == 1 and state.above_since is None
    state = ScaleState(desired=5)
    for at, load in ((0, 3), (10, 11), (20, 2)):  # needs 1, 3, 1 while below 5
        state, _ = recommend(endpoint, state, Sample(at=at, in_flight=load))
        assert state.desired == 5
    state, why = recommend(endpoint, state, Sample(at=30, in_flight=2))
    assert state.desired == 3 and "5 -> 3" in why


def test_rps_and_latency_targets() -> None:
    rps = spec(autoscale={"metric": "rps", "target": 10, "scale_up_delay": "0s"})
    state, _ = recommend(rps, ScaleState(desired=1), Sample(at=0, rps=45))
    assert state.desired == 5
    latency = spec(autoscale={"metric": "p90_latency", "target": 0.2, "scale_up_delay": "0s"})
    state, _ = recommend(latency, ScaleState(desired=2), Sample(at=0, p90_latency_s=0.5, in_flight=3))
    assert state.desired == 5  # 2 x 0.5 / 0.2
    state, _ = recommend(latency, ScaleState(desired=2), Sample(at=0, p90_latency_s=None, in_flight=3))
    assert state.desired == 2  # no finished request: no evidence either way


def test_scale_to_zero_when_idle_and_a_cold_start_at_once() -> None:
    endpoint = spec()
    state = ScaleState(desired=1, last_request_at=0)
    state, _ = recommend(endpoint, state, Sample(at=120))
    assert state.desired == 1
    state, why = recommend(endpoint, state, Sample(at=300))
    assert state.desired == 0 and why == "scale to zero"
    state, why = recommend(endpoint, state, Sample(at=400, held=3, last_request_at=400))
    assert state.desired == 1 and "cold start" in why  # no delay from zero
    without = spec(scale_to_zero_after=None)
    state, _ = recommend(without, ScaleState(desired=1), Sample(at=10_000))
    assert state.desired == 1  # min 1 holds without scale-to-zero
