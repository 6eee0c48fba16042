"""The capacity model of one admission cycle (pure: no I/O, no temporalio).

The pools as work ordered later in the cycle sees them: each pool's reservations (`used`), plus what
this cycle admitted (`take`), plus what waiting work ordered earlier keeps for itself (`claim`). A
claim holds GPUs against everyone ordered after its claimant, except *backfill*: work that, by its
`max_runtime_seconds`, ends before the claimant is expected to start (the claim's `shadow`).
Capacity only shrinks inside a cycle, which is what lets the planner skip known misfits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inferofabric.models.status import PoolView
from inferofabric.policies.cycle import Held
from inferofabric.policies.engine import IN_SERVICE
from inferofabric.policies.feasibility import KnownPool, known_pools


@dataclass
class Claim:
    amount: int
    shadow: float  # when the claimant is expected to be able to start (inf: unknown)
    claimant: str = ""


class Capacity:
    """The pools as work ordered later sees them: reservations, this cycle's admissions and claims.

    The input views are copied: the cycle never changes the caller's pools."""

    def __init__(self, pools: Sequence[PoolView]) -> None:
        self.views = {p.name: p.model_copy(update={"used": dict(p.used)}) for p in pools}
        self.known: list[KnownPool] = known_pools(pools)  # every registered pool, whatever its health
        self.order = [p.name for p in pools]
        # The views without claims, in order: `take` updates them in place, so the list stays valid.
        self.base = [self.views[name] for name in self.order]
        self.claims: dict[tuple[str, str], list[Claim]] = defaultdict(list)
        self._cache: dict[float | None, list[PoolView]] = {}
        self._max_free: dict[int, dict[str, tuple[int, str | None]]] = {}
        self.version = 0  # changes with every admission or claim

    def _changed(self) -> None:
        self._cache.clear()
        self._max_free.clear()
        self.version += 1

    def take(self, pool: str, gpu_type: str | None, gpus: int) -> None:
        """An admission: `gpus` of `gpu_type` on `pool` are used from now on."""
        if gpu_type and gpus:
            used = self.views[pool].used
            used[gpu_type] = used.get(gpu_type, 0) + gpus
        self._changed()

    def claim(self, pool: str, gpu_type: str, amount: int, shadow: float, claimant: str = "") -> bool:
        """Keep `amount` GPUs for a waiting workload expected to start at `shadow`; False (nothing kept)
        when the amount is not positive."""
        if amount <= 0:
            return False
        self.claims[(pool, gpu_type)].append(Claim(amount, shadow, claimant))
        self._changed()
        return True

    def claimed(self, pool: str, gpu_type: str) -> int:
        return sum(c.amount for c in self.claims.get((pool, gpu_type), ()))

    def free(self, pool: str, gpu_type: str) -> int:
        """Free GPUs of the type on the pool that no claim keeps (never below 0)."""
        return max(0, self.views[pool].free(gpu_type) - self.claimed(pool, gpu_type))

    @property
    def holds_any(self) -> bool:
        """Whether a claim keeps any GPUs (that backfill could use)."""
        return any(c.amount for claims in self.claims.values() for c in claims)

    def max_free(self, views: list[PoolView], gpu_type: str) -> tuple[int, str | None]:
        """The most free GPUs of a type on any in-service pool of these views, and where."""
        key = id(views)
        table = self._max_free.get(key)
        if table is None:
            table = {}
            for view in views:
                if view.health not in IN_SERVICE:
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

    def exhausted(self) -> bool:
        """No in-service pool has a free GPU, and no claim holds GPUs (that backfill could use)."""
        if self.holds_any:
            return False
        base = self.base
        return all(self.max_free(base, t)[0] <= 0 for view in base for t in view.gpus)

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


def shadow(held: Iterable[Held], pool: str, gpu_type: str, missing: int, now: float) -> float:
    """When `missing` more GPUs of the type free up on the pool, from running work's expected ends
    (`now` when none are missing, inf when the work that would free them has no known end)."""
    if missing <= 0:
        return now
    ends = sorted((h.expected_end if h.expected_end is not None else math.inf, h.gpus)
                  for h in held if h.pool == pool and h.gpu_type == gpu_type)
    freed = 0
    for end, gpus in ends:
        freed += gpus
        if freed >= missing:
            return end
    return math.inf
