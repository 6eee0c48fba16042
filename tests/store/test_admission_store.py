"""The admission cycle's transaction on SQLite and PostgreSQL: all or nothing, never twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from inferofabric.models import PoolSpec, WorkloadSpec
from inferofabric.queue import SpecCache, compiled_policy, make_planner
from inferofabric.store import admission as queue_store
from inferofabric.store.db import Store

HALF_LIFE = 86400.0


def spec(name: str, gpus: int = 1) -> str:
    return WorkloadSpec.model_validate({"name": name, "team": "vision", "image": "img",
                                        "resources": {"gpu": {"type": "A100", "count": gpus}}}).model_dump_json()


def pool(store: Store, gpus: int = 2) -> None:
    store.upsert_pool(PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1",
                               gpus={"A100": gpus}))


def cycle(store: Store, **kwargs: Any) -> queue_store.CycleOutcome:
    return queue_store.run_cycle(store, make_planner(SpecCache(), compiled_policy(store), explain=True), HALF_LIFE,
                                 **kwargs)


def test_a_cycle_admits_in_order_and_an_unwoken_admission_is_found_again(store: Store) -> None:
    pool(store)
    for i, name in enumerate(["a", "b", "c"]):
        assert queue_store.enqueue(store, name, 1, i, "vision", spec(name))
    first = cycle(store)
    assert [w.workload_id for w in first.wake] == ["a", "b"]
    assert first.plan.waiting[0].workload_id == "c"
    # The worker died before it told the workloads: the next cycle wakes them again, reserves nothing twice.
    again = cycle(store)
    assert sorted(w.workload_id for w in again.wake) == ["a", "b"]
    assert len(store.active_reservations()) == 2
    queue_store.woken(store, [("a", 1), ("b", 1)])
    assert cycle(store).wake == []
    # A retried enqueue of an admitted attempt is told so and changes nothing.
    assert queue_store.enqueue(store, "a", 1, 0, "vision", spec("a")) is False


def test_a_cycle_that_dies_before_its_commit_changes_nothing(store: Store) -> None:
    pool(store)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a"))

    def dies(*_: Any) -> Any:
        raise RuntimeError("worker killed mid-cycle")

    with pytest.raises(RuntimeError):
        queue_store.run_cycle(store, dies, HALF_LIFE)
    assert store.active_reservations() == []
    assert [w.workload_id for w in cycle(store).wake] == ["a"]


def test_dequeue_releases_what_a_racing_cycle_reserved(store: Store) -> None:
    pool(store)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a"))
    assert [w.workload_id for w in cycle(store).wake] == ["a"]
    assert queue_store.dequeue(store, "a", 1) == 1  # cancelled while the admission was on its way
    assert store.active_reservations() == []
    assert cycle(store).wake == []


def test_a_move_gives_the_gpus_back_in_the_enqueue_of_its_next_attempt(store: Store) -> None:
    pool(store, gpus=1)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a"))
    queue_store.enqueue(store, "b", 1, 1, "vision", spec("b"))
    assert [w.workload_id for w in cycle(store).wake] == ["a"]  # the pool's one GPU
    queue_store.woken(store, [("a", 1)])
    # a moves: attempt 2 queues again and attempt 1's GPU is free in the same transaction; a keeps
    # its place in line (seq 0), so the freed GPU goes to a's next attempt, not to b.
    assert queue_store.enqueue(store, "a", 2, 0, "vision", spec("a"), release_attempt=1)
    assert [(r.workload_id, r.attempt) for r in store.active_reservations()] == []
    assert [(w.workload_id, w.attempt) for w in cycle(store).wake] == [("a", 2)]
    # A retried enqueue (the local activity ran twice) changes nothing and releases nothing more.
    assert queue_store.enqueue(store, "a", 2, 0, "vision", spec("a"), release_attempt=1) is False
    assert [(r.workload_id, r.attempt) for r in store.active_reservations()] == [("a", 2)]


def test_exclusions_expire_on_the_loops_clock(store: Store) -> None:
    pool(store)
    queue_store.enqueue(store, "a", 2, 0, "vision", spec("a"), exclude={"dc1": ["launch failed", 1000.0]})
    blocked = cycle(store, clock=990.0)
    assert blocked.wake == [] and blocked.next_expiry == 1000.0
    assert "launch failed" in blocked.plan.waiting[0].reason
    assert [w.workload_id for w in cycle(store, clock=1000.5).wake] == ["a"]


def test_a_read_only_cycle_reserves_nothing(store: Store) -> None:
    pool(store, gpus=1)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a"))
    dry = cycle(store, dry_run=True)
    assert [a.pending.workload_id for a in dry.plan.admitted] == ["a"]
    assert store.active_reservations() == []


async def test_a_burst_of_enqueues_is_written_in_few_transactions_and_a_bad_one_fails_alone(store: Store) -> None:
    """A failover re-queues hundreds of workloads at once: they share commits (group commit), each
    caller still gets its own answer, and an item that cannot be written fails only its caller."""
    from sqlalchemy import event

    from inferofabric.activities.admission import _GroupCommit

    pool(store)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    group = _GroupCommit(store)
    items = [queue_store.Enqueue(f"w{i}", 1, i, "vision", spec(f"w{i}")) for i in range(100)]
    assert await asyncio.gather(*(group.submit(item) for item in items)) == [True] * 100
    assert len(commits) < 10, len(commits)  # 100 single enqueues would be 100 commits
    # A burst with an item that cannot be written (no spec: NOT NULL): only its caller fails.
    bad = queue_store.Enqueue("bad", 1, 100, "vision", None)  # type: ignore[arg-type]
    more = [queue_store.Enqueue(f"x{i}", 1, 200 + i, "vision", spec(f"x{i}")) for i in range(5)]
    results = await asyncio.gather(*(group.submit(item) for item in [*more[:2], bad, *more[2:]]),
                                   return_exceptions=True)
    assert results[:2] == [True, True] and results[3:] == [True] * 3, results
    assert isinstance(results[2], Exception)
    with store.session() as s:
        waiting, _ = queue_store.queue_items(s)
    assert sorted(w.workload_id for w in waiting) == sorted([f"w{i}" for i in range(100)] +
                                                            [f"x{i}" for i in range(5)])


def test_a_failover_requeues_the_pools_work_in_one_transaction(store: Store) -> None:
    """Every attempt on the failed pool whose workload was told gives its GPUs back and its next
    attempt waits in its old place; one still on its way to its workload is left to the workload."""
    from inferofabric.models.common import Health

    pool(store, gpus=3)
    for i, name in enumerate(["a", "b", "c"]):
        queue_store.enqueue(store, name, 1, i, "vision", spec(name))
    assert sorted(w.workload_id for w in cycle(store).wake) == ["a", "b", "c"]
    store.upsert_pool(PoolSpec(name="dc2", location="on-prem", backend="simulated", region="dc2", gpus={"A100": 3}))
    queue_store.woken(store, [("a", 1), ("b", 1)])  # c's admission has not reached it yet
    # The placed rows stay (no cycle reads them) and a class change no longer applies to them.
    assert not queue_store.set_priority_class(store, "a", "high")
    store.record_probe("dc1", Health.UNHEALTHY, "outage")

    moved = queue_store.requeue_off_pool(store, "dc1", Health.UNHEALTHY.value)
    assert [(m.workload_id, m.attempt, m.next_attempt) for m in moved] == [("a", 1, 2), ("b", 1, 2), ("c", 1, None)]
    assert sorted((r.workload_id, r.attempt) for r in store.active_reservations("dc1")) == [("c", 1)]
    # Idempotent: nothing more to move, and the workload's own retried enqueue of attempt 2 changes nothing.
    assert [m.next_attempt for m in queue_store.requeue_off_pool(store, "dc1", "unhealthy")] == [None]
    assert queue_store.enqueue(store, "a", 2, 0, "vision", spec("a"), release_attempt=1) is True
    again = cycle(store)
    assert sorted((w.workload_id, w.attempt, w.decision.pool) for w in again.wake if w.workload_id != "c") == [
        ("a", 2, "dc2"), ("b", 2, "dc2")]
    # The placed row goes with its GPUs.
    queue_store.woken(store, [("a", 2)])
    store.release("a", 2)
    with store.session() as s:
        rows = s.execute(select(queue_store._Q.c.workload_id, queue_store._Q.c.state)).all()
    assert sorted(tuple(r) for r in rows) == [("b", "admitted"), ("c", "admitted")]
