"""What every call of the SDK stands on: the Temporal client (with the caller's token), the store
when the client has one, control operations run as short workflows, and telling "no fabric worker
answers" apart from a slow answer. FabricClient (inferofabric/sdk/client.py) builds on it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError

from inferofabric.auth.client import find_token, with_token
from inferofabric.connection import task_queue_pollers
from inferofabric.errors import FabricError, NoAnswer, PermissionDenied
from inferofabric.models.messages import ControlRequest
from inferofabric.models.status import PoolStatus
from inferofabric.sdk.failures import failure_error, refused
from inferofabric.settings import task_queue as default_task_queue

CONTROL_TIMEOUT = timedelta(minutes=2)
NO_WORKER_CHECK_AFTER = timedelta(seconds=2)  # a control call not answered by then: is any worker there?


class FabricCore:
    """`store_url`: read access to the control plane's store (the embedded stack's SQLite file, or
    FABRIC_DATABASE_URL with a read-only role). With it, reads (queue, pools, policy) are store reads;
    without it they go through the control plane."""

    def __init__(self, client: Client, task_queue: str | None = None, store_url: str | None = None,
                 token: str | None = None, key: bytes | None = None) -> None:
        # `token`, else $FABRIC_TOKEN, else the admin token `fabric up` wrote under FABRIC_HOME (looked
        # up at the first request, so a client made before its stack's first start still finds it).
        # Through the door (a client connected with an API key) the door stamps the identity; a client
        # of the control plane's own, straight to Temporal, stamps the identity the token proves
        # (checked with `key`, default the fabric's key under FABRIC_HOME).
        self._token = token
        through_door = bool(client.service_client.config.api_key)
        self.temporal = client if through_door else with_token(client, self._current_token, key)
        self.task_queue = task_queue or default_task_queue()
        self.store_url = store_url
        # The registered pools a submit's feasibility check saw (inferofabric/sdk/reads.py).
        self._pools_seen: tuple[float, list[PoolStatus]] | None = None  # for the door's checks
        self._pools_loading: asyncio.Future[list[PoolStatus]] | None = None

    def _current_token(self) -> str | None:
        if self._token is None:
            self._token = find_token()
        return self._token

    @property
    def token(self) -> str | None:
        return self._current_token()

    def _store(self) -> Any:
        from inferofabric.store.db import get_store

        return get_store(self.store_url)

    # -- control plane ------------------------------------------------------------------------------
    async def _control(self, op: str, **args: Any) -> Any:
        """Run one control operation as a short workflow on the fabric's worker, bounded in time: when no
        worker polls the task queue the caller hears so within seconds, not never."""
        try:
            handle = await self.temporal.start_workflow(
                "ControlWorkflow", ControlRequest(op=op, args=args), id=f"fabric-control-{op}-{uuid.uuid4().hex[:12]}",
                task_queue=self.task_queue, execution_timeout=CONTROL_TIMEOUT,
                static_summary=f"fabric control: {op}",
            )
            return await self._answer(handle, op)
        except WorkflowFailureError as error:
            raise failure_error(error) from None

    async def answer_or_no_worker(self, call: Any, op: str) -> Any:
        """Await `call`; if it has no answer after a moment, ask Temporal whether any fabric worker polls
        the task queue, and say so at once when none does (instead of waiting out a long timeout)."""
        waiting = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({waiting}, timeout=NO_WORKER_CHECK_AFTER.total_seconds())
        if not done and not await self.worker_polls():
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
            raise NoAnswer(self.no_worker_message(op))
        return await waiting

    async def _answer(self, handle: WorkflowHandle[Any, Any], op: str) -> Any:
        try:
            return await self.answer_or_no_worker(handle.result(), op)
        except NoAnswer:
            with contextlib.suppress(Exception):
                await handle.terminate("no fabric worker polls the task queue")
            raise
        except WorkflowFailureError as error:
            if isinstance(error.cause, TemporalTimeoutError):
                raise NoAnswer(f"the fabric did not answer {op!r} within {CONTROL_TIMEOUT.total_seconds():.0f}s "
                               f"(task queue {self.task_queue!r}): is its worker overloaded?") from None
            raise

    async def worker_polls(self) -> bool:
        """Whether a fabric worker polls this client's task queue now (Temporal's own poller list)."""
        pollers = await task_queue_pollers(self.temporal, self.task_queue)
        return pollers is None or bool(pollers)  # cannot tell: keep waiting rather than claim something untrue

    def _refused(self, error: RPCError, op: str) -> FabricError:
        """What a refusal by the Temporal server (or the fabric's door) means for a fabric user."""
        return refused(self.temporal, error, op)

    def no_worker_message(self, op: str) -> str:
        target = self.temporal.service_client.config.target_host
        return (f"no fabric worker polls task queue {self.task_queue!r} on {target} (namespace "
                f"{self.temporal.namespace!r}), so nothing can answer {op!r}: start one with `fabric up` or "
                "`fabric worker`, or point FABRIC_TEMPORAL_ADDRESS / FABRIC_TASK_QUEUE at the running fabric")

    def _reader(self) -> Any:
        """The caller's identity for a read no gate sees (the store path, job output): its token checked
        with the fabric's key (inferofabric/auth/readers.py); PermissionDenied without a valid one."""
        from inferofabric.auth.readers import reader_identity
        from inferofabric.auth.tokens import AuthError
        from inferofabric.settings import fabric_home_path

        try:
            return reader_identity(self.token, fabric_home_path())
        except AuthError as error:
            raise PermissionDenied(f"permission denied: {error}") from None
