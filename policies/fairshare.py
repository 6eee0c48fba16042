"""Fair share between teams: dominant share of GPUs in use plus decayed past usage, over weights.

Pure (no I/O, no temporalio): the admission loop and `fabric policy simulate` use this module.

    share(team) = (dominant_in_use(team) + recent_usage(team)) / weight(team)

- `dominant_in_use`: the largest, over GPU types, of the team's GPUs of that type in use divided by
  the in-service GPUs of that type (Dominant Resource Fairness over GPU types);
- `recent_usage`: the team's GPU-seconds with exponential decay (half-life `fair_share.half_life`),
  divided by `capacity * half_life / ln 2`: a team that has used a steady fraction x of the estate
  for many half-lives has recent_usage → x, so both terms are "fractions of the estate";
- `weight`: from `teams.<name>.weight` (1 when the team is not listed).

The team with the lowest share goes next (docs/admission.md has a worked example).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from inferofabric.models.policy import TeamPolicy

LN2 = math.log(2)


def decay(value: float, elapsed_s: float, half_life_s: float) -> float:
    """`value` after `elapsed_s` seconds of exponential decay."""
    if elapsed_s <= 0:
        return value
    return value * 0.5 ** (elapsed_s / half_life_s)


def accrue(usage: float, gpus_in_use: float, elapsed_s: float, half_life_s: float) -> float:
    """Decayed GPU-seconds after `elapsed_s` seconds during which `gpus_in_use` were held (exact
    integral of a constant rate under exponential decay)."""
    if elapsed_s <= 0:
        return usage
    factor = 0.5 ** (elapsed_s / half_life_s)
    return usage * factor + gpus_in_use * (half_life_s / LN2) * (1 - factor)


class FairShares:
    """Shares of every team for one admission cycle; `add` updates a team as work is admitted."""

    def __init__(self, teams: Mapping[str, TeamPolicy], capacity: Mapping[str, int],
                 usage: Mapping[str, float], half_life_s: float) -> None:
        self._weights = {name: team.weight for name, team in teams.items()}
        self._capacity = {t: n for t, n in capacity.items() if n > 0}
        self._total = sum(self._capacity.values())
        scale = self._total * half_life_s / LN2
        self._recent = {team: (value / scale if scale else 0.0) for team, value in usage.items()}
        self._in_use: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._shares: dict[str, float] = {}

    def add(self, team: str, gpu_type: str | None, gpus: int) -> None:
        if gpu_type and gpus:
            self._in_use[team][gpu_type] += gpus
            self._shares.pop(team, None)

    def weight(self, team: str) -> float:
        return self._weights.get(team, 1.0)

    def dominant(self, team: str) -> float:
        in_use = self._in_use.get(team)
        if not in_use:
            return 0.0
        best = 0.0
        for gpu_type, gpus in in_use.items():
            capacity = self._capacity.get(gpu_type)
            fraction = gpus / capacity if capacity else 1.0
            best = max(best, fraction)
        return best

    def recent(self, team: str) -> float:
        return self._recent.get(team, 0.0)

    def share(self, team: str) -> float:
        cached = self._shares.get(team)
        if cached is None:
            cached = (self.dominant(team) + self.recent(team)) / self.weight(team)
            self._shares[team] = cached
        return cached

    def describe(self, team: str) -> dict[str, float]:
        return {"share": round(self.share(team), 4), "in_use": round(self.dominant(team), 4),
                "recent_usage": round(self.recent(team), 4), "weight": self.weight(team)}
