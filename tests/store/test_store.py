"""The store on SQLite and PostgreSQL: schema, pools, health, policies, placement and release."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from inferofabric.models import Decision, Health, PlacementPolicy, PoolSpec, PoolView, WorkloadSpec
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest, default_policy
from inferofabric.store.db import MIGRATIONS, NotFound, Store
from inferofabric.store.tables import ReservationRow

TABLES = {"pools", "health_events", "policies", "reservations", "placements", "secrets"}


def spec(
    name: str = "onprem-a",
    gpus: dict[str, int] | None = None,
    location: str = "on-prem",
    region: str = "dc1",
    **fields: object,
) -> PoolSpec:
    return PoolSpec.model_validate(
        {
            "name": name,
            "location": location,
            "backend": "simulated",
            "region": region,
            "gpus": gpus if gpus is not None else {"A100": 8},
            **fields,
        }
    )


def workload(name: str, gpus: int = 1, classification: str = "internal") -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "team": "vision",
            "image": "img:1",
            "resources": {"gpu": {"type": ["A100"], "count": gpus}},
            "data_classification": classification,
        }
    )


def engine_decider(
    workload_id: str, spec_: WorkloadSpec, attempt: int = 1, policy: CompiledPolicy | None = None
) -> Callable[[list[PoolView]], Decision]:
    compiled = policy or CompiledPolicy(default_policy())

    def decide(pools: list[PoolView]) -> Decision:
        return compiled.decide(
            PlacementRequest(workload_id=workload_id, attempt=attempt, spec=spec_, pools=pools)
        )

    return decide


def fixed(pool: str | None, gpus: int = 1, gpu_type: str = "A100") -> Callable[[list[PoolView]], Decision]:
    """A decider that always answers the same (and counts its calls)."""
    calls: list[int] = []

    def decide(pools: list[PoolView]) -> Decision:
        calls.append(1)
        return Decision(
            workload_id="w",
            attempt=1,
            pool=pool,
            gpus=gpus,
            gpu_type=gpu_type if pool else None,
            mode="default" if pool else "wait",
            reason="fixed",
        )

    decide.calls = calls  # type: ignore[attr-defined]
    return decide


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- schema ----------------------------------------------------------------------------------------------


def test_migrations_reach_head(store: Store) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with store.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == head
        assert set(inspect(connection).get_table_names()) >= TABLES
    store.migrate()  # idempotent
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_migrations_run_on_an_empty_database_from_two_stores(store_url: str) -> None:
    first, second = Store(store_url), Store(store_url)
    try:
        threads = [threading.Thread(target=s.migrate) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first.upsert_pool(spec())
        assert [p.name for p in second.pool_specs()] == ["onprem-a"]
    finally:
        first.dispose()
        second.dispose()


MIGRATE = """
import sys, time
from inferofabric.store.db import Store
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
store = Store(sys.argv[1])
store.migrate()
store.upsert_pool(__import__("inferofabric.models", fromlist=["PoolSpec"]).PoolSpec(
    name=f"p{sys.argv[3]}", location="on-prem", backend="simulated"))
print("migrated")
"""


def test_migrations_run_from_several_processes_at_once(store_url: str) -> None:
    """`fabric up`, a worker and the CLI may all open a new database together."""
    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, store_url, str(start), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0 and "migrated" in out, err[-2000:]
    store = Store(store_url)
    try:
        assert [p.name for p in store.pool_specs()] == ["p0", "p1", "p2", "p3"]
    finally:
        store.dispose()


# -- pools -----------------------------------------------------------------------------------------------


def test_pools_upsert_list_get(store: Store) -> None:
    assert store.pool_specs() == []
    store.upsert_pool(spec("b-pool"))
    store.upsert_pool(spec("a-pool", {"H100": 4}, "cloud", "us-east-1", price_per_gpu_hour={"H100": 4.5}))
    assert [p.name for p in store.pool_specs()] == ["a-pool", "b-pool"]
    assert store.pool_spec("a-pool").price_per_gpu_hour == {"H100": 4.5}
    store.upsert_pool(spec("b-pool", {"A100": 16}, labels={"tier": "gold"}))
    updated = store.pool_spec("b-pool")
    assert updated.gpus == {"A100": 16} and updated.labels == {"tier": "gold"}
    assert len(store.pool_specs()) == 2
    with pytest.raises(NotFound, match="no pool named 'nope'"):
        store.pool_spec("nope")


def test_pool_views_show_effective_health_and_reserved_gpus(store: Store) -> None:
    store.upsert_pool(spec("p", {"A100": 8, "H100": 4}))
    store.place("w1", 1, fixed("p", 3, "A100"))
    store.place("w2", 1, fixed("p", 2, "H100"))
    store.place("w3", 1, fixed("p", 1, "A100"))
    store.release("w3")
    [view] = store.pool_views()
    assert view.gpus == {"A100": 8, "H100": 4} and view.used == {"A100": 3, "H100": 2}
    assert view.health == Health.HEALTHY
    store.set_cordoned("p", True)
    assert store.pool_views()[0].health == Health.CORDONED
    [status] = store.pool_statuses()
    assert status.health == Health.CORDONED and status.health_reason == "cordoned by operator"
    assert status.simulated and status.used == {"A100": 3, "H100": 2}


def test_discovered_capacity_caps_the_declared_inventory(store: Store) -> None:
    store.upsert_pool(spec("p", {"A100": 8}))
    store.set_health("p", Health.HEALTHY, "probe ok", gpus={"A100": 6, "L4": 2})
    assert store.pool_views()[0].gpus == {"A100": 6}
    store.upsert_pool(spec("q", {}))
    store.set_health("q", Health.HEALTHY, "probe ok", gpus={"L4": 2})
    assert {v.name: v.gpus for v in store.pool_views()}["q"] == {"L4": 2}


def test_delete_pool_refused_with_active_reservations(store: Store) -> None:
    store.upsert_pool(spec("p"))
    store.place("w1", 1, fixed("p"))
    with pytest.raises(ValueError, match="still has 1 active workload"):
        store.delete_pool("p")
    assert store.pool_spec("p").name == "p"
    assert store.release("w1") == 1
    store.delete_pool("p")
    assert store.pool_specs() == []
    with pytest.raises(NotFound):
        store.delete_pool("p")


def test_delete_pool_waits_for_a_placement_in_progress(store: Store) -> None:
    store.upsert_pool(spec("p"))
    deciding, proceed = threading.Event(), threading.Event()

    def slow_decide(pools: list[PoolView]) -> Decision:
        deciding.set()
        proceed.wait(5)
        return fixed("p")(pools)

    placer = ThreadPoolExecutor(max_workers=2)
    placed = placer.submit(store.place, "w1", 1, slow_decide)
    assert deciding.wait(5)
    deleted = placer.submit(store.delete_pool, "p")
    time.sleep(0.3)
    proceed.set()
    assert placed.result(10).pool == "p"
    with pytest.raises(ValueError, match="still has 1 active workload"):
        deleted.result(40)
    placer.shutdown()
    assert store.pool_spec("p").name == "p" and len(store.active_reservations("p")) == 1


# -- health and cordon -------------------------------------------------------------------------------------


def test_health_transitions_are_recorded_once(store: Store) -> None:
    store.upsert_pool(spec("p"))
    store.upsert_pool(spec("q"))
    assert store.set_health("p", Health.HEALTHY, "ok") is None  # no change, no event
    event = store.set_health("p", Health.UNHEALTHY, "2 probes failed")
    assert event is not None and (event.from_health, event.to_health) == (Health.HEALTHY, Health.UNHEALTHY)
    assert event.reason == "2 probes failed" and event.at.tzinfo is not None
    assert store.set_health("p", Health.UNHEALTHY, "still failing") is None
    event = store.set_health("p", Health.DEGRADED, "1 of 4 nodes down")
    assert event is not None and (event.from_health, event.to_health) == (Health.UNHEALTHY, Health.DEGRADED)
    store.set_health("q", Health.DEGRADED, "q degraded")
    events = store.health_events("p")
    assert [(e.from_health, e.to_health) for e in events] == [
        (Health.UNHEALTHY, Health.DEGRADED),
        (Health.HEALTHY, Health.UNHEALTHY),
    ]  # newest first
    assert len(store.health_events()) == 3 and len(store.health_events(limit=1)) == 1
    [p_status] = [s for s in store.pool_statuses() if s.name == "p"]
    assert p_status.health == Health.DEGRADED and p_status.health_reason == "1 of 4 nodes down"
    assert len(p_status.recent_health) == 2


def test_cordon_overrides_probed_health_until_uncordoned(store: Store) -> None:
    store.upsert_pool(spec("p"))
    event = store.set_cordoned("p", True)
    assert event is not None and (event.from_health, event.to_health) == (Health.HEALTHY, Health.CORDONED)
    assert event.reason == "cordoned by operator"
    assert store.set_cordoned("p", True) is None
    # Probes keep recording while cordoned, without changing the effective health.
    assert store.set_health("p", Health.UNHEALTHY, "down") is None
    assert store.pool_views()[0].health == Health.CORDONED
    event = store.set_cordoned("p", False, "maintenance done")
    assert event is not None and (event.from_health, event.to_health) == (Health.CORDONED, Health.UNHEALTHY)
    assert event.reason == "maintenance done"
    assert store.pool_views()[0].health == Health.UNHEALTHY
    with pytest.raises(NotFound):
        store.set_cordoned("nope", True)
    with pytest.raises(NotFound):
        store.set_health("nope", Health.HEALTHY, "")


# -- policies ----------------------------------------------------------------------------------------------


def test_policy_versions(store: Store) -> None:
    assert store.active_policy() == (None, None)
    first = default_policy()
    second = PlacementPolicy.model_validate({"placement": {"default": ["on-prem", "cloud"]}})
    assert store.set_policy(first) == 1
    assert store.active_policy() == (1, first)
    assert store.set_policy(second) == 2
    assert store.active_policy() == (2, second)
    assert store.set_policy(first) == 3
    assert store.active_policy() == (3, first)


# -- placement -----------------------------------------------------------------------------------------------


def test_place_reserves_and_records_the_decision(store: Store) -> None:
    store.upsert_pool(spec("onprem-a"))
    decision = store.place("w1", 1, engine_decider("w1", workload("w1", 2)))
    assert decision.pool == "onprem-a" and decision.gpus == 2 and decision.decided_at is not None
    [reservation] = store.active_reservations()
    assert (
        reservation.workload_id,
        reservation.attempt,
        reservation.pool,
        reservation.gpu_type,
        reservation.gpus,
        reservation.active,
    ) == ("w1", 1, "onprem-a", "A100", 2, True)
    assert store.active_reservations("other") == []
    [recorded] = store.decisions("w1")
    assert recorded.pool == "onprem-a" and recorded.reason == decision.reason


def test_place_is_idempotent_per_workload_attempt(store: Store) -> None:
    store.upsert_pool(spec("p"))
    first_decider = fixed("p", 2)
    first = store.place("w1", 1, first_decider)
    again_decider = fixed("p", 5)
    again = store.place("w1", 1, again_decider)
    assert again == first and again_decider.calls == []  # type: ignore[attr-defined]
    assert len(store.all_reservations()) == 1 and len(store.decisions("w1")) == 1
    # A new attempt is a new placement.
    second = store.place("w1", 2, fixed("p", 1))
    assert second.gpus == 1
    assert [(r.attempt, r.gpus) for r in store.all_reservations()] == [(1, 2), (2, 1)]
    # Still idempotent after release (a late retry must not reserve again).
    store.release("w1", 1)
    assert store.place("w1", 1, fixed("p", 7)).gpus == 2
    assert len(store.all_reservations()) == 2


def test_waiting_decisions_reserve_nothing_and_are_recorded_once(store: Store) -> None:
    store.upsert_pool(spec("p", {"A100": 1}))
    store.place("big", 1, fixed("p"))
    for _ in range(3):
        decision = store.place("w1", 1, engine_decider("w1", workload("w1")))
        assert decision.pool is None and decision.mode == "wait"
    assert [r.workload_id for r in store.all_reservations()] == ["big"]
    assert len(store.decisions("w1")) == 1  # repeated waits of one attempt: recorded once
    store.release("big")
    assert store.place("w1", 1, engine_decider("w1", workload("w1"))).pool == "p"
    assert [d.pool for d in store.decisions("w1")] == [None, "p"]


def test_placement_sees_the_reservations_of_earlier_placements(store: Store) -> None:
    store.upsert_pool(spec("onprem-a", {"A100": 8}, price_per_gpu_hour={"A100": 1.0}))
    store.upsert_pool(spec("cloud-use1", {"A100": 64}, "cloud", "us-east-1"))
    pools = [store.place(f"w{i}", 1, engine_decider(f"w{i}", workload(f"w{i}"))).pool for i in range(10)]
    assert pools == ["onprem-a"] * 7 + ["cloud-use1"] * 3  # bursts above 85% on-prem utilization
    pii = store.place("pii", 1, engine_decider("pii", workload("pii", classification="pii")))
    assert pii.pool == "onprem-a"
    pii2 = store.place("pii2", 1, engine_decider("pii2", workload("pii2", classification="pii")))
    assert pii2.pool is None


def test_release(store: Store) -> None:
    store.upsert_pool(spec("p"))
    store.place("w1", 1, fixed("p", 2))
    store.place("w1", 2, fixed("p", 1))
    store.place("w2", 1, fixed("p", 3))
    before = datetime.now(UTC)
    assert store.release("w1", 2) == 1
    assert store.pool_views()[0].used == {"A100": 5}
    assert store.release("w1") == 1
    assert store.release("w1") == 0
    assert store.release("nobody") == 0
    rows = {(r.workload_id, r.attempt): r for r in store.all_reservations()}
    assert not rows[("w1", 1)].active and not rows[("w1", 2)].active and rows[("w2", 1)].active
    released = rows[("w1", 1)].released_at
    assert released is not None and aware(released) >= before.replace(microsecond=0)
    assert rows[("w2", 1)].released_at is None
    assert store.pool_views()[0].used == {"A100": 3}


# -- concurrency -------------------------------------------------------------------------------------------


def max_concurrent(rows: list[ReservationRow], pool: str) -> int:
    """Sweep over reservation intervals: the most GPUs held on `pool` at any instant."""
    events: list[tuple[datetime, int, int]] = []
    for row in rows:
        if row.pool != pool:
            continue
        events.append((aware(row.created_at), 1, row.gpus))
        if row.released_at is not None:
            events.append((aware(row.released_at), 0, -row.gpus))  # releases first at equal instants
    held = peak = 0
    for _, _, delta in sorted(events):
        held += delta
        peak = max(peak, held)
    return peak


def test_concurrent_placements_never_overcommit(store: Store) -> None:
    store.upsert_pool(spec("small", {"A100": 8}))
    policy = CompiledPolicy(PlacementPolicy.model_validate({"placement": {"default": "on-prem"}}))
    barrier = threading.Barrier(50)

    def place(i: int) -> Decision:
        spec_ = workload(f"w{i}", gpus=1 + i % 3)
        barrier.wait()
        return store.place(f"w{i}", 1, engine_decider(f"w{i}", spec_, policy=policy))

    with ThreadPoolExecutor(max_workers=50) as pool:
        decisions = list(pool.map(place, range(50)))
    placed = [d for d in decisions if d.pool]
    assert sum(d.gpus for d in placed) <= 8
    # The pool ends up full: nothing left could take even the smallest request that waited.
    waited = [d for d in decisions if not d.pool]
    assert 8 - sum(d.gpus for d in placed) < min(d.gpus for d in waited)
    rows = store.active_reservations("small")
    assert sum(r.gpus for r in rows) == sum(d.gpus for d in placed) and len(rows) == len(placed)
    assert store.pool_views()[0].used == {"A100": sum(d.gpus for d in placed)}


def test_concurrent_place_and_release_from_two_stores(store_url: str, store: Store) -> None:
    """Two Store objects stand for two control-plane processes: only the database serializes them."""
    store.upsert_pool(spec("small", {"A100": 4}))
    other = Store(store_url)
    policy = CompiledPolicy(PlacementPolicy.model_validate({"placement": {"default": "on-prem"}}))
    outcomes: list[Decision] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        s = store if i % 2 else other
        rng = random.Random(i)
        for attempt in range(1, 4):
            decision = s.place(
                f"w{i}", attempt, engine_decider(f"w{i}", workload(f"w{i}", 1 + i % 2), attempt, policy)
            )
            with lock:
                outcomes.append(decision)
            if decision.pool:
                time.sleep(rng.uniform(0, 0.02))
                s.release(f"w{i}", attempt)

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            list(pool.map(run, range(50)))
    finally:
        other.dispose()
    rows = store.all_reservations()
    assert rows and all(not r.active for r in rows)
    assert max_concurrent(rows, "small") <= 4
    assert len({(r.workload_id, r.attempt) for r in rows}) == len(rows)
    assert sum(1 for d in outcomes if d.pool) == len(rows)


def test_concurrent_retries_of_one_attempt_reserve_once(store: Store) -> None:
    store.upsert_pool(spec("p", {"A100": 64}))
    barrier = threading.Barrier(20)

    def place(_: int) -> Decision:
        barrier.wait()
        return store.place("w1", 1, fixed("p", 2))

    with ThreadPoolExecutor(max_workers=20) as pool:
        decisions = list(pool.map(place, range(20)))
    assert len({d.model_dump_json() for d in decisions}) == 1
    assert len(store.all_reservations()) == 1 and store.pool_views()[0].used == {"A100": 2}


# -- secrets -----------------------------------------------------------------------------------------------


def test_secrets(store: Store) -> None:
    store.put_secret("b", "sealed-1")
    store.put_secret("a", "sealed-2", pool="p")
    store.put_secret("b", "sealed-3", pool="q")
    assert store.secret_names() == [("a", "p"), ("b", "q")]
    assert store.get_secret("b").ciphertext == "sealed-3"
    with pytest.raises(NotFound):
        store.get_secret("c")
