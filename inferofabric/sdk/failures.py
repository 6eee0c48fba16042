"""How the SDK reads a failure: the ApplicationError at its root (type and message), the error a
refused call becomes, and how long a query may take. Shared by the client, the workload handles
and the endpoints (it imports none of them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.errors import FabricError, FailureType, NoAnswer, PermissionDenied, error_for

QUERY_TIMEOUT = timedelta(seconds=10)

T = TypeVar("T")


def root_type(error: BaseException) -> str | None:
    """The type of the innermost ApplicationError in `error`'s causes (a FailureType's value, mostly)."""
    cause: BaseException | None = error
    kind = None
    while cause is not None:
        if isinstance(cause, ApplicationError):
            kind = cause.type
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return kind


def root_message(error: BaseException) -> str:
    """The message of the innermost ApplicationError in `error`'s causes (else the error's own)."""
    cause: BaseException | None = error
    message = str(error)
    while cause is not None:
        if isinstance(cause, ApplicationError):
            message = cause.message
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return message


def failure_error(error: BaseException) -> FabricError:
    """The SDK error a failed workflow, update or activity becomes: its root type through the one
    table (inferofabric.errors.ERROR_CLASSES), with its root message."""
    return error_for(root_type(error), root_message(error))


def raise_if_denied(error: BaseException) -> None:
    """Raise PermissionDenied when the failure is the auth gate's refusal; return otherwise."""
    if root_type(error) == FailureType.PERMISSION_DENIED:
        raise failure_error(error) from None


def refused(temporal: Client, error: RPCError, op: str) -> FabricError:
    """What a refusal by the Temporal server (or the fabric's door) means for a fabric user."""
    if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
        return PermissionDenied(error.message.removeprefix("fabric door: "))
    if "no mapping defined for search attribute" in error.message:
        return NoAnswer(f"{op}: the Temporal server at {temporal.service_client.config.target_host} "
                        f"(namespace {temporal.namespace!r}) has never run a fabric (its search attributes "
                        "are not registered): start `fabric up`, or `fabric worker` against it, or point "
                        "FABRIC_TEMPORAL_ADDRESS at the running fabric")
    return FabricError(f"{op}: the Temporal server refused it: {error.message}")


async def retry_not_ready(call: Callable[[], Awaitable[T]], attempts: int = 10) -> T:
    """Temporal answers an update with WorkflowNotReady when the workflow task that would take it
    failed or timed out (a busy or restarting worker): transient, so try again shortly."""
    for attempt in range(attempts):
        try:
            return await call()
        except RPCError as error:
            if "workflow task failure" not in error.message or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")
