"""An endpoint replica on Kubernetes is reachable: a Service per replica (pure manifest builders).

A replica runs as the fabric's Job for its attempt (it serves until it is stopped); beside it the
back end creates a ClusterIP Service named like the Job, selecting the Job's pods (`job-name`), on
the endpoint's port. The replica's address, `<job>.<namespace>.svc:<port>`, is what the job's
status gives the gateway (an in-cluster gateway, or a Gateway API route, reaches it). The Service
goes with the Job when the replica is stopped.
"""

from __future__ import annotations

from typing import Any

from inferofabric.models.endpoint import ENDPOINT_LABEL

PORT_ANNOTATION = "inferofabric.io/port"


def replica_port(env: dict[str, str], labels: dict[str, str]) -> int | None:
    """The port an endpoint replica listens on ($PORT), or None for any other workload."""
    if ENDPOINT_LABEL not in labels:
        return None
    try:
        return int(env.get("PORT", ""))
    except ValueError:
        return None


def build_replica_service(job_name: str, namespace: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": job_name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "type": "ClusterIP",
            "selector": {"job-name": job_name},
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def replica_address(job_name: str, namespace: str, annotations: dict[str, str] | None) -> str | None:
    port = (annotations or {}).get(PORT_ANNOTATION)
    return f"{job_name}.{namespace}.svc:{port}" if port else None
