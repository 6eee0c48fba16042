"""A workload's handle in the SDK: its status and explanation (queries), priority, approval and
cancel (updates), its result, and its jobs' output read from the pool (never through Temporal).

    handle = fabric.get("train-1")
    print(await handle.status(), await handle.explain())
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.errors import FabricError, InvalidInput, NoAnswer, PermissionDenied, WorkloadNotFound
from inferofabric.models.common import WorkloadState
from inferofabric.models.status import Explanation, QueueEntry, WorkloadStatus
from inferofabric.sdk.failures import QUERY_TIMEOUT, raise_if_denied, retry_not_ready, root_message
from inferofabric.sdk.reads import FabricReads


class WorkloadHandle:
    def __init__(self, fabric: FabricReads, workload_id: str) -> None:
        self.fabric = fabric
        self.id = workload_id
        self.warnings: list[str] = []  # set by submit(if_impossible="warn"): why it may never run
        self._handle: WorkflowHandle[Any, WorkloadStatus] = fabric.temporal.get_workflow_handle(
            workload_id, result_type=WorkloadStatus)

    async def _query(self, name: str, result_type: type) -> Any:
        try:
            return await self.fabric.answer_or_no_worker(
                self._handle.query(name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT), f"{name} of {self.id}")
        except NoAnswer:
            raise
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            if not await self.fabric.worker_polls():
                raise NoAnswer(self.fabric.no_worker_message(f"{name} of {self.id}")) from None
            if error.status == RPCStatusCode.DEADLINE_EXCEEDED:
                raise NoAnswer(f"workload {self.id!r} did not answer {name!r} within "
                               f"{QUERY_TIMEOUT.total_seconds():.0f}s: is the fabric's worker overloaded?") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # WorkflowQueryFailedError: bad input recorded in history, ...
            from inferofabric.auth.tokens import AuthError

            if isinstance(error, AuthError):  # this client's own token does not verify: a read needs one
                raise PermissionDenied(f"permission denied: {error}") from None
            description = await self._describe()
            if description == "failed":  # refused at the door? say so, not "query failed"
                try:
                    await self._handle.result()
                except WorkflowFailureError as failure:
                    raise_if_denied(failure)
            raise FabricError(f"workload {self.id!r} is {description}: {error}") from None

    async def _describe(self) -> str:
        try:
            description = await self._handle.describe()
        except RPCError:
            raise WorkloadNotFound(f"no workload named {self.id!r}") from None
        return description.status.name.lower() if description.status else "unknown"

    async def status(self) -> WorkloadStatus:
        status: WorkloadStatus = await self._query("status", WorkloadStatus)
        if not status.state.terminal:
            await self._closed_outside(status)
        if status.state == WorkloadState.QUEUED:
            entry = await self._queue_entry()
            if entry is not None:
                status.position, status.reason = entry.position, entry.reason
                status.priority_class = entry.priority_class
            else:
                status.reason = status.message
        return status

    async def _closed_outside(self, status: WorkloadStatus) -> None:
        """A workflow ended by Temporal itself (terminated from the Web UI, timed out, failed in a way
        the workload could not record) answers queries with its last state: report how it really
        ended, so nothing shows `launching` for ever."""
        try:
            description = await self._handle.describe()
        except RPCError:
            return
        closed = description.status
        if closed is None or closed in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW,
                                        WorkflowExecutionStatus.COMPLETED):
            return
        how = {WorkflowExecutionStatus.FAILED: "failed", WorkflowExecutionStatus.TIMED_OUT: "timed out",
               WorkflowExecutionStatus.CANCELED: "was cancelled"}.get(closed, f"was {closed.name.lower()}")
        status.state = WorkloadState.CANCELLED if closed == WorkflowExecutionStatus.CANCELED else WorkloadState.FAILED
        reason = ""
        if closed == WorkflowExecutionStatus.FAILED:
            try:
                await self._handle.result()
            except WorkflowFailureError as failure:
                reason = f": {root_message(failure)}"
            except Exception:  # the reason is a courtesy; the state above is what matters
                pass
        status.message = f"the workflow {how} in Temporal{reason}"
        status.reason = None

    async def explain(self) -> Explanation:
        explanation: Explanation = await self._query("explain", Explanation)
        if explanation.state == WorkloadState.QUEUED:
            explanation.queue = await self._queue_entry()
        return explanation

    async def _queue_entry(self) -> QueueEntry | None:
        view = await self.fabric.queue(workload_id=self.id)
        return view.entries[0] if view.entries else None

    async def set_priority(self, priority_class: str) -> WorkloadStatus:
        try:
            return await self._handle.execute_update(  # type: ignore[no-any-return]
                "set_priority", priority_class, result_type=WorkloadStatus)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # WorkflowUpdateFailedError: refused, not waiting, unknown class
            raise_if_denied(error)
            raise InvalidInput(root_message(error)) from None

    async def answer(self, approve: bool, by: str, note: str = "") -> WorkloadStatus:
        """Approve or deny the burst this workload waits for (FabricClient.approve/deny)."""
        from inferofabric.models.messages import ApprovalAnswer

        try:
            return await self._handle.execute_update(  # type: ignore[no-any-return]
                "approve", ApprovalAnswer(approve=approve, by=by, note=note), result_type=WorkloadStatus)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # refused, not waiting for an approval
            raise_if_denied(error)
            raise InvalidInput(root_message(error)) from None

    async def result(self) -> WorkloadStatus:
        """Wait until the workload ends; its final status."""
        try:
            return await self._handle.result()
        except WorkflowFailureError as error:
            raise_if_denied(error)
            raise FabricError(f"workload {self.id!r} failed: {root_message(error)}") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise

    async def cancel(self) -> WorkloadStatus:
        """Cancel and wait until the job is stopped and its GPUs are released."""
        status = await self.status()
        if status.state.terminal:
            return status
        try:
            return await retry_not_ready(  # type: ignore[no-any-return]
                lambda: self._handle.execute_update("cancel", result_type=WorkloadStatus))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return await self.status()
            raise
        except WorkflowUpdateFailedError as error:
            raise_if_denied(error)
            raise FabricError(f"workload {self.id!r}: {root_message(error)}") from None

    async def logs(self, tail: int = 200) -> str:
        """The last `tail` lines of the current (or last) attempt's output."""
        status = await self.status()
        if not status.pool or not status.job_id:
            return ""
        return await self.attempt_logs(status, status.pool, status.job_id, tail)

    async def job_logs(self, pool: str, job_id: str, tail: int = 200) -> str:
        """The last `tail` lines of one attempt's job (pool and job id from `status().history`)."""
        return await self.attempt_logs(await self.status(), pool, job_id, tail)

    async def attempt_logs(self, status: WorkloadStatus, pool: str, job_id: str, tail: int = 200) -> str:
        """One attempt's output, read from its pool here, never through a workflow (whose history would
        keep the text). Only an attempt the workload's own record names (`status.history`); a member
        reads its own team's only. Needs the store (the pool's settings): the fabric's host."""
        reader = self.fabric._reader()
        from inferofabric.auth.readers import require_team_reader
        from inferofabric.auth.tokens import AuthError

        try:
            require_team_reader(reader, status.team, f"the output of workload {self.id!r}")
        except AuthError as error:
            raise PermissionDenied(f"permission denied: {error}") from None
        if not any(a.pool == pool and a.job_id == job_id for a in status.history) and \
                (status.pool, status.job_id) != (pool, job_id):
            raise InvalidInput(f"workload {self.id!r} has no attempt {job_id!r} on pool {pool!r}")
        if not self.fabric.store_url:
            raise FabricError("logs are read from the pool on the fabric's host (they never pass through "
                              "Temporal): run `fabric logs` there, or give the client the store "
                              "(FABRIC_DATABASE_URL)")
        from inferofabric.activities.jobs import reading_backend
        from inferofabric.backends.base import BackendError
        from inferofabric.settings import fabric_home_path

        spec = await asyncio.to_thread(lambda: self.fabric._store().pool_spec(pool))
        try:
            backend = reading_backend(spec, fabric_home_path(), self.fabric.store_url)
            return str(await asyncio.to_thread(backend.logs, job_id, tail))
        except BackendError as error:
            raise FabricError(f"logs of {job_id} on {pool}: {error}") from None

