"""Connecting to Temporal with the fabric's data converter, and registering its search attributes."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.sdk.errors import FabricUnreachable
from inferofabric.settings import temporal_address, temporal_namespace
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


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    address = address or temporal_address()
    try:
        return await Client.connect(address, namespace=namespace or temporal_namespace(),
                                    data_converter=pydantic_data_converter, runtime=quiet_runtime(),
                                    interceptors=interceptors())
    except RuntimeError as error:
        reason = "connection refused" if "refused" in str(error).lower() else str(error).splitlines()[0][:120]
        raise FabricUnreachable(
            f"cannot reach the fabric's Temporal server at {address} ({reason}); "
            "start one with `fabric up` or set FABRIC_TEMPORAL_ADDRESS") from None


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
