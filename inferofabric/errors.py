"""The fabric's failure vocabulary, in one leaf module (it imports nothing of the package).

- `FailureType`: every `ApplicationError` type the fabric raises (workflows, activities, the auth
  gate, the worker's input checks). A failure crosses Temporal as its type's *string*; a StrEnum
  member is that string, so histories are the same as with the bare names.
- `NON_RETRYABLE`: the types a job's activity must not retry (its retry policies'
  `non_retryable_error_types`); a launch failing with one fails the workload instead of moving it.
- The errors people see: `FabricError` and its subclasses (the SDK's; `inferofabric.sdk.errors`
  re-exports them), `FabricUnreachable`, and the store's `NotFound`.
- `ERROR_CLASSES`: the one table from a failure's type to the SDK error it becomes (`error_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class FailureType(StrEnum):
    """The `type` of every ApplicationError the fabric raises. The first five are final (`NON_RETRYABLE`),
    in the order the retry policies have always listed them."""

    JOB_REJECTED = "JobRejected"  # backends.base.JobRejected: the back end refused the job for good
    BACKEND_CONFIG_ERROR = "BackendConfigError"  # backends.base.BackendConfigError: the pool's settings are wrong
    INVALID_INPUT = "InvalidInput"  # a bad request, spec or argument (ValueError, ValidationError, undecodable input)
    NOT_FOUND = "NotFound"  # a pool, policy or secret that does not exist (the store's NotFound)
    SECRET_ERROR = "SecretError"  # a secret that cannot be opened or used (secrets.SecretError)
    PERMISSION_DENIED = "PermissionDenied"  # the auth gate or a control activity refused the caller
    INVALID_WORKLOAD_SPEC = "InvalidWorkloadSpec"  # a workflow's own check of the workload's spec
    PROBE_ERROR = "ProbeError"  # a pool's health probe failed (retried)
    BACKEND_UNAVAILABLE = "BackendUnavailable"  # backends.base.BackendUnavailable: transient, retried
    BACKEND_THROTTLED = "BackendThrottled"  # backends.base.BackendThrottled: the pool said "slow down"
    BACKEND_ERROR = "BackendError"  # any other back-end failure (backends.base.BackendError): retried

    @property
    def final(self) -> bool:
        """Whether a job's activity failing with it must not be retried (nor the job moved): the input's
        or the pool's configuration's fault, not the moment's. PermissionDenied is always raised
        non-retryable itself, but a launch refused by the gate moves to another pool: not listed."""
        return self in _FINAL


_FINAL = frozenset({FailureType.JOB_REJECTED, FailureType.BACKEND_CONFIG_ERROR, FailureType.INVALID_INPUT,
                    FailureType.NOT_FOUND, FailureType.SECRET_ERROR})

# Plain strings (what a RetryPolicy records), in the enum's order.
NON_RETRYABLE: list[str] = [kind.value for kind in FailureType if kind.final]


# -- what people see ----------------------------------------------------------------------------------
class FabricError(Exception):
    """Base of SDK errors; its message is meant for people. `failure_type`: the fabric's failure type
    it came from (`FailureType`), when it came from one."""

    failure_type: FailureType | None = None


class FabricNotFound(FabricError):
    """A pool, workload, secret or schedule that does not exist."""


class InvalidInput(FabricError):
    """The control plane refused the input (a bad pool, policy or spec)."""


class WorkloadNotFound(FabricNotFound):
    pass


class AlreadyExists(FabricError):
    """A name that is already taken (a workload id, a pool, a schedule id): CLI exit code 2."""


class WorkloadExists(AlreadyExists):
    pass


class PermissionDenied(FabricError):
    """The request carried no valid token, or its role does not allow it (CLI exit code 3)."""


class FabricUnreachable(ConnectionError):
    """No Temporal server answers at the address (shown as a one-line error by the CLI, exit code 4)."""


class NoAnswer(FabricError):
    """The server is there but nothing answered in time (no fabric worker polls its task queue, or it is
    overloaded): CLI exit code 4, with what it waited for."""


class NotFound(LookupError):
    """A pool, policy or secret that does not exist in the store (shown to users as a one-line error)."""


# The SDK error each failure type becomes; every type has one (those people cannot act on apart are
# plain FabricErrors, with the fabric's message).
ERROR_CLASSES: Mapping[FailureType, type[FabricError]] = MappingProxyType({
    FailureType.JOB_REJECTED: FabricError,
    FailureType.BACKEND_CONFIG_ERROR: FabricError,
    FailureType.INVALID_INPUT: InvalidInput,
    FailureType.NOT_FOUND: FabricNotFound,
    FailureType.SECRET_ERROR: FabricError,
    FailureType.PERMISSION_DENIED: PermissionDenied,
    FailureType.INVALID_WORKLOAD_SPEC: FabricError,
    FailureType.PROBE_ERROR: FabricError,
    FailureType.BACKEND_UNAVAILABLE: FabricError,
    FailureType.BACKEND_THROTTLED: FabricError,
    FailureType.BACKEND_ERROR: FabricError,
})


def failure_type(kind: str | None) -> FailureType | None:
    """The FailureType named `kind` (an ApplicationError's type), None for a type the fabric never raises."""
    try:
        return FailureType(kind) if kind is not None else None
    except ValueError:
        return None


def error_for(kind: str | None, message: str) -> FabricError:
    """The SDK error for a failure of type `kind` (ERROR_CLASSES; a plain FabricError for any other)."""
    known = failure_type(kind)
    error = ERROR_CLASSES[known](message) if known is not None else FabricError(message)
    error.failure_type = known
    return error
