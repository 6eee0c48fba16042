"""Workload specifications: what a team submits once, whatever pool it lands on."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, field_validator, model_validator

from inferofabric.models.common import (
    MAX_CPU,
    MAX_SECONDS,
    DataClassification,
    Location,
    Name,
    StrictModel,
    check_document_depth,
    duration_seconds,
    memory_bytes,
)

SIM_DURATION_ANNOTATION = "sim.inferofabric.io/duration"
SIM_OUTCOME_ANNOTATION = "sim.inferofabric.io/outcome"
SIM_PENDING_ANNOTATION = "sim.inferofabric.io/pending"  # stays pending this long before it runs
SIM_LAUNCH_DELAY_ANNOTATION = "sim.inferofabric.io/launch-delay"  # the launch call itself takes this long
# An endpoint's replica on a simulated pool answers through the gateway after this long (default 10ms).
SIM_LATENCY_ANNOTATION = "sim.inferofabric.io/latency"
SIM_ANNOTATIONS = [SIM_DURATION_ANNOTATION, SIM_OUTCOME_ANNOTATION, SIM_PENDING_ANNOTATION,
                   SIM_LAUNCH_DELAY_ANNOTATION, SIM_LATENCY_ANNOTATION]
SIM_OUTCOMES = ("succeeded", "failed", "reclaimed")
OWN_PREFIXES = ("sim.inferofabric.io/", "inferofabric.io/")  # the fabric's own: checked, never ignored


class GpuRequest(StrictModel):
    type: list[str] = Field(default_factory=list, description="acceptable GPU types, in order of preference")
    count: int = Field(default=1, ge=0, le=1024)

    @field_validator("type", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value

    @model_validator(mode="after")
    def _types_when_gpus(self) -> GpuRequest:
        if self.count > 0 and not self.type:
            raise ValueError("resources.gpu.type is required when resources.gpu.count > 0")
        return self


class Resources(StrictModel):
    gpu: GpuRequest = Field(default_factory=lambda: GpuRequest(type=[], count=0))
    cpu: float = Field(default=1, gt=0, le=MAX_CPU)
    memory: str = "4Gi"

    @field_validator("memory", mode="before")
    @classmethod
    def _valid_memory(cls, value: Any) -> Any:
        # Bounded (length and size): "9" * 400 is refused here, not an OverflowError at launch.
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError("memory must be a quantity such as 32Gi, 512Mi or 16G")
        memory_bytes(value if isinstance(value, str | int) else str(value))
        return str(value)

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)


class PlacementHints(StrictModel):
    prefer_pools: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list, description="preferred regions (a hint)")
    require_location: Location | None = None
    allowed_regions: list[str] = Field(default_factory=list, description="a constraint: only these regions")


class SecretRef(StrictModel):
    """A reference to a secret stored by the control plane; its value is resolved inside activities."""

    secret: str
    key: str = "value"


class WorkloadSpec(StrictModel):
    name: Name | None = Field(default=None, description="the workload id; generated when absent")
    team: Name
    project: str = "default"
    image: str = Field(min_length=1)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str | SecretRef] = Field(default_factory=dict)
    image_pull_secret: str | None = None
    resources: Resources = Field(default_factory=Resources)
    data_classification: DataClassification = DataClassification.INTERNAL
    priority: int = Field(default=50, ge=0, le=1000, description="tie-break inside a priority class")
    priority_class: Name | None = Field(default=None, description="a class of the policy; its default when absent")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    placement: PlacementHints = Field(default_factory=PlacementHints)
    max_retries: int = Field(default=0, ge=0, le=10, description="back-end retries of a failing job (backoffLimit)")
    max_runtime_seconds: int | None = Field(default=None, gt=0, le=MAX_SECONDS, description="activeDeadlineSeconds")
    launch_timeout_seconds: int | None = Field(default=None, gt=0, le=MAX_SECONDS,
                                               description="move a job pending longer (default: the pool's)")
    replicas: int = Field(default=1, ge=1, le=64, description="a gang: replicas admitted all-or-nothing on one "
                          "pool and launched as one job group (multi-node training); GPUs are per replica")

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, data: Any) -> Any:
        # Before anything walks the document (a field, a message, a repr): a value nested 100,000
        # deep in labels, env or args is one error here, not a RecursionError deeper down.
        return check_document_depth(data)

    @field_validator("annotations")
    @classmethod
    def _own_annotations(cls, value: dict[str, str]) -> dict[str, str]:
        """The fabric's own annotations are checked here, at submit: a typo in a key or a value such as
        `5 minutes` would otherwise be ignored, or fail only at launch."""
        for key, text in value.items():
            if not key.startswith(OWN_PREFIXES):
                continue
            if key not in SIM_ANNOTATIONS:
                close = difflib.get_close_matches(key, SIM_ANNOTATIONS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown fabric annotation {key!r}: {hint}known: {', '.join(SIM_ANNOTATIONS)}")
            if key == SIM_OUTCOME_ANNOTATION:
                if text not in SIM_OUTCOMES:
                    raise ValueError(f"{key}: {text!r} is not one of {', '.join(SIM_OUTCOMES)}")
            else:
                try:
                    duration_seconds(text)
                except ValueError as error:
                    raise ValueError(f"{key}: {error}") from None
        return value

    @field_validator("command", "args", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # Scalars only become text: anything else is left to fail as "not a string" (str() of a value
        # nested 100,000 deep would be a RecursionError).
        if isinstance(value, list):
            return [str(item) if item is None or isinstance(item, str | int | float) else item for item in value]
        if isinstance(value, str):
            return [value]
        return value

    @property
    def gpu_types(self) -> list[str]:
        return self.resources.gpu.type

    @property
    def gpu_count(self) -> int:
        """GPUs per replica."""
        return self.resources.gpu.count

    @property
    def total_gpus(self) -> int:
        """GPUs of the whole workload (every replica of a gang), all on one pool."""
        return self.resources.gpu.count * self.replicas
