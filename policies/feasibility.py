"""Whether work and policy can ever be satisfied by the pools the fabric knows: pure code shared by
the door (submit, `policy set`, `policy check`) and the admission loop's reasons.

Waiting is the fabric's normal answer to "not now"; it is the wrong answer to "never". A GPU type no
pool has (or one in the wrong case), more GPUs than the largest pool holds, or a placement target
that names neither a location nor a pool would otherwise wait for ever without a word. These checks
look at what is registered, whatever its health: a pool that is down now may come back.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferofabric.models.common import Location
from inferofabric.models.policy import PlacementPolicy


@dataclass(frozen=True)
class KnownPool:
    """What the checks need of a registered pool."""

    name: str
    location: str
    region: str
    gpus: Mapping[str, int]


def workload_problems(gpu_types: Sequence[str], gpus_per_pool: int, pools: Iterable[KnownPool],
                      gang: str | None = None) -> list[str]:
    """Why no registered pool could ever run this request (empty when one could).

    `gpus_per_pool` is what must fit on one pool (a gang's total); `gang` describes it for the message.
    """
    known = list(pools)
    if not gpus_per_pool:
        return []
    if not known:
        return ["no pools are registered (`fabric pool add -f pool.yaml`)"]
    types = sorted({t for pool in known for t in pool.gpus})
    problems = []
    usable = [t for t in gpu_types if t in types]
    for wanted in gpu_types:
        if wanted in types:
            continue
        same = [t for t in types if t.lower() == wanted.lower()]
        if same:
            problems.append(f"GPU type {wanted!r} is not known: did you mean {same[0]!r}? (types are case-sensitive)")
        elif not usable:
            close = difflib.get_close_matches(wanted, types, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"no registered pool has GPU type {wanted!r} ({hint}known: {', '.join(types) or 'none'})")
    if problems and not usable:
        return problems
    largest = max(((pool.gpus.get(t, 0), pool.name, t) for pool in known for t in usable), default=(0, "", ""))
    if largest[0] < gpus_per_pool:
        need = gang or f"{gpus_per_pool} x {'/'.join(usable)}"
        return [f"needs {need} on one pool, but the largest pool with it has {largest[0]} ({largest[1]})"]
    return []


def target_problems(policy: PlacementPolicy, pools: Iterable[KnownPool] | None) -> list[str]:
    """Placement targets and regions that name nothing. Without `pools` (an offline check) a name that
    is not a location can only be a pool name: say so, with a close location if it looks like a typo."""
    known = list(pools) if pools is not None else None
    locations = [loc.value for loc in Location]
    names = {p.name for p in known} if known is not None else set()
    placement = policy.placement
    rules: list[tuple[str, list[str], list[str]]] = [("default", placement.default, [])]
    rules += [(label, rule.target, rule.regions) for label, rule in (("burst", placement.burst),
                                                                    ("failover", placement.failover)) if rule]
    problems = []
    for label, targets, wanted_regions in rules:
        for target in targets:
            if target in locations or target in names:
                continue
            close = difflib.get_close_matches(target, locations + sorted(names), n=1, cutoff=0.6)
            hint = f": did you mean {close[0]!r}?" if close else ""
            if known is None:
                if close and close[0] in locations:
                    problems.append(f"placement.{label}: target {target!r} is not a location (on-prem, cloud){hint}")
            else:
                problems.append(f"placement.{label}: target {target!r} names no location (on-prem, cloud) and no "
                                f"registered pool{hint}")
        # A region listed ahead of its pools is fine while another listed region has one; when none
        # of the target's registered pools is in any of them, the rule can never place anything. A
        # target with no registered pool yet (no cloud pool so far) is not judged.
        in_target = {p.region for p in known or [] if p.location in targets or p.name in targets}
        if known is not None and wanted_regions and in_target and not set(wanted_regions) & in_target:
            for region in wanted_regions:
                close = difflib.get_close_matches(region, sorted(in_target), n=1, cutoff=0.6)
                hint = f": did you mean {close[0]!r}?" if close else ""
                problems.append(f"placement.{label}: region {region!r} is no registered pool's region{hint}")
    return problems


def known_pools(pools: Iterable[Any]) -> list[KnownPool]:
    """KnownPool out of anything with name, location, region and gpus (PoolSpec, PoolView, PoolStatus)."""
    return [KnownPool(name=pool.name, location=str(getattr(pool.location, "value", pool.location)),
                      region=pool.region, gpus=dict(pool.gpus)) for pool in pools]
