"""An inference endpoint as users write it (`fabric endpoint deploy -f endpoint.yaml`, issue 10).

An endpoint is long-running replicas of a model server behind one URL. Each replica is placed like
any workload (same admission, policy and compliance), so a replica's spec is a WorkloadSpec made
from the endpoint's fields (`replica_workload`); the endpoint adds the port, readiness probe, replica
range, autoscaling target, delays, scale-to-zero, the update strategy and who may call it
(`access`: a fabric token or an endpoint key by default, or anyone).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from inferofabric.models.common import DataClassification, Location, Name, StrictModel, duration_seconds
from inferofabric.models.workload import (
    SIM_DURATION_ANNOTATION,
    PlacementHints,
    Resources,
    SecretRef,
    WorkloadSpec,
)

METRICS = ("in_flight", "rps", "p90_latency")
ENDPOINT_LABEL = "inferofabric.io/endpoint"
VERSION_LABEL = "inferofabric.io/version"
# A replica's workload id is `<endpoint>-<tag>-r<n>` (tag: 4 hex digits per deployment): it must stay
# a valid 63-character name.
MAX_ENDPOINT_NAME = 48
# A replica on a simulated pool serves until it is stopped (10 years is "until stopped").
REPLICA_SIM_DURATION = "3650d"


def _duration(value: str | int | float, where: str, allow_zero: bool = False) -> str | int | float:
    seconds = duration_seconds(value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{where} must be a {'non-negative' if allow_zero else 'positive'} duration "
                         "(examples: 5s, 30s, 5m)")
    return value


class Readiness(StrictModel):
    """A replica serves once `GET path` answers 2xx within `timeout_seconds` (first try after the delay)."""

    path: str = "/healthz"
    initial_delay_seconds: float = Field(default=1.0, ge=0)
    timeout_seconds: float = Field(default=2.0, gt=0)
    period_seconds: float = Field(default=2.0, gt=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"readiness.path must start with '/', got {value!r}")
        return value


class ReplicaRange(StrictModel):
    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) cannot exceed replicas.max ({self.max})")
        return self


class Autoscale(StrictModel):
    """Follow load: keep `metric` per ready replica near `target` (`in_flight`: requests being served,
    `rps`: requests per second, `p90_latency`: seconds). Scale up once the need has lasted
    `scale_up_delay`, down once the surplus has lasted `scale_down_delay` (SkyServe's and Knative's
    stable windows)."""

    metric: Literal["in_flight", "rps", "p90_latency"] = "in_flight"
    target: float = Field(default=4.0, gt=0)
    scale_up_delay: str = "5s"
    scale_down_delay: str = "30s"

    @field_validator("scale_up_delay", "scale_down_delay")
    @classmethod
    def _delays(cls, value: str) -> str:
        return str(_duration(value, "autoscale delays", allow_zero=True))

    @property
    def scale_up_delay_s(self) -> float:
        return duration_seconds(self.scale_up_delay)

    @property
    def scale_down_delay_s(self) -> float:
        return duration_seconds(self.scale_down_delay)


class UpdateStrategy(StrictModel):
    """Rolling: at most `max_surge` replicas of the new version beyond the desired count at a time; an
    old replica goes only once a new one is ready."""

    strategy: Literal["rolling"] = "rolling"
    max_surge: int = Field(default=1, ge=1, le=100)


class EndpointSpec(StrictModel):
    name: Name
    team: Name
    project: str = "default"
    image: str = Field(min_length=1)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str | SecretRef] = Field(default_factory=dict)
    port: int = Field(default=8080, ge=1, le=65535)
    resources: Resources = Field(default_factory=Resources)
    data_classification: DataClassification = DataClassification.INTERNAL
    priority_class: Name | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    placement: PlacementHints = Field(default_factory=PlacementHints)
    readiness: Readiness = Field(default_factory=Readiness)
    replicas: ReplicaRange = Field(default_factory=ReplicaRange)
    autoscale: Autoscale = Field(default_factory=Autoscale)
    scale_to_zero_after: str | None = Field(default=None, description="no request for this long: 0 replicas")
    update: UpdateStrategy = Field(default_factory=UpdateStrategy)
    # Who the gateway serves: `token` (default): a request carries `Authorization: Bearer <a fabric
    # token>` (any role; a member only of this endpoint's team) or an endpoint key this endpoint's team
    # made (`fabric endpoint key create`); `public`: anyone who reaches the gateway.
    access: Literal["token", "public"] = "token"

    @field_validator("name")
    @classmethod
    def _short_enough(cls, value: str) -> str:
        if len(value) > MAX_ENDPOINT_NAME:
            raise ValueError(f"an endpoint name has at most {MAX_ENDPOINT_NAME} characters (its replicas' "
                             f"names add a suffix), got {len(value)}")
        return value

    @field_validator("command", "args", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(item) for item in value]
        return [value] if isinstance(value, str) else value

    @field_validator("scale_to_zero_after")
    @classmethod
    def _idle(cls, value: str | None) -> str | None:
        return None if value is None else str(_duration(value, "scale_to_zero_after"))

    @property
    def scale_to_zero_after_s(self) -> float | None:
        return duration_seconds(self.scale_to_zero_after) if self.scale_to_zero_after else None

    def replica_workload(self, replica_id: str, version: int, on_prem_only: bool = False) -> WorkloadSpec:
        """The workload one replica is placed and launched as: the endpoint's own fields, its port in
        $PORT (a `local` pool gives each replica a free port of its own there), and labels that say
        which endpoint and version it serves. `on_prem_only`: a replica meant to bring a burst one
        home waits for on-prem room instead of bursting itself."""
        placement = self.placement
        if on_prem_only:
            placement = placement.model_copy(update={"require_location": Location.ON_PREM})
        return WorkloadSpec(
            name=replica_id, team=self.team, project=self.project, image=self.image, command=self.command,
            args=self.args, env={**self.env, "PORT": str(self.port)}, resources=self.resources,
            data_classification=self.data_classification, priority_class=self.priority_class,
            labels={**self.labels, ENDPOINT_LABEL: self.name, VERSION_LABEL: str(version)},
            annotations={SIM_DURATION_ANNOTATION: REPLICA_SIM_DURATION, **self.annotations}, placement=placement)
