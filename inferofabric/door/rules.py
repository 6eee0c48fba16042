"""What the door lets through: pure decisions (no I/O, no gRPC), one table of calls per kind of caller.

- people (admin, operator, member): start, signal, update, query, describe, list/count, history of
  what they may read, cancel, and schedules within their rights — only for the fabric's public
  workflow types on the fabric's task queue; never Poll*/Respond*/heartbeat, never the system queue
  or internal types, never `cron_schedule`, eager execution, reset, terminate (admins excepted),
  namespace or operator calls;
- a pool's agent (role `agent`, bound to pool P): poll and answer activity tasks on `pool.P` and
  `pool.P.monitor` only, and its watcher's `job_state` reports to workloads on P;
- a `system` token is the control plane's own and never comes through the door.
Everything not named here is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inferofabric.auth.roles import Request, authorize
from inferofabric.auth.tokens import AGENT, SYSTEM, AuthError, Identity

PUBLIC_TYPES = frozenset({"WorkloadWorkflow", "EndpointWorkflow", "ControlWorkflow"})
PEOPLE_SIGNALS = frozenset({"request_cancel", "reconcile"})
MAX_PAYLOAD_DEPTH = 64

# Calls any identity may make: what an SDK asks when it connects.
HANDSHAKE = frozenset({"GetSystemInfo", "GetClusterInfo", "DescribeNamespace", "GetSearchAttributes"})
# Reads people make; the namespace is checked, and history is scoped (member: own team's work).
READS = frozenset({"ListWorkflowExecutions", "CountWorkflowExecutions", "ListOpenWorkflowExecutions",
                   "ListClosedWorkflowExecutions", "DescribeWorkflowExecution", "QueryWorkflow",
                   "PollWorkflowExecutionUpdate", "DescribeTaskQueue", "ListSchedules", "DescribeSchedule",
                   "ListScheduleMatchingTimes", "CountSchedules", "GetWorkflowExecutionHistory",
                   "GetWorkflowExecutionHistoryReverse"})
MUTATIONS = frozenset({"StartWorkflowExecution", "SignalWorkflowExecution", "UpdateWorkflowExecution",
                       "RequestCancelWorkflowExecution", "TerminateWorkflowExecution", "CreateSchedule",
                       "UpdateSchedule", "PatchSchedule", "DeleteSchedule"})
AGENT_CALLS = frozenset({"PollActivityTaskQueue", "RecordActivityTaskHeartbeat", "RespondActivityTaskCompleted",
                         "RespondActivityTaskFailed", "RespondActivityTaskCanceled", "SignalWorkflowExecution",
                         "ShutdownWorker"})
# Built-in queries that show a workflow's code and the worker's paths: operators' and admins' only.
PRIVILEGED_QUERIES = frozenset({"__stack_trace", "__enhanced_stack_trace"})


class Refused(Exception):
    """The door says no; `code` is the gRPC status name it answers with."""

    def __init__(self, message: str, code: str = "PERMISSION_DENIED") -> None:
        super().__init__(message)
        self.code = code
        self.audited = False  # set once the audit log has it (a refusal is recorded once)


@dataclass(frozen=True)
class Target:
    """What the door knows of an existing workflow (from Temporal, never from the caller)."""

    workflow_type: str
    team: str | None = None
    pool: str | None = None


def check_caller(identity: Identity, method: str) -> None:
    """The first gate: may this kind of caller make this kind of call at all?"""
    if identity.role == SYSTEM:
        raise Refused("a system token belongs to the control plane's own processes, which do not use the door; "
                      "give an agent `fabric token create --role agent --pool NAME`")
    if method in HANDSHAKE:
        return
    if identity.role == AGENT:
        if method in AGENT_CALLS:
            return
        raise Refused(f"an agent token (pool {identity.pool}) may not call {method}")
    if method in READS or method in MUTATIONS:
        return
    raise Refused(f"{method} is not open through the fabric's door")


def check_namespace(namespace: str, ours: str) -> None:
    if namespace != ours:
        raise Refused(f"namespace {namespace!r} is not the fabric's ({ours!r})")


def agent_queues(identity: Identity) -> set[str]:
    return {f"pool.{identity.pool}", f"pool.{identity.pool}.monitor"} if identity.pool else set()


def check_agent_poll(identity: Identity, queue: str) -> None:
    if queue not in agent_queues(identity):
        raise Refused(f"the agent of pool {identity.pool} may poll only pool.{identity.pool}, not {queue!r}")


def decode_args(payloads: list[tuple[bytes, bytes]]) -> list[Any]:
    """The JSON arguments of a request, as (encoding, data) pairs; refuses other encodings and
    payloads nested deeper than MAX_PAYLOAD_DEPTH (a deep payload must end at the door, not loop)."""
    args: list[Any] = []
    for encoding, data in payloads:
        if encoding == b"binary/null":
            args.append(None)
            continue
        if encoding != b"json/plain":
            raise Refused(f"payloads must be JSON (json/plain), not {encoding.decode(errors='replace')!r}",
                          "INVALID_ARGUMENT")
        try:
            value = json.loads(data)
        except RecursionError:
            raise Refused("the request's payload is nested too deep", "INVALID_ARGUMENT") from None
        except ValueError as error:
            raise Refused(f"the request's payload is not valid JSON: {error}", "INVALID_ARGUMENT") from None
        if _depth(value) > MAX_PAYLOAD_DEPTH:
            raise Refused(f"the request's payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels",
                          "INVALID_ARGUMENT")
        args.append(value)
    return args


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
    return depth - 1


# Workflow ids the fabric's own workflows use: a person's workload may not take one (a queued
# workload holding `fabric-admission-<queue>` would receive the admission loop's signals).
RESERVED_ID_PREFIXES = ("fabric-", "pool-monitor-", "pool-watcher-", "endpoint-")
ID_PREFIXES = {"ControlWorkflow": "fabric-control-", "EndpointWorkflow": "endpoint-"}
# Conflict and reuse policies that end another run: never a person's (TERMINATE_EXISTING = 3,
# TERMINATE_IF_RUNNING = 4 in Temporal's enums), or a start would terminate anyone's workload,
# the admission loop or a pool's monitor by reusing its id.
TERMINATING_CONFLICT_POLICIES = frozenset({3})
TERMINATING_REUSE_POLICIES = frozenset({4})


@dataclass(frozen=True)
class StartShape:
    """The parts of a workflow start (a start, or a schedule's action) the door judges."""

    workflow_type: str
    task_queue: str
    workflow_id: str = ""
    cron_schedule: str = ""
    eager: bool = False
    extras: tuple[str, ...] = ()  # fields people may not set (continued_failure, callbacks...)
    conflict_policy: int = 0
    reuse_policy: int = 0


def check_start(identity: Identity, shape: StartShape, request: Request, queue: str) -> None:
    if shape.workflow_type not in PUBLIC_TYPES:
        raise Refused(f"workflow type {shape.workflow_type!r} is internal to the fabric "
                      f"(people start {', '.join(sorted(PUBLIC_TYPES))})")
    if shape.task_queue != queue:
        raise Refused(f"task queue {shape.task_queue!r} is not the fabric's ({queue!r})")
    if shape.cron_schedule:
        raise Refused("cron_schedule is not allowed: use `fabric schedule add` (a Temporal Schedule)")
    if shape.eager:
        raise Refused("eager workflow execution is not allowed through the door")
    if shape.extras:
        raise Refused(f"{', '.join(shape.extras)} may not be set by a caller")
    if shape.conflict_policy in TERMINATING_CONFLICT_POLICIES or shape.reuse_policy in TERMINATING_REUSE_POLICIES:
        raise Refused("a start may not terminate a running workflow (id conflict policy TERMINATE_EXISTING, "
                      "reuse policy TERMINATE_IF_RUNNING): cancel it first")
    prefix = ID_PREFIXES.get(shape.workflow_type)
    if prefix is not None and not shape.workflow_id.startswith(prefix):
        raise Refused(f"a {shape.workflow_type}'s id starts with {prefix!r}")
    if prefix is None and shape.workflow_id.startswith(RESERVED_ID_PREFIXES):
        raise Refused(f"workflow id {shape.workflow_id!r} is reserved for the fabric's own workflows "
                      f"(ids starting with {', '.join(RESERVED_ID_PREFIXES)})")
    _authorize(identity, request)


def check_signal(identity: Identity, name: str, target: Target, workflow_id: str) -> Request:
    if target.workflow_type not in PUBLIC_TYPES | {"PoolMonitorWorkflow"}:
        raise Refused(f"{workflow_id!r} is internal to the fabric")
    if identity.role == AGENT:
        if name != "job_state" or target.workflow_type != "WorkloadWorkflow" or target.pool != identity.pool:
            raise Refused(f"the agent of pool {identity.pool} may report only on workloads placed on its pool")
    elif name not in PEOPLE_SIGNALS:
        raise Refused(f"signal {name!r} is the fabric's own")
    request = Request(action=f"signal:{name}", target=workflow_id, team=target.team)
    _authorize(identity, request)
    return request


def check_update(identity: Identity, name: str, target: Target, workflow_id: str) -> Request:
    if target.workflow_type not in PUBLIC_TYPES:
        raise Refused(f"{workflow_id!r} is internal to the fabric")
    request = Request(action=f"update:{name}", target=workflow_id, team=target.team)
    _authorize(identity, request)
    return request


def check_cancel(identity: Identity, target: Target, workflow_id: str) -> Request:
    """Temporal's cancel request (the Web UI's, `handle.cancel()`): an operator's, or a member's on
    its own team's work."""
    if target.workflow_type not in PUBLIC_TYPES:
        raise Refused(f"{workflow_id!r} is internal to the fabric")
    request = Request(action="update:cancel", target=workflow_id, team=target.team)
    _authorize(identity, request)
    return request


def check_terminate(identity: Identity, target: Target, workflow_id: str) -> None:
    if identity.role != "admin":
        raise Refused(f"{identity.describe()} may not terminate workflows (cancel them instead)")
    if target.workflow_type not in PUBLIC_TYPES:
        raise Refused(f"{workflow_id!r} is internal to the fabric")


def check_query(identity: Identity, name: str) -> None:
    if name in PRIVILEGED_QUERIES and identity.role not in ("admin", "operator"):
        raise Refused(f"{identity.describe()} may not run the {name} query (it shows the worker's code)")


def reads_every_history(identity: Identity) -> bool:
    return identity.role in ("admin", "operator")


def check_history(identity: Identity, target: Target, workflow_id: str) -> None:
    """Operators and admins read every history; a member its own team's work and control calls."""
    if reads_every_history(identity):
        return
    if target.workflow_type == "ControlWorkflow" or (target.team is not None and target.team == identity.team):
        return
    raise Refused(f"{identity.describe()} may not read the history of {workflow_id!r}")


def check_schedule_change(identity: Identity, team: str | None, schedule_id: str) -> None:
    if identity.role == "admin" or (identity.role == "member" and team is not None and team == identity.team):
        return
    raise Refused(f"{identity.describe()} may not change schedule {schedule_id!r}")


def _authorize(identity: Identity, request: Request) -> None:
    try:
        authorize(identity, request)
    except AuthError as error:
        raise Refused(str(error)) from None
