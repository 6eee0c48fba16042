"""Shared vocabulary of the fabric: names, quantities and states that pools, workloads and policies agree on."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_name(value: str) -> str:
    # DNS-1123 labels: the one naming rule every back end (Kubernetes Jobs, Batch job ids) accepts.
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class Location(StrEnum):
    ON_PREM = "on-prem"
    CLOUD = "cloud"


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    CORDONED = "cordoned"


class DataClassification(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PII = "pii"


class WorkloadState(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (WorkloadState.SUCCEEDED, WorkloadState.FAILED, WorkloadState.CANCELLED)


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a spec must not silently change where work runs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_QUANTITY_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]i?)?$")
_UNITS = {
    None: 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}


def memory_bytes(quantity: str | int) -> int:
    """Parse a Kubernetes-style memory quantity ("32Gi", "512M", 1024) into bytes."""
    if isinstance(quantity, int):
        return quantity
    match = _QUANTITY_RE.match(quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity (examples: 32Gi, 512Mi, 16G)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")


def duration_seconds(text: str | int | float) -> float:
    """Parse "90s", "2m", "1.5h" or a bare number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 2m, 1h, 30d)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]
    return float(match.group(1)) * scale
