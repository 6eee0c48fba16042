"""Typed, user-facing activity failures: what Temporal must not retry surfaces with a clear type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from inferofabric.backends.base import BackendError
from inferofabric.secrets import SecretError
from inferofabric.store.db import NotFound

P = ParamSpec("P")
R = TypeVar("R")


def typed_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn known failures into ApplicationErrors: permanent ones non-retryable, transient ones retryable."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except BackendError as error:
            raise ApplicationError(str(error), type=type(error).__name__, non_retryable=not error.retryable) from None
        except NotFound as error:
            raise ApplicationError(str(error), type="NotFound", non_retryable=True) from None
        except SecretError as error:
            raise ApplicationError(str(error), type="SecretError", non_retryable=True) from None
        except ValidationError as error:
            raise ApplicationError(_first_errors(error), type="InvalidInput", non_retryable=True) from None
        except ValueError as error:
            raise ApplicationError(str(error), type="InvalidInput", non_retryable=True) from None

    return wrapper


def _first_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "document"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
