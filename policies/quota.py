"""Team GPU quotas with cohorts: nominal, borrowing and lending (pure: no I/O, no temporalio).

The model is Kueue's (ClusterQueue `nominalQuota` / `borrowingLimit` / `lendingLimit` in a cohort),
over the fabric's resources: a GPU type, either in every location (`quota: {A100: ...}`) or in one
location (`quota: {cloud: {A100: ...}}`). For one resource and a cohort of teams:

- a team may always use up to its `nominal`;
- above it, the team *borrows*: at most `borrowing_limit` more (unbounded when not set), and only
  while the cohort's borrowed total stays within what the other members lend;
- a member lends its unused nominal quota, at most `lending_limit` of it (all when not set).

A team that the policy does not list, or a resource a listed team has no quota for, is not
limited. A team without a cohort cannot borrow. `QuotaBook.check` is called for every candidate
(pool, GPU type) of a decision; `QuotaBook.charge` records an admission made in the current cycle,
so 200 admissions in one cycle are judged one after the other, never against a stale total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from inferofabric.models.policy import QuotaLimit, TeamPolicy
from inferofabric.models.status import RejectionKind
from inferofabric.policies.reasons import Refusal

Resource = tuple[str | None, str]  # (location or None = every location, GPU type)


@dataclass(frozen=True)
class QuotaVerdict:
    allowed: bool
    borrowing: bool = False
    reason: str = ""

    @property
    def refusal(self) -> Refusal | None:
        """A refused verdict as a rejection's kind and text (None when allowed)."""
        return None if self.allowed else Refusal(RejectionKind.QUOTA, self.reason)


class QuotaBook:
    """Usage per team and resource, with the policy's limits; answers "may team T take g GPUs here?"."""

    def __init__(self, teams: Mapping[str, TeamPolicy]) -> None:
        self._limits: dict[str, dict[Resource, QuotaLimit]] = {
            name: team.limits() for name, team in teams.items() if team.quota}
        self._cohort: dict[str, str | None] = {name: team.cohort for name, team in teams.items()}
        self._members: dict[str, list[str]] = defaultdict(list)
        for name, cohort in self._cohort.items():
            if cohort:
                self._members[cohort].append(name)
        self._usage: dict[str, dict[Resource, int]] = defaultdict(lambda: defaultdict(int))

    @property
    def limited(self) -> bool:
        return bool(self._limits)

    def charge(self, team: str, location: str, gpu_type: str | None, gpus: int, sign: int = 1) -> None:
        """Count `gpus` of `gpu_type` in `location` against the team (sign -1 takes them back)."""
        if not gpu_type or not gpus:
            return
        usage = self._usage[team]
        usage[(None, gpu_type)] += sign * gpus
        usage[(location, gpu_type)] += sign * gpus

    def load(self, held: Iterable[tuple[str, str, str | None, int]]) -> None:
        for team, location, gpu_type, gpus in held:
            self.charge(team, location, gpu_type, gpus)

    def used(self, team: str, resource: Resource) -> int:
        return self._usage[team][resource] if team in self._usage else 0

    def _resources(self, team: str, location: str, gpu_type: str) -> list[tuple[Resource, QuotaLimit]]:
        limits = self._limits.get(team)
        if not limits:
            return []
        return [(key, limits[key]) for key in ((None, gpu_type), (location, gpu_type)) if key in limits]

    def check(self, team: str, location: str, gpu_type: str | None, gpus: int) -> QuotaVerdict:
        if not gpu_type or not gpus:
            return QuotaVerdict(True)
        borrowing = False
        for resource, limit in self._resources(team, location, gpu_type):
            verdict = self._check_one(team, resource, limit, gpus)
            if not verdict.allowed:
                return verdict
            borrowing = borrowing or verdict.borrowing
        return QuotaVerdict(True, borrowing=borrowing)

    def _check_one(self, team: str, resource: Resource, limit: QuotaLimit, gpus: int) -> QuotaVerdict:
        used = self.used(team, resource)
        after = used + gpus
        label = _label(resource)
        if after <= limit.nominal:
            return QuotaVerdict(True)
        over = after - limit.nominal
        cohort = self._cohort.get(team)
        quota_text = f"team {team} at quota {used}/{limit.nominal} {label}"
        if not cohort:
            return QuotaVerdict(False, reason=f"{quota_text}; no cohort to borrow from")
        if limit.borrowing_limit is not None and over > limit.borrowing_limit:
            return QuotaVerdict(False, reason=f"{quota_text}, may borrow {limit.borrowing_limit}: "
                                              f"needs {over} over nominal")
        lendable, borrowed = self.cohort_balance(cohort, resource, exclude=team)
        own_borrowed = max(0, used - limit.nominal)
        available = lendable - borrowed
        if over > available:
            extra = max(0, available - own_borrowed)
            return QuotaVerdict(False, reason=f"{quota_text}, cohort {cohort} has {max(extra, 0)} to lend")
        return QuotaVerdict(True, borrowing=True)

    def cohort_balance(self, cohort: str, resource: Resource, exclude: str | None = None) -> tuple[int, int]:
        """(what the cohort's other members lend now, what they borrow now) for one resource."""
        lendable = borrowed = 0
        for member in self._members.get(cohort, ()):
            if member == exclude:
                continue
            limit = self._limits.get(member, {}).get(resource)
            if limit is None:
                continue
            used = self.used(member, resource)
            unused = max(0, limit.nominal - used)
            lendable += unused if limit.lending_limit is None else min(unused, limit.lending_limit)
            borrowed += max(0, used - limit.nominal)
        return lendable, borrowed

    def summary(self, team: str) -> dict[str, dict[str, int]]:
        """For `fabric queue`: per resource the team's used / nominal / borrowed."""
        out: dict[str, dict[str, int]] = {}
        for resource, limit in self._limits.get(team, {}).items():
            used = self.used(team, resource)
            out[_label(resource)] = {"used": used, "nominal": limit.nominal,
                                     "borrowed": max(0, used - limit.nominal)}
        return out

    def nominal(self, team: str, location: str, gpu_type: str) -> int | None:
        """The team's tightest nominal quota for this resource, or None when unlimited."""
        limits = [limit.nominal for _, limit in self._resources(team, location, gpu_type)]
        return min(limits) if limits else None

    def cohort_of(self, team: str) -> str | None:
        return self._cohort.get(team)


def _label(resource: Resource) -> str:
    location, gpu_type = resource
    return gpu_type if location is None else f"{gpu_type} ({location})"
