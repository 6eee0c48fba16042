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
