"""One-line reasons out of the errors workflow code sees (a bad spec, a failed activity): what a
workload's status message and history say, never a traceback."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError


def summarize(error: ValidationError) -> str:
    """The first five problems of an invalid spec, as `where: what; ...`."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def cause_type(error: BaseException) -> str | None:
    """The ApplicationError type an activity failed with (JobRejected, NotFound, ...), if any. A local
    activity's failure can reach the workflow as the ApplicationError itself, not wrapped."""
    cause = error if isinstance(error, ApplicationError) else getattr(error, "cause", None)
    return cause.type if isinstance(cause, ApplicationError) else None


def cause_message(error: BaseException) -> str:
    """The innermost message of an activity failure (a retry-exhausted or timed-out one included)."""
    if isinstance(error, ApplicationError):
        return error.message
    cause: BaseException | None = getattr(error, "cause", None)
    while cause is not None and not isinstance(cause, ApplicationError) and getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[attr-defined]
    return cause.message if cause is not None and hasattr(cause, "message") else str(error)
