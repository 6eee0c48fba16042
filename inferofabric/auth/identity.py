"""The verified identity a request carries in its Temporal header (`fabric-identity`).

Only two kinds of writer exist: the front door (inferofabric/door), after it checked the caller's
API key, and the control plane's own processes, which alone reach Temporal itself. The door removes
every `fabric-*` header a caller sends before it writes its own, so a header copied out of history
and sent again is dropped: what history holds names who asked, and grants nothing to its reader.

The value is a plain JSON payload (no secret in it): subject, role, team or pool, the token's
expiry, and `door: true` when the door wrote it (the door has audited the call; the gate need not).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    CreateScheduleInput,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
)

from inferofabric.auth.tokens import Identity

HEADER = "fabric-identity"
HEADER_PREFIX = "fabric-"  # every header of this prefix is the fabric's to write, never a caller's
ENCODING = b"json/plain"
IdentitySource = Callable[[], Identity | None]


def identity_payload(identity: Identity, *, door: bool = False) -> Payload:
    body: dict[str, Any] = {"sub": identity.subject, "role": identity.role, "exp": identity.expires}
    if identity.team:
        body["team"] = identity.team
    if identity.pool:
        body["pool"] = identity.pool
    if identity.token_id:
        body["tid"] = identity.token_id
    if door:
        body["door"] = True
    return Payload(metadata={"encoding": ENCODING}, data=json.dumps(body, separators=(",", ":")).encode())


def read_identity(headers: Mapping[str, Payload] | None) -> tuple[Identity, bool] | None:
    """The identity in `headers` and whether the door wrote it; None when there is none (or it is
    not one the fabric could have written)."""
    payload = headers.get(HEADER) if headers else None
    if payload is None:
        return None
    try:
        body = json.loads(payload.data)
        identity = Identity(subject=str(body["sub"]), role=str(body["role"]), team=body.get("team"),
                            token_id=str(body.get("tid", "")), expires=float(body.get("exp", 0)),
                            pool=body.get("pool"))
    except (ValueError, KeyError, TypeError):
        return None
    return identity, bool(body.get("door"))


def stamped(headers: Mapping[str, Payload], identity: Identity | None) -> dict[str, Payload]:
    """`headers` without any fabric header, plus `identity`'s (when there is one)."""
    kept = {key: value for key, value in headers.items() if not key.startswith(HEADER_PREFIX)}
    if identity is not None:
        kept[HEADER] = identity_payload(identity)
    return kept


class StampIdentity(Interceptor):
    """For the control plane's own clients, which reach Temporal directly (the worker, the gateway,
    the embedded stack, tests): every request carries `identity()`'s identity as the door would."""

    def __init__(self, identity: IdentitySource) -> None:
        self.identity = identity

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Outbound(next, self.identity)


class _Outbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, identity: IdentitySource) -> None:
        super().__init__(next)
        self._identity = identity

    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        input.headers = stamped(input.headers, self._identity())
        return await super().start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        input.headers = stamped(input.headers, self._identity())
        await super().signal_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        input.headers = stamped(input.headers, self._identity())
        return await super().start_workflow_update(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        input.headers = stamped(input.headers, self._identity())
        return await super().query_workflow(input)

    async def create_schedule(self, input: CreateScheduleInput) -> Any:
        from temporalio.client import ScheduleActionStartWorkflow

        action = input.schedule.action
        if isinstance(action, ScheduleActionStartWorkflow):
            action.headers = stamped(action.headers or {}, self._identity())
        return await super().create_schedule(input)


def with_identity(client: Client, identity: IdentitySource | Identity | None) -> Client:
    """The same connection, stamping `identity` on every request (replacing an earlier stamper)."""
    source: IdentitySource = identity if callable(identity) else (lambda: identity)  # type: ignore[assignment,return-value]
    config = client.config()
    interceptors = [i for i in config.get("interceptors", []) if not isinstance(i, StampIdentity)]
    config["interceptors"] = [*interceptors, StampIdentity(source)]
    return Client(**config)
