"""The placement policy document users write (see README "Policy reference")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from inferofabric.models.common import (
    MAX_COUNT,
    MAX_USD,
    Location,
    Name,
    StrictModel,
    check_document_depth,
    duration_seconds,
)


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


class PoolSelector(StrictModel):
    """Matches pools by attributes; every field given must match (an empty selector matches all pools)."""

    location: Location | None = None
    regions: list[str] = Field(default_factory=list)
    pools: list[str] = Field(default_factory=list)
    backends: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    _lists = field_validator("regions", "pools", "backends", mode="before")(classmethod(lambda cls, v: _as_list(v)))

    def describe(self) -> str:
        parts = []
        if self.location:
            parts.append(f"location {self.location.value}")
        if self.regions:
            parts.append(f"regions {', '.join(self.regions)}")
        if self.pools:
            parts.append(f"pools {', '.join(self.pools)}")
        if self.backends:
            parts.append(f"backends {', '.join(self.backends)}")
        if self.labels:
            parts.append("labels " + ", ".join(f"{k}={v}" for k, v in self.labels.items()))
        return "; ".join(parts) or "any pool"


class Approval(StrictModel):
    """A person must approve a move to the rule's target when `when` holds (evaluated for the chosen
    pool, with `workload.estimated_cost` at its price); after `timeout` the `default` is taken."""

    when: str = "true"
    timeout: str = "1h"
    default: Literal["deny", "approve"] = "deny"

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError("approval.timeout must be a positive duration (examples: 1h, 30m)")
        return value

    @property
    def timeout_seconds(self) -> float:
        return duration_seconds(self.timeout)


class Rule(StrictModel):
    """A conditional move to a target (a location such as `cloud`, or pool names) in optional regions."""

    when: str = Field(min_length=1)
    target: list[str] = Field(min_length=1)
    regions: list[str] = Field(default_factory=list)
    approval: Approval | None = None

    _lists = field_validator("target", "regions", mode="before")(classmethod(lambda cls, v: _as_list(v)))


class Placement(StrictModel):
    default: list[str] = Field(default_factory=lambda: ["on-prem"], min_length=1)
    burst: Rule | None = None
    failover: Rule | None = None

    _lists = field_validator("default", mode="before")(classmethod(lambda cls, v: _as_list(v)))


class Constraint(StrictModel):
    """A compliance constraint. It applies to every decision: initial, burst and failover.

    `deny` keeps matching pools out; `require` keeps every pool that does not match out. `when`
    (optional) limits the constraint to the workloads (and pools) for which it is true.
    """

    name: str | None = None
    deny: PoolSelector | None = None
    require: PoolSelector | None = None
    when: str | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> Constraint:
        if (self.deny is None) == (self.require is None):
            raise ValueError("a constraint needs exactly one of 'deny:' or 'require:'")
        return self

    def describe(self, index: int) -> str:
        label = self.name or f"constraint #{index + 1}"
        effect = f"deny {self.deny.describe()}" if self.deny else f"require {self.require.describe()}"  # type: ignore[union-attr]
        return f"{label} ({effect}{' when ' + self.when if self.when else ''})"


PREEMPTION_MODES = ("never", "lower_priority", "reclaim_borrowed")


class PriorityClass(StrictModel):
    """A named priority with its value and what it may preempt (docs/admission.md)."""

    name: Name
    value: int = Field(ge=0, le=1_000_000)
    preemption: Literal["never", "lower_priority", "reclaim_borrowed"] = "never"
    default: bool = False


def default_priority_classes() -> list[PriorityClass]:
    """One class for everything until a policy declares its own."""
    return [PriorityClass(name="standard", value=100, preemption="never", default=True)]


class FairShare(StrictModel):
    """Fair share between teams: past usage decays with this half-life."""

    half_life: str = "24h"

    @field_validator("half_life")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError("fair_share.half_life must be a positive duration (examples: 24h, 30m)")
        return value

    @property
    def half_life_seconds(self) -> float:
        return duration_seconds(self.half_life)


class QuotaLimit(StrictModel):
    """Kueue's quota triple: guaranteed (`nominal`), how much more the team may borrow from its cohort
    (`borrowing_limit`, none = as much as the cohort lends), and how much of its unused nominal
    quota it lends (`lending_limit`, none = all of it)."""

    nominal: int = Field(ge=0, le=MAX_COUNT)
    borrowing_limit: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    lending_limit: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _lend_within_nominal(self) -> QuotaLimit:
        if self.lending_limit is not None and self.lending_limit > self.nominal:
            raise ValueError(f"lending_limit ({self.lending_limit}) cannot exceed nominal ({self.nominal})")
        return self


PERIODS = ("weekly", "monthly", "total")


class BudgetLimit(StrictModel):
    """A spending limit in USD per calendar period (UTC weeks from Monday, calendar months) or in all
    (`total`), with the shares of it at which an alert is raised (`alert_at: [0.5, 0.9]`)."""

    weekly: float | None = Field(default=None, ge=0, le=MAX_USD)
    monthly: float | None = Field(default=None, ge=0, le=MAX_USD)
    total: float | None = Field(default=None, ge=0, le=MAX_USD)
    alert_at: list[float] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetLimit:
        if self.weekly is None and self.monthly is None and self.total is None:
            raise ValueError("a budget needs at least one of weekly:, monthly: or total: (USD)")
        for share in self.alert_at:
            if not 0 < share <= 1:
                raise ValueError(f"alert_at: {share} is not a share of the budget (give 0.5 for 50%)")
        return self

    def periods(self) -> list[tuple[str, float]]:
        return [(name, limit) for name in PERIODS if (limit := getattr(self, name)) is not None]


class Budget(StrictModel):
    """What a team or project may spend: `cloud` counts burst (cloud pools) only, `all` every pool
    (on-prem at its declared owned cost too). Enforced at admission (docs/cost.md)."""

    cloud: BudgetLimit | None = None
    all: BudgetLimit | None = None

    def scopes(self) -> list[tuple[str, BudgetLimit]]:
        return [(name, limit) for name in ("cloud", "all") if (limit := getattr(self, name)) is not None]


class ProjectPolicy(StrictModel):
    """A project's budget (projects cross teams: a workload's `project` field)."""

    budget: Budget | None = None


class CostPolicy(StrictModel):
    """How cost is estimated and shared (docs/cost.md)."""

    # A burst reserves max_runtime_seconds x price against its budget; work without a runtime limit
    # reserves this much runtime instead.
    default_runtime: str = "1h"
    # Owned on-prem GPUs that sat idle: charged to the teams in proportion to their on-prem use.
    share_idle: bool = False
    # Budget alerts are also POSTed here as JSON (besides the audit log).
    alert_webhook: str | None = None

    @field_validator("default_runtime")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError("cost.default_runtime must be a positive duration (examples: 1h, 30m)")
        return value

    @property
    def default_runtime_seconds(self) -> float:
        return duration_seconds(self.default_runtime)


class TeamPolicy(StrictModel):
    """A team's fair-share weight, cohort, GPU quota and budget.

    `quota` is keyed by GPU type (counts every location) or by a location (`on-prem`, `cloud`)
    holding GPU types: `{A100: {nominal: 8}, cloud: {A100: {nominal: 4}}}`.
    """

    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    cohort: Name | None = None
    quota: dict[str, QuotaLimit | dict[str, QuotaLimit]] = Field(default_factory=dict)
    budget: Budget | None = None

    @model_validator(mode="after")
    def _locations_hold_types(self) -> TeamPolicy:
        for key, value in self.quota.items():
            is_location = key in (Location.ON_PREM.value, Location.CLOUD.value)
            if isinstance(value, dict) and not is_location:
                raise ValueError(f"quota.{key}: a nested quota must be under a location (on-prem or cloud)")
            if is_location and not isinstance(value, dict):
                raise ValueError(f"quota.{key}: give GPU types under a location, e.g. {key}: {{A100: {{nominal: 4}}}}")
        return self

    def limits(self) -> dict[tuple[str | None, str], QuotaLimit]:
        """(location or None for all locations, GPU type) -> limit."""
        out: dict[tuple[str | None, str], QuotaLimit] = {}
        for key, value in self.quota.items():
            if isinstance(value, dict):
                for gpu_type, limit in value.items():
                    out[(key, gpu_type)] = limit
            else:
                out[(None, key)] = value
        return out


class EndpointDefaults(StrictModel):
    """Operator-wide defaults for inference endpoints (docs/endpoints.md): set once for everywhere."""

    scale_to_zero_after: str | None = Field(
        default=None, description="auto-suspend: an endpoint that does not set its own scales to zero "
                                  "after this long without a request (e.g. 15m)")

    @field_validator("scale_to_zero_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and duration_seconds(value) <= 0:
            raise ValueError("endpoints.scale_to_zero_after must be a positive duration (examples: 5m, 1h)")
        return value


class PlacementPolicy(StrictModel):
    placement: Placement = Field(default_factory=Placement)
    constraints: list[Constraint] = Field(default_factory=list)
    # Admission (docs/admission.md): the order of waiting work, team quotas and preemption.
    priority_classes: list[PriorityClass] = Field(default_factory=default_priority_classes)
    fair_share: FairShare = Field(default_factory=lambda: FairShare())
    teams: dict[str, TeamPolicy] = Field(default_factory=dict)
    projects: dict[str, ProjectPolicy] = Field(default_factory=dict)
    cost: CostPolicy = Field(default_factory=lambda: CostPolicy())
    endpoints: EndpointDefaults = Field(default_factory=lambda: EndpointDefaults())

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, data: Any) -> Any:
        return check_document_depth(data)

    @model_validator(mode="after")
    def _one_default_class(self) -> PlacementPolicy:
        names = [c.name for c in self.priority_classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"priority_classes: {', '.join(duplicates)} declared more than once")
        defaults = [c.name for c in self.priority_classes if c.default]
        if len(defaults) > 1:
            raise ValueError(f"priority_classes: only one class can be the default (found {', '.join(defaults)})")
        if self.priority_classes and not defaults:
            # The lowest class is the default when none is marked.
            lowest = min(self.priority_classes, key=lambda c: c.value)
            lowest.default = True
        return self

    def priority_class(self, name: str | None) -> PriorityClass:
        """The named class, or the default; an unknown name is a ValueError that lists the classes."""
        if name is None:
            return next(c for c in self.priority_classes if c.default)
        for candidate in self.priority_classes:
            if candidate.name == name:
                return candidate
        known = ", ".join(c.name for c in self.priority_classes)
        raise ValueError(f"unknown priority class {name!r} (the policy declares: {known})")

    def budgets(self) -> list[tuple[str, str, str, str, float, list[float]]]:
        """Every budget the policy sets: (kind team|project, name, scope cloud|all, period, limit USD,
        alert shares)."""
        out = []
        owners: list[tuple[str, str, Budget | None]] = [("team", n, t.budget) for n, t in self.teams.items()]
        owners += [("project", n, p.budget) for n, p in self.projects.items()]
        for kind, name, budget in owners:
            for scope, limit in budget.scopes() if budget else ():
                for period, amount in limit.periods():
                    out.append((kind, name, scope, period, amount, list(limit.alert_at)))
        return out

    def team(self, name: str) -> TeamPolicy:
        return self.teams.get(name) or TeamPolicy()

    @model_validator(mode="after")
    def _expressions_compile(self) -> PlacementPolicy:
        # Compile every condition once here so a bad expression is a clear error at `policy check`,
        # not a failure at the first placement.
        from inferofabric.models.expressions import compile_expression

        rules = [("placement.burst.when", self.placement.burst), ("placement.failover.when", self.placement.failover)]
        for where, rule in rules:
            if rule is not None:
                compile_expression(rule.when, where=where)
                if rule.approval is not None:
                    compile_expression(rule.approval.when, where=where.replace(".when", ".approval.when"))
        if self.placement.failover is not None and self.placement.failover.approval is not None:
            raise ValueError("placement.failover.approval: approval applies to placement.burst only; a failover "
                             "moves work off a pool that failed and never waits for a person")
        for index, constraint in enumerate(self.constraints):
            if constraint.when:
                compile_expression(constraint.when, where=f"constraints[{index}].when")
        return self

    @classmethod
    def from_yaml(cls, text: str) -> PlacementPolicy:
        from inferofabric import safe_yaml

        # The fabric's limited loader (size, depth, aliases): its FileError is a ValueError.
        document = safe_yaml.load(text, "the policy") or {}
        if not isinstance(document, dict):
            raise ValueError("a policy document must be a mapping with 'placement:' (and optional 'constraints:')")
        return cls.model_validate(document)
