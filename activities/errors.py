"""Typed, user-facing activity failures: what Temporal must not retry surfaces with a clear type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from inferofabric.backends.base import BackendError
from inferofabric.errors import FailureType, NotFound
from inferofabric.secrets import SecretError

P = ParamSpec("P")
R = TypeVar("R")


def typed_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn known failures into ApplicationErrors: permanent ones non-retryable, transient ones retryable."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except BackendError as error:
            raise ApplicationError(str(error), type=backend_failure(error), non_retryable=not error.retryable) from None
        except NotFound as error:
            raise ApplicationError(str(error), type=FailureType.NOT_FOUND, non_retryable=True) from None
        except SecretError as error:
            raise ApplicationError(str(error), type=FailureType.SECRET_ERROR, non_retryable=True) from None
        except ValidationError as error:
            raise ApplicationError(_first_errors(error), type=FailureType.INVALID_INPUT, non_retryable=True) from None
        except ValueError as error:
            raise ApplicationError(str(error), type=FailureType.INVALID_INPUT, non_retryable=True) from None

    return wrapper


def backend_failure(error: BackendError) -> FailureType:
    """The failure type of a back-end error: its class's name (JobRejected, BackendUnavailable, ...),
    or for a subclass the enum does not name, its nearest named ancestor's (BackendError at last)."""
    named = {kind.value for kind in FailureType}
    return next(FailureType(cls.__name__) for cls in type(error).__mro__ if cls.__name__ in named)


def _first_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "document"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
