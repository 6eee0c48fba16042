"""What-if: replay a workload trace through the admission core and the policy engine (pure, no I/O).

A discrete-event simulation: workloads arrive, each event (an arrival, a job ending) runs one
admission cycle — the very `plan_cycle` the live admission loop runs — and admitted work ends after
its run time. A preempted job stops at once and goes back to the queue with its place in the order
(it restarts from the beginning: a conservative figure for work without checkpoints).

`fabric policy simulate` and bench/trace_replay.py use it. Trace CSV header:
`arrival_s,gpus,gpu_types,runtime_s,team,priority_class,classification` (`gpu_types` `|`-separated).
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferofabric.models.common import DataClassification, Location
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import PoolView
from inferofabric.models.workload import GpuRequest, PlacementHints, Resources, WorkloadSpec
from inferofabric.policies.admission import CycleInput, Held, Pending, plan_cycle, resolve_class
from inferofabric.policies.engine import CompiledPolicy
from inferofabric.policies.fairshare import accrue

TRACE_COLUMNS = ("arrival_s", "gpus", "gpu_types", "runtime_s", "team", "priority_class", "classification")
METRICS = ("wait_p50_s", "wait_p90_s", "wait_p99_s", "gpu_hours_on_prem", "gpu_hours_cloud", "cloud_cost",
           "preemptions")


@dataclass
class TraceJob:
    name: str
    arrival_s: float
    gpus: int
    gpu_types: list[str]
    runtime_s: float
    team: str
    priority_class: str | None
    classification: str = "internal"


@dataclass
class _Run:
    job: TraceJob
    pool: str
    location: str
    gpu_type: str | None
    started: float
    token: int  # a preempted run's end event is stale: the token tells
    borrowing: bool = False


@dataclass
class SimulationResult:
    teams: dict[str, dict[str, float]]
    total: dict[str, float]
    cycles: int = 0
    evaluations: int = 0
    cycle_p99_ms: float = 0.0
    never_admitted: int = 0
    gpu_seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"teams": self.teams, "total": self.total}


def load_trace(path: Path) -> list[TraceJob]:
    """Read a trace CSV; a bad row is a ValueError naming its line."""
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise ValueError(f"cannot read trace {path}: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"trace {path}: missing column(s) {', '.join(missing)} "
                             f"(header: {','.join(TRACE_COLUMNS)})")
        jobs = []
        for number, row in enumerate(reader, start=2):
            try:
                types = [t for t in (row["gpu_types"] or "").split("|") if t]
                gpus = int(row["gpus"])
                if gpus > 0 and not types:
                    raise ValueError("gpu_types is empty")
                jobs.append(TraceJob(
                    name=f"job-{number - 1}", arrival_s=float(row["arrival_s"]), gpus=gpus, gpu_types=types,
                    runtime_s=max(1.0, float(row["runtime_s"])), team=row["team"] or "default",
                    priority_class=row["priority_class"] or None,
                    classification=DataClassification(row["classification"] or "internal").value))
            except (TypeError, ValueError) as error:
                raise ValueError(f"trace {path}, line {number}: {error}") from None
    return sorted(jobs, key=lambda j: j.arrival_s)


def pool_views(pools: Iterable[PoolSpec]) -> list[PoolView]:
    return [PoolView(name=p.name, location=p.location, backend=p.backend, region=p.region, gpus=dict(p.gpus),
                     price_per_gpu_hour=dict(p.price_per_gpu_hour), labels=dict(p.labels)) for p in pools]


def _spec(job: TraceJob) -> WorkloadSpec:
    # model_construct: the trace is validated on load, and a replay builds thousands of specs.
    return WorkloadSpec.model_construct(
        name=job.name, team=job.team, project="trace", image="trace", command=[], args=[], env={},
        image_pull_secret=None,
        resources=Resources.model_construct(gpu=GpuRequest.model_construct(type=job.gpu_types, count=job.gpus),
                                            cpu=1, memory="1Gi"),
        data_classification=DataClassification(job.classification), priority=50, priority_class=job.priority_class,
        labels={}, annotations={}, placement=PlacementHints(), max_retries=0,
        max_runtime_seconds=math.ceil(job.runtime_s))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def simulate(policy: PlacementPolicy, pools: Sequence[PoolSpec], jobs: Sequence[TraceJob],
             horizon_s: float | None = None) -> SimulationResult:
    """Replay `jobs` on `pools` under `policy`; figures per team and in total."""
    compiled = CompiledPolicy(policy)
    jobs_by_name = {j.name: j for j in jobs}
    views = pool_views(pools)
    by_name = {v.name: v for v in views}
    half_life = policy.fair_share.half_life_seconds
    seq = itertools.count()
    tokens = itertools.count()
    events: list[tuple[float, int, str, Any]] = [(j.arrival_s, next(seq), "arrive", j) for j in jobs]
    heapq.heapify(events)
    order: dict[str, int] = {}
    pending: dict[str, Pending] = {}
    running: dict[str, _Run] = {}
    waits: dict[str, list[float]] = defaultdict(list)
    hours: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cost: dict[str, float] = defaultdict(float)
    preempted: dict[str, int] = defaultdict(int)
    admitted_once: set[str] = set()
    usage: dict[str, float] = defaultdict(float)
    in_use: dict[str, int] = defaultdict(int)
    teams = {j.team for j in jobs}
    last = 0.0
    cycle_times: list[float] = []
    evaluations = 0

    def account(run: _Run, until: float) -> None:
        gpu_hours = run.job.gpus * max(0.0, until - run.started) / 3600
        hours[run.job.team][run.location] += gpu_hours
        if run.location == Location.CLOUD.value and run.gpu_type:
            cost[run.job.team] += gpu_hours * by_name[run.pool].price_per_gpu_hour.get(run.gpu_type, 0.0)

    def release(run: _Run) -> None:
        if run.gpu_type:
            by_name[run.pool].used[run.gpu_type] -= run.job.gpus
        in_use[run.job.team] -= run.job.gpus

    while events:
        now = events[0][0]
        if horizon_s is not None and now > horizon_s:
            break
        for team in teams:
            usage[team] = accrue(usage[team], in_use[team], now - last, half_life)
        last = now
        while events and events[0][0] == now:
            _, _, kind, item = heapq.heappop(events)
            if kind == "arrive":
                job: TraceJob = item
                order[job.name] = next(seq)
                name, value, preemption = resolve_class(compiled, _spec(job))
                pending[job.name] = Pending(job.name, 1, order[job.name], job.team, _spec(job), name, value, preemption)
            else:
                job_name, token = item
                run = running.get(job_name)
                if run is None or run.token != token:
                    continue  # preempted before it ended
                del running[job_name]
                account(run, now)
                release(run)
        held = [Held(r.job.name, 1, r.job.team, r.pool, r.location, r.gpu_type, r.job.gpus,
                     resolve_class(compiled, _spec(r.job))[1], "", 50, r.started, r.started + r.job.runtime_s,
                     borrowing=r.borrowing) for r in running.values()]
        started = time.perf_counter()
        plan = plan_cycle(CycleInput(list(pending.values()), held, views, compiled, usage, now))
        cycle_times.append(time.perf_counter() - started)
        evaluations += plan.evaluations
        for stop in plan.preemptions:
            run = running.pop(stop.victim.workload_id, None)
            if run is None:
                continue
            account(run, now)
            release(run)
            preempted[run.job.team] += 1
            name, value, mode = resolve_class(compiled, _spec(run.job))
            pending[run.job.name] = Pending(run.job.name, 1, order[run.job.name], run.job.team, _spec(run.job),
                                            name, value, mode)
        for admission in plan.admitted:
            entry = admission.pending
            decision = admission.decision
            job = jobs_by_name[entry.workload_id]
            del pending[entry.workload_id]
            assert decision.pool is not None
            pool = by_name[decision.pool]
            if decision.gpu_type:
                pool.used[decision.gpu_type] = pool.used.get(decision.gpu_type, 0) + job.gpus
            in_use[job.team] += job.gpus
            if job.name not in admitted_once:
                admitted_once.add(job.name)
                waits[job.team].append(now - job.arrival_s)
            token = next(tokens)
            run = _Run(job, pool.name, pool.location.value, decision.gpu_type, now, token, decision.borrowing)
            running[job.name] = run
            heapq.heappush(events, (now + job.runtime_s, next(seq), "end", (job.name, token)))
    end = last
    for run in running.values():
        account(run, end)

    def figures(selected: Iterable[str]) -> dict[str, float]:
        chosen = list(selected)
        all_waits = [w for t in chosen for w in waits.get(t, [])]
        return {
            "wait_p50_s": round(_percentile(all_waits, 0.5), 1),
            "wait_p90_s": round(_percentile(all_waits, 0.9), 1),
            "wait_p99_s": round(_percentile(all_waits, 0.99), 1),
            "gpu_hours_on_prem": round(sum(hours[t][Location.ON_PREM.value] for t in chosen), 3),
            "gpu_hours_cloud": round(sum(hours[t][Location.CLOUD.value] for t in chosen), 3),
            "cloud_cost": round(sum(cost[t] for t in chosen), 2),
            "preemptions": sum(preempted[t] for t in chosen),
        }

    return SimulationResult(
        teams={team: figures([team]) for team in sorted(teams)}, total=figures(sorted(teams)),
        cycles=len(cycle_times), evaluations=evaluations,
        cycle_p99_ms=round(_percentile(cycle_times, 0.99) * 1000, 3), never_admitted=len(pending),
        gpu_seconds={team: sum(hours[team].values()) * 3600 for team in sorted(teams)},
    )
