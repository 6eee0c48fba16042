"""The placement policy document users write (see README "Policy reference")."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from inferofabric.models.common import Location, StrictModel


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


class Rule(StrictModel):
    """A conditional move to a target (a location such as `cloud`, or pool names) in optional regions."""

    when: str = Field(min_length=1)
    target: list[str] = Field(min_length=1)
    regions: list[str] = Field(default_factory=list)

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


class PlacementPolicy(StrictModel):
    placement: Placement = Field(default_factory=Placement)
    constraints: list[Constraint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expressions_compile(self) -> PlacementPolicy:
        # Compile every condition once here so a bad expression is a clear error at `policy check`,
        # not a failure at the first placement.
        from inferofabric.policies.expressions import compile_expression

        rules = [("placement.burst.when", self.placement.burst), ("placement.failover.when", self.placement.failover)]
        for where, rule in rules:
            if rule is not None:
                compile_expression(rule.when, where=where)
        for index, constraint in enumerate(self.constraints):
            if constraint.when:
                compile_expression(constraint.when, where=f"constraints[{index}].when")
        return self

    @classmethod
    def from_yaml(cls, text: str) -> PlacementPolicy:
        import yaml

        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"the policy is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
        if not isinstance(document, dict):
            raise ValueError("a policy document must be a mapping with 'placement:' (and optional 'constraints:')")
        return cls.model_validate(document)
