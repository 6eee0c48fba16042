"""Input that cannot be decoded ends a workflow or an activity at once, with the reason; it is never retried.

Temporal's Python SDK decodes a workflow's input before any of its code (or any interceptor) runs.
When that fails (a payload that is not JSON, JSON nested deeper than the parser goes, a value the
run method's type refuses, an unknown encoding) the SDK fails the *workflow task* by default, and
the server retries that task for ever: the workflow never starts and never ends. Two pieces here:

- `DECODE_FAILURES` (workflows/decode_failures.py), for
  `@workflow.defn(failure_exception_types=DECODE_FAILURES)` on every fabric
  workflow: it matches an exception raised while the SDK decodes the workflow's *input* (and nothing
  else), which the SDK then turns into a failed workflow. A ValidationError that the workflow's own
  code raises later, or one decoding an activity's result, still fails only the task (a bug to fix
  and redeploy, not a reason to end a running workload).

- `InvalidInputFailureConverter` (install with `with_input_errors(client)` on the client a worker is
  built with): the SDK decodes an *activity's* arguments before any activity interceptor runs, and
  wraps a failure in a retryable `ApplicationError("Failed decoding arguments")`, retried by the
  activity's retry policy (for ever by default). An interceptor cannot see that error; the failure
  converter, which turns every error a worker reports into a Temporal failure, can: it reports it
  as a non-retryable `ApplicationError` of type "InvalidInput" with the reason. It also words a
  workflow's failed input the same way ("invalid input: ...").
"""

from __future__ import annotations

import dataclasses

import temporalio.api.failure.v1
from temporalio.client import Client
from temporalio.converter import DefaultFailureConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

from inferofabric.errors import FailureType
from inferofabric.workflows.decode_failures import WorkflowInputDecodeError

INVALID_INPUT = FailureType.INVALID_INPUT
_ACTIVITY_DECODE_MESSAGE = "Failed decoding arguments"  # temporalio/worker/_activity.py wraps decode errors so



def reason(error: BaseException) -> str:
    """One line saying why an input was refused (a pydantic error's first problems, or the message)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        try:
            items = errors(include_url=False, include_input=False)
        except TypeError:
            items = None
        if items:
            parts = []
            for item in items[:5]:
                where = ".".join(str(p) for p in item.get("loc", ())) or "input"
                parts.append(f"{where}: {str(item.get('msg', '')).removeprefix('Value error, ')}")
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            return ("; ".join(parts) + more)[:1000]
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:1000]


def invalid_input(error: BaseException) -> ApplicationError:
    return ApplicationError(f"invalid input: {reason(error)}", type=INVALID_INPUT, non_retryable=True)


class InvalidInputFailureConverter(DefaultFailureConverter):
    """The default failure converter, except that input the SDK could not decode is reported as a
    non-retryable "InvalidInput" failure with its reason (an activity's arguments, a workflow's input)."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter,
                   failure: temporalio.api.failure.v1.Failure) -> None:
        replacement: ApplicationError | None = None
        cause = exception.__cause__
        if (type(exception) is ApplicationError and exception.message == _ACTIVITY_DECODE_MESSAGE
                and not exception.type and cause is not None):
            replacement = invalid_input(cause)
        elif not isinstance(exception, ApplicationError) and isinstance(exception, WorkflowInputDecodeError):
            replacement = invalid_input(exception)
        if replacement is not None:
            replacement.__traceback__ = exception.__traceback__
            exception = replacement
        super().to_failure(exception, payload_converter, failure)


def with_input_errors(client: Client) -> Client:
    """`client`, reporting undecodable input as non-retryable "InvalidInput" failures (give it to a Worker)."""
    converter = client.data_converter
    if isinstance(converter.failure_converter, InvalidInputFailureConverter):
        return client
    config = client.config()
    config["data_converter"] = dataclasses.replace(converter, failure_converter_class=InvalidInputFailureConverter)
    return Client(**config)
