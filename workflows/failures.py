"""One-line reasons out of the errors workflow code sees (a bad spec, a failed activity): what a
workload's status message and history say, never a traceback."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError


def summarize(error: ValidationError) -> str:
    """The first five problems of an invalid spec, as `where: what; ...`."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def cause_type(error: ActivityError) -> str | None:
    """The ApplicationError type an activity failed with (JobRejected, NotFound, ...), if any."""
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def cause_message(error: ActivityError) -> str:
    """The innermost message of an activity failure (a retry-exhausted or timed-out one included)."""
    cause: BaseException | None = error.cause
    while cause is not None and not isinstance(cause, ApplicationError) and getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[attr-defined]
    return cause.message if cause is not None and hasattr(cause, "message") else str(error)
