"""Pool specifications: where GPUs live, how many the fabric may use, what they cost."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from inferofabric.models.common import (
    MAX_COUNT,
    MAX_PRICE,
    MAX_SECONDS,
    Location,
    Name,
    StrictModel,
    check_document_depth,
    finite,
)

BackendKind = Literal["local", "simulated", "kubernetes", "aws-batch", "gcp-batch", "azure-batch"]

# The sub-document of a pool file that configures each back end ("aws: {...}" for aws-batch, ...).
BACKEND_CONFIG_FIELD: dict[str, str] = {
    "local": "local",
    "simulated": "simulated",
    "kubernetes": "kubernetes",
    "aws-batch": "aws",
    "gcp-batch": "gcp",
    "azure-batch": "azure",
}


class PoolSpec(StrictModel):
    """One pool: a cluster, an account/region/queue, or this host.

    Cloud pools in several regions of one account are separate pools, so a policy's `regions`
    can select among them.
    """

    name: Name
    location: Location
    backend: BackendKind
    region: str = Field(default="local", min_length=1)
    gpus: dict[str, int] = Field(default_factory=dict, description="GPU inventory the fabric may use, by type")
    price_per_gpu_hour: dict[str, float] = Field(default_factory=dict)
    price_per_cpu_hour: float | None = Field(default=None, ge=0, le=MAX_PRICE,
                                             description="USD per CPU-hour a job requests")
    price_per_gib_hour: float | None = Field(default=None, ge=0, le=MAX_PRICE,
                                             description="USD per GiB-hour of memory requested")
    labels: dict[str, str] = Field(default_factory=dict)
    spot: bool = Field(default=False, description="spot/preemptible capacity: cheaper, may be reclaimed")
    launch_timeout_seconds: int = Field(default=900, gt=0, le=MAX_SECONDS,
                                        description="a job pending longer than this moves")
    checkpoint_root: str | None = Field(default=None, description="where FABRIC_CHECKPOINT_DIR points jobs")
    local: dict[str, Any] | None = None
    simulated: dict[str, Any] | None = None
    kubernetes: dict[str, Any] | None = None
    aws: dict[str, Any] | None = None
    gcp: dict[str, Any] | None = None
    azure: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, data: Any) -> Any:
        # The back-end settings are free-form: a value nested 100,000 deep is refused here, not
        # a RecursionError (or a serialization error) in an activity.
        return check_document_depth(data)

    @field_validator("gpus")
    @classmethod
    def _non_negative_gpus(cls, value: dict[str, int]) -> dict[str, int]:
        for gpu_type, count in value.items():
            if count < 0:
                raise ValueError(f"GPU count for {gpu_type} must be 0 or more, got {count}")
            if count > MAX_COUNT:
                raise ValueError(f"GPU count for {gpu_type} must be at most {MAX_COUNT:,}, got {count}")
        return value

    @field_validator("price_per_gpu_hour")
    @classmethod
    def _non_negative_prices(cls, value: dict[str, float]) -> dict[str, float]:
        for gpu_type, price in value.items():
            if price < 0:
                raise ValueError(f"price for {gpu_type} must be 0 or more, got {price}")
            finite(price, f"price for {gpu_type}", 0, MAX_PRICE)
        return value

    @model_validator(mode="after")
    def _only_own_backend_config(self) -> PoolSpec:
        own = BACKEND_CONFIG_FIELD[self.backend]
        for kind, field in BACKEND_CONFIG_FIELD.items():
            if field != own and getattr(self, field) is not None:
                raise ValueError(f"pool {self.name!r} uses backend {self.backend!r} but sets '{field}:' (for {kind})")
        return self

    @property
    def backend_config(self) -> dict[str, Any]:
        return dict(getattr(self, BACKEND_CONFIG_FIELD[self.backend]) or {})

    @property
    def total_gpus(self) -> int:
        return sum(self.gpus.values())

    @property
    def simulated_label(self) -> str:
        return " [SIMULATED]" if self.backend == "simulated" else ""

    def price(self, gpu_type: str) -> float | None:
        return self.price_per_gpu_hour.get(gpu_type)
