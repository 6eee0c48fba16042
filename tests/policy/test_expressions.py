"""Policy conditions: CEL through cel-python, compiled once, memoized on the values they read."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from inferofabric.models.expressions import Expression, ExpressionError, compile_expression


def fresh(text: str) -> Expression:
    """The same condition compiled again, with an empty memo (compile_expression caches by text)."""
    compile_expression.cache_clear()
    return compile_expression(text)


def variables(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "on_prem_utilization": 0.5,
        "cloud_utilization": 0.1,
        "pool_health": "healthy",
        "attempt": 1,
        "workload": {
            "id": "w",
            "name": "w",
            "team": "vision",
            "project": "default",
            "image": "img",
            "data_classification": "internal",
            "priority": 50,
            "labels": {},
            "annotations": {},
            "gpu_types": ["A100"],
            "gpus": 1,
        },
    }
    for key, value in overrides.items():
        if key.startswith("workload_"):
            base["workload"][key.removeprefix("workload_")] = value
        else:
            base[key] = value
    return base


# -- health names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "health", "expected"),
    [
        ("pool_health != healthy", "healthy", False),
        ("pool_health != healthy", "degraded", True),
        ("pool_health != healthy", "unhealthy", True),
        ("pool_health == unhealthy", "unhealthy", True),
        ("pool_health == cordoned", "cordoned", True),
        ("pool_health == degraded || pool_health == unhealthy", "degraded", True),
        ("pool_health in [unhealthy, cordoned]", "healthy", False),
        ("pool_health == 'degraded'", "degraded", True),
    ],
)
def test_bare_health_names(text: str, health: str, expected: bool) -> None:
    assert compile_expression(text).evaluate(variables(pool_health=health)) == (expected, None)


def test_health_names_cannot_be_overridden_by_variables() -> None:
    expression = compile_expression("pool_health == healthy")
    assert expression.evaluate({**variables(), "healthy": "degraded"}) == (True, None)


# -- has(), labels, macros -----------------------------------------------------------------------------


def test_has_on_labels_and_pool_fields() -> None:
    expression = compile_expression("has(workload.labels.residency)")
    assert expression.evaluate(variables()) == (False, None)
    assert expression.evaluate(variables(workload_labels={"residency": "eu"})) == (True, None)
    guarded = compile_expression("has(pool.labels.owner) && pool.labels.owner != workload.team")
    assert guarded.reads_pool
    assert guarded.evaluate({**variables(), "pool": {"labels": {}}}) == (False, None)
    assert guarded.evaluate({**variables(), "pool": {"labels": {"owner": "nlp"}}}) == (True, None)
    assert guarded.evaluate({**variables(), "pool": {"labels": {"owner": "vision"}}}) == (False, None)


def test_string_functions_sizes_and_lists() -> None:
    env = variables(workload_image="registry.internal/ml:1", workload_gpu_types=["H100", "A100"])
    for text, expected in [
        ("workload.image.startsWith('registry.internal/')", True),
        ("workload.image.endsWith(':2')", False),
        ("'H100' in workload.gpu_types", True),
        ("size(workload.gpu_types) == 2", True),
        ("workload.gpu_types.exists(t, t == 'H100')", True),
        ("workload.gpu_types.all(gpu, gpu.startsWith('H'))", False),
        ("workload.gpu_types.filter(x, x == 'A100').size() == 1", True),
        ("workload.priority >= 50 && workload.gpus < 8", True),
        ("workload.image.matches('^registry')", True),
    ]:
        assert compile_expression(text).evaluate(env) == (expected, None), text


def test_comprehension_variables_are_not_unknown_names() -> None:
    compile_expression("workload.gpu_types.exists(t, t == 'H100')")
    compile_expression("workload.gpu_types.exists_one(x, x == 'L4') || [1, 2].all(i, i > 0)")
    with pytest.raises(ExpressionError, match="unknown name"):
        compile_expression("workload.gpu_types.exists(t, u == 'H100')")


# -- compile-time errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "on_prem_utilization >",
        "workload.team == ",
        "a &&& b",
        "(attempt > 1",
        "workload.team == 'x' )",
        "pool_health !== healthy",
    ],
)
def test_syntax_errors_are_clear_at_compile_time(text: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_expression(text, where="placement.burst.when")
    message = str(raised.value)
    assert message.startswith(f"placement.burst.when: cannot parse {text!r}: syntax error at column ")
    assert "\n" not in message


def test_empty_condition() -> None:
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression("  ", where="constraints[0].when")


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("on_prem_utilisation > 0.85", "on_prem_utilisation"),
        ("workload.data_classification == pii", "pii"),
        ("gpu_count > 2 && foo.bar == 'x'", "foo, gpu_count"),
        ("pol.labels.x == 'y'", "pol"),
    ],
)
def test_unknown_names_are_clear_at_compile_time(text: str, unknown: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_expression(text, where="constraints[2].when")
    message = str(raised.value)
    assert message.startswith(f"constraints[2].when: {text!r} uses unknown name(s) {unknown}; available: ")
    assert "on_prem_utilization" in message and "quote strings: 'pii'" in message


def test_names_inside_strings_are_not_names() -> None:
    expression = compile_expression("workload.team == 'foo.bar baz' || workload.image == \"qux(1)\"")
    assert expression.evaluate(variables()) == (False, None)


def test_compile_is_cached_by_text() -> None:
    assert compile_expression("attempt > 1") is compile_expression("attempt > 1")


# -- run-time errors count as false ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "workload.labels.residency == 'eu'",
        "workload.labels.residency != 'eu'",
        "!(workload.labels.residency == 'eu')",
        "workload.labels.residency.startsWith('e')",
        "pool.labels.zone == 'a'",
        "workload.priority > 1.5",  # int against double: no such overload
    ],
)
def test_a_run_time_error_counts_as_false_with_a_message(text: str) -> None:
    result, error = compile_expression(text).evaluate({**variables(), "pool": {"labels": {}}})
    assert result is False
    assert error is not None and error.startswith(f"{text!r} could not be evaluated: ")


def test_missing_label_message_names_the_label() -> None:
    _, error = compile_expression("workload.labels.residency == 'eu'").evaluate(variables())
    assert error is not None and "residency" in error


def test_logical_operators_absorb_errors_as_in_cel() -> None:
    assert compile_expression("workload.labels.x == 'a' || true").evaluate(variables()) == (True, None)
    assert compile_expression("workload.labels.x == 'a' && false").evaluate(variables()) == (False, None)
    assert compile_expression("has(workload.labels.x) && workload.labels.x != 'a'").evaluate(variables()) == (
        False,
        None,
    )


def test_a_non_boolean_result_is_false_with_a_message() -> None:
    result, error = compile_expression("workload.team").evaluate(variables())
    assert result is False and error is not None and "not a true/false condition" in error


def test_missing_root_variable_is_an_error_not_a_crash() -> None:
    result, error = compile_expression("pool.region == 'x'").evaluate(variables())
    assert result is False and error is not None


# -- memoization ---------------------------------------------------------------------------------------

CONDITIONS = [
    "on_prem_utilization > 0.85",
    "pool_health != healthy",
    "attempt == 1",
    "workload.data_classification == 'pii'",
    "has(workload.labels.residency) && workload.labels.residency == 'eu'",
    "workload.labels.residency != 'eu'",
    "workload.labels['cost-center'] == 'r&d'",
    "workload.team == 'ads' && workload.gpus >= 4",
    "workload.gpu_types.exists(t, t == 'H100')",
    "size(workload.labels) > 1",
    "has(pool.labels.owner) && pool.labels.owner != workload.team",
    "pool.region.startsWith('ap-') && workload.data_classification != 'public'",
    "pool.health == degraded || cloud_utilization > 0.5",
    "pool.labels == {'tier': 'spot'}",
]


def random_variables(rng: random.Random) -> dict[str, Any]:
    labels = {
        k: rng.choice(["eu", "us", "r&d", "x"])
        for k in ("residency", "cost-center", "zone")
        if rng.random() < 0.4
    }
    pool_labels = {
        k: v for k, v in (("owner", rng.choice(["vision", "ads"])), ("tier", "spot")) if rng.random() < 0.5
    }
    return {
        "on_prem_utilization": rng.choice([0.0, 0.5, 0.85, 0.86, 1.0]),
        "cloud_utilization": rng.choice([0.2, 0.7]),
        "pool_health": rng.choice(["healthy", "degraded", "unhealthy"]),
        "attempt": rng.choice([1, 2]),
        "workload": {
            "team": rng.choice(["ads", "vision"]),
            "gpus": rng.choice([1, 4, 8]),
            "data_classification": rng.choice(["public", "pii", "internal"]),
            "labels": labels,
            "gpu_types": rng.sample(["A100", "H100", "L4"], k=rng.randint(1, 2)),
        },
        "pool": {
            "region": rng.choice(["ap-south-1", "us-east-1"]),
            "labels": pool_labels,
            "health": rng.choice(["healthy", "degraded"]),
        },
    }


def test_memoization_does_not_change_results() -> None:
    rng = random.Random(11)
    samples = [random_variables(rng) for _ in range(400)]
    warm = {text: compile_expression(text) for text in CONDITIONS}
    for sample in samples:  # warm the memos with every sample first
        for expression in warm.values():
            expression.evaluate(sample)
    for text in CONDITIONS:
        cold = fresh(text)
        assert cold is not warm[text]
        for sample in samples:
            cold.clear_memo()
            assert warm[text].evaluate(sample) == cold.evaluate(sample), (text, sample)
            assert warm[text].evaluate(sample) == warm[text]._run(sample), (text, sample)


def test_bound_evaluation_matches_evaluate() -> None:
    rng = random.Random(5)
    for text in CONDITIONS:
        expression = compile_expression(text)
        for _ in range(150):
            sample = random_variables(rng)
            pool = sample.pop("pool")
            bound = expression.bind(sample)
            assert bound(pool) == expression.evaluate({**sample, "pool": pool})[0], (text, sample, pool)
            assert bound(pool) == fresh(text)._run({**sample, "pool": pool})[0]


def test_memo_keys_keep_number_types_apart() -> None:
    expression = fresh("attempt == 1")
    assert expression.evaluate(variables(attempt=1)) == (True, None)
    # True == 1 in Python (same hash): the memo must not hand back the int's result.
    assert expression.evaluate(variables(attempt=True)) == fresh("attempt == 1").evaluate(
        variables(attempt=True)
    )
    assert expression.evaluate(variables(attempt=1.0))[0] is False


def test_memo_keys_cover_whole_maps_read_by_index_or_size() -> None:
    for text in ("workload.labels['cost-center'] == 'r&d'", "size(workload.labels) > 1"):
        expression = compile_expression(text)
        outcomes = set()
        for labels in ({}, {"cost-center": "r&d"}, {"cost-center": "r&d", "a": "b"}, {"cost-center": "x"}):
            result = expression.evaluate(variables(workload_labels=labels))
            assert result == fresh(text).evaluate(variables(workload_labels=labels))
            outcomes.add(result[0])
        assert outcomes == {True, False}


def test_memo_is_bounded_and_stays_correct() -> None:
    expression = fresh("workload.priority > 500")
    for priority, _ in itertools.product(range(Expression.MEMO_SIZE + 50), range(1)):
        assert expression.evaluate(variables(workload_priority=priority))[0] is (priority > 500)
    assert len(expression._memo) <= Expression.MEMO_SIZE


def test_reads_pool_only_for_pool_paths() -> None:
    assert compile_expression("pool.region == 'x'").reads_pool
    assert not compile_expression("pool_health != healthy").reads_pool
    assert not compile_expression("workload.team == 'pool'").reads_pool
