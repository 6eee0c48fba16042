"""Activities of endpoints: a replica's report to its endpoint (signed by the worker's identity).

A replica is a workload started by its endpoint's workflow; when its state or address changes it
tells the endpoint through this local activity, so the `replica` signal carries the worker's own
(system) token: the auth gate takes internal signals from nobody else, and a user cannot point the
gateway at an address of their choosing.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.models.messages import ReplicaReportInput


@activity.defn(name="report_replica")
async def report_replica(request: ReplicaReportInput) -> None:
    try:
        await activity.client().get_workflow_handle(request.endpoint_id).signal("replica", request.report)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:  # the endpoint is gone: nobody to tell
            raise
