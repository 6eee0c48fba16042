"""Cost reports over the ledger (table `ledger`, written by admission, the job's start and release).

A line costs `held hours x GPUs x price per GPU-hour`, where held = from the back end's start to its
end (or to now while it runs: cost to date), clipped to the report's window. Launch-pending time
(admission to start) is kept apart and not charged. A moved or preempted attempt keeps its own line.

Reports over a million lines: an ended line adds its GPU-hours and cost to daily sums (table
`ledger_days`, per UTC day and attribution) when it ends, so the whole days inside a window are
read from those sums; only running lines and the window's partial first and last days are clipped
here, line by line (bench/cost.py; tests/store/test_ledger_store.py checks both agree).

The lines are written by the store's transactions (store/db.py: a line ends with its reservation),
which also split time for both: `db.spans`. `fabric cost`'s whole view, these reports with idle
on-prem cost (store/idle.py, built on them), is store/cost.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, func, or_, select, type_coerce

from inferofabric.store.db import Store, as_utc, line_rate
from inferofabric.store.db import spans as _split  # [lo, hi) in hours, whole or per UTC day or week
from inferofabric.store.tables import LedgerDayRow, LedgerRow, utcnow

_L = LedgerRow.__table__  # type: ignore[attr-defined]
_D = LedgerDayRow.__table__  # type: ignore[attr-defined]
GROUPS = ("team", "project", "pool", "location", "region", "workload")
PAIR_SEPARATOR = "/"  # `by="team+pool"` (idle sharing): keys "team/pool" (names never hold a slash)
STEPS = ("day", "week")


@dataclass
class CostLine:
    """One attempt's line, clipped to a window: what the CLI's `--explain` shows."""

    workload_id: str
    attempt: int
    team: str
    project: str
    pool: str
    location: str
    region: str
    gpu_type: str | None
    gpus: int
    price_per_gpu_hour: float
    reason: str
    admitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    gpu_hours: float
    cost: float
    pending_seconds: float
    held: tuple[datetime, datetime] | None = field(default=None, repr=False)  # clipped to the window
    rate_per_hour: float = 0.0  # USD per held hour: GPUs, plus CPU and memory where the pool prices them
    segment: int = 1  # > 1: the attempt's part after a price change of its pool

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["held"]
        for key in ("admitted_at", "started_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["gpu_hours"], out["cost"] = round(self.gpu_hours, 6), round(self.cost, 6)
        return out


def lines(store: Store, start: datetime | None, end: datetime | None, workload_id: str | None = None,
          now: datetime | None = None, where: Any = None) -> list[CostLine]:
    """The ledger lines that held GPUs inside [start, end), each clipped to it (`where`: only those)."""
    now = now or utcnow()
    end = min(end or now, now)
    query = select(_L)
    if where is not None:
        query = query.where(where)
    if workload_id is not None:
        query = query.where(_L.c.workload_id == workload_id)
    if start is not None:
        query = query.where(or_(_L.c.ended_at.is_(None), _L.c.ended_at > start))
    query = query.where(_L.c.admitted_at < end).order_by(_L.c.admitted_at, _L.c.workload_id, _L.c.attempt,
                                                           _L.c.segment)
    with store.session() as s:
        rows = s.execute(query).all()
    return [_clip(row, start, end) for row in rows]


def _clip(row: Any, start: datetime | None, end: datetime) -> CostLine:
    began = as_utc(row.started_at) if row.started_at else None
    finished = as_utc(row.ended_at) if row.ended_at else end
    admitted = as_utc(row.admitted_at)
    hours, held = 0.0, None
    if began is not None:
        lo, hi = max(began, start) if start else began, min(finished, end)
        hours, held = max(0.0, (hi - lo).total_seconds() / 3600), (lo, hi)
    pending = ((began or finished) - admitted).total_seconds()
    rate = line_rate(row)
    return CostLine(
        workload_id=row.workload_id, attempt=row.attempt, team=row.team, project=row.project, pool=row.pool,
        location=row.location, region=row.region, gpu_type=row.gpu_type, gpus=row.gpus,
        price_per_gpu_hour=row.price_per_gpu_hour, reason=row.reason, admitted_at=admitted, started_at=began,
        ended_at=as_utc(row.ended_at) if row.ended_at else None, gpu_hours=hours * row.gpus,
        cost=hours * rate, pending_seconds=max(0.0, pending), held=held, rate_per_hour=rate,
        segment=getattr(row, "segment", 1) or 1)


def report(store: Store, by: str = "team", start: datetime | None = None, end: datetime | None = None,
           step: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of GPU-hours and cost, on-prem and cloud apart, per `by` key (and per period with `step`)."""
    if by not in GROUPS and by != "team+pool":
        raise ValueError(f"--by {by!r}: one of {', '.join(GROUPS)}")
    if step is not None and step not in STEPS:
        raise ValueError(f"--step {step!r}: one of {', '.join(STEPS)}")
    now = now or utcnow()
    until = min(end or now, now)
    if by == "workload":  # one row per workload: line by line
        return summarize(lines(store, start, end, now=now), by, step)
    # Whole UTC days inside the window come from the daily sums of ended lines; the window's partial
    # first and last days, and running lines, from the lines themselves. A window that reaches now
    # has no partial last day for ended lines: today's sums hold exactly what they held until now.
    first = _midnight(start) + timedelta(days=1) if start and start != _midnight(start) else start
    live = end is None or end >= now
    last = _midnight(until) + timedelta(days=1) if live else _midnight(until)
    if first is not None and first > last:  # the window lies inside one day
        edges, days = [(start, until)], False
    else:
        edges = [(lo, hi) for lo, hi in ((start, first), (None if live else last, until))
                 if lo is not None and hi is not None and lo < hi]
        days = first is None or first < last
    totals: _Totals = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    if days:
        _add_days(totals, store, by, step, first, last)
    # Running lines and the edges' lines, one index range each (an OR would scan the table); plain
    # tuples: a million-line ledger has thousands of them.
    columns = [_L.c.id, _key(_L, by), _L.c.location, *_times(store), _L.c.gpus, _L.c.price_per_gpu_hour,
               _L.c.rate_per_hour]
    queries = [select(*columns).where(_L.c.ended_at.is_(None))]
    queries += [select(*columns).where(_L.c.ended_at > lo, _L.c.started_at < hi) for lo, hi in edges]
    seen: set[int] = set()
    with store.session() as s:
        for query in queries:
            for line_id, key, location, admitted, began, ended, gpus, price, rate in s.execute(query).all():
                if line_id in seen:
                    continue
                seen.add(line_id)
                admitted, began, ended = _utc(admitted), _utc(began), _utc(ended)
                if admitted is None or admitted >= until:
                    continue
                if ended is None:  # running: cost to date, clipped to the window
                    spans = [(max(began, start) if start else began, until)] if began else []
                    if step is None:
                        _ = totals[("", str(key))]  # its key is listed even before it starts, as line by line
                elif began is None:
                    continue
                else:
                    spans = [(max(began, lo), min(ended, hi)) for lo, hi in edges if lo is not None and hi is not None]
                per_hour = rate if rate is not None else gpus * price
                cloud = location == "cloud"
                for lo, hi in spans:
                    for period, hours in _split(lo, hi, step):
                        figures = totals[(period, str(key))]
                        figures[1 if cloud else 0] += hours * gpus
                        figures[3 if cloud else 2] += hours * per_hour
    return _output(totals, step)


_Totals = dict[tuple[str, str], list[float]]  # (period, key) -> GPU-h on-prem, GPU-h cloud, $ on-prem, $ cloud
_TIMES = ("admitted_at", "started_at", "ended_at")


def _key(table: Any, by: str) -> Any:
    """The grouping column, or for "team+pool" the two joined (one key per team and pool)."""
    if by == "team+pool":
        return (table.c.team + PAIR_SEPARATOR + table.c.pool).label("key")
    return getattr(table.c, by)


def _times(store: Store) -> list[Any]:
    """SQLite hands timestamps back as text that SQLAlchemy parses slowly: read the text (_utc parses)."""
    columns = [getattr(_L.c, name) for name in _TIMES]
    return [type_coerce(c, String).label(c.name) for c in columns] if store.is_sqlite else columns


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def split_hours(lo: datetime, hi: datetime, step: str | None) -> list[tuple[str, float]]:
    """[lo, hi) as (period, hours): one whole piece, or one per UTC day or week (idle capacity)."""
    return _split(lo, hi, step) or ([("", 0.0)] if step is None else [])


def _output(totals: _Totals, step: str | None, extra: dict[tuple[str, str], dict[str, str]] | None = None,
            ) -> list[dict[str, Any]]:
    out = []
    for (period, key), (hours_on_prem, hours_cloud, cost_on_prem, cost_cloud) in sorted(totals.items()):
        item: dict[str, Any] = {"key": key} if step is None else {"period": period, "key": key}
        item.update({"gpu_hours_on_prem": round(hours_on_prem, 6), "gpu_hours_cloud": round(hours_cloud, 6),
                     "cost_on_prem": round(cost_on_prem, 6), "cost_cloud": round(cost_cloud, 6),
                     "cost_total": round(cost_on_prem + cost_cloud, 6)})
        item.update((extra or {}).get((period, key), {}))
        out.append(item)
    return out


def _add_days(totals: _Totals, store: Store, by: str, step: str | None, first: datetime | None,
              last: datetime) -> None:
    """Add the daily sums of [first, last), grouped by `by` (and by day or week with `step`)."""
    key = _key(_D, by)
    groups = [key, _D.c.location] + ([_D.c.day] if step is not None else [])
    query = (select(*groups, func.sum(_D.c.gpu_hours), func.sum(_D.c.cost)).where(_D.c.day < last.date().isoformat())
             .group_by(*groups))
    if first is not None:
        query = query.where(_D.c.day >= first.date().isoformat())
    with store.session() as s:
        rows = s.execute(query).all()
    for row in rows:
        period = ""
        if step is not None:
            day = _as_day(row[2])
            period = (day - timedelta(days=day.weekday()) if step == "week" else day).date().isoformat()
        cloud = row[1] == "cloud"
        figures = totals[(period, str(row[0]))]
        figures[1 if cloud else 0] += float(row[-2] or 0.0)
        figures[3 if cloud else 2] += float(row[-1] or 0.0)


def _midnight(value: datetime) -> datetime:
    value = as_utc(value)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _as_day(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def summarize(found: Iterable[CostLine], by: str, step: str | None) -> list[dict[str, Any]]:
    """Line by line: each line's held interval (clipped to its window) split by period and added up."""
    totals: _Totals = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    extra: dict[tuple[str, str], dict[str, str]] = {}
    for line in found:
        key = line.workload_id if by == "workload" else str(getattr(line, by))
        cloud = line.location == "cloud"
        spans = _split(*line.held, step) if line.held else []
        if step is None and not spans:
            spans = [("", 0.0)]
        for period, hours in spans:
            figures = totals[(period, key)]
            figures[1 if cloud else 0] += hours * line.gpus
            figures[3 if cloud else 2] += hours * line.rate_per_hour
            if by == "workload":
                extra[(period, key)] = {"pool": line.pool, "team": line.team}
    return _output(totals, step, extra)
