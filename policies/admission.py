"""One admission cycle: walk the waiting work in order and admit what fits (pure: no I/O, no temporalio).

The live admission loop (workflows/admission.py -> activities/admission.py) and `fabric policy
simulate` (policies/simulation.py) both call `plan_cycle`; docs/admission.md describes the rules:

1. **Order.** Priority class value (high first); inside a class the team with the lowest fair share
   goes next (policies/fairshare.py), re-evaluated after every admission; inside a team the numeric
   `priority` (high first), then submission order.
2. **Admit.** Each workload in turn is placed by the policy engine (`CompiledPolicy.decide`:
   default target, burst, failover, compliance) on the capacity left by the ones before it, with
   its team's quota as an extra check per (pool, GPU type) (policies/quota.py).
3. **No starvation.** A workload that does not fit keeps a *claim* on the pool it waits for (the
   one closest to fitting): the free GPUs there are not handed to work ordered after it, except
   *backfill* that ends (by its `max_runtime_seconds`) before the claim's expected start.
4. **Preemption.** A workload whose class allows it (`lower_priority`, `reclaim_borrowed`) and that
   does not fit picks victims on one pool it may use: borrowing work first, then the lowest
   priority, then the most recently started; only as many as free the GPUs it needs.
5. **Budgets and approvals.** Work placed on a pool a budget counts reserves its estimated cost
   there (policies/budget.py); a pool whose budget it would cross is rejected with the budget's
   standing as the reason. A burst the policy asks a person to approve is not admitted until
   `approval` says so (or the approval's timeout takes its default); a denied burst is placed as
   if the burst target did not exist.
6. **Skip known misfits.** Capacity only shrinks inside a cycle, so once a shape (GPU request,
   classification, labels, hints) failed for a team, later workloads of that shape are not
   evaluated again in the same cycle.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from inferofabric.models.common import Health
from inferofabric.models.status import Decision, PoolView, Rejection
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.budget import BudgetBook, BudgetState, estimate, hourly_rate
from inferofabric.policies.engine import IN_SERVICE as IN_SERVICE_HEALTH
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest
from inferofabric.policies.fairshare import FairShares
from inferofabric.policies.feasibility import known_pools, workload_problems
from inferofabric.policies.quota import QuotaBook

NEVER, LOWER_PRIORITY, RECLAIM_BORROWED = "never", "lower_priority", "reclaim_borrowed"
_CAPACITY = "not enough free GPUs"


@dataclass
class Pending:
    """A waiting workload as the planner sees it."""

    workload_id: str
    attempt: int
    seq: int  # submission order; kept when the workload is preempted or moved
    team: str
    spec: WorkloadSpec
    priority_class: str
    class_value: int
    preemption: str = NEVER
    exclude: dict[str, str] = field(default_factory=dict)
    failed_pool_health: Health | None = None
    shape: Hashable | None = None  # filled by `shape_key` when absent
    approval: str | None = None  # "approved" | "denied" (by whom, in words) | None: not decided
    approval_asked_at: float | None = None  # when admission first asked for it (epoch s)

    @property
    def gpus(self) -> int:
        return self.spec.total_gpus

    @property
    def runtime_s(self) -> float | None:
        return float(self.spec.max_runtime_seconds) if self.spec.max_runtime_seconds else None


@dataclass
class Held:
    """GPUs an admitted attempt holds (a reservation)."""

    workload_id: str
    attempt: int
    team: str
    pool: str
    location: str
    gpu_type: str | None
    gpus: int
    class_value: int = 0
    priority_class: str = ""
    priority: int = 0
    started_at: float = 0.0
    expected_end: float | None = None  # started_at + max_runtime_seconds, when known
    borrowing: bool = False
    preempting: bool = False  # a preemption was requested: these GPUs are about to be freed
    order: int = 0  # admission order (the reservation's id): breaks ties of equal start times


@dataclass
class Admission:
    pending: Pending
    decision: Decision


@dataclass
class Preemption:
    victim: Held
    preemptor: str
    reason: str


@dataclass
class Waiting:
    workload_id: str
    team: str
    priority_class: str
    position: int  # 1 = next to be admitted
    team_position: int
    reason: str


@dataclass
class CyclePlan:
    admitted: list[Admission] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)  # in admission order (only when explained)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    quotas: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    waiting_total: int = 0  # every workload left waiting (`waiting` may hold only the first ones)
    evaluations: int = 0  # policy-engine decisions made (the rest were skipped as known misfits)
    skipped: int = 0
    approvals: list[Admission] = field(default_factory=list)  # placements waiting for a person's approval
    budgets: list[BudgetState] = field(default_factory=list)  # each budget after this cycle's reservations
    next_deadline: float | None = None  # the earliest approval timeout (the loop looks again then)


def _need(spec: WorkloadSpec) -> str:
    types = "/".join(spec.gpu_types)
    if spec.replicas > 1:
        return f"{spec.total_gpus} x {types} on one pool (a gang of {spec.replicas} x {spec.gpu_count})"
    return f"{spec.gpu_count} x {types}"


def _within_team(entry: Pending) -> tuple[int, int, str]:
    """Inside a team: the numeric priority (high first), then submission order."""
    return (-entry.spec.priority, entry.seq, entry.workload_id)


def shape_key(spec: WorkloadSpec, workload_id: str, by_id: bool) -> Hashable:
    """What a decision depends on besides the pools: two workloads of one shape get the same answer."""
    hints = spec.placement
    return (
        workload_id if by_id else None,
        tuple(spec.gpu_types), spec.gpu_count, spec.replicas, spec.data_classification, spec.project, spec.image,
        spec.priority, tuple(sorted(spec.labels.items())), tuple(sorted(spec.annotations.items())),
        tuple(hints.prefer_pools), tuple(hints.regions), hints.require_location, tuple(hints.allowed_regions),
    )


def reads_identity(policy: CompiledPolicy) -> bool:
    """Whether a condition reads the workload's id or name (then no two workloads share a shape)."""
    texts = [c.when or "" for c in policy.policy.constraints]
    placement = policy.policy.placement
    texts += [r.when for r in (placement.burst, placement.failover) if r is not None]
    return any("workload.id" in t or "workload.name" in t for t in texts)


@dataclass
class _Claim:
    amount: int
    shadow: float  # when the claimant is expected to be able to start (inf: unknown)


class _Capacity:
    """The pools as work ordered later sees them: reservations, this cycle's admissions and claims."""

    def __init__(self, pools: Sequence[PoolView]) -> None:
        self.views = {p.name: p.model_copy(update={"used": dict(p.used)}) for p in pools}
        self.known = known_pools(pools)  # every registered pool, whatever its health: what could ever fit
        self.order = [p.name for p in pools]
        # The views without claims, in order: `take` updates them in place, so the list stays valid.
        self.base = [self.views[name] for name in self.order]
        self.claims: dict[tuple[str, str], list[_Claim]] = defaultdict(list)
        self._cache: dict[float | None, list[PoolView]] = {}
        self._max_free: dict[int, dict[str, tuple[int, str | None]]] = {}
        self.version = 0  # changes with every admission or claim

    def take(self, pool: str, gpu_type: str | None, gpus: int) -> None:
        if gpu_type and gpus:
            used = self.views[pool].used
            used[gpu_type] = used.get(gpu_type, 0) + gpus
        self._cache.clear()
        self._max_free.clear()
        self.version += 1

    def claim(self, pool: str, gpu_type: str, amount: int, shadow: float) -> None:
        if amount > 0:
            self.claims[(pool, gpu_type)].append(_Claim(amount, shadow))
            self._cache.clear()
            self._max_free.clear()
            self.version += 1

    def max_free(self, views: list[PoolView], gpu_type: str) -> tuple[int, str | None]:
        """The most free GPUs of a type on any in-service pool of these views, and where."""
        key = id(views)
        table = self._max_free.get(key)
        if table is None:
            table = {}
            for view in views:
                if view.health not in IN_SERVICE_HEALTH:
                    continue
                for name in view.gpus:
                    free = view.free(name)
                    if free > table.get(name, (-1, None))[0]:
                        table[name] = (free, view.name)
            self._max_free[key] = table
        return table.get(gpu_type, (0, None))

    def most_free(self, views: list[PoolView], gpu_types: Sequence[str]) -> tuple[int, str | None, str]:
        """(free GPUs, pool, GPU type) of the acceptable type with the most free on one pool."""
        return max(((*self.max_free(views, t), t) for t in gpu_types), key=lambda item: item[0])

    def claimed(self, pool: str, gpu_type: str) -> int:
        return sum(c.amount for c in self.claims.get((pool, gpu_type), ()))

    def for_entry(self, now: float, runtime_s: float | None) -> list[PoolView]:
        """Views with the claims this workload must respect: all of them, except (backfill) those
        whose claimant cannot start before this workload would have ended anyway."""
        ends = now + runtime_s if runtime_s else None
        key = ends if self.claims else None
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if not self.claims:
            views = self.base
        else:
            extra: dict[str, dict[str, int]] = defaultdict(dict)
            for (pool, gpu_type), claims in self.claims.items():
                held = sum(c.amount for c in claims if ends is None or c.shadow < ends)
                if held:
                    extra[pool][gpu_type] = held
            views = []
            for name in self.order:
                view = self.views[name]
                if name in extra:
                    used = dict(view.used)
                    for gpu_type, held in extra[name].items():
                        used[gpu_type] = used.get(gpu_type, 0) + held
                    view = view.model_copy(update={"used": used})
                views.append(view)
        self._cache[key] = views
        return views


class _Planner:
    def __init__(self, held: Sequence[Held], pools: Sequence[PoolView], policy: CompiledPolicy,
                 usage: Mapping[str, float], now: float, budgets: Sequence[BudgetState] = ()) -> None:
        self.policy = policy
        document = policy.policy
        self.now = now
        self.budgets = BudgetBook(budgets)
        self.default_runtime_s = document.cost.default_runtime_seconds
        self.held = list(held)
        self.capacity = _Capacity(pools)
        self.quota = QuotaBook(document.teams)
        self.quota.load((h.team, h.location, h.gpu_type, h.gpus) for h in held)
        in_service: dict[str, int] = defaultdict(int)
        for pool in pools:
            if pool.health in IN_SERVICE_HEALTH:
                for gpu_type, count in pool.gpus.items():
                    in_service[gpu_type] += count
        self.shares = FairShares(document.teams, in_service, usage, document.fair_share.half_life_seconds)
        for h in held:
            self.shares.add(h.team, h.gpu_type, h.gpus)
        self.by_id = reads_identity(policy)
        self.misfits: dict[Hashable, str] = {}
        self._exhausted_at: tuple[int, bool] = (-1, False)
        self.locations = {p.name: str(p.location) for p in pools}
        self.plan = CyclePlan()

    # -- order ----------------------------------------------------------------------------------
    def walk(self, pending: Sequence[Pending], explain: int | bool) -> CyclePlan:
        limit = len(pending) if explain is True else int(explain)
        levels: dict[int, list[Pending]] = defaultdict(list)
        for entry in pending:
            levels[entry.class_value].append(entry)
        position = 0
        team_positions: dict[str, int] = defaultdict(int)
        for value in sorted(levels, reverse=True):
            entries = levels[value]
            if position >= limit and self._exhausted() and all(e.preemption == NEVER for e in entries):
                # Nothing is free, nothing is held for backfill and nobody here may preempt: the rest of
                # this class cannot be admitted in this cycle; count it without walking it.
                position += len(entries)
                self.plan.skipped += len(entries)
                continue
            queues: dict[str, deque[Pending]] = defaultdict(deque)
            entries.sort(key=_within_team)
            for entry in entries:
                queues[entry.team].append(entry)
            heap = [(self.shares.share(team), q[0].seq, team) for team, q in queues.items()]
            heapq.heapify(heap)
            never = all(e.preemption == NEVER for e in entries)
            while heap:
                if never and position >= limit and self._exhausted():
                    rest = sum(len(q) for q in queues.values())
                    position += rest
                    self.plan.skipped += rest
                    break
                _, _, team = heapq.heappop(heap)
                queue = queues[team]
                entry = queue.popleft()
                admitted, reason = self.visit(entry)
                if not admitted:
                    position += 1
                    team_positions[team] += 1
                    if position <= limit:
                        self.plan.waiting.append(Waiting(entry.workload_id, team, entry.priority_class, position,
                                                         team_positions[team], reason))
                if queue:
                    heapq.heappush(heap, (self.shares.share(team), queue[0].seq, team))
        self.plan.waiting_total = position
        teams = {e.team for e in pending} | {h.team for h in self.held}
        self.plan.shares = {team: self.shares.describe(team) for team in sorted(teams)}
        self.plan.quotas = {team: q for team in sorted(teams) if (q := self.quota.summary(team))}
        self.plan.budgets = self.budgets.states
        return self.plan

    def _exhausted(self) -> bool:
        """No in-service pool has a free GPU, and no GPUs are held by claims (that backfill could use)."""
        capacity = self.capacity
        if capacity.version != self._exhausted_at[0]:
            held = any(c.amount for claims in capacity.claims.values() for c in claims)
            base = capacity.base
            full = not held and all(capacity.max_free(base, t)[0] <= 0 for view in base for t in view.gpus)
            self._exhausted_at = (capacity.version, full)
        return self._exhausted_at[1]

    # -- one workload ---------------------------------------------------------------------------
    def visit(self, entry: Pending) -> tuple[bool, str]:
        if entry.shape is None:
            entry.shape = shape_key(entry.spec, entry.workload_id, self.by_id)
        claims = bool(self.capacity.claims) or self.budgets.limited
        key = (entry.team, entry.shape, entry.runtime_s if claims else None,
               tuple(sorted(entry.exclude)), entry.failed_pool_health, entry.approval)
        known = self.misfits.get(key)
        if known is not None:
            self.plan.skipped += 1
            return False, known
        views = self.capacity.for_entry(self.now, entry.runtime_s)
        if entry.gpus:
            # A necessary condition, checked before the policy engine: some pool has the GPUs free.
            best = self.capacity.most_free(views, entry.spec.gpu_types)
            if best[0] < entry.gpus:
                never = workload_problems(entry.spec.gpu_types, entry.gpus, self.capacity.known)
                if never:  # no registered pool could ever hold it: no claim, no preemption, say so
                    reason = f"needs {_need(entry.spec)}; it cannot run on any registered pool: {'; '.join(never)}"
                    self.misfits[key] = reason
                    self.plan.skipped += 1
                    return False, reason
                reason = self._no_room_reason(entry, best[0], best[1], best[2])
                if best[0] > 0 or entry.preemption != NEVER:  # keep free GPUs from later work; preempt
                    claimed = self._claim_eligible(entry, views)
                    self.misfits[key] = reason
                    return False, f"{reason}; {claimed}" if claimed else reason
                self.misfits[key] = reason
                self.plan.skipped += 1
                return False, reason
        decision = self._decide(entry, views, entry.approval if _denied(entry.approval) else None)
        if decision.placed and decision.approval and entry.approval != "approved":
            waiting = self._approval(entry, decision, views)
            if isinstance(waiting, str):
                return False, waiting
            decision = waiting
        if decision.placed:
            assert decision.pool is not None
            location = self.locations[decision.pool]
            verdict = self.quota.check(entry.team, location, decision.gpu_type, entry.gpus)
            decision.borrowing = verdict.borrowing
            decision.priority_class = entry.priority_class
            if verdict.borrowing:
                decision.reason += f"; borrows quota from cohort {self.quota.cohort_of(entry.team)}"
            self.capacity.take(decision.pool, decision.gpu_type, entry.gpus)
            self.quota.charge(entry.team, location, decision.gpu_type, entry.gpus)
            self.budgets.charge(entry.team, entry.spec.project, location, decision.estimated_cost or 0.0)
            self.shares.add(entry.team, decision.gpu_type, entry.gpus)
            self.held.append(Held(entry.workload_id, entry.attempt, entry.team, decision.pool, location,
                                  decision.gpu_type, entry.gpus, entry.class_value, entry.priority_class,
                                  entry.spec.priority, self.now,
                                  self.now + entry.runtime_s if entry.runtime_s else None, verdict.borrowing))
            self.plan.admitted.append(Admission(entry, decision))
            return True, decision.reason
        reason = self._wait_reason(entry, decision)
        if decision.mode == "wait" and "denied" in decision.reason.split(";")[0]:
            reason = f"{decision.reason.split(';')[0].removeprefix('waiting: ')}; {reason}"
        preempted = self._preempt(entry, decision) if entry.preemption != NEVER else ""
        if preempted:
            return False, f"{reason}; {preempted}"
        claimed = self._claim(entry, decision)
        self.misfits[key] = reason
        return False, f"{reason}; {claimed}" if claimed else reason

    def _decide(self, entry: Pending, views: list[PoolView], burst_denied: str | None) -> Decision:
        self.plan.evaluations += 1
        budgets = self.budgets
        return self.policy.decide(PlacementRequest(
            workload_id=entry.workload_id, attempt=entry.attempt, spec=entry.spec, pools=views,
            exclude=entry.exclude, failed_pool_health=entry.failed_pool_health,
            admissible=self._admissible(entry) if self.quota.limited or budgets.limited else None,
            runtime_s=self._runtime(entry), burst_denied=burst_denied,
            team_vars={"budget_remaining": budgets.remaining(entry.team)} if budgets.limited else None,
        ))

    def _runtime(self, entry: Pending) -> float:
        return entry.runtime_s or self.default_runtime_s

    def _approval(self, entry: Pending, decision: Decision, views: list[PoolView]) -> Decision | str:
        """A placement the policy asks a person to approve: wait for them, or after the approval's
        timeout take its default. Returns the decision to go on with, or the reason it waits."""
        rule = self.policy.policy.placement.burst
        approval = rule.approval if rule is not None else None
        asked = entry.approval_asked_at if entry.approval_asked_at is not None else self.now
        if approval is not None and self.now >= asked + approval.timeout_seconds:
            if approval.default == "approve":
                decision.reason += f"; approved by default: nobody answered within {approval.timeout}"
                return decision
            denied = f"{decision.mode} denied by default: nobody approved it within {approval.timeout}"
            return self._decide(entry, views, denied)
        deadline = asked + (approval.timeout_seconds if approval else 0)
        if self.plan.next_deadline is None or deadline < self.plan.next_deadline:
            self.plan.next_deadline = deadline
        self.plan.approvals.append(Admission(entry, decision))
        cost = f"estimated ${decision.estimated_cost:,.2f}" if decision.estimated_cost is not None else "no estimate"
        left = max(0.0, deadline - self.now)
        then = approval.default if approval else "deny"
        return (f"waiting for approval to {decision.mode} to {decision.pool} ({cost}; the policy asks when "
                f"{approval.when if approval else 'true'}): fabric approve {entry.workload_id} or fabric deny "
                f"{entry.workload_id}; {then} in {left:.0f}s if nobody answers")

    def _admissible(self, entry: Pending):  # type: ignore[no-untyped-def]
        quota, locations, budgets = self.quota, self.locations, self.budgets
        team, project, runtime_s = entry.team, entry.spec.project, self._runtime(entry)

        def check(pool: PoolView, gpu_type: str, gpus: int) -> str | None:
            location = locations.get(pool.name, str(pool.location))
            if quota.limited:
                verdict = quota.check(team, location, gpu_type, gpus)
                if not verdict.allowed:
                    return verdict.reason
            if budgets.limited:
                cost = estimate(hourly_rate(pool, gpu_type, entry.spec), runtime_s)
                return budgets.check(team, project, location, cost)
            return None

        return check

    # -- explanations -----------------------------------------------------------------------------
    def _capacity_rejections(self, decision: Decision) -> list[str]:
        return [r.pool for r in decision.rejected if r.reason.startswith(_CAPACITY)]

    def _wait_reason(self, entry: Pending, decision: Decision) -> str:
        spec = entry.spec
        parts = [f"needs {_need(spec)}" if spec.gpu_count else "needs no GPU"]
        free_parts = []
        for name in self._capacity_rejections(decision)[:3]:
            view = self.capacity.views[name]
            gpu_type = max(spec.gpu_types, key=lambda t, v=view: (v.free(t), v.gpus.get(t, 0)))  # type: ignore[misc]
            held = self.capacity.claimed(name, gpu_type)
            free = max(0, view.free(gpu_type) - held)
            text = f"{name} has {free} of {view.gpus.get(gpu_type, 0)} {gpu_type} free"
            if held:
                text += f" ({held} held for work ordered before it)"
            free_parts.append(text)
        parts += free_parts
        quota = next((r.reason for r in decision.rejected if r.reason.startswith(("team ", "project "))), None)
        if quota is None:
            capacity = self._capacity_rejections(decision)
            quota = self._quota_note(entry, capacity[0]) if capacity else None
        if quota:
            parts.append(quota)
        others: dict[str, list[str]] = {}
        for rejection in decision.rejected:
            if not rejection.reason.startswith((_CAPACITY, "team ", "project ")):
                others.setdefault(rejection.reason, []).append(rejection.pool)
        for why, names in list(others.items())[:2]:
            if why.startswith(("denied by ", "not allowed by ")) and "constraint #" not in why:
                why = why.split(" (", 1)[0]  # a named constraint: its name says it
            parts.append(f"{', '.join(names[:3])}{' and more' if len(names) > 3 else ''}: {why}")
        if len(parts) == 1:
            parts.append("no pools registered")
        return "; ".join(parts)

    def _no_room_reason(self, entry: Pending, free: int, pool: str | None, gpu_type: str) -> str:
        spec = entry.spec
        if pool is None:
            where = f"no pool in service has {gpu_type}"
        else:
            total = self.capacity.views[pool].gpus.get(gpu_type, 0)
            where = f"{pool} has {free} of {total} {gpu_type} free, the most of any pool"
        raw = self.capacity.most_free(self.capacity.base, spec.gpu_types)
        if raw[0] > free and raw[1] is not None:
            held = self.capacity.claimed(raw[1], raw[2])
            where = f"{raw[1]} has {raw[0]} {raw[2]} free, {held} held for work ordered before it"
        text = f"needs {_need(spec)}; {where}"
        quota = self._quota_note(entry, pool) if pool else None
        return f"{text}; {quota}" if quota else text

    def _quota_note(self, entry: Pending, pool: str) -> str | None:
        """Capacity is checked first; say so too when the team's quota would stop it anyway."""
        spec = entry.spec
        if not self.quota.limited or not spec.gpu_count:
            return None
        verdicts = [self.quota.check(entry.team, self.locations[pool], t, spec.total_gpus) for t in spec.gpu_types]
        return verdicts[0].reason if verdicts and not any(v.allowed for v in verdicts) else None

    def _claim_eligible(self, entry: Pending, views: list[PoolView]) -> str:
        """The claim of a workload that did not reach the policy engine: on the pool it may use that has
        the most of its GPUs free."""
        eligible = self.policy.eligible(PlacementRequest(
            workload_id=entry.workload_id, attempt=entry.attempt, spec=entry.spec, pools=views,
            exclude=entry.exclude, failed_pool_health=entry.failed_pool_health))
        decision = Decision(workload_id=entry.workload_id, attempt=entry.attempt,
                            rejected=[Rejection(pool=name, reason=_CAPACITY) for name in eligible])
        if entry.preemption != NEVER:
            preempted = self._preempt(entry, decision)
            if preempted:
                return preempted
        return self._claim(entry, decision)

    # -- no starvation ----------------------------------------------------------------------------
    def _claim(self, entry: Pending, decision: Decision) -> str:
        """Keep the free GPUs of the pool the workload waits for from work ordered after it."""
        best: tuple[int, str, str] | None = None
        for name in self._capacity_rejections(decision):
            view = self.capacity.views[name]
            for gpu_type in entry.spec.gpu_types:
                if view.gpus.get(gpu_type, 0) < entry.gpus:
                    continue
                free = max(0, view.free(gpu_type) - self.capacity.claimed(name, gpu_type))
                if best is None or (free, name) > (best[0], best[1]):
                    best = (free, name, gpu_type)
        if best is None:
            return ""
        free, pool, gpu_type = best
        amount = min(free, entry.gpus)
        shadow = self._shadow(pool, gpu_type, entry.gpus - free)
        self.capacity.claim(pool, gpu_type, amount, shadow)
        when = "" if math.isinf(shadow) else f", expected to start in {max(0, shadow - self.now):.0f}s"
        if amount == 0:
            return f"next in line for {gpu_type} on {pool}{when}"
        return f"holds its claim on {pool} ({amount} {gpu_type} kept for it{when})"

    def _shadow(self, pool: str, gpu_type: str, missing: int) -> float:
        """When `missing` more GPUs free up on the pool, from running work's expected ends."""
        if missing <= 0:
            return self.now
        ends = sorted((h.expected_end if h.expected_end is not None else math.inf, h.gpus)
                      for h in self.held if h.pool == pool and h.gpu_type == gpu_type)
        freed = 0
        for end, gpus in ends:
            freed += gpus
            if freed >= missing:
                return end
        return math.inf

    # -- preemption -------------------------------------------------------------------------------
    def _preempt(self, entry: Pending, decision: Decision) -> str:
        cohort = self.quota.cohort_of(entry.team)
        best: tuple[int, int, str, str, list[Held]] | None = None
        for name in self._capacity_rejections(decision):
            view = self.capacity.views[name]
            location = self.locations[name]
            for gpu_type in entry.spec.gpu_types:
                if view.gpus.get(gpu_type, 0) < entry.gpus:
                    continue
                verdict = self.quota.check(entry.team, location, gpu_type, entry.gpus)
                if not verdict.allowed:
                    continue
                on_pool = [h for h in self.held if h.pool == name and h.gpu_type == gpu_type]
                freeing = sum(h.gpus for h in on_pool if h.preempting)
                missing = entry.gpus - max(0, view.free(gpu_type) - self.capacity.claimed(name, gpu_type)) - freeing
                if missing <= 0:
                    # Earlier victims already free enough: wait for them, keep the claim.
                    self.capacity.claim(name, gpu_type, view.free(gpu_type), self.now)
                    return f"waiting for preempted work to stop on {name}"
                eligible = [h for h in on_pool if not h.preempting and self._may_preempt(entry, h, cohort,
                                                                                        verdict.borrowing)]
                eligible.sort(key=lambda h: (not h.borrowing, h.class_value, h.priority, -h.started_at, -h.order))
                victims: list[Held] = []
                freed = 0
                for victim in eligible:
                    if freed >= missing:
                        break
                    victims.append(victim)
                    freed += victim.gpus
                if freed < missing:
                    continue
                candidate = (len(victims), freed, name, gpu_type, victims)
                if best is None or candidate[:3] < best[:3]:
                    best = candidate
        if best is None:
            return ""
        _, _, pool, gpu_type, victims = best
        names = []
        for victim in victims:
            victim.preempting = True
            why = self._preemption_reason(entry, victim)
            self.plan.preemptions.append(Preemption(victim, entry.workload_id, why))
            names.append(victim.workload_id)
        view = self.capacity.views[pool]
        self.capacity.claim(pool, gpu_type, max(0, view.free(gpu_type)), self.now)
        return f"preempting {', '.join(names)} on {pool}"

    def _may_preempt(self, entry: Pending, victim: Held, cohort: str | None, preemptor_borrows: bool) -> bool:
        if entry.preemption == LOWER_PRIORITY and victim.class_value < entry.class_value:
            return True
        # Reclaim: work another team of the cohort runs on borrowed quota yields to a team within its own.
        return (victim.borrowing and victim.team != entry.team and cohort is not None and not preemptor_borrows
                and self.quota.cohort_of(victim.team) == cohort)

    def _preemption_reason(self, entry: Pending, victim: Held) -> str:
        if entry.preemption == LOWER_PRIORITY and victim.class_value < entry.class_value:
            why = (f"class {entry.priority_class} ({entry.class_value}) over "
                   f"{victim.priority_class or 'its class'} ({victim.class_value})")
        else:
            why = f"team {entry.team} reclaims quota that team {victim.team} borrowed"
        return f"preempted by {entry.workload_id} on {victim.pool}: {why}"


def _denied(approval: str | None) -> bool:
    return bool(approval) and approval != "approved"


def plan_cycle(pending: Sequence[Pending], held: Sequence[Held], pools: Sequence[PoolView],
               policy: CompiledPolicy, usage: Mapping[str, float], now: float,
               explain: int | bool = False, budgets: Sequence[BudgetState] = ()) -> CyclePlan:
    """Decide one admission cycle. `pools` carry their reservations in `used`; `held` lists those
    reservations with their owners; `usage` is each team's decayed GPU-seconds; `now` in seconds;
    `explain`: record position and reason of the first N waiting workloads (True: all); `budgets`:
    each budget's standing before the cycle (it is updated with the cycle's reservations)."""
    return _Planner(held, pools, policy, usage, now, budgets).walk(pending, explain)


def resolve_class(policy: CompiledPolicy, spec: WorkloadSpec, override: str | None = None) -> tuple[str, int, str]:
    """(class name, value, preemption) for a workload; an unknown class falls back to the default."""
    document = policy.policy
    try:
        chosen = document.priority_class(override or spec.priority_class)
    except ValueError:
        chosen = document.priority_class(None)
    return chosen.name, chosen.value, chosen.preemption
