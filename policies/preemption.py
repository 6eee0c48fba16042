"""Preemption: which running work a waiting workload may stop, and which it does (pure: no I/O, no temporalio).

Per class (docs/admission.md): `never`; `lower_priority` may stop work of a lower class (and so
reclaim borrowed quota); `reclaim_borrowed` may stop work that another team of its cohort runs on
borrowed quota, while its own team stays within nominal. Victims are taken on **one** pool the
preemptor may use (one it was rejected from for capacity only, whose quota would allow it):
borrowing work first, then the lowest class, then the lowest numeric priority, then the most
recently started — only as many as free the GPUs it needs. Among pools, the fewest victims win, then
the fewest GPUs freed, then the pool's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from inferofabric.policies.capacity import Capacity
from inferofabric.policies.cycle import LOWER_PRIORITY, Held, Pending
from inferofabric.policies.quota import QuotaBook


@dataclass(frozen=True)
class Victims:
    """Stop these to make room on `pool` for the preemptor's GPUs of `gpu_type`."""

    pool: str
    gpu_type: str
    victims: list[Held]


@dataclass(frozen=True)
class AwaitStop:
    """Work preempted earlier already frees enough on `pool`: wait for it to stop, preempt nothing more."""

    pool: str
    gpu_type: str


def victim_order(held: Held) -> tuple[bool, int, int, float, int]:
    """Borrowing first, then the lowest class, the lowest priority, the most recently started."""
    return (not held.borrowing, held.class_value, held.priority, -held.started_at, -held.order)


def may_preempt(entry: Pending, victim: Held, quota: QuotaBook, preemptor_borrows: bool) -> bool:
    if entry.preemption == LOWER_PRIORITY and victim.class_value < entry.class_value:
        return True
    # Reclaim: work another team of the cohort runs on borrowed quota yields to a team within its own.
    cohort = quota.cohort_of(entry.team)
    return (victim.borrowing and victim.team != entry.team and cohort is not None and not preemptor_borrows
            and quota.cohort_of(victim.team) == cohort)


def choose(entry: Pending, pools: Iterable[str], capacity: Capacity, quota: QuotaBook, held: Sequence[Held],
           locations: Mapping[str, str]) -> Victims | AwaitStop | None:
    """The victims `entry` preempts, looking at `pools` in order (those it was rejected from for
    capacity); None when no pool gives it room. Changes nothing."""
    best: tuple[int, int, str, str, list[Held]] | None = None
    for name in pools:
        view = capacity.views[name]
        for gpu_type in entry.spec.gpu_types:
            if view.gpus.get(gpu_type, 0) < entry.gpus:
                continue
            verdict = quota.check(entry.team, locations[name], gpu_type, entry.gpus)
            if not verdict.allowed:
                continue
            on_pool = [h for h in held if h.pool == name and h.gpu_type == gpu_type]
            freeing = sum(h.gpus for h in on_pool if h.preempting)
            missing = entry.gpus - capacity.free(name, gpu_type) - freeing
            if missing <= 0:
                return AwaitStop(name, gpu_type)
            eligible = [h for h in on_pool if not h.preempting and may_preempt(entry, h, quota, verdict.borrowing)]
            eligible.sort(key=victim_order)
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
        return None
    _, _, pool, gpu_type, chosen = best
    return Victims(pool, gpu_type, chosen)


def reason(entry: Pending, victim: Held) -> str:
    """What the victim is told (for people)."""
    if entry.preemption == LOWER_PRIORITY and victim.class_value < entry.class_value:
        why = (f"class {entry.priority_class} ({entry.class_value}) over "
               f"{victim.priority_class or 'its class'} ({victim.class_value})")
    else:
        why = f"team {entry.team} reclaims quota that team {victim.team} borrowed"
    return f"preempted by {entry.workload_id} on {victim.pool}: {why}"
