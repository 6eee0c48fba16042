"""The worker half: a workflow interceptor that checks every request before workflow code sees it,
and an activity interceptor that runs the fabric's activities only for the fabric's own workflows.

What it trusts: the identity in the request's `fabric-identity` header (auth/identity.py), which
only the front door (after checking the caller's API key) and the control plane's own clients
write. No proofs, nothing in history that grants anything.

Where the check happens, and what a refusal does (nothing changes in every case):
- a workflow start (the SDK, the `temporal` CLI, a Schedule, a child, a continued run): the workflow
  fails at once, before its first line, with `PermissionDenied`. Children and continued runs carry
  the identity of the run that made them (this interceptor copies it; they are checked like any
  start), never a free pass; a cron run is refused (the fabric never makes one);
- an update (`cancel`, `set_priority`): the validator rejects it; it never enters history;
- a signal: it is dropped (it cannot be refused to the sender; the audit log says so).
- an activity (defence in depth behind the door): every activity a fabric workflow schedules
  carries a mark that binds the activity type to the workflow run, made with the fabric's key; an
  activity without a valid mark fails at once (non-retryable), so a workflow of anyone else's that
  schedules `launch_job` by name on the fabric's queue runs nothing.
The check is deterministic (the workflow's clock), so a replay takes the same path. Decisions on
mutating requests that did not come through the door (which audits its own) go to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ContinueAsNewInput,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    StartActivityInput,
    StartChildWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from inferofabric.auth.audit import AuditSink
from inferofabric.auth.identity import HEADER, read_identity
from inferofabric.auth.requests import start_request
from inferofabric.auth.roles import INTERNAL_SIGNALS, OPEN_SIGNALS, TEAM_ACTIONS, Request, authorize
from inferofabric.auth.tokens import AuthError, Identity
from inferofabric.errors import FailureType

TEAM_ATTRIBUTE = "FabricTeam"
ACTIVITY_MARK = "fabric-activity"
NO_IDENTITY = ("no identity: requests reach the fabric through its front door with an API key "
               "(FABRIC_TOKEN; see `fabric token create`)")


def activity_mark(key: bytes, run_id: str, activity_type: str) -> str:
    """What binds an activity to the fabric workflow run that scheduled it (HMAC-SHA256)."""
    return hmac.new(key, f"fabric-activity:{run_id}:{activity_type}".encode(), hashlib.sha256).hexdigest()


class AuthGate(Interceptor):
    """Give it to every control-plane Worker (`interceptors=[AuthGate(key, sink)]`)."""

    def __init__(self, key: bytes, sink: AuditSink | None = None) -> None:
        self.key = key
        self.sink = sink

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        key, sink = self.key, self.sink

        class Inbound(_Inbound):
            _key = key
            _sink = sink

        return Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityGate(next, self.key)


class _ActivityGate(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, key: bytes) -> None:
        super().__init__(next)
        self._key = key

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if not info.is_local:
            payload = input.headers.get(ACTIVITY_MARK)
            mark = payload.data.decode(errors="replace") if payload is not None else ""
            wanted = activity_mark(self._key, info.workflow_run_id or "", info.activity_type)
            if not hmac.compare_digest(mark, wanted):
                raise ApplicationError(
                    f"permission denied: activity {info.activity_type} was not scheduled by a fabric workflow",
                    type=FailureType.PERMISSION_DENIED, non_retryable=True)
        return await super().execute_activity(input)


class _Outbound(WorkflowOutboundInterceptor):
    """Children and continued runs carry this run's identity; activities carry the fabric's mark."""

    def __init__(self, next: WorkflowOutboundInterceptor, inbound: _Inbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    def _inherited(self, headers: Any) -> dict[str, Payload]:
        kept = {k: v for k, v in (headers or {}).items() if k != HEADER}
        if self._inbound._identity_payload is not None:
            kept[HEADER] = self._inbound._identity_payload
        return kept

    def continue_as_new(self, input: ContinueAsNewInput) -> Any:
        input.headers = self._inherited(input.headers)
        return super().continue_as_new(input)

    async def start_child_workflow(self, input: StartChildWorkflowInput) -> Any:
        input.headers = self._inherited(input.headers)
        return await super().start_child_workflow(input)

    def start_activity(self, input: StartActivityInput) -> Any:
        mark = activity_mark(self._inbound._key, workflow.info().run_id, input.activity)
        input.headers = {**(input.headers or {}),
                         ACTIVITY_MARK: Payload(metadata={"encoding": b"binary/plain"}, data=mark.encode())}
        return super().start_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    _key: bytes = b""
    _sink: AuditSink | None = None
    _team: str | None = None
    _identity_payload: Payload | None = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound, self))

    # -- checks ------------------------------------------------------------------------------------
    def _check(self, headers: Any, request: Request, *, start: bool = False) -> tuple[Identity, bool]:
        found = read_identity(headers)
        if found is None:
            raise AuthError(NO_IDENTITY)
        identity, door = found
        if start and identity.expires and identity.expires < workflow.now().timestamp():
            raise AuthError(f"the token of {identity.subject} has expired")
        try:
            authorize(identity, request)
        except AuthError as error:
            error.identity = identity  # type: ignore[attr-defined]  # who was refused, for the audit log
            raise
        return identity, door
    def _audit(self, identity: Identity | None, request: Request, result: str, detail: str = "",
               request_id: str = "") -> None:
        if self._sink is None or workflow.unsafe.is_replaying():
            return
        info = workflow.info()
        self._seen = getattr(self, "_seen", 0) + 1
        where = request_id or f"{info.get_current_history_length()}.{self._seen}"
        self._sink.put(at=workflow.now(), identity=identity, request=request, result=result, detail=detail,
                       key=f"{info.run_id}:{where}:{request.action}")

    def _workload_team(self) -> str | None:
        if self._team:
            return self._team
        for pair in workflow.info().typed_search_attributes:
            if pair.key.name == TEAM_ATTRIBUTE:
                return str(pair.value)
        return None

    # -- entry points -----------------------------------------------------------------------------
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        request = start_request(info.workflow_type, info.workflow_id, input.args)
        if info.workflow_type in ("WorkloadWorkflow", "EndpointWorkflow"):
            self._team = request.team
        try:
            if info.cron_schedule:
                raise AuthError("cron runs are not allowed: use `fabric schedule add` (a Temporal Schedule)")
            identity, door = self._check(input.headers, request, start=True)
        except AuthError as error:
            self._audit(getattr(error, "identity", None), request, "refused", str(error))
            raise ApplicationError(f"permission denied: {error}", type=FailureType.PERMISSION_DENIED,
                                   non_retryable=True) from None
        self._identity_payload = input.headers.get(HEADER)
        first_run = info.parent is None and info.continued_run_id is None
        if first_run and not door and request.mutating and identity.role != "system":
            self._audit(identity, request, "ok")
        return await super().execute_workflow(input)

    async def handle_signal(self, input: HandleSignalInput) -> None:
        if input.signal in OPEN_SIGNALS:
            return await super().handle_signal(input)
        request = Request(action=f"signal:{input.signal}", target=workflow.info().workflow_id,
                          team=self._workload_team())
        try:
            identity, door = self._check(input.headers, request)
        except AuthError as error:
            self._audit(getattr(error, "identity", None), request, "refused", str(error))
            workflow.logger.warning("signal %s refused: %s", input.signal, error)
            return None
        if input.signal not in INTERNAL_SIGNALS and not door:
            self._audit(identity, request, "ok")
        return await super().handle_signal(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        request = Request(action=f"update:{input.update}", target=workflow.info().workflow_id,
                          team=self._workload_team())
        try:
            identity, door = self._check(input.headers, request)
        except AuthError as error:
            self._audit(getattr(error, "identity", None), request, "refused", str(error), request_id=input.id)
            raise ApplicationError(f"permission denied: {error}", type=FailureType.PERMISSION_DENIED,
                                   non_retryable=True) from None
        if input.update == "approve":
            answer = input.args[0] if input.args else None
            by = answer.get("by") if isinstance(answer, dict) else getattr(answer, "by", None)
            if by != identity.subject:  # who approved is the token's subject, never a claim of the caller's
                message = f"an approval must name its sender ({identity.subject}), not {by!r}"
                self._audit(identity, request, "refused", message, request_id=input.id)
                raise ApplicationError(f"permission denied: {message}", type=FailureType.PERMISSION_DENIED,
                                       non_retryable=True)
            if not door:
                self._audit(identity, request, "ok", "approved" if _approves(answer) else "denied",
                            request_id=input.id)
        elif request.action in TEAM_ACTIONS and not door:
            self._audit(identity, request, "ok", request_id=input.id)
        super().handle_update_validator(input)


def _approves(answer: Any) -> bool:
    return bool(answer.get("approve") if isinstance(answer, dict) else getattr(answer, "approve", False))
