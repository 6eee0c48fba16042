"""What the cost ledger costs: reports over a million lines, and the fabric's throughput with it.

    .venv/bin/python bench/cost.py [--lines 1000000] [--count 200] [--rounds 3] [--skip-pg]

1. Reports: a ledger of N lines (99% ended, 1% running; 20 teams, 10 pools, on-prem and cloud,
   over 90 days) written to a fresh SQLite file and to a fresh PostgreSQL database (127.0.0.1,
   trust auth, database `fabric_bench_cost`, dropped and re-created); then `fabric cost` as the
   store computes it: --by team, --by team --step day, --by pool --since 7d, and budget standing
   (`fabric budget list`) for 40 team budgets. Median of 3. Target: each < 1 s on both.
2. Recording: bench/throughput.py's fabric run (200 workloads at once through the SDK on simulated
   pools, one worker, SQLite) with the ledger on and with it off (FABRIC_LEDGER=off), alternating,
   on one Temporal dev server; the ratio of the median rates (target >= 0.9), and the ledger's
   statements per workload (counted on the store's engine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

TARGET_REPORT_S = 1.0
TARGET_RATIO = 0.9
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/fabric_bench_cost"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def ledger_rows(count: int) -> list[dict[str, Any]]:
    chance = random.Random(11)
    pools = [(f"dc{i}", "on-prem", 1.2) for i in range(5)] + [(f"cloud{i}", "cloud", 4.1) for i in range(5)]
    rows = []
    for index in range(count):
        name, location, price = chance.choice(pools)
        started = NOW - timedelta(seconds=chance.uniform(60, 90 * 86400))
        hours = chance.choice([0.1, 0.5, 2.0, 8.0])
        ended = started + timedelta(hours=hours)
        running = index % 100 == 0 or ended > NOW
        if running:  # running work started within its runtime
            started = NOW - timedelta(hours=chance.uniform(0, hours))
        gpus = chance.choice([1, 2, 4, 8])
        rows.append({
            "workload_id": f"w{index}", "attempt": 1, "team": f"team{index % 20}", "project": f"p{index % 50}",
            "pool": name, "location": location, "region": name, "gpu_type": "A100", "gpus": gpus,
            "price_per_gpu_hour": price, "reason": "default" if location == "on-prem" else "burst",
            "admitted_at": started - timedelta(seconds=30), "started_at": started,
            "ended_at": None if running else ended, "estimated_cost": hours * gpus * price,
            "gpu_hours": None if running else hours * gpus, "cost": None if running else hours * gpus * price})
    return rows


def fill(store: Any, rows: list[dict[str, Any]]) -> float:
    from collections import defaultdict

    from inferofabric.store.db import day_spans

    started = time.perf_counter()
    # The daily sums the release keeps (one upsert per ended line and day), built here in one go.
    days: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        if row["ended_at"] is not None:
            for day, hours in day_spans(row["started_at"], row["ended_at"]):
                total = days[(day, row["team"], row["project"], row["pool"], row["location"], row["region"])]
                total[0] += hours * row["gpus"]
                total[1] += hours * row["gpus"] * row["price_per_gpu_hour"]
    day_rows = [{"day": k[0], "team": k[1], "project": k[2], "pool": k[3], "location": k[4], "region": k[5],
                 "gpu_hours": v[0], "cost": v[1]} for k, v in days.items()]
    for table_name, items in (("ledger", rows), ("ledger_days", day_rows)):
        _bulk(store, table_name, items)
    print(f"  ({len(day_rows):,} daily sums)")
    if not store.is_sqlite:
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE ledger")
            connection.exec_driver_sql("ANALYZE ledger_days")
    return time.perf_counter() - started


def _bulk(store: Any, table: str, items: list[dict[str, Any]]) -> None:
    """Write rows through the driver (COPY on PostgreSQL): the bench's setup, not what it measures."""
    columns = list(items[0])
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        if store.is_sqlite:
            def cell(value: Any) -> Any:
                return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

            marks = ", ".join("?" for _ in columns)
            cursor.execute("BEGIN")
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                               [tuple(cell(item[c]) for c in columns) for item in items])
        else:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for item in items:
                    copy.write_row(tuple(item[c] for c in columns))
        connection.commit()
    finally:
        connection.close()


def median_time(action: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def reports(label: str, store: Any) -> list[tuple[str, float]]:
    from inferofabric.models.policy import PlacementPolicy
    from inferofabric.store import ledger
    from inferofabric.store.budget import budget_states

    policy = PlacementPolicy.model_validate({"teams": {
        f"team{i}": {"budget": {"cloud": {"monthly": 5000, "weekly": 1500}}} for i in range(20)}})
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("--by team", lambda: ledger.report(store, by="team", now=NOW)),
        ("--by team --step day", lambda: ledger.report(store, by="team", step="day", now=NOW)),
        ("--by pool --since 7d", lambda: ledger.report(store, by="pool", start=NOW - timedelta(days=7), now=NOW)),
    ]

    def standing() -> Any:
        with store.session() as s:
            return budget_states(s, policy, NOW)

    cases.append(("budget list (40 budgets)", standing))
    out = []
    for name, action in cases:
        seconds, result = median_time(action)
        out.append((f"{label} {name}", seconds))
        print(f"  {label:10} {name:28} {seconds:6.3f} s  ({len(result)} rows)   target < {TARGET_REPORT_S:.1f} s  "
              f"{'PASS' if seconds < TARGET_REPORT_S else 'MISS'}")
    return out


def pg_database() -> bool:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS fabric_bench_cost"))
            connection.execute(text("CREATE DATABASE fabric_bench_cost"))
        engine.dispose()
        return True
    except Exception as error:  # no server: say so, measure SQLite only
        print(f"  PostgreSQL not reachable ({type(error).__name__}): skipped")
        return False


async def recording(count: int, rounds: int) -> tuple[float, float, float]:
    import throughput
    from sqlalchemy import event

    env = await throughput.start_server()
    rates: dict[str, list[float]] = {"on": [], "off": []}
    statements = {"ledger": 0}
    try:
        with tempfile.TemporaryDirectory(prefix="fabric-bench-cost-") as directory:
            os.environ["FABRIC_HOME"] = directory
            fabric = throughput.Fabric(env.client, Path(directory))
            async with fabric.worker:
                await fabric.setup(count * (2 * rounds + 2))
                from inferofabric.store.db import get_store

                engine = get_store(fabric.store_url).engine

                def count_ledger(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                    if " ledger" in statement:
                        statements["ledger"] += 1

                await fabric.run(20)  # warm-up
                for _ in range(rounds):
                    for mode in ("off", "on"):
                        os.environ["FABRIC_LEDGER"] = mode
                        if mode == "on":
                            event.listen(engine, "before_cursor_execute", count_ledger)
                        elapsed = await fabric.run(count)
                        if mode == "on":
                            event.remove(engine, "before_cursor_execute", count_ledger)
                        rates[mode].append(count / elapsed)
                        print(f"  ledger {mode:3}: {count} workloads in {elapsed:5.2f} s = {count / elapsed:6.1f}/s")
    finally:
        os.environ.pop("FABRIC_LEDGER", None)
        await env.shutdown()
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return on, off, statements["ledger"] / (count * rounds)


def report_figures(count: int, skip_pg: bool) -> list[tuple[str, float]]:
    from inferofabric.store.db import Store

    print(f"1. reports over {count:,} ledger lines ({os.cpu_count()} CPUs)")
    rows = ledger_rows(count)
    figures: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fabric-bench-ledger-") as directory:
        sqlite = Store(f"sqlite:///{directory}/ledger.db")
        sqlite.migrate()
        print(f"  SQLite: {fill(sqlite, rows):.1f} s to write")
        figures += reports("SQLite", sqlite)
        sqlite.engine.dispose()
    if not skip_pg and pg_database():
        postgres = Store(PG_URL)
        postgres.migrate()
        print(f"  PostgreSQL: {fill(postgres, rows):.1f} s to write")
        figures += reports("PostgreSQL", postgres)
        postgres.engine.dispose()
    return figures  # the million rows go with this frame: the throughput run must not carry them


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=200, help="workloads per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs with the ledger on, and off")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    args = parser.parse_args()
    figures = [] if args.skip_reports else report_figures(args.lines, args.skip_pg)
    ok = all(seconds < TARGET_REPORT_S for _, seconds in figures)
    if not args.skip_throughput:
        print(f"\n2. recording: {args.count} workloads at once, {args.rounds} rounds with the ledger on and off")
        on, off, per_workload = asyncio.run(recording(args.count, args.rounds))
        ratio = on / off
        print(f"  ledger statements per workload: {per_workload:.1f} (insert at admission, read and end at release)")
        print(f"  throughput with the ledger {on:.1f}/s vs without {off:.1f}/s: ratio {ratio:.2f}   "
              f"target >= {TARGET_RATIO}  {'PASS' if ratio >= TARGET_RATIO else 'MISS'}")
        ok = ok and ratio >= TARGET_RATIO
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
