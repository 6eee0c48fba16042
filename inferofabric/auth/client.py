"""The client half: every start, signal, update and schedule a client sends carries a proof of its
token in the `fabric-auth` header (tokens.py). Reads (queries, describe, list) carry none."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    CreateScheduleInput,
    Interceptor,
    OutboundInterceptor,
    ScheduleActionStartWorkflow,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
)
from temporalio.converter import default as default_converter

from inferofabric.auth.tokens import SCHEDULED, admin_token_path, make_proof

HEADER = "fabric-auth"
TokenSource = Callable[[], str | None]


def find_token(home: Path | None = None) -> str | None:
    """`$FABRIC_TOKEN`, else the admin token `fabric up` wrote under FABRIC_HOME (the local operator's)."""
    if os.environ.get("FABRIC_TOKEN"):
        return os.environ["FABRIC_TOKEN"].strip()
    base = home or Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser()
    try:
        return admin_token_path(base).read_text().strip() or None
    except OSError:
        return None


def _header(token: str | None, action: str, target: str, seconds: float | None = None) -> dict[str, Any]:
    if not token:
        return {}
    kwargs = {"seconds": seconds} if seconds else {}
    proof = make_proof(token, action, target, now=time.time(), **kwargs)
    return {HEADER: default_converter().payload_converter.to_payloads([proof])[0]}


class AuthInterceptor(Interceptor):
    def __init__(self, token: TokenSource) -> None:
        self.token = token

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Outbound(next, self.token)


class _Outbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, token: TokenSource) -> None:
        super().__init__(next)
        self._token = token

    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        input.headers = {**input.headers, **_header(self._token(), f"start:{input.workflow}", input.id)}
        return await super().start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        input.headers = {**input.headers, **_header(self._token(), f"signal:{input.signal}", input.id)}
        await super().signal_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        input.headers = {**input.headers, **_header(self._token(), f"update:{input.update}", input.id)}
        return await super().start_workflow_update(input)

    async def create_schedule(self, input: CreateScheduleInput) -> Any:
        action = input.schedule.action
        token = self._token()
        if isinstance(action, ScheduleActionStartWorkflow) and token:
            from inferofabric.auth.tokens import token_claims

            # The schedule starts workloads later, with ids `<id>-<time>`: its proof lasts as long as
            # the token and is good for starts of that workflow type under that id only.
            seconds = max(60.0, float(token_claims(token).get("exp", 0)) - time.time())
            action.headers = {**(action.headers or {}),
                              **_header(token, f"{SCHEDULED}start:{action.workflow}", action.id, seconds)}
        return await super().create_schedule(input)


def with_token(client: Client, token: TokenSource | str | None) -> Client:
    """The same connection, with proofs of `token` on every request that changes something."""
    source: TokenSource = token if callable(token) else (lambda: token)  # type: ignore[assignment,return-value]
    config = client.config()
    interceptors = [i for i in config.get("interceptors", []) if not isinstance(i, AuthInterceptor)]
    config["interceptors"] = [*interceptors, AuthInterceptor(source)]
    return Client(**config)
