"""Preemption on its own: who may be stopped, in which order, on which pool, and when to stop looking."""

from __future__ import annotations

from inferofabric.policies.capacity import Capacity
from inferofabric.policies.preemption import AwaitStop, Victims, choose, may_preempt, reason, victim_order
from inferofabric.policies.quota import QuotaBook

from .helpers import policy, pool, running, waiting, with_used

CLASSES = """
placement: {default: on-prem}
priority_classes:
  - {name: production, value: 1000, preemption: lower_priority}
  - {name: research, value: 100, default: true, preemption: reclaim_borrowed}
  - {name: batch, value: 10}
teams:
  vision: {cohort: ml, quota: {A100: {nominal: 4}}}
  nlp:    {cohort: ml, quota: {A100: {nominal: 4}}}
  solo:   {quota: {A100: {nominal: 4}}}
"""


def _quota(held):  # type: ignore[no-untyped-def]
    book = QuotaBook(policy(CLASSES).policy.teams)
    book.load((h.team, h.location, h.gpu_type, h.gpus) for h in held)
    return book


def test_victims_borrowing_first_then_lowest_class_priority_and_newest() -> None:
    held = [running("old", value=10, started=1), running("new", value=10, started=5),
            running("research", value=100, started=9), running("borrowing", value=100, borrowing=True, started=0)]
    assert [h.workload_id for h in sorted(held, key=victim_order)] == ["borrowing", "new", "old", "research"]


def test_lower_priority_may_stop_lower_classes_only() -> None:
    compiled = policy(CLASSES)
    urgent = waiting(compiled, "urgent", cls="production")
    book = _quota([])
    assert may_preempt(urgent, running("b", value=10), book, preemptor_borrows=False)
    assert not may_preempt(urgent, running("p", value=1000), book, preemptor_borrows=False)


def test_reclaim_only_borrowed_work_of_another_team_of_the_cohort_while_within_nominal() -> None:
    compiled = policy(CLASSES)
    nlp = waiting(compiled, "n", team="nlp")  # research: reclaim_borrowed
    book = _quota([])
    borrowed = running("v", team="vision", borrowing=True)
    assert may_preempt(nlp, borrowed, book, preemptor_borrows=False)
    assert not may_preempt(nlp, borrowed, book, preemptor_borrows=True)  # it would borrow itself
    assert not may_preempt(nlp, running("v", team="vision"), book, preemptor_borrows=False)  # within nominal
    assert not may_preempt(waiting(compiled, "s", team="solo"), borrowed, book, preemptor_borrows=False)
    assert "team nlp reclaims quota that team vision borrowed" in reason(nlp, borrowed)


def test_choose_takes_only_as_many_victims_as_free_the_gpus_on_the_best_pool() -> None:
    compiled = policy(CLASSES)
    held = [running(f"a{i}", pool_name="a", value=10, started=i) for i in range(8)]
    held += [running("b-big", pool_name="b", value=10, gpus=8)]
    pools = [with_used(pool("a"), held), with_used(pool("b"), held)]
    capacity = Capacity(pools)
    urgent = waiting(compiled, "urgent", team="solo", gpus=2, cls="production")
    choice = choose(urgent, ["a", "b"], capacity, _quota(held), held, {"a": "on-prem", "b": "on-prem"})
    # One victim (b-big) beats two (the newest on a): the fewest victims win.
    assert choice == Victims("b", "A100", [held[-1]])
    assert not any(h.preempting for h in held)  # choosing changes nothing


def test_choose_waits_for_earlier_victims_and_respects_quota_and_claims() -> None:
    compiled = policy(CLASSES)
    held = [running(f"a{i}", value=10) for i in range(8)]
    held[0].preempting = held[1].preempting = True
    capacity = Capacity([with_used(pool(), held)])
    urgent = waiting(compiled, "urgent", team="solo", gpus=2, cls="production")
    assert choose(urgent, ["dc1"], capacity, _quota(held), held, {"dc1": "on-prem"}) == AwaitStop("dc1", "A100")
    # Over its quota (solo: nominal 4, no cohort): no pool, no victims.
    over = waiting(compiled, "over", team="solo", gpus=5, cls="production")
    assert choose(over, ["dc1"], capacity, _quota(held), held, {"dc1": "on-prem"}) is None
    # Not enough that it may stop: none.
    research = [running(f"r{i}", value=100) for i in range(8)]
    capacity = Capacity([with_used(pool(), research)])
    assert choose(waiting(compiled, "u", team="solo", cls="production"), ["dc1"], capacity, _quota(research),
                  research, {"dc1": "on-prem"}) is not None
    assert choose(waiting(compiled, "b", team="solo", cls="batch"), ["dc1"], capacity, _quota(research),
                  research, {"dc1": "on-prem"}) is None
