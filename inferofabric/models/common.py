"""Shared vocabulary of the fabric: names, quantities and states that pools, workloads and policies agree on."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

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

    # No inf or NaN anywhere in a spec (`cpu: .inf`): every number a spec carries is finite.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


# Upper bounds on what a spec, pool or policy may say: far above any real value, low enough that no
# arithmetic on them overflows (timedelta, int(float), JSON) in a workflow or an activity.
MAX_CPU = 100_000  # cores a workload asks for
MAX_MEMORY_BYTES = 2**60  # 1 EiB
MAX_SECONDS = 100 * 366 * 86400  # a century: any duration, runtime or timeout
MAX_PRICE = 1_000_000.0  # USD per GPU-, CPU- or GiB-hour
MAX_USD = 1e12  # a budget
MAX_COUNT = 1_000_000  # GPUs in a pool or a quota
MAX_DEPTH = 64  # nesting of a free-form value (a pool's back-end settings)
_MAX_QUANTITY_TEXT = 32  # characters of a memory quantity or a duration ("9" * 400 is no number)


def check_depth(value: Any, where: str = "value", limit: int = MAX_DEPTH) -> Any:
    """`value` unchanged when its lists and dicts nest at most `limit` levels; ValueError otherwise.

    Iterative (no recursion), so a value nested 100,000 deep is refused, not a RecursionError."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        if depth > limit:
            raise ValueError(f"{where} is nested more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)
    return value


def check_document_depth(data: Any, limit: int = MAX_DEPTH) -> Any:
    """A document (a dict of fields) unchanged when no field nests deeper than `limit`; the
    ValueError names the field. For a model's `model_validator(mode="before")`."""
    if isinstance(data, dict):
        for key, value in data.items():
            check_depth(value, str(key)[:64], limit)
    else:
        check_depth(data, "the document", limit)
    return data


def finite(value: float, where: str, low: float = 0, high: float = MAX_PRICE) -> float:
    """`value` when it is a finite number in [low, high]; ValueError naming `where` otherwise."""
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{where} must be a finite number from {low:g} to {high:g}, got {value!r}")
    return value


_QUANTITY_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]i?)?$")
_UNITS = {
    None: 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}


def memory_bytes(quantity: str | int) -> int:
    """Parse a Kubernetes-style memory quantity ("32Gi", "512M", 1024) into bytes (at most 1 EiB)."""
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        number = quantity
    else:
        text = str(quantity).strip()
        match = _QUANTITY_RE.match(text) if len(text) <= _MAX_QUANTITY_TEXT else None
        if not match:
            shown = repr(text) if len(text) <= _MAX_QUANTITY_TEXT else f"{text[:12]!r}... ({len(text)} characters)"
            raise ValueError(f"{shown} is not a memory quantity (examples: 32Gi, 512Mi, 16G)")
        scaled = float(match.group(1)) * _UNITS[match.group(2)]
        if not math.isfinite(scaled) or scaled > MAX_MEMORY_BYTES:
            raise ValueError(f"{text!r} is more memory than the fabric accepts (at most {MAX_MEMORY_BYTES // 2**60}Ei)")
        number = int(scaled)
    if number < 0:
        raise ValueError("a memory quantity cannot be negative")
    if number > MAX_MEMORY_BYTES:
        raise ValueError(f"more memory than the fabric accepts (at most {MAX_MEMORY_BYTES // 2**60}Ei)")
    return number


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")


def duration_seconds(text: str | int | float) -> float:
    """Parse "90s", "2m", "1.5h" or a bare number of seconds (finite, at most a century either way)."""
    if isinstance(text, int | float):
        if isinstance(text, int) and abs(text) > MAX_SECONDS:
            raise ValueError(f"longer than the fabric accepts (at most {MAX_SECONDS} s, a century)")
        seconds = float(text)
    else:
        stripped = str(text).strip()
        match = _DURATION_RE.match(stripped) if len(stripped) <= _MAX_QUANTITY_TEXT else None
        if not match:
            shown = repr(stripped) if len(stripped) <= _MAX_QUANTITY_TEXT \
                else f"{stripped[:12]!r}... ({len(stripped)} characters)"
            raise ValueError(f"{shown} is not a duration (examples: 90s, 2m, 1h, 30d)")
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]
        seconds = float(match.group(1)) * scale
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise ValueError(f"{text!r} is not a duration the fabric accepts (finite, at most {MAX_SECONDS} s: a century)")
    return seconds


def validation_message(error: ValidationError, source: str = "") -> str:
    """A pydantic error as one line people read: `where: what; ...` (at most six)."""
    parts = []
    for item in error.errors()[:6]:
        where = ".".join(str(p) for p in item["loc"]) or "document"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = f" (+{len(error.errors()) - 6} more)" if len(error.errors()) > 6 else ""
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts) + more
