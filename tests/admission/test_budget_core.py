"""Budgets and burst approval in the admission core (no Temporal): reserve-then-commit, the
explanation naming the budget, `team.budget_remaining` / `workload.estimated_cost` in conditions,
approval waits, approvals, denials and their timeout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inferofabric.models.policy import PlacementPolicy
from inferofabric.policies.admission import CycleInput, plan_cycle
from inferofabric.policies.budget import BudgetBook, BudgetState, crossed, period_start

from .helpers import policy, pool, waiting

BUDGET = """
placement:
  default: on-prem
  burst: {when: on_prem_utilization > 0.85, target: cloud}
cost: {default_runtime: 2h}
teams:
  vision: {budget: {cloud: {monthly: 100, alert_at: [0.5, 0.9]}}}
"""
APPROVAL = """
placement:
  default: on-prem
  burst:
    when: on_prem_utilization > 0.85
    target: cloud
    approval: {when: "workload.estimated_cost > 10", timeout: 1h, default: deny}
"""


def budget(spent: float = 0.0, reserved: float = 0.0, limit: float = 100.0) -> BudgetState:
    return BudgetState("team", "vision", "cloud", "monthly", limit, [0.5, 0.9], spent=spent, reserved=reserved)


def full_on_prem():  # type: ignore[no-untyped-def]
    return [pool("dc1", gpus=4, used=4), pool("aws", gpus=64, location="cloud", price=4.0)]


def admitted(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [a.pending.workload_id for a in plan.admitted]


def test_bursts_reserve_their_estimate_until_the_budget_is_used_up() -> None:
    compiled = policy(BUDGET)
    # 1 GPU x 2 h (the default runtime) x $4 = $8 each; $100 holds 12 of them.
    queue = [waiting(compiled, f"w{i}") for i in range(20)]
    plan = plan_cycle(CycleInput(queue, [], full_on_prem(), compiled, {}, now=0, explain=True, budgets=[budget()]))
    assert len(admitted(plan)) == 12
    assert all(a.decision.pool == "aws" and a.decision.estimated_cost == 8.0 for a in plan.admitted)
    assert plan.budgets[0].reserved == pytest.approx(96.0)
    reason = plan.waiting[0].reason
    assert "team vision's cloud budget (monthly $100.00) has $4.00 left" in reason
    assert "this needs an estimated $8.00" in reason


def test_a_runtime_limit_is_the_estimate_and_spent_money_counts() -> None:
    compiled = policy(BUDGET)
    short = waiting(compiled, "short", runtime=900)  # 1 GPU x 0.25 h x $4 = $1
    long = waiting(compiled, "long", runtime=36000)  # $40
    plan = plan_cycle(CycleInput([long, short], [], full_on_prem(), compiled, {}, now=0, explain=True,
                                 budgets=[budget(spent=70.0, reserved=0.0)]))
    assert admitted(plan) == ["short"]
    assert "has $29.00 left ($70.00 spent, $1.00 reserved); this needs an estimated $40.00" in plan.waiting[0].reason


def test_a_burst_over_budget_stays_on_prem_when_on_prem_has_room() -> None:
    compiled = policy(BUDGET.replace("on_prem_utilization > 0.85", "on_prem_utilization >= 0.0"))
    pools = [pool("dc1", gpus=8), pool("aws", gpus=64, location="cloud", price=4.0)]
    plan = plan_cycle(CycleInput([waiting(compiled, "w")], [], pools, compiled, {}, now=0,
                                 budgets=[budget(spent=99.0)]))
    assert [(a.pending.workload_id, a.decision.pool) for a in plan.admitted] == [("w", "dc1")]
    assert any("cloud budget" in r.reason for r in plan.admitted[0].decision.rejected)


def test_other_teams_and_on_prem_work_are_not_limited_by_a_cloud_budget() -> None:
    compiled = policy(BUDGET)
    pools = [pool("dc1", gpus=8), pool("aws", gpus=64, location="cloud", price=4.0)]
    plan = plan_cycle(CycleInput([waiting(compiled, "mine"), waiting(compiled, "theirs", team="nlp")], [],
                                 full_on_prem(), compiled, {}, now=0, budgets=[budget(spent=100.0)], explain=True))
    assert admitted(plan) == ["theirs"]
    plan = plan_cycle(CycleInput([waiting(compiled, "mine")], [], pools, compiled, {}, now=0,
                                 budgets=[budget(spent=100.0)]))
    assert admitted(plan) == ["mine"]


def test_conditions_read_the_budget_left_and_the_estimate() -> None:
    compiled = policy("""
placement:
  default: on-prem
  burst: {when: "team.budget_remaining > 50.0 && workload.estimated_cost < 20.0", target: cloud}
""")
    pools = [pool("dc1", gpus=1), pool("aws", gpus=64, location="cloud", price=4.0)]
    cheap, dear = waiting(compiled, "cheap", runtime=3600), waiting(compiled, "dear", runtime=36000)
    plan = plan_cycle(CycleInput([cheap], [], pools, compiled, {}, now=0, budgets=[budget()]))
    assert plan.admitted[0].decision.pool == "aws"
    plan = plan_cycle(CycleInput([dear], [], pools, compiled, {}, now=0, budgets=[budget()]))
    assert plan.admitted[0].decision.pool == "dc1"  # the condition is false: default target
    plan = plan_cycle(CycleInput([cheap], [], pools, compiled, {}, now=0, budgets=[budget(spent=60.0)]))
    assert plan.admitted[0].decision.pool == "dc1"


def test_a_burst_that_needs_approval_waits_and_says_how_to_answer() -> None:
    compiled = policy(APPROVAL)
    dear, cheap = waiting(compiled, "dear", runtime=36000), waiting(compiled, "cheap", runtime=3600)
    plan = plan_cycle(CycleInput([dear, cheap], [], full_on_prem(), compiled, {}, now=100, explain=True))
    assert admitted(plan) == ["cheap"]  # $4: under the approval threshold
    assert [a.pending.workload_id for a in plan.approvals] == ["dear"]
    reason = plan.waiting[0].reason
    assert "waiting for approval to burst to aws (estimated $40.00" in reason
    assert "fabric approve dear or fabric deny dear; deny in 3600s" in reason
    assert plan.next_deadline == 3700


def test_approved_bursts_go_denied_ones_stay_on_prem_and_the_timeout_takes_the_default() -> None:
    compiled = policy(APPROVAL)
    approved = waiting(compiled, "a", runtime=36000)
    approved.approval = "approved"
    denied = waiting(compiled, "d", runtime=36000)
    denied.approval = "burst denied by alice"
    plan = plan_cycle(CycleInput([approved, denied], [], full_on_prem(), compiled, {}, now=0, explain=True))
    assert admitted(plan) == ["a"]
    assert plan.waiting[0].reason.startswith("burst denied by alice; needs 1 x A100")
    late = waiting(compiled, "late", runtime=36000)
    late.approval_asked_at = 0
    plan = plan_cycle(CycleInput([late], [], full_on_prem(), compiled, {}, now=3600, explain=True))
    assert admitted(plan) == [] and plan.approvals == []
    assert "burst denied by default: nobody approved it within 1h" in plan.waiting[0].reason
    yes = PlacementPolicy.from_yaml(APPROVAL.replace("default: deny", "default: approve"))
    from inferofabric.policies.engine import CompiledPolicy

    plan = plan_cycle(CycleInput([late], [], full_on_prem(), CompiledPolicy(yes), {}, now=3600))
    assert admitted(plan) == ["late"]
    assert "approved by default" in plan.admitted[0].decision.reason


def test_book_alerts_and_periods() -> None:
    book = BudgetBook([budget(spent=60.0)])
    assert book.check("vision", "", "on-prem", 1000.0) is None  # a cloud budget does not count on-prem
    assert book.check("vision", "", "cloud", 41.0) is not None
    assert crossed(budget(spent=60.0)) == [0.5]
    assert crossed(budget(spent=95.0)) == [0.5, 0.9]
    now = datetime(2026, 12, 3, 15, tzinfo=UTC)  # a Thursday
    assert period_start("monthly", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_start("weekly", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert period_start("total", now) is None


def test_policy_documents_check_budgets_and_approvals() -> None:
    with pytest.raises(ValueError, match="at least one of weekly"):
        PlacementPolicy.from_yaml("teams: {vision: {budget: {cloud: {alert_at: [0.5]}}}}")
    with pytest.raises(ValueError, match="not a share"):
        PlacementPolicy.from_yaml("teams: {vision: {budget: {cloud: {monthly: 5, alert_at: [50]}}}}")
    with pytest.raises(ValueError, match=r"approval\.when"):
        PlacementPolicy.from_yaml("placement: {burst: {when: 'true', target: cloud, approval: {when: 'x >'}}}")
    document = PlacementPolicy.from_yaml(
        "teams: {vision: {budget: {cloud: {monthly: 500, weekly: 150}, all: {total: 9000}}}}\n"
        "projects: {atlas: {budget: {cloud: {monthly: 50}}}}")
    assert sorted(b[:4] for b in document.budgets()) == [
        ("project", "atlas", "cloud", "monthly"), ("team", "vision", "all", "total"),
        ("team", "vision", "cloud", "monthly"), ("team", "vision", "cloud", "weekly")]


def test_two_hundred_at_once_never_reserve_more_than_the_budget() -> None:
    """200 bursts arriving together, admitted over several cycles (each cycle sees what the ones
    before reserved): the estimates admitted never add up to more than the budget."""
    import random

    compiled = policy(BUDGET)
    chance = random.Random(3)
    queue = [waiting(compiled, f"w{i}", runtime=chance.choice([600, 1800, 3600, 7200])) for i in range(200)]
    state = budget(limit=250.0)
    admitted_cost = 0.0
    while queue:
        batch = queue[:chance.randint(1, 40)]
        queue = queue[len(batch):]
        plan = plan_cycle(CycleInput(batch, [], full_on_prem(), compiled, {}, now=0, budgets=[state]))
        admitted_cost += sum(a.decision.estimated_cost or 0.0 for a in plan.admitted)
        state = plan.budgets[0]  # carried to the next cycle: the reservations stand
    assert 240.0 <= admitted_cost <= 250.0 + 1e-6
    assert state.remaining >= -1e-6
