"""The ledger's SQL on SQLite and PostgreSQL: a line opened by the admission cycle, started by the
back end's start, ended by the release (or by the enqueue of a move), and costed to the cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferofabric.models import PoolSpec
from inferofabric.store import admission as queue_store
from inferofabric.store import ledger
from inferofabric.store.db import Store

from .test_admission_store import cycle, spec

T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def pools(store: Store) -> None:
    store.upsert_pool(PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1",
                               gpus={"A100": 2}, price_per_gpu_hour={"A100": 1.25}))


def test_a_line_costs_its_held_hours_times_gpus_times_price(store: Store) -> None:
    pools(store)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a", gpus=2))
    assert [w.workload_id for w in cycle(store).wake] == ["a"]
    (line,) = ledger.lines(store, None, None)
    assert (line.pool, line.gpus, line.price_per_gpu_hour, line.reason, line.cost) == ("dc1", 2, 1.25, "default", 0)
    store.ledger_started("a", 1, T0)
    store.release("a", 1, ended_at=T0 + timedelta(hours=1, minutes=30))
    (line,) = ledger.lines(store, None, None)
    assert line.gpu_hours == pytest.approx(3.0) and round(line.cost, 2) == 3.75  # 1.5 h x 2 x $1.25
    # A window clips the line; a day step splits it at midnight (UTC).
    assert round(ledger.lines(store, T0 + timedelta(hours=1), None)[0].cost, 2) == 1.25
    days = ledger.report(store, by="pool", step="day")
    assert [(r["period"], round(r["cost_on_prem"], 2)) for r in days] == [("2026-11-30", 2.5), ("2026-12-01", 1.25)]
    week = ledger.report(store, by="team", step="week")
    assert [(r["period"], r["key"], round(r["cost_total"], 2)) for r in week] == [("2026-11-30", "vision", 3.75)]


def test_a_move_ends_the_line_in_the_enqueue_and_a_never_started_job_costs_nothing(store: Store) -> None:
    pools(store)
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a"))
    cycle(store)
    queue_store.woken(store, [("a", 1)])
    store.ledger_started("a", 1, datetime.now(UTC) - timedelta(minutes=6))
    assert queue_store.enqueue(store, "a", 2, 0, "vision", spec("a"), release_attempt=1)
    cycle(store)
    first, second = sorted(ledger.lines(store, None, None), key=lambda line: line.attempt)
    assert first.ended_at is not None and round(first.gpu_hours, 2) == 0.1  # 6 minutes on 1 GPU
    assert second.ended_at is None and second.started_at is None and second.cost == 0
    store.release("a", 2)  # cancelled before it ever ran: not charged
    assert ledger.lines(store, None, None, workload_id="a")[1].cost == 0
    with pytest.raises(ValueError, match="--by 'color'"):
        ledger.report(store, by="color")


def _insert_lines(store: Store, count: int, now: datetime) -> None:
    """Lines of every kind: ended inside a day, across midnight, running, never started."""
    import random

    from inferofabric.store.tables import LedgerRow

    table = LedgerRow.__table__  # type: ignore[attr-defined]
    chance = random.Random(7)
    rows = []
    for index in range(count):
        started = now - timedelta(hours=chance.uniform(1, 24 * 20))
        length = timedelta(hours=chance.choice([0.2, 1.5, 7.0, 30.0]))
        ended = started + length if chance.random() < 0.8 and started + length < now else None
        never = chance.random() < 0.05
        gpus, price = chance.choice([1, 2, 8]), chance.choice([0.0, 1.25, 4.1])
        hours = None if ended is None else 0.0 if never else (ended - started).total_seconds() / 3600 * gpus
        rows.append({"workload_id": f"w{index}", "attempt": 1, "team": chance.choice(["vision", "nlp", "ads"]),
                     "project": "p", "pool": chance.choice(["dc1", "aws"]),
                     "location": chance.choice(["on-prem", "cloud"]),
                     "region": "r", "gpu_type": "A100", "gpus": gpus, "price_per_gpu_hour": price, "reason": "default",
                     "admitted_at": started - timedelta(minutes=1), "started_at": None if never else started,
                     "ended_at": ended, "estimated_cost": 0.0, "gpu_hours": hours,
                     "cost": hours * price if hours is not None else None})
    from types import SimpleNamespace

    from inferofabric.store.db import add_to_days

    with store.session(write=True) as s:
        s.execute(table.insert(), rows)
        for row in rows:  # what the release does when a line ends
            if row["ended_at"] is not None and row["started_at"] is not None:
                add_to_days(s, SimpleNamespace(**row), row["started_at"], row["ended_at"])
        s.commit()


@pytest.mark.parametrize(("by", "step", "window", "ended_ago"), [
    ("team", None, None, None), ("team", "day", None, None), ("pool", "week", 5, None), ("workload", None, 3, None),
    ("location", "day", 2, None), ("team", "day", 9, 2.3), ("region", None, 0.2, None), ("team", None, 1.5, 1.2)])
def test_the_database_sums_give_the_same_report_as_line_by_line(store: Store, by: str, step: str | None,
                                                                window: float | None, ended_ago: float | None) -> None:
    now = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)
    _insert_lines(store, 400, now)
    start = now - timedelta(days=window) if window else None
    end = now - timedelta(days=ended_ago) if ended_ago else None
    fast = ledger.report(store, by=by, start=start, end=end, step=step, now=now)
    slow = ledger.summarize(ledger.lines(store, start, end, now=now), by, step)
    assert len(fast) == len(slow) > 0
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys() and a["key"] == b["key"] and a.get("period") == b.get("period")
        for column in ("gpu_hours_on_prem", "gpu_hours_cloud", "cost_on_prem", "cost_cloud", "cost_total"):
            assert a[column] == pytest.approx(b[column], abs=1e-4), (column, a, b)


def test_idle_on_prem_cost_per_pool_and_shared_by_use(store: Store) -> None:
    from sqlalchemy import update

    from inferofabric.store import idle
    from inferofabric.store.tables import PoolRow

    store.upsert_pool(PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1",
                               gpus={"A100": 3}, price_per_gpu_hour={"A100": 1.25}))
    store.upsert_pool(PoolSpec(name="aws", location="cloud", backend="simulated", region="us-east-1",
                               gpus={"A100": 8}, price_per_gpu_hour={"A100": 4.0}))
    with store.session(write=True) as s:  # registered at T0: the window of idle time starts there
        s.execute(update(PoolRow.__table__).values(created_at=T0))  # type: ignore[attr-defined]
        s.commit()
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a", gpus=2))
    queue_store.enqueue(store, "b", 1, 1, "nlp", spec("b", gpus=1))
    assert sorted(w.workload_id for w in cycle(store).wake) == ["a", "b"]
    store.ledger_started("a", 1, T0)
    store.release("a", 1, ended_at=T0 + timedelta(hours=1))  # vision: 2 GPU-h
    store.ledger_started("b", 1, T0)
    store.release("b", 1, ended_at=T0 + timedelta(hours=4))  # nlp: 4 GPU-h
    now = T0 + timedelta(hours=4)
    (row,) = idle.idle_rows(store, now=now)  # cloud pools have no idle cost
    # 3 GPUs x 4 h = 12 GPU-h owned, 6 used: 6 idle x $1.25.
    assert (row["pool"], row["capacity_gpu_hours"], row["used_gpu_hours"], row["idle_gpu_hours"]) == ("dc1", 12, 6, 6)
    assert row["idle_cost"] == pytest.approx(7.5) and row["utilization"] == 0.5
    teams = {r["key"]: r for r in idle.share_idle(store, ledger.report(store, by="team", now=now), now=now)}
    assert teams["vision"]["cost_idle"] == pytest.approx(2.5) and teams["nlp"]["cost_idle"] == pytest.approx(5.0)
    assert teams["nlp"]["cost_total"] == pytest.approx(5.0 + 5.0)  # 4 GPU-h x $1.25 + its idle share


def test_a_price_change_applies_from_the_time_of_the_change(store: Store) -> None:
    store.upsert_pool(PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1",
                               gpus={"A100": 4}, price_per_gpu_hour={"A100": 1.25}))
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a", gpus=2))
    queue_store.enqueue(store, "b", 1, 1, "vision", spec("b", gpus=2))
    assert len(cycle(store).wake) == 2
    store.ledger_started("a", 1, datetime.now(UTC) - timedelta(hours=2))
    store.upsert_pool(PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1",
                               gpus={"A100": 4}, price_per_gpu_hour={"A100": 2.5}))
    first, second = ledger.lines(store, None, None, workload_id="a")
    assert first.ended_at is not None and first.price_per_gpu_hour == 1.25
    assert first.cost == pytest.approx(2 * 2 * 1.25, rel=1e-3)  # 2 h x 2 GPUs at the old price
    assert (second.attempt, second.segment, second.price_per_gpu_hour, second.ended_at) == (1, 2, 2.5, None)
    assert second.started_at == first.ended_at
    store.release("a", 1)  # the attempt ends: its open segment ends with it
    assert all(line.ended_at is not None for line in ledger.lines(store, None, None, workload_id="a"))
    # A line that had not started yet simply takes the new price.
    (launching,) = ledger.lines(store, None, None, workload_id="b")
    assert launching.price_per_gpu_hour == 2.5 and launching.segment == 1 and launching.started_at is None


def test_idle_per_day(store: Store) -> None:
    from sqlalchemy import update

    from inferofabric.store import idle
    from inferofabric.store.tables import PoolRow

    pools(store)  # dc1: 2 x A100 at $1.25, registered an hour before midnight
    with store.session(write=True) as s:
        s.execute(update(PoolRow.__table__).values(created_at=T0))  # type: ignore[attr-defined]
        s.commit()
    queue_store.enqueue(store, "a", 1, 0, "vision", spec("a", gpus=2))
    cycle(store)
    store.ledger_started("a", 1, T0 + timedelta(minutes=30))
    store.release("a", 1, ended_at=T0 + timedelta(hours=2))  # 30 min before midnight, 1 h after
    days = idle.idle_rows(store, now=T0 + timedelta(hours=3), step="day")
    assert [(d["period"], d["capacity_gpu_hours"], d["used_gpu_hours"], d["idle_gpu_hours"]) for d in days] == [
        ("2026-11-30", 2.0, 1.0, 1.0), ("2026-12-01", 4.0, 2.0, 2.0)]
    assert [d["idle_cost"] for d in days] == [1.25, 2.5]
