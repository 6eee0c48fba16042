"""The admission core on its own (no Temporal): order, fair share, quotas, claims, preemption."""

from __future__ import annotations

from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.policies.admission import CycleInput, plan_cycle
from inferofabric.policies.simulation import TraceJob, simulate

from .helpers import policy, pool, running, waiting, with_used

NO_QUOTA = """
placement: {default: on-prem}
priority_classes:
  - {name: production, value: 1000, preemption: lower_priority}
  - {name: research, value: 100, default: true}
  - {name: batch, value: 10}
"""


def admitted(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [a.pending.workload_id for a in plan.admitted]


def test_higher_class_goes_first_whatever_the_submission_order() -> None:
    compiled = policy(NO_QUOTA)
    queue = [waiting(compiled, "low", cls="batch"), waiting(compiled, "mid"),
             waiting(compiled, "high", cls="production")]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=2)], compiled, {}, now=0, explain=True))
    assert admitted(plan) == ["high", "mid"]
    assert [(w.workload_id, w.position) for w in plan.waiting] == [("low", 1)]


def test_numeric_priority_breaks_ties_inside_a_class_then_submission_order() -> None:
    compiled = policy(NO_QUOTA)
    queue = [waiting(compiled, "first"), waiting(compiled, "second"), waiting(compiled, "urgent", priority=900)]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=2)], compiled, {}, now=0))
    assert admitted(plan) == ["urgent", "first"]


def test_eight_gpu_job_keeps_its_claim_against_a_stream_of_small_jobs() -> None:
    compiled = policy(NO_QUOTA)
    held = [running(f"r{i}") for i in range(5)]  # 3 of 8 free
    big = waiting(compiled, "big", gpus=8)
    small = [waiting(compiled, f"s{i}") for i in range(10)]
    plan = plan_cycle(CycleInput([big, *small], held, [with_used(pool(), held)], compiled, {}, now=0, explain=True))
    assert admitted(plan) == []  # the 3 free GPUs stay with the 8-GPU job
    reasons = {w.workload_id: w.reason for w in plan.waiting}
    assert "holds its claim on dc1 (3 A100 kept for it" in reasons["big"]
    assert "held for work ordered before it" in reasons["s0"]
    # Once 8 are free it starts, ahead of every later job.
    plan = plan_cycle(CycleInput([big, *small], [], [pool()], compiled, {}, now=10))
    assert admitted(plan) == ["big"]


def test_backfill_only_when_it_ends_before_the_claim_can_start() -> None:
    compiled = policy(NO_QUOTA)
    held = [running(f"r{i}", end=1000) for i in range(5)]  # the big job can start at t=1000
    big = waiting(compiled, "big", gpus=8)
    short = waiting(compiled, "short", runtime=500)
    long = waiting(compiled, "long", runtime=5000)
    unknown = waiting(compiled, "unknown")
    plan = plan_cycle(CycleInput([big, long, unknown, short], held, [with_used(pool(), held)], compiled, {}, now=0))
    assert admitted(plan) == ["short"]


def test_fair_share_converges_to_weights_over_a_replay() -> None:
    document = PlacementPolicy.from_yaml("""
placement: {default: on-prem}
fair_share: {half_life: 1h}
teams: {a: {weight: 2}, b: {weight: 1}}
""")
    pools = [PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1", gpus={"A100": 12})]
    jobs = [TraceJob(f"{team}{i}", float(i), 1, ["A100"], 600.0, team, None)
            for i in range(400) for team in ("a", "b")]
    result = simulate(document, pools, jobs, horizon_s=14_400)
    ratio = result.gpu_seconds["a"] / result.gpu_seconds["b"]
    assert 1.8 <= ratio <= 2.2, ratio


def test_quota_nominal_borrowing_and_lending() -> None:
    compiled = policy()
    # nlp uses nothing: it lends its whole nominal 4; vision may borrow up to 4 over its nominal 4.
    queue = [waiting(compiled, f"v{i}", team="vision") for i in range(10)]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=16)], compiled, {}, now=0, explain=True))
    assert len(plan.admitted) == 8
    assert [a.decision.borrowing for a in plan.admitted] == [False] * 4 + [True] * 4
    assert plan.waiting[0].reason.endswith("team vision at quota 8/4 A100, may borrow 4: needs 5 over nominal")
    # vision lends at most 2 of its unused nominal: nlp gets 4 + 2.
    queue = [waiting(compiled, f"n{i}", team="nlp") for i in range(10)]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=16)], compiled, {}, now=0, explain=True))
    assert len(plan.admitted) == 6
    assert "cohort ml has 0 to lend" in plan.waiting[0].reason
    assert plan.quotas["nlp"]["A100"] == {"used": 6, "nominal": 4, "borrowed": 2}


def test_a_quota_never_exceeded_by_one_cycle_of_many_admissions() -> None:
    compiled = policy()
    queue = [waiting(compiled, f"v{i}", team="vision", gpus=1 + i % 3) for i in range(200)]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=64)], compiled, {}, now=0))
    assert sum(a.pending.gpus for a in plan.admitted) <= 8


def test_lower_priority_preemption_picks_borrowing_then_lowest_then_newest() -> None:
    compiled = policy(NO_QUOTA)
    held = [running("old-batch", value=10, cls="batch", started=1), running("new-batch", value=10, cls="batch",
                                                                              started=5),
            running("research", value=100, started=9), *[running(f"p{i}", value=1000, cls="production")
                                                         for i in range(5)]]
    urgent = waiting(compiled, "urgent", gpus=2, cls="production")
    plan = plan_cycle(CycleInput([urgent], held, [with_used(pool(), held)], compiled, {}, now=10, explain=True))
    assert [p.victim.workload_id for p in plan.preemptions] == ["new-batch", "old-batch"]
    assert "class production (1000) over batch (10)" in plan.preemptions[0].reason
    assert "preempting new-batch, old-batch on dc1" in plan.waiting[0].reason
    # Next cycle, while the victims stop: no further victims.
    for victim in held[:2]:
        victim.preempting = True
    plan = plan_cycle(CycleInput([urgent], held, [with_used(pool(), held)], compiled, {}, now=11))
    assert plan.preemptions == []


def test_never_class_does_not_preempt() -> None:
    compiled = policy(NO_QUOTA)
    held = [running(f"b{i}", value=10, cls="batch") for i in range(8)]
    plan = plan_cycle(CycleInput([waiting(compiled, "r", gpus=2)], held, [with_used(pool(), held)], compiled, {},
                                 now=0))
    assert plan.preemptions == [] and plan.admitted == []


def test_reclaim_borrowed_quota_within_the_cohort() -> None:
    compiled = policy()  # research: preemption never; reclaim is a right of production and reclaim_borrowed
    text = compiled.policy.model_dump(mode="json")
    text["priority_classes"][1]["preemption"] = "reclaim_borrowed"
    compiled = type(compiled)(PlacementPolicy.model_validate(text))
    held = [running(f"v{i}", team="vision", borrowing=i >= 4) for i in range(8)]
    plan = plan_cycle(CycleInput([waiting(compiled, "n0", team="nlp", gpus=2)], held, [with_used(pool(), held)],
                                 compiled, {}, now=0))
    assert len(plan.preemptions) == 2
    assert all(p.victim.borrowing for p in plan.preemptions)
    assert "reclaims quota that team vision borrowed" in plan.preemptions[0].reason


def test_pii_displaces_work_that_may_burst() -> None:
    compiled = policy()
    compiled = type(compiled)(PlacementPolicy.from_yaml(NO_QUOTA.replace(
        "placement: {default: on-prem}",
        "placement: {default: on-prem, burst: {when: 'false', target: cloud}}\nconstraints:\n"
        "  - {deny: {location: cloud}, when: \"workload.data_classification == 'pii'\"}")))
    held = [running(f"b{i}", value=10, cls="batch") for i in range(8)]
    pii = waiting(compiled, "pii", gpus=1, cls="production", classification="pii")
    plan = plan_cycle(CycleInput([pii], held, [with_used(pool(), held), pool("cloud", 64, "cloud", price=2.0)],
                                 compiled, {}, now=0))
    assert len(plan.preemptions) == 1
    # The victim comes back to the queue: on-prem is claimed for the pii job, so it bursts at once.
    victim = plan.preemptions[0].victim
    back = waiting(compiled, victim.workload_id, cls="batch", seq=0)
    remaining = [h for h in held if h is not victim]
    plan = plan_cycle(CycleInput([pii, back], remaining, [with_used(pool(), remaining), pool("cloud", 64, "cloud")],
                                 compiled, {}, now=1))
    placed = {a.pending.workload_id: a.decision.pool for a in plan.admitted}
    assert placed == {"pii": "dc1", victim.workload_id: "cloud"}


def test_known_misfits_are_skipped_not_re_evaluated() -> None:
    compiled = policy(NO_QUOTA)
    queue = [waiting(compiled, f"w{i}", gpus=4) for i in range(1000)]
    plan = plan_cycle(CycleInput(queue, [], [pool(gpus=8)], compiled, {}, now=0, explain=True))
    assert len(plan.admitted) == 2
    assert plan.evaluations <= 4 and plan.skipped >= 990
    assert [w.position for w in plan.waiting[:3]] == [1, 2, 3]


def test_a_gang_is_admitted_all_or_nothing_on_one_pool() -> None:
    from inferofabric.models.workload import WorkloadSpec
    from inferofabric.policies.admission import Pending

    compiled = policy(NO_QUOTA)
    spec = WorkloadSpec.model_validate({"name": "ddp", "team": "vision", "image": "img", "replicas": 2,
                                        "resources": {"gpu": {"type": "A100", "count": 4}}})
    gang = Pending("ddp", 1, 1, "vision", spec, "research", 100)
    # 4 free on each of two pools: 8 in all, but never split across pools.
    split = [pool("a", 8, used=4), pool("b", 8, used=4)]
    plan = plan_cycle(CycleInput([gang], [], split, compiled, {}, now=0, explain=True))
    assert plan.admitted == []
    assert plan.waiting[0].reason.startswith("needs 8 x A100 on one pool (a gang of 2 x 4)")
    batch = pool("c", 8).model_copy(update={"backend": "aws-batch"})
    plan = plan_cycle(CycleInput([gang], [], [*split, batch, pool("d", 8)], compiled, {}, now=0))
    assert [(a.decision.pool, a.decision.gpus) for a in plan.admitted] == [("d", 8)]
    rejected = {r.pool: r.reason for r in plan.admitted[0].decision.rejected}
    assert rejected["c"].startswith("a aws-batch pool cannot launch a gang of 2 replicas")
