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


LocalSandbox = Literal["bubblewrap", "podman", "none"]


class LocalSettings(StrictModel):
    """A `local` pool's `local:` block. Every field is optional, so pool files from before the
    sandbox (`local: {discover_gpus: true}`) keep their meaning, now confined (docs/backends/local.md)."""

    discover_gpus: bool = Field(default=True, description="find the host's GPUs through NVML")
    workdir: str | None = Field(default=None, description="the job's working directory (default: its job dir)")
    sandbox: LocalSandbox = Field(default="bubblewrap", description="how a job is confined; `none`: not at all")
    run_as: str | None = Field(default=None, description="user (name or uid) jobs run as; default: `nobody` "
                                                          "when the worker is root, else the worker's user")
    read_only: list[str] = Field(default_factory=lambda: ["/"], description="host paths a job sees, read-only")
    hidden: list[str] = Field(default_factory=list, description="host paths a job must not see at all")
    network: Literal["isolated", "host"] = Field(
        default="isolated", description="`isolated`: a job has no network at all (it cannot reach the fabric's "
                                        "loopback services, Temporal included); `host`: the host's network, which an "
                                        "endpoint's replicas need (they serve on a host port)")

    @field_validator("run_as")
    @classmethod
    def _never_root(cls, value: str | None) -> str | None:
        if value is not None and value.strip() in ("root", "0"):
            raise ValueError("a local job never runs as root: leave run_as unset (nobody) or name another user")
        return value

    @field_validator("read_only", "hidden")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r}: give an absolute path")
        return value


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

    @field_validator("local")
    @classmethod
    def _local_settings(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            LocalSettings.model_validate(value)  # a bad `local:` block is refused when the pool is set
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
