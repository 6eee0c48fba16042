"""Endpoints in the SDK: deploy once, then read, scale, update and delete by name.

    fabric = await FabricClient.connect()
    endpoint = await fabric.deploy_endpoint(EndpointSpec.model_validate(yaml.safe_load(text)))
    print(endpoint.url, (await endpoint.status()).state)

An endpoint is a workflow (`endpoint-<name>`); its status is a query, its changes are updates, so
each is checked by the fabric's auth gate like a workload's cancel.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.errors import AlreadyExists, FabricError, FabricNotFound, FailureType, InvalidInput
from inferofabric.models.endpoint import EndpointSpec
from inferofabric.models.endpoint_status import EndpointRequest, EndpointState, EndpointStatus, ScaleRequest
from inferofabric.sdk.failures import QUERY_TIMEOUT, failure_error, raise_if_denied, root_message
from inferofabric.sdk.reads import FabricReads
from inferofabric.sdk.workloads import WorkloadHandle
from inferofabric.settings import endpoint_url
from inferofabric.workflows.endpoint import RUNNING_ENDPOINTS, endpoint_id
from inferofabric.workflows.workload_visibility import SA_TEAM


class EndpointHandle:
    def __init__(self, fabric: FabricReads, name: str) -> None:
        self.fabric = fabric
        self.name = name
        self.url = endpoint_url(name)
        self._handle = fabric.temporal.get_workflow_handle(endpoint_id(name), result_type=EndpointStatus)

    async def status(self) -> EndpointStatus:
        try:
            status: EndpointStatus = await self.fabric.answer_or_no_worker(
                self._handle.query("status", result_type=EndpointStatus, rpc_timeout=QUERY_TIMEOUT),
                f"endpoint status {self.name}")
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise FabricNotFound(f"no endpoint named {self.name!r}") from None
            raise FabricError(f"endpoint {self.name!r}: {error.message}") from None
        except WorkflowQueryFailedError:
            raise await self._ended() from None
        status.url = self.url
        return status

    async def _ended(self) -> FabricError:
        """Why a workflow that cannot answer queries ended (refused by the auth gate, an invalid spec)."""
        try:
            await self._handle.result()
        except WorkflowFailureError as error:
            try:
                raise_if_denied(error)
            except FabricError as denied:
                return denied
            return FabricError(f"endpoint {self.name!r} failed: {root_message(error)}")
        return FabricError(f"endpoint {self.name!r} did not answer")

    async def _update(self, name: str, arg: Any = None) -> EndpointStatus:
        try:
            args = [] if arg is None else [arg]
            status: EndpointStatus = await self._handle.execute_update(name, args=args, result_type=EndpointStatus)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise FabricNotFound(f"no endpoint named {self.name!r}") from None
            raise FabricError(f"endpoint {self.name!r}: {error.message}") from None
        except WorkflowUpdateFailedError as error:
            raise_if_denied(error)
            refusal = failure_error(error)  # an update refused as invalid stays InvalidInput; others FabricError
            refused_as = InvalidInput if refusal.failure_type == FailureType.INVALID_INPUT else FabricError
            raise refused_as(f"endpoint {self.name!r}: {refusal}") from None
        status.url = self.url
        return status

    async def scale(self, min: int | None = None, max: int | None = None) -> EndpointStatus:
        if min is None and max is None:
            raise InvalidInput("say --min, --max or both")
        return await self._update("scale", ScaleRequest(min=min, max=max))

    async def update(self, spec: EndpointSpec | dict[str, Any]) -> EndpointStatus:
        """Roll out a new spec: new replicas first (at most `update.max_surge` extra), an old one goes
        only once a new one answers its readiness probe."""
        new = spec if isinstance(spec, EndpointSpec) else EndpointSpec.model_validate(spec)
        return await self._update("update", await with_policy_defaults(self.fabric, new))

    async def delete(self) -> EndpointStatus:
        """Stop every replica and end the endpoint (returns once the replicas are stopped)."""
        return await self._update("delete")

    def replica(self, replica_id: str) -> WorkloadHandle:
        return WorkloadHandle(self.fabric, replica_id)


async def with_policy_defaults(fabric: FabricReads, endpoint: EndpointSpec) -> EndpointSpec:
    """The operator-wide defaults of the active policy (`endpoints.scale_to_zero_after`) filled in
    where the spec leaves them unset: they apply to endpoints deployed or updated after they are set."""
    if endpoint.scale_to_zero_after is not None:
        return endpoint
    default = ((await fabric.policy()).get("policy") or {}).get("endpoints", {}).get("scale_to_zero_after")
    return endpoint.model_copy(update={"scale_to_zero_after": default}) if default else endpoint


async def deploy(fabric: FabricReads, spec: EndpointSpec | dict[str, Any]) -> EndpointHandle:
    """Start the endpoint's workflow. Replicas are checked against the registered pools first, as a
    submit is: a GPU type nobody has is refused here, not discovered by a replica that never places."""
    endpoint = spec if isinstance(spec, EndpointSpec) else EndpointSpec.model_validate(spec)
    endpoint = await with_policy_defaults(fabric, endpoint)
    problems = await fabric.problems_of(endpoint.replica_workload(f"{endpoint.name}-check", 1))
    if problems:
        raise InvalidInput(f"endpoint {endpoint.name}: {'; '.join(problems)}")
    try:
        await fabric.temporal.start_workflow(
            "EndpointWorkflow", EndpointRequest(spec=endpoint).model_dump(mode="json"), id=endpoint_id(endpoint.name),
            task_queue=fabric.task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            # Filterable in the Web UI beside the team's workloads (FabricTeam = 'nlp').
            search_attributes=TypedSearchAttributes([SearchAttributePair(SA_TEAM, endpoint.team)]),
            static_summary=f"{endpoint.team}: endpoint {endpoint.name} ({endpoint.replicas.min}.."
                           f"{endpoint.replicas.max} replicas, {endpoint.data_classification.value})")
    except RPCError as error:
        if error.status == RPCStatusCode.ALREADY_EXISTS:
            raise AlreadyExists(f"an endpoint named {endpoint.name!r} is already deployed (`fabric endpoint update` "
                                "changes it)") from None
        raise fabric._refused(error, "endpoint deploy") from None
    except WorkflowAlreadyStartedError:
        raise AlreadyExists(f"an endpoint named {endpoint.name!r} is already deployed (`fabric endpoint "
                            "update` changes it)") from None
    return EndpointHandle(fabric, endpoint.name)


async def list_endpoints(fabric: FabricReads) -> list[EndpointStatus]:
    """Deployed endpoints (running workflows), each with its current status."""
    items = []
    async for execution in fabric.temporal.list_workflows(RUNNING_ENDPOINTS, limit=500):
        name = execution.id.removeprefix("endpoint-")
        try:
            items.append(await EndpointHandle(fabric, name).status())
        except FabricError:
            if execution.status == WorkflowExecutionStatus.RUNNING:
                items.append(EndpointStatus(name=name, team="?", state=EndpointState.FAILED, desired=0, ready=0,
                                            reason="its workflow did not answer"))
    return sorted(items, key=lambda s: s.name)
