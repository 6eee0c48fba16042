"""The queue as the admission loop sees it: parsed rows, the active policy, and read-only snapshots.

Shared by the admission cycle (activities/admission.py) and the reads (`fabric queue`, a waiting
workload's position): a read runs the very planner of the loop in a read-only transaction, so the
position and the reason it shows are what the next cycle would decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from inferofabric.models.common import Health
from inferofabric.models.status import PoolView, QueueEntry, QueueView
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.admission import CyclePlan, Held, Pending, plan_cycle, resolve_class
from inferofabric.policies.cycle import CycleInput
from inferofabric.policies.engine import CompiledPolicy, default_policy
from inferofabric.store import admission as queue_store
from inferofabric.store.budget import budget_states
from inferofabric.store.db import Store

_compiled: dict[tuple[str, int | None], CompiledPolicy] = {}


def compiled_policy(store: Store) -> CompiledPolicy:
    """The active policy, compiled once per version."""
    version, policy = store.active_policy()
    key = (store.url, version)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = CompiledPolicy(policy or default_policy(), version)
        _compiled.clear()
        _compiled[key] = compiled
    return compiled


class SpecCache:
    """Waiting workloads as the planner sees them, parsed once per (row version, policy version): a
    cycle over 10,000 rows parses only what changed. A cache only: any worker rebuilds it from the store."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[int, int | None, int], Pending]] = {}
        self._seen: dict[str, tuple[queue_store.QueueItem, tuple[int | None, int], Pending]] = {}
        self.items: dict[str, queue_store.QueueItem] = {}
        self.rows: dict[str, Any] = {}  # queue_items' memo: an unchanged row comes back as the same item

    def pending(self, session: Any, items: Sequence[queue_store.QueueItem], policy: CompiledPolicy) -> list[Pending]:
        policy_key = (policy.version, id(policy))
        seen = self._seen
        # An item that is the very object of the last cycle (queue_items' memo: its row did not change)
        # under the same policy is the same Pending: no lookups, no parsing.
        changed = [i for i in items if (hit := seen.get(i.workload_id)) is None or hit[0] is not i
                   or hit[1] != policy_key]
        fresh = {e.workload_id: e for e in self._pending(session, changed, policy)} if changed else {}
        out = []
        next_seen = {}
        for item in items:
            entry = fresh.get(item.workload_id)
            if entry is None:
                hit = seen.get(item.workload_id)
                if hit is None or hit[0] is not item:
                    continue  # removed between the two reads
                entry = hit[2]
            out.append(entry)
            next_seen[item.workload_id] = (item, policy_key, entry)
        self._seen = next_seen
        self.items = {i.workload_id: i for i in items}
        return out

    def _pending(self, session: Any, items: Sequence[queue_store.QueueItem], policy: CompiledPolicy) -> list[Pending]:
        """Pendings for rows that changed: parsed specs are kept per (row version, policy version)."""
        marks = {i.workload_id: (i.version, policy.version, id(policy)) for i in items}
        missing = [i.workload_id for i in items
                   if self._entries.get(i.workload_id, ((),))[0] != marks[i.workload_id]]
        specs = {}
        if missing:
            specs = {w: WorkloadSpec.model_validate_json(text)
                     for w, text in queue_store.queue_specs(session, missing).items()}
        if len(self._entries) > 2 * len(self._seen) + len(items) + 1000:
            live = set(self._seen) | {i.workload_id for i in items}
            self._entries = {k: v for k, v in self._entries.items() if k in live}
        out = []
        for item in items:
            spec = specs.get(item.workload_id)
            cached = self._entries.get(item.workload_id)
            if spec is None:
                if cached is None:
                    continue  # removed between the two reads
                entry = cached[1]
                if (entry.attempt, entry.exclude, entry.approval, entry.approval_asked_at) != (
                        item.attempt, item.exclude, item.approval, item.approval_asked_at):
                    entry = _entry(item, entry.spec, policy)
                    self._entries[item.workload_id] = (marks[item.workload_id], entry)
            else:
                entry = _entry(item, spec, policy)
                self._entries[item.workload_id] = (marks[item.workload_id], entry)
            out.append(entry)
        return out

    def spec(self, workload_id: str) -> WorkloadSpec | None:
        cached = self._entries.get(workload_id)
        return cached[1].spec if cached else None


def _entry(item: queue_store.QueueItem, spec: WorkloadSpec, policy: CompiledPolicy) -> Pending:
    name, value, preemption = resolve_class(policy, spec, item.priority_class)
    health = Health(item.failed_pool_health) if item.failed_pool_health else None
    return Pending(item.workload_id, item.attempt, item.seq, item.team, spec, name, value, preemption,
                   exclude=item.exclude, failed_pool_health=health, approval=item.approval,
                   approval_asked_at=item.approval_asked_at)


def make_planner(cache: SpecCache, policy: CompiledPolicy, explain: int | bool):  # type: ignore[no-untyped-def]
    """`explain`: how many waiting workloads get a position and reason recorded (True: all)."""

    def planner(session: Any, items: list[queue_store.QueueItem], current: list[Held], pools: list[PoolView],
                usage: dict[str, float], now: datetime) -> CyclePlan:
        snapshot = CycleInput(cache.pending(session, items, policy), current, pools, policy, usage, now.timestamp(),
                              explain=explain, budgets=budget_states(session, policy.policy, now))
        return plan_cycle(snapshot)

    return planner


_read_cache = SpecCache()


def snapshot(store: Store, team: str | None = None, workload_id: str | None = None) -> QueueView:
    """The queue in admission order with positions and reasons, as the next cycle would decide (read only)."""
    policy = compiled_policy(store)
    outcome = queue_store.run_cycle(store, make_planner(_read_cache, policy, explain=True),
                                    policy.policy.fair_share.half_life_seconds, dry_run=True, memo=_read_cache.rows)
    plan = outcome.plan
    entries = []
    for waiting in plan.waiting:
        if team and waiting.team != team:
            continue
        if workload_id and waiting.workload_id != workload_id:
            continue
        item = _read_cache.items.get(waiting.workload_id)
        spec = _read_cache.spec(waiting.workload_id)
        entries.append(QueueEntry(
            id=waiting.workload_id, team=waiting.team, priority_class=waiting.priority_class,
            position=waiting.position, team_position=waiting.team_position, reason=waiting.reason,
            attempt=item.attempt if item else 1, gpus=spec.gpu_count if spec else 0,
            gpu_types=list(spec.gpu_types) if spec else []))
    if entries and len(entries) <= 5000:
        with store.session() as s:
            since = queue_store.enqueued_at(s, [e.id for e in entries])
        for entry in entries:
            entry.waiting_since = since.get(entry.id)
    # Admitted in this (dry) cycle: they will be admitted at the loop's next cycle; show them first.
    for rank, admission in enumerate(plan.admitted, start=1):
        fits = admission.pending
        if (team and fits.team != team) or (workload_id and fits.workload_id != workload_id):
            continue
        entries.insert(rank - 1, QueueEntry(
            id=fits.workload_id, team=fits.team, priority_class=fits.priority_class, position=0,
            team_position=0, reason=f"fits now: admitted at the next cycle ({admission.decision.pool})",
            attempt=fits.attempt, gpus=fits.gpus, gpu_types=list(fits.spec.gpu_types)))
    return QueueView(entries=entries, shares=plan.shares, quotas=plan.quotas, total=plan.waiting_total)
