"""Which exception means "the SDK could not decode this workflow's input": `DECODE_FAILURES`, for
`failure_exception_types=DECODE_FAILURES` in every fabric workflow's decorator.

It matches an exception raised while the SDK decodes the workflow's *input* (and nothing else),
which the SDK then turns into a failed workflow instead of retrying the first workflow task for
ever. A ValidationError that the workflow's own code raises later, or one decoding an activity's
result, still fails only the task (a bug to fix and redeploy, not a reason to end a running
workload). It lives beside the workflows that use it; the worker's failure converter
(worker/input_errors.py) words such failures for people.
"""

from __future__ import annotations

from types import FrameType, TracebackType
from typing import Any

_SDK_DECODE_FUNCTION = "_make_workflow_input"  # temporalio/worker/_workflow_instance.py decodes the input here
_SDK_MODULE = "_workflow_instance.py"
_MAX_FRAMES = 64


def _frames(error: BaseException) -> list[FrameType]:
    """The frames `error` passed through, and the callers of the frame that is handling it now."""
    frames: list[FrameType] = []
    tb: TracebackType | None = error.__traceback__
    if tb is not None:
        caller: FrameType | None = tb.tb_frame.f_back
        while caller is not None and len(frames) < _MAX_FRAMES:
            frames.append(caller)
            caller = caller.f_back
    while tb is not None and len(frames) < 2 * _MAX_FRAMES:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def raised_decoding_workflow_input(error: BaseException) -> bool:
    """Whether `error` was raised while the SDK decoded a workflow's input (its start arguments)."""
    return any(frame.f_code.co_name == _SDK_DECODE_FUNCTION and frame.f_code.co_filename.endswith(_SDK_MODULE)
               for frame in _frames(error))


class _DecodingInput(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, Exception) and raised_decoding_workflow_input(instance)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return False  # no class is always a decode failure: only instances, by where they were raised


class WorkflowInputDecodeError(Exception, metaclass=_DecodingInput):
    """Never raised: `isinstance(error, WorkflowInputDecodeError)` is true for any exception raised
    while the SDK decodes a workflow's input. As a workflow failure exception type it makes such a
    workflow fail at once instead of retrying its first task for ever."""


DECODE_FAILURES: list[type[BaseException]] = [WorkflowInputDecodeError]
