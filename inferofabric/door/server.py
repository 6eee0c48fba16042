"""The front door: a gRPC server speaking Temporal's WorkflowService, the one address people, other
SDKs, the `temporal` CLI and pool agents are given. For every call it

1. authenticates: the API key (`authorization: Bearer <fabric token>`) must verify (auth/tokens.py);
2. authorizes: the call, its namespace, workflow type, task queue and target against the caller's
   role (door/rules.py: pure);
3. admits: payloads decoded and bounded, `cron_schedule`/eager starts refused, FabricTeam set from
   the workload's own team;
4. stamps: removes every `fabric-*` header the caller sent and writes the verified identity;
5. audits every mutating call (accepted and refused) under the operation's real name;
6. forwards the call to Temporal, which listens only where the control plane reaches it, and
   returns Temporal's answer unchanged (errors with their details, so SDKs see what they expect).

All of WorkflowService's calls are unary, so this is a small forwarding proxy on grpcio's asyncio
server; nothing here parses HTTP/2 or TLS itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from temporalio.api.common.v1 import Header, Payload, Payloads, SearchAttributes
from temporalio.api.operatorservice.v1 import service_pb2 as operator_service
from temporalio.api.workflowservice.v1 import request_response_pb2 as wsv
from temporalio.api.workflowservice.v1 import service_pb2 as workflow_service

from inferofabric.auth.audit import AuditSink
from inferofabric.auth.identity import HEADER, HEADER_PREFIX, identity_payload
from inferofabric.auth.requests import start_request
from inferofabric.auth.roles import Request
from inferofabric.auth.tokens import AGENT, AuthError, Identity, verify_token
from inferofabric.door import rules
from inferofabric.door.rules import Refused, StartShape, Target
from inferofabric.door.upstream import upstream_channel

log = logging.getLogger(__name__)
SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
OPERATOR_SERVICE = "temporal.api.operatorservice.v1.OperatorService"
MAX_MESSAGE = 8 * 1024 * 1024  # a request larger than this ends at the door (Temporal's own blob limit is 2 MiB)
TARGET_SECONDS = 30.0  # how long a workflow's type and team are remembered (they never change for a run)
TASK_TOKENS = 100_000  # activity tasks handed to agents and not yet answered, remembered per pool
DROPPED_METADATA = ("authorization", "user-agent", "content-type", "te")
TEAM_ATTRIBUTE = "FabricTeam"
POOL_ATTRIBUTE = "FabricPool"
Handler = Callable[[Any, Identity, grpc.aio.ServicerContext], Awaitable[Any]]


def _methods(descriptor: Any) -> list[str]:
    return [m.name for m in descriptor.methods]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _strip(header: Header, identity: Identity | None) -> None:
    for key in [k for k in header.fields if k.startswith(HEADER_PREFIX)]:
        del header.fields[key]
    if identity is not None:
        header.fields[HEADER].CopyFrom(identity_payload(identity, door=True))


def _target_of(request: Any) -> str:
    """What a call is about, for the audit log: its workflow, schedule or task queue."""
    for field in ("workflow_execution", "execution"):
        if request.DESCRIPTOR.fields_by_name.get(field) is not None:
            return str(getattr(request, field).workflow_id)
    for field in ("workflow_id", "schedule_id", "namespace"):
        if request.DESCRIPTOR.fields_by_name.get(field) is not None and getattr(request, field):
            return str(getattr(request, field))
    return ""


def _pairs(payloads: Payloads) -> list[tuple[bytes, bytes]]:
    return [(p.metadata.get("encoding", b""), p.data) for p in payloads.payloads]


def _keyword(value: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain", "type": b"Keyword"}, data=json.dumps(value).encode())


def _attribute(attributes: SearchAttributes, name: str) -> str | None:
    payload = attributes.indexed_fields.get(name)
    if payload is None:
        return None
    try:
        value = json.loads(payload.data)
    except ValueError:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


class Door:
    """One door in front of one Temporal namespace and task queue."""

    def __init__(self, upstream: str, key: bytes, namespace: str, task_queue: str,
                 sink: AuditSink | None = None) -> None:
        self.upstream = upstream
        self.key = key
        self.namespace = namespace
        self.task_queue = task_queue
        self.sink = sink
        self._channel: grpc.aio.Channel | None = None
        self._targets: dict[str, tuple[float, Target]] = {}
        self._agent_tasks: OrderedDict[bytes, str] = OrderedDict()
        self._calls: dict[str, Any] = {}  # one multicallable per forwarded method
        self._server: grpc.aio.Server | None = None
        self.port = 0

    # -- serving ----------------------------------------------------------------------------------
    async def start(self, port: int, host: str, cert_pem: bytes, key_pem: bytes) -> int:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", 64 << 20)]
        self._channel = upstream_channel(self.upstream, options)  # mTLS to the engine when configured
        server = grpc.aio.server(options=options)
        workflow_methods = _methods(workflow_service.DESCRIPTOR.services_by_name["WorkflowService"])
        operator_methods = _methods(operator_service.DESCRIPTOR.services_by_name["OperatorService"])
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(SERVICE, {name: self._rpc(name) for name in workflow_methods}),
            grpc.method_handlers_generic_handler(OPERATOR_SERVICE, {
                name: grpc.unary_unary_rpc_method_handler(self._closed(name)) for name in operator_methods}),
        ))
        self.port = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        if self._channel is not None:
            await self._channel.close()

    def _closed(self, name: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"fabric door: OperatorService.{name} is not open through the fabric's door")
            return b""

        return refuse

    def _rpc(self, name: str) -> grpc.RpcMethodHandler:
        request_class = getattr(wsv, f"{name}Request")
        special: Handler | None = getattr(self, f"_on_{name}", None)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            identity: Identity | None = None
            try:
                identity = self._authenticate(context)
                rules.check_caller(identity, name)
                if special is not None:
                    return await special(request, identity, context)  # type: ignore[no-any-return]
                namespace = getattr(request, "namespace", None)
                if namespace is not None and name not in ("GetSystemInfo", "GetClusterInfo"):
                    rules.check_namespace(namespace, self.namespace)
                return await self._forward(name, request, context)
            except Refused as refused:
                if name not in rules.READS and name not in rules.HANDSHAKE:  # every refused change is audited
                    self._audit_refusal(identity, Request(action=name, target=_target_of(request)), refused)
                await context.abort(getattr(grpc.StatusCode, refused.code), f"fabric door: {refused}")
                raise  # abort raises; this is for the type checker

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=request_class.FromString)

    def _authenticate(self, context: grpc.aio.ServicerContext) -> Identity:
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = value.removeprefix("Bearer ").removeprefix("bearer ").strip()
        if not token:
            raise Refused("no API key: pass your fabric token (`fabric token create`) as the API key",
                          "UNAUTHENTICATED")
        try:
            return verify_token(self.key, token, now=time.time())
        except AuthError as error:
            raise Refused(str(error), "UNAUTHENTICATED") from None

    async def _forward(self, name: str, request: Message, context: grpc.aio.ServicerContext) -> bytes:
        assert self._channel is not None
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ())
                    if k not in DROPPED_METADATA and not k.startswith((":", "grpc-"))]
        call = self._calls.get(name)
        if call is None:
            call = self._calls[name] = self._channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=_serialize)
        try:
            response: bytes = await call(request, metadata=metadata, timeout=context.time_remaining())
        except grpc.aio.AioRpcError as error:
            trailing = tuple((k, v) for k, v in (error.trailing_metadata() or ()) if not k.startswith(":"))
            await context.abort(error.code(), error.details() or "", trailing)
            raise
        return response

    async def _upstream(self, name: str, request: Message, response: type[Message]) -> Any:
        """A call of the door's own (no caller's metadata): lookups of what it must not take on trust."""
        assert self._channel is not None
        call = self._channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=_serialize,
                                         response_deserializer=response.FromString)
        return await call(request, timeout=10)

    # -- what the door must know itself ---------------------------------------------------------------
    async def _target(self, workflow_id: str, fresh: bool = False) -> Target:
        now = time.monotonic()
        cached = self._targets.get(workflow_id)
        if cached is not None and not fresh and now - cached[0] < TARGET_SECONDS:
            return cached[1]
        from temporalio.api.common.v1 import WorkflowExecution

        try:
            described = await self._upstream("DescribeWorkflowExecution", wsv.DescribeWorkflowExecutionRequest(
                namespace=self.namespace, execution=WorkflowExecution(workflow_id=workflow_id)),
                wsv.DescribeWorkflowExecutionResponse)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise Refused(f"no workflow {workflow_id!r}", "NOT_FOUND") from None
            raise
        info = described.workflow_execution_info
        target = Target(workflow_type=info.type.name, team=_attribute(info.search_attributes, TEAM_ATTRIBUTE),
                        pool=_attribute(info.search_attributes, POOL_ATTRIBUTE))
        if len(self._targets) > 50_000:
            self._targets.clear()
        self._targets[workflow_id] = (now, target)
        return target

    # -- audit --------------------------------------------------------------------------------------
    def _audit(self, identity: Identity | None, request: Request, result: str, detail: str = "") -> None:
        if self.sink is not None:
            self.sink.put(at=datetime.now(UTC), identity=identity, request=request, result=result,
                          detail=detail, key=f"door:{uuid.uuid4().hex}")

    def _audit_refusal(self, identity: Identity | None, request: Request, refused: Refused) -> None:
        if not refused.audited:
            self._audit(identity, request, "refused", str(refused))
            refused.audited = True

    async def _judged(self, identity: Identity, request: Request, check: Callable[[], Any],
                      forward: Callable[[], Awaitable[Any]], detail: str = "") -> Any:
        """Run `check`; audit the verdict; forward when it passed."""
        try:
            check()
        except Refused as refused:
            self._audit_refusal(identity, request, refused)
            raise
        if identity.role != AGENT:
            self._audit(identity, request, "ok", detail)
        return await forward()

    # -- starts ---------------------------------------------------------------------------------------
    def _start_check(self, identity: Identity, start: Any, extras: tuple[str, ...] = (), eager: bool = False,
                     conflict_policy: int = 0) -> Request:
        """Judge a start (a StartWorkflowExecutionRequest or a schedule's NewWorkflowExecutionInfo)."""
        workflow_type, workflow_id = start.workflow_type.name, start.workflow_id
        request = start_request(workflow_type, workflow_id, rules.decode_args(_pairs(start.input)))
        shape = StartShape(workflow_type=workflow_type, task_queue=start.task_queue.name, workflow_id=workflow_id,
                           cron_schedule=start.cron_schedule, eager=eager, extras=extras,
                           conflict_policy=conflict_policy, reuse_policy=start.workflow_id_reuse_policy)
        try:
            rules.check_start(identity, shape, request, self.task_queue)
        except Refused as refused:
            self._audit_refusal(identity, request, refused)
            raise
        # Fabric* search attributes are the fabric's to write (listings and the door's own lookups
        # read them): a caller's are dropped, and FabricTeam is the workload's own team.
        for name in [n for n in start.search_attributes.indexed_fields if n.startswith("Fabric")]:
            del start.search_attributes.indexed_fields[name]
        if request.team is not None:
            start.search_attributes.indexed_fields[TEAM_ATTRIBUTE].CopyFrom(_keyword(request.team))
        _strip(start.header, identity)
        return request

    async def _on_StartWorkflowExecution(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        extras = tuple(name for name in ("continued_failure", "last_completion_result", "versioning_override",
                                         "time_skipping_config") if request.HasField(name))
        if request.completion_callbacks:
            extras += ("completion_callbacks",)
        judged = self._start_check(identity, request, extras, request.request_eager_execution,
                                   request.workflow_id_conflict_policy)
        self._audit(identity, judged, "ok")
        return await self._forward("StartWorkflowExecution", request, context)

    async def _on_SignalWithStartWorkflowExecution(self, request: Any, identity: Identity,
                                                   context: Any) -> Any:
        raise Refused("signal-with-start is the fabric's own; start the workflow, then signal it")

    async def _on_ExecuteMultiOperation(self, request: Any, identity: Identity, context: Any) -> Any:
        raise Refused("multi-operation requests are not open through the door; send the start and the update apart")

    # -- signals, updates, cancel, terminate --------------------------------------------------------
    async def _on_SignalWorkflowExecution(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        workflow_id = request.workflow_execution.workflow_id
        target = await self._target(workflow_id, fresh=identity.role == AGENT)
        audited = Request(action=f"signal:{request.signal_name}", target=workflow_id, team=target.team)

        def check() -> None:
            rules.check_signal(identity, request.signal_name, target, workflow_id)
            rules.decode_args(_pairs(request.input))
            _strip(request.header, identity)

        return await self._judged(identity, audited, check, lambda: self._forward("SignalWorkflowExecution",
                                                                                  request, context))

    async def _on_UpdateWorkflowExecution(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        workflow_id = request.workflow_execution.workflow_id
        name = request.request.input.name
        target = await self._target(workflow_id)
        audited = Request(action=f"update:{name}", target=workflow_id, team=target.team)
        detail = ""
        if name == "approve":
            try:
                args = rules.decode_args(_pairs(request.request.input.args))
            except Refused as refused:
                self._audit_refusal(identity, audited, refused)
                raise
            answer = args[0] if args and isinstance(args[0], dict) else {}
            detail = ("approved" if answer.get("approve") else "denied") + (
                f": {answer.get('note')}" if answer.get("note") else "")

        def check() -> None:
            rules.check_update(identity, name, target, workflow_id)
            rules.decode_args(_pairs(request.request.input.args))
            _strip(request.request.input.header, identity)

        return await self._judged(identity, audited, check,
                                  lambda: self._forward("UpdateWorkflowExecution", request, context), detail)

    async def _on_RequestCancelWorkflowExecution(self, request: Any, identity: Identity,
                                                 context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        workflow_id = request.workflow_execution.workflow_id
        target = await self._target(workflow_id)
        audited = Request(action="update:cancel", target=workflow_id, team=target.team)
        return await self._judged(identity, audited, lambda: rules.check_cancel(identity, target, workflow_id),
                                  lambda: self._forward("RequestCancelWorkflowExecution", request, context),
                                  "Temporal cancel request")

    async def _on_TerminateWorkflowExecution(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        workflow_id = request.workflow_execution.workflow_id
        target = await self._target(workflow_id)
        audited = Request(action="terminate", target=workflow_id, team=target.team)
        return await self._judged(identity, audited, lambda: rules.check_terminate(identity, target, workflow_id),
                                  lambda: self._forward("TerminateWorkflowExecution", request, context),
                                  request.reason)

    # -- reads that are scoped ------------------------------------------------------------------------
    async def _on_GetWorkflowExecutionHistory(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        await self._history_scope(identity, request.execution.workflow_id)
        return await self._forward("GetWorkflowExecutionHistory", request, context)

    async def _on_GetWorkflowExecutionHistoryReverse(self, request: Any, identity: Identity,
                                                     context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        await self._history_scope(identity, request.execution.workflow_id)
        return await self._forward("GetWorkflowExecutionHistoryReverse", request, context)

    async def _history_scope(self, identity: Identity, workflow_id: str) -> None:
        """Operators and admins read every history without a lookup (a result's long poll is one of
        these per workload); a member's needs the workflow's team, from Temporal."""
        if not rules.reads_every_history(identity):
            rules.check_history(identity, await self._target(workflow_id), workflow_id)

    async def _on_DescribeTaskQueue(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        if request.task_queue.name != self.task_queue:
            raise Refused(f"task queue {request.task_queue.name!r} is not the fabric's")
        return await self._forward("DescribeTaskQueue", request, context)

    async def _on_QueryWorkflow(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        rules.check_query(identity, request.query.query_type)
        rules.decode_args(_pairs(request.query.query_args))
        _strip(request.query.header, identity)
        return await self._forward("QueryWorkflow", request, context)

    # -- schedules ------------------------------------------------------------------------------------
    def _schedule_start(self, identity: Identity, schedule_id: str, action: Any) -> Request:
        if not action.HasField("start_workflow"):
            raise Refused("a schedule's action must start a fabric workflow")
        return self._start_check(identity, action.start_workflow)

    async def _schedule_team(self, schedule_id: str) -> str | None:
        described = await self._upstream("DescribeSchedule", wsv.DescribeScheduleRequest(
            namespace=self.namespace, schedule_id=schedule_id), wsv.DescribeScheduleResponse)
        start = described.schedule.action.start_workflow
        try:
            args = rules.decode_args(_pairs(start.input))
        except Refused:
            return None
        return start_request(start.workflow_type.name, start.workflow_id, args).team

    async def _on_CreateSchedule(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        judged = self._schedule_start(identity, request.schedule_id, request.schedule.action)
        audited = Request(action="schedule add", target=request.schedule_id, team=judged.team)
        self._audit(identity, audited, "ok", judged.action)
        return await self._forward("CreateSchedule", request, context)

    async def _on_UpdateSchedule(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        team = await self._schedule_team(request.schedule_id)
        audited = Request(action="schedule update", target=request.schedule_id, team=team)

        def check() -> None:
            rules.check_schedule_change(identity, team, request.schedule_id)
            self._schedule_start(identity, request.schedule_id, request.schedule.action)

        return await self._judged(identity, audited, check, lambda: self._forward("UpdateSchedule", request, context))

    async def _on_PatchSchedule(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        team = await self._schedule_team(request.schedule_id)
        what = "pause" if request.patch.pause else "unpause" if request.patch.unpause else (
            "trigger" if request.patch.HasField("trigger_immediately") else "backfill" if request.patch.backfill_request
            else "patch")
        audited = Request(action=f"schedule {what}", target=request.schedule_id, team=team)
        return await self._judged(identity, audited,
                                  lambda: rules.check_schedule_change(identity, team, request.schedule_id),
                                  lambda: self._forward("PatchSchedule", request, context))

    async def _on_DeleteSchedule(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        team = await self._schedule_team(request.schedule_id)
        audited = Request(action="schedule delete", target=request.schedule_id, team=team)
        return await self._judged(identity, audited,
                                  lambda: rules.check_schedule_change(identity, team, request.schedule_id),
                                  lambda: self._forward("DeleteSchedule", request, context))

    # -- agents ---------------------------------------------------------------------------------------
    async def _on_ShutdownWorker(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        if request.sticky_task_queue:  # an agent runs activities only: it has no sticky queue of its own
            raise Refused("an agent shuts down no sticky queue (a workflow worker's, not an agent's)")
        return await self._forward("ShutdownWorker", request, context)

    async def _on_PollActivityTaskQueue(self, request: Any, identity: Identity, context: Any) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        rules.check_agent_poll(identity, request.task_queue.name)
        raw = await self._forward("PollActivityTaskQueue", request, context)
        task = wsv.PollActivityTaskQueueResponse.FromString(raw)
        if task.task_token:
            self._agent_tasks[task.task_token] = identity.pool or ""
            while len(self._agent_tasks) > TASK_TOKENS:
                self._agent_tasks.popitem(last=False)
        return raw

    def _own_task(self, identity: Identity, token: bytes, done: bool) -> None:
        pool = self._agent_tasks.get(token)
        if pool is None or pool != identity.pool:
            raise Refused(f"that activity task was not handed to the agent of pool {identity.pool}")
        if done:
            self._agent_tasks.pop(token, None)

    async def _answer(self, name: str, request: Any, identity: Identity, context: Any, done: bool = True) -> Any:
        rules.check_namespace(request.namespace, self.namespace)
        self._own_task(identity, request.task_token, done)
        return await self._forward(name, request, context)

    async def _on_RecordActivityTaskHeartbeat(self, request: Any, identity: Identity, context: Any) -> Any:
        return await self._answer("RecordActivityTaskHeartbeat", request, identity, context, done=False)

    async def _on_RespondActivityTaskCompleted(self, request: Any, identity: Identity, context: Any) -> Any:
        return await self._answer("RespondActivityTaskCompleted", request, identity, context)

    async def _on_RespondActivityTaskFailed(self, request: Any, identity: Identity, context: Any) -> Any:
        return await self._answer("RespondActivityTaskFailed", request, identity, context)

    async def _on_RespondActivityTaskCanceled(self, request: Any, identity: Identity, context: Any) -> Any:
        return await self._answer("RespondActivityTaskCanceled", request, identity, context)
