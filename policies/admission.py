"""One admission cycle: walk the waiting work in order and admit what fits (pure: no I/O, no temporalio).

The live admission loop (workflows/admission.py -> activities/admission.py) and `fabric policy
simulate` (policies/simulation.py) both call `plan_cycle(snapshot)` with the cycle's `CycleInput`
(policies/cycle.py); docs/admission.md describes the rules:

1. **Order.** Priority class value (high first); inside a class the team with the lowest fair share
   goes next (policies/fairshare.py), re-evaluated after every admission; inside a team the numeric
   `priority` (high first), then submission order.
2. **Admit.** Each workload in turn is placed by the policy engine (`CompiledPolicy.decide`:
   default target, burst, failover, compliance) on the capacity left by the ones before it, with
   its team's quota as an extra check per (pool, GPU type) (policies/quota.py).
3. **No starvation.** A workload that does not fit keeps a *claim* on the pool it waits for (the
   one closest to fitting): the free GPUs there are not handed to work ordered after it, except
   *backfill* that ends (by its `max_runtime_seconds`) before the claim's expected start
   (policies/capacity.py). The pools it may claim are those rejected with kind `capacity`.
4. **Preemption** (policies/preemption.py). A workload whose class allows it (`lower_priority`,
   `reclaim_borrowed`) and that does not fit picks victims on one pool it may use: borrowing work
   first, then the lowest priority, then the most recently started; only as many as free the GPUs
   it needs.
5. **Budgets and approvals.** Work placed on a pool a budget counts reserves its estimated cost
   there (policies/budget.py); a pool whose budget it would cross is rejected (kind `budget`) with
   the budget's standing as the reason. A burst the policy asks a person to approve is not admitted until
   `approval` says so (or the approval's timeout takes its default); a denied burst is placed as
   if the burst target did not exist.
6. **Skip known misfits.** Capacity only shrinks inside a cycle, so once a shape (GPU request,
   classification, labels, hints) failed for a team, later workloads of that shape are not
   evaluated again in the same cycle.

Every decision here is made on the *kinds* of reasons (policies/reasons.py), never on their words;
the words (policies/explain.py) are for people.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Hashable, Sequence
from typing import NamedTuple

from inferofabric.models.status import Decision, PoolView, WaitKind
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies import preemption
from inferofabric.policies.budget import BudgetBook, estimate, hourly_rate
from inferofabric.policies.capacity import Capacity, shadow
from inferofabric.policies.cycle import (
    LOWER_PRIORITY,
    NEVER,
    RECLAIM_BORROWED,
    Admission,
    ClaimMade,
    CycleInput,
    CyclePlan,
    Held,
    Pending,
    Preemption,
    Waiting,
)
from inferofabric.policies.engine import IN_SERVICE as IN_SERVICE_HEALTH
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest
from inferofabric.policies.explain import Explainer, capacity_pools
from inferofabric.policies.fairshare import FairShares
from inferofabric.policies.feasibility import workload_problems
from inferofabric.policies.quota import QuotaBook
from inferofabric.policies.reasons import Refusal, wait_kind_of

__all__ = [
    "LOWER_PRIORITY", "NEVER", "RECLAIM_BORROWED", "Admission", "CycleInput", "CyclePlan", "Held", "Pending",
    "Preemption", "Waiting", "plan_cycle", "reads_identity", "resolve_class", "shape_key",
]


class _Wait(NamedTuple):
    kind: WaitKind
    reason: str


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


def _denied(approval: str | None) -> bool:
    return bool(approval) and approval != "approved"


class _Planner:
    """One cycle over one snapshot: the order (`walk`), one workload's turn (`visit`), claims."""

    def __init__(self, snapshot: CycleInput) -> None:
        policy = self.policy = snapshot.policy
        document = policy.policy
        self.now = snapshot.now
        self.budgets = BudgetBook(snapshot.budgets)
        self.default_runtime_s = document.cost.default_runtime_seconds
        self.held = list(snapshot.held)
        pools = snapshot.pools
        self.capacity = Capacity(pools)
        self.quota = QuotaBook(document.teams)
        self.quota.load((h.team, h.location, h.gpu_type, h.gpus) for h in self.held)
        in_service: dict[str, int] = defaultdict(int)
        for pool in pools:
            if pool.health in IN_SERVICE_HEALTH:
                for gpu_type, count in pool.gpus.items():
                    in_service[gpu_type] += count
        self.shares = FairShares(document.teams, in_service, snapshot.usage, document.fair_share.half_life_seconds)
        for h in self.held:
            self.shares.add(h.team, h.gpu_type, h.gpus)
        self.by_id = reads_identity(policy)
        self.misfits: dict[Hashable, _Wait] = {}
        self._exhausted_at: tuple[int, bool] = (-1, False)
        self.locations = {p.name: str(p.location) for p in pools}
        self.explain = Explainer(self.capacity, self.quota, self.locations)
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
                wait = self.visit(entry)
                if wait is not None:
                    position += 1
                    team_positions[team] += 1
                    if position <= limit:
                        self.plan.waiting.append(Waiting(entry.workload_id, team, entry.priority_class, position,
                                                         team_positions[team], wait.reason, wait.kind))
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
        version = self.capacity.version
        if version != self._exhausted_at[0]:
            self._exhausted_at = (version, self.capacity.exhausted())
        return self._exhausted_at[1]

    # -- one workload ---------------------------------------------------------------------------
    def visit(self, entry: Pending) -> _Wait | None:
        """Admit the workload (None), or say why it waits, keeping its claim or preempting on the way."""
        if entry.shape is None:
            entry.shape = shape_key(entry.spec, entry.workload_id, self.by_id)
        claims = bool(self.capacity.claims) or self.budgets.limited
        key = (entry.team, entry.shape, entry.runtime_s if claims else None,
               tuple(sorted(entry.exclude)), entry.failed_pool_health, entry.approval)
        known = self.misfits.get(key)
        if known is not None:
            self.plan.skipped += 1
            return known
        views = self.capacity.for_entry(self.now, entry.runtime_s)
        if entry.gpus:
            # A necessary condition, checked before the policy engine: some pool has the GPUs free.
            best = self.capacity.most_free(views, entry.spec.gpu_types)
            if best[0] < entry.gpus:
                return self._no_room(entry, key, views, best)
        decision = self._decide(entry, views, entry.approval if _denied(entry.approval) else None)
        if decision.placed and decision.approval and entry.approval != "approved":
            waiting = self._approval(entry, decision, views)
            if isinstance(waiting, str):
                return _Wait(WaitKind.APPROVAL_PENDING, waiting)
            decision = waiting
        if decision.placed:
            self._admit(entry, decision)
            return None
        kind = decision.wait_kind or wait_kind_of(decision.rejected)
        reason = self.explain.wait_reason(entry, decision)
        if kind == WaitKind.APPROVAL_DENIED:  # say who denied it first
            reason = f"{decision.reason.split(';')[0].removeprefix('waiting: ')}; {reason}"
        pools = capacity_pools(decision)
        preempted = self._preempt(entry, pools) if entry.preemption != NEVER else ""
        if preempted:
            return _Wait(WaitKind.PREEMPTING, f"{reason}; {preempted}")
        claimed = self._claim(entry, pools)
        self.misfits[key] = _Wait(kind, reason)
        return _Wait(kind, f"{reason}; {claimed}" if claimed else reason)

    def _no_room(self, entry: Pending, key: Hashable, views: list[PoolView], best: tuple[int, str | None, str],
                 ) -> _Wait:
        """No pool has enough of its GPUs free: say why, keep its claim, preempt if its class may."""
        never = workload_problems(entry.spec.gpu_types, entry.gpus, self.capacity.known)
        if never:  # no registered pool could ever hold it: no claim, no preemption, say so
            wait = self.misfits[key] = _Wait(WaitKind.INFEASIBLE, self.explain.infeasible(entry.spec, never))
            self.plan.skipped += 1
            return wait
        wait = self.misfits[key] = _Wait(WaitKind.CAPACITY, self.explain.no_room_reason(entry, *best))
        if best[0] <= 0 and entry.preemption == NEVER:
            self.plan.skipped += 1
            return wait
        # Keep free GPUs from later work, or preempt, on the pools it may use whatever their free GPUs.
        pools = self.policy.eligible(PlacementRequest(
            workload_id=entry.workload_id, attempt=entry.attempt, spec=entry.spec, pools=views,
            exclude=entry.exclude, failed_pool_health=entry.failed_pool_health))
        if entry.preemption != NEVER:
            preempted = self._preempt(entry, pools)
            if preempted:
                return _Wait(WaitKind.PREEMPTING, f"{wait.reason}; {preempted}")
        claimed = self._claim(entry, pools)
        return _Wait(wait.kind, f"{wait.reason}; {claimed}" if claimed else wait.reason)

    def _admit(self, entry: Pending, decision: Decision) -> None:
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

        def check(pool: PoolView, gpu_type: str, gpus: int) -> Refusal | None:
            location = locations.get(pool.name, str(pool.location))
            if quota.limited:
                verdict = quota.check(team, location, gpu_type, gpus)
                if not verdict.allowed:
                    return verdict.refusal
            if budgets.limited:
                cost = estimate(hourly_rate(pool, gpu_type, entry.spec), runtime_s)
                return budgets.refusal(team, project, location, cost)
            return None

        return check

    # -- no starvation ----------------------------------------------------------------------------
    def _keep(self, entry: Pending, pool: str, gpu_type: str, amount: int, at: float) -> None:
        if self.capacity.claim(pool, gpu_type, amount, at, entry.workload_id):
            self.plan.claims.append(ClaimMade(entry.workload_id, pool, gpu_type, amount, at))

    def _claim(self, entry: Pending, pools: Sequence[str]) -> str:
        """Keep the free GPUs of the pool the workload waits for (of `pools`, those it was rejected
        from for capacity: the one with the most free) from work ordered after it."""
        best: tuple[int, str, str] | None = None
        for name in pools:
            view = self.capacity.views[name]
            for gpu_type in entry.spec.gpu_types:
                if view.gpus.get(gpu_type, 0) < entry.gpus:
                    continue
                free = self.capacity.free(name, gpu_type)
                if best is None or (free, name) > (best[0], best[1]):
                    best = (free, name, gpu_type)
        if best is None:
            return ""
        free, pool, gpu_type = best
        amount = min(free, entry.gpus)
        at = shadow(self.held, pool, gpu_type, entry.gpus - free, self.now)
        self._keep(entry, pool, gpu_type, amount, at)
        return self.explain.claim(pool, gpu_type, amount, at, self.now)

    # -- preemption (policies/preemption.py) ------------------------------------------------------
    def _preempt(self, entry: Pending, pools: Sequence[str]) -> str:
        choice = preemption.choose(entry, pools, self.capacity, self.quota, self.held, self.locations)
        if choice is None:
            return ""
        free = self.capacity.views[choice.pool].free(choice.gpu_type)
        if isinstance(choice, preemption.AwaitStop):
            # Earlier victims already free enough: wait for them, keep the claim.
            self._keep(entry, choice.pool, choice.gpu_type, free, self.now)
            return f"waiting for preempted work to stop on {choice.pool}"
        for victim in choice.victims:
            victim.preempting = True
            self.plan.preemptions.append(Preemption(victim, entry.workload_id, preemption.reason(entry, victim)))
        self._keep(entry, choice.pool, choice.gpu_type, max(0, free), self.now)
        return f"preempting {', '.join(v.workload_id for v in choice.victims)} on {choice.pool}"


def plan_cycle(snapshot: CycleInput, /) -> CyclePlan:
    """Decide one admission cycle over its snapshot (see `CycleInput`): the live loop
    (inferofabric/queue.py) and `fabric policy simulate` (policies/simulation.py) both call this."""
    return _Planner(snapshot).walk(snapshot.pending, snapshot.explain)


def resolve_class(policy: CompiledPolicy, spec: WorkloadSpec, override: str | None = None) -> tuple[str, int, str]:
    """(class name, value, preemption) for a workload; an unknown class falls back to the default."""
    document = policy.policy
    try:
        chosen = document.priority_class(override or spec.priority_class)
    except ValueError:
        chosen = document.priority_class(None)
    return chosen.name, chosen.value, chosen.preemption
