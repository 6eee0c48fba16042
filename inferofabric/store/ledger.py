"""Cost reports over the ledger (table `ledger`, written by admission, the job's start and release).

A line costs `held hours x GPUs x price per GPU-hour`, where held = from the back end's start to its
end (or to now while it runs: cost to date), clipped to the report's window. Launch-pending time
(admission to start) is kept apart and not charged. A moved or preempted attempt keeps its own line.

Reports over a million lines: an ended line adds its GPU-hours and cost to daily sums (table
`ledger_days`, per UTC day and attribution) when it ends, so the whole days inside a window are
read from those sums; only running lines and the window's partial first and last days are clipped
here, line by line (bench/cost.py; tests/store/test_ledger_store.py checks both agree).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select

from inferofabric.store.db import Store, as_utc, line_rate
from inferofabric.store.tables import LedgerDayRow, LedgerRow, utcnow

_L = LedgerRow.__table__  # type: ignore[attr-defined]
_D = LedgerDayRow.__table__  # type: ignore[attr-defined]
GROUPS = ("team", "project", "pool", "location", "region", "workload")
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
    whole_day: bool = field(default=False, repr=False)  # a database sum of one UTC day's lines
    rate_per_hour: float = 0.0  # USD per held hour: GPUs, plus CPU and memory where the pool prices them

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["held"], out["whole_day"]
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
    query = query.where(_L.c.admitted_at < end).order_by(_L.c.admitted_at, _L.c.workload_id, _L.c.attempt)
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
        cost=hours * rate, pending_seconds=max(0.0, pending), held=held, rate_per_hour=rate)


def report(store: Store, by: str = "team", start: datetime | None = None, end: datetime | None = None,
           step: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of GPU-hours and cost, on-prem and cloud apart, per `by` key (and per period with `step`)."""
    if by not in GROUPS:
        raise ValueError(f"--by {by!r}: one of {', '.join(GROUPS)}")
    if step is not None and step not in STEPS:
        raise ValueError(f"--step {step!r}: one of {', '.join(STEPS)}")
    now = now or utcnow()
    until = min(end or now, now)
    if by == "workload":  # one row per workload: line by line
        return summarize(lines(store, start, end, now=now), by, step)
    # Whole UTC days inside the window come from the daily sums of ended lines; the window's partial
    # first and last days, and running lines, from the lines themselves.
    first = _midnight(start) + timedelta(days=1) if start and start != _midnight(start) else start
    last = _midnight(until)
    if first is not None and first > last:  # the window lies inside one day
        edges, days = [(start, until)], False
    else:
        edges = [(lo, hi) for lo, hi in ((start, first), (last, until)) if lo is not None and hi is not None
                 and lo < hi]
        days = True
    pieces = _days(store, by, step, first, last) if days else []
    # Each query can use the index on ended_at (an OR of them would scan the table).
    queries = [select(_L).where(_L.c.ended_at.is_(None))]
    queries += [select(_L).where(_L.c.ended_at > lo, _L.c.started_at < hi) for lo, hi in edges]
    seen: set[int] = set()
    with store.session() as s:
        rows = [row for query in queries for row in s.execute(query).all()
                if row.id not in seen and not seen.add(row.id)]  # type: ignore[func-returns-value]
    for row in rows:
        if as_utc(row.admitted_at) >= until:
            continue
        if row.ended_at is None:
            pieces.append(_clip(row, start, until))
            continue
        for lo, hi in edges:
            piece = _clip(row, lo, hi)
            if piece.held is not None and piece.gpu_hours > 0:
                pieces.append(piece)
    return summarize(pieces, by, step)


def _midnight(value: datetime) -> datetime:
    value = as_utc(value)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _days(store: Store, by: str, step: str | None, first: datetime | None, last: datetime) -> list[CostLine]:
    """The daily sums of [first, last) grouped by `by` (and by day with `step`), as CostLines whose
    figures `summarize` adds as they are."""
    key = getattr(_D.c, by)
    groups = [key, _D.c.location] + ([_D.c.day] if step is not None else [])
    query = (select(*groups, func.sum(_D.c.gpu_hours), func.sum(_D.c.cost)).where(_D.c.day < last.date().isoformat())
             .group_by(*groups))
    if first is not None:
        query = query.where(_D.c.day >= first.date().isoformat())
    with store.session() as s:
        rows = s.execute(query).all()
    out = []
    for row in rows:
        values = {"team": "", "project": "", "pool": "", "region": "", by: row[0]}
        day = _as_day(row[2]) if step is not None else _EPOCH
        hours, cost = float(row[-2] or 0.0), float(row[-1] or 0.0)
        out.append(CostLine(
            workload_id="", attempt=0, team=values["team"], project=values["project"], pool=values["pool"],
            location=row[1], region=values["region"], gpu_type=None, gpus=1, price_per_gpu_hour=0.0, reason="",
            admitted_at=_EPOCH, started_at=None, ended_at=None, gpu_hours=hours, cost=cost, pending_seconds=0.0,
            held=(day, day), whole_day=True))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_day(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def summarize(found: Iterable[CostLine], by: str, step: str | None) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "gpu_hours_on_prem": 0.0, "gpu_hours_cloud": 0.0, "cost_on_prem": 0.0, "cost_cloud": 0.0})
    extra: dict[tuple[str, str], dict[str, str]] = {}
    for line in found:
        key = line.workload_id if by == "workload" else str(getattr(line, by))
        for period, hours in _by_period(line, step):
            row = totals[(period, key)]
            where = "cloud" if line.location == "cloud" else "on_prem"
            if line.whole_day:  # summed by the database: its figures as they are
                row[f"gpu_hours_{where}"] += line.gpu_hours
                row[f"cost_{where}"] += line.cost
                continue
            row[f"gpu_hours_{where}"] += hours * line.gpus
            row[f"cost_{where}"] += hours * line.rate_per_hour
            if by == "workload":
                extra[(period, key)] = {"pool": line.pool, "team": line.team}
    out = []
    for (period, key), row in sorted(totals.items()):
        item: dict[str, Any] = {"key": key} if step is None else {"period": period, "key": key}
        item.update({name: round(value, 6) for name, value in row.items()})
        item["cost_total"] = round(row["cost_on_prem"] + row["cost_cloud"], 6)
        item.update(extra.get((period, key), {}))
        out.append(item)
    return out


def _by_period(line: CostLine, step: str | None) -> list[tuple[str, float]]:
    """The line's held hours (in its window), split at day or week boundaries (UTC) when `step` asks."""
    if step is None:
        return [("", max(0.0, (line.held[1] - line.held[0]).total_seconds() / 3600) if line.held else 0.0)]
    if line.held is None:
        return []
    if line.whole_day:
        day = line.held[0]
        begin = day - timedelta(days=day.weekday()) if step == "week" else day
        return [(begin.date().isoformat(), 0.0)]
    out = []
    cursor, hi = line.held
    while cursor < hi:
        day = datetime(cursor.year, cursor.month, cursor.day, tzinfo=UTC)
        begin = day - timedelta(days=day.weekday()) if step == "week" else day
        boundary = begin + timedelta(days=7 if step == "week" else 1)
        upto = min(boundary, hi)
        out.append((begin.date().isoformat(), (upto - cursor).total_seconds() / 3600))
        cursor = upto
    return out


def cost_view(store: Store, by: str = "team", start: str | None = None, end: str | None = None,
              step: str | None = None, workload_id: str | None = None) -> dict[str, Any]:
    """What `fabric cost` shows, as JSON: report rows, or one workload's lines (`workload_id`)."""
    begin = datetime.fromisoformat(start) if start else None
    until = datetime.fromisoformat(end) if end else None
    if workload_id is not None:
        found = lines(store, begin, until, workload_id=workload_id)
        return {"workload": workload_id, "lines": [line.as_json() for line in found],
                "cost_total": round(sum(line.cost for line in found), 6)}
    return {"by": by, "step": step, "from": start, "to": end, "rows": report(store, by, begin, until, step)}
