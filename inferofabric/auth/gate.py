"""The worker half: a workflow interceptor that checks every request before workflow code sees it.

Where the check happens, and what a refusal does (nothing changes in every case):
- a workflow start (the `temporal` CLI, the SDK, a Schedule): the workflow fails at once, before its
  first line, with `PermissionDenied` (a workload that was refused never joins the queue);
- an update (`cancel`, `set_priority`): the validator rejects it; it never enters history;
- a signal: it is dropped (it cannot be refused to the sender; the audit log says so).
Children of fabric workflows and continued runs are trusted (only a running workflow can make them).
The check is deterministic: the proof is verified against the workflow's clock, so a replay takes
the same path. Every decision on a mutating request goes to the audit log (not on replay).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from inferofabric.auth.audit import AuditSink
from inferofabric.auth.client import HEADER
from inferofabric.auth.roles import INTERNAL_SIGNALS, OPEN_SIGNALS, TEAM_ACTIONS, Request, authorize
from inferofabric.auth.tokens import AuthError, Identity, verify_proof

TEAM_ATTRIBUTE = "FabricTeam"


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


class _Inbound(WorkflowInboundInterceptor):
    _key: bytes = b""
    _sink: AuditSink | None = None
    _team: str | None = None

    # -- checks ------------------------------------------------------------------------------------
    def _check(self, headers: Any, request: Request, proof_action: str | None = None) -> Identity:
        payload = headers.get(HEADER) if headers else None
        if payload is None:
            raise AuthError("no token: set FABRIC_TOKEN (see `fabric token create`) or use the token "
                            "`fabric up` wrote under FABRIC_HOME")
        proof = workflow.payload_converter().from_payload(payload, str)
        identity = verify_proof(self._key, proof, proof_action or request.action, request.target,
                                now=workflow.now().timestamp())
        try:
            authorize(identity, request)
        except AuthError as error:
            error.identity = identity  # type: ignore[attr-defined]  # who was refused, for the audit log
            raise
        return identity

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
        request = _start_request(info.workflow_type, info.workflow_id, input.args)
        if info.workflow_type in ("WorkloadWorkflow", "EndpointWorkflow"):
            self._team = request.team
        if info.parent is None and info.continued_run_id is None:
            try:
                identity = self._check(input.headers, request, proof_action=f"start:{info.workflow_type}")
            except AuthError as error:
                self._audit(getattr(error, "identity", None), request, "refused", str(error))
                raise ApplicationError(f"permission denied: {error}", type="PermissionDenied",
                                       non_retryable=True) from None
            if request.mutating and identity.role != "system":
                self._audit(identity, request, "ok")
        return await super().execute_workflow(input)

    async def handle_signal(self, input: HandleSignalInput) -> None:
        if input.signal in OPEN_SIGNALS:
            return await super().handle_signal(input)
        request = Request(action=f"signal:{input.signal}", target=workflow.info().workflow_id,
                          team=self._workload_team())
        try:
            identity = self._check(input.headers, request)
        except AuthError as error:
            self._audit(getattr(error, "identity", None), request, "refused", str(error))
            workflow.logger.warning("signal %s refused: %s", input.signal, error)
            return None
        if input.signal not in INTERNAL_SIGNALS:
            self._audit(identity, request, "ok")
        return await super().handle_signal(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        request = Request(action=f"update:{input.update}", target=workflow.info().workflow_id,
                          team=self._workload_team())
        try:
            identity = self._check(input.headers, request)
        except AuthError as error:
            self._audit(getattr(error, "identity", None), request, "refused", str(error), request_id=input.id)
            raise ApplicationError(f"permission denied: {error}", type="PermissionDenied",
                                   non_retryable=True) from None
        if input.update == "approve":
            answer = input.args[0] if input.args else None
            by = answer.get("by") if isinstance(answer, dict) else getattr(answer, "by", None)
            if by != identity.subject:  # who approved is the token's subject, never a claim of the caller's
                message = f"an approval must name its sender ({identity.subject}), not {by!r}"
                self._audit(identity, request, "refused", message, request_id=input.id)
                raise ApplicationError(f"permission denied: {message}", type="PermissionDenied", non_retryable=True)
            self._audit(identity, request, "ok", "approved" if _approves(answer) else "denied", request_id=input.id)
        elif request.action in TEAM_ACTIONS:
            self._audit(identity, request, "ok", request_id=input.id)
        super().handle_update_validator(input)


def _approves(answer: Any) -> bool:
    return bool(answer.get("approve") if isinstance(answer, dict) else getattr(answer, "approve", False))


def _start_request(workflow_type: str, workflow_id: str, args: Any) -> Request:
    first = args[0] if args else None

    def field(name: str) -> Any:
        return first.get(name) if isinstance(first, dict) else getattr(first, name, None)

    if workflow_type == "ControlWorkflow":
        arguments = field("args") or {}
        spec: Any = arguments.get("spec") if isinstance(arguments.get("spec"), dict) else {}
        subject = arguments.get("name") or spec.get("name") or arguments.get("pool") or ""
        return Request(action=f"control:{field('op') or '?'}", target=workflow_id, subject=str(subject))
    workload: Any = field("spec") if workflow_type in ("WorkloadWorkflow", "EndpointWorkflow") else None
    team = workload.get("team") if isinstance(workload, dict) else getattr(workload, "team", None)
    return Request(action=f"start:{workflow_type}", target=workflow_id, team=team)
