"""Connecting to the fabric with its data converter, and registering its search attributes.

Two ways in: people, SDKs and agents dial the front door (TLS, the token as Temporal's API key:
`door_tls` says when); the control plane's own processes (worker, gateway, the embedded stack)
dial Temporal itself, which listens only where they reach it.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import TLSConfig

from inferofabric.errors import FabricUnreachable
from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.settings import engine_address, fabric_home, temporal_address, temporal_namespace
from inferofabric.telemetry import interceptors

_runtime: Runtime | None = None


def quiet_runtime() -> Runtime:
    """A Temporal runtime whose core logs only errors: benign races (an activity finishing after its
    workflow moved on) are expected in a fabric and must not flood the CLI's output."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    return _runtime


def door_tls(address: str) -> TLSConfig | None:
    """How to dial `address` as a person does: TLS trusting `$FABRIC_TLS_CA`, else the CA `fabric up`
    keeps at `$FABRIC_HOME/tls/ca.pem`, else the system's roots when FABRIC_TLS=1; None (plain,
    straight to Temporal) when there is none of these or `address` is this host's engine itself."""
    if address == engine_address():
        return None
    ca = os.environ.get("FABRIC_TLS_CA")
    path = Path(ca).expanduser() if ca else fabric_home() / "tls" / "ca.pem"
    if path.is_file():
        return TLSConfig(server_root_ca_cert=path.read_bytes())
    if ca:
        raise FabricUnreachable(f"FABRIC_TLS_CA={ca}: no such file (the door's CA certificate)")
    if os.environ.get("FABRIC_TLS") == "1":
        return TLSConfig()
    return None


async def connect(address: str | None = None, namespace: str | None = None, *, api_key: str | None = None,
                  tls: TLSConfig | None = None) -> Client:
    """A client of `address`: plain for the control plane's own processes; with `tls` (and the
    caller's token as `api_key`) through the door."""
    address = address or temporal_address()
    if tls is None:
        # The plain path (the control plane's own processes): mTLS when FABRIC_ENGINE_TLS_* name a
        # client certificate (the production stack's engine requires one), else plaintext.
        from inferofabric.door.upstream import EngineTlsError, engine_tls

        try:
            engine = engine_tls()
        except EngineTlsError as error:
            raise FabricUnreachable(f"cannot dial the fabric's engine at {address}: {error}") from None
        if engine is not None:
            tls = TLSConfig(server_root_ca_cert=engine.ca_pem, client_cert=engine.cert_pem,
                            client_private_key=engine.key_pem, domain=engine.server_name)
    try:
        return await Client.connect(address, namespace=namespace or temporal_namespace(),
                                    data_converter=pydantic_data_converter, runtime=quiet_runtime(),
                                    interceptors=interceptors(), api_key=api_key, tls=tls or False)
    except RuntimeError as error:
        await _raise_refusal(address, api_key, tls)
        reason = "connection refused" if "refused" in str(error).lower() else str(error).splitlines()[0][:120]
        raise FabricUnreachable(
            f"cannot reach the fabric at {address} ({reason}); "
            "start one with `fabric up` or set FABRIC_TEMPORAL_ADDRESS") from None


async def _raise_refusal(address: str, api_key: str | None, tls: TLSConfig | None) -> None:
    """A connect that failed through the door may have been refused (no key, a bad or expired one):
    ask the door once more with grpcio, whose error has a typed status, and raise AuthError with the
    door's reason when it says UNAUTHENTICATED or PERMISSION_DENIED."""
    import grpc

    from inferofabric.auth.tokens import AuthError

    if tls is None or tls.server_root_ca_cert is None:
        return
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.server_root_ca_cert)
    options = [("grpc.ssl_target_name_override", tls.domain)] if tls.domain else []
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        call = channel.unary_unary("/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo",
                                   request_serializer=lambda m: m.SerializeToString())
        try:
            await call(GetSystemInfoRequest(), metadata=[("authorization", f"Bearer {api_key or ''}")], timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise AuthError((error.details() or "refused").removeprefix("fabric door: ")) from None


async def ensure_search_attributes(client: Client) -> None:
    """Register FabricPool, FabricState... on the namespace if they are missing (idempotent)."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace))
    missing = {name: kind for name, kind in SEARCH_ATTRIBUTES.items() if name not in listed.custom_attributes}
    if not missing:
        return
    kinds = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT}
    await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=client.namespace, search_attributes={n: kinds[k] for n, k in missing.items()}))  # type: ignore[misc]


async def task_queue_pollers(client: Client, queue: str) -> list[str] | None:
    """The identities of the workers polling `queue` for workflow tasks now (Temporal's own poller
    list), or None when the server cannot tell (an RPC error or no answer within 5 s)."""
    from datetime import timedelta

    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.service import RPCError

    try:
        described = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW), timeout=timedelta(seconds=5))
    except RPCError:
        return None
    return [poller.identity for poller in described.pollers]
