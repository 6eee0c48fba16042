"""Reading a pool's current spec from a workflow: the monitor and the watcher both start each round
with it (new credentials or endpoints take effect at once), and both end when the pool is removed."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # The class JobInput and WatchPoolInput refer to (see workflows/monitor.py on the sandbox).
    from inferofabric.errors import FailureType
    from inferofabric.models.messages import PoolSpec

LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))


async def current_pool_spec(name: str) -> PoolSpec | None:
    """The pool's spec as the store holds it now; None once the pool has been removed."""
    try:
        spec: PoolSpec = await workflow.execute_local_activity(
            "control_pool_spec", name, result_type=PoolSpec,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
    except (ActivityError, ApplicationError) as error:
        # A local activity's failure can arrive unwrapped (ApplicationError, not ActivityError).
        cause = error.cause if isinstance(error, ActivityError) else error
        if isinstance(cause, ApplicationError) and cause.type == FailureType.NOT_FOUND:
            return None
        raise
    return spec
