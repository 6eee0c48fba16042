"""What a Kubernetes cluster says, read into the fabric's terms (pure: no API calls).

A Job and its pods become a JobStatus: pending (with the reason a pod is stuck: image pull errors,
unschedulable), running, succeeded, failed with the exit code, or `lost` with its class (node lost,
evicted, preempted) so the workload moves instead of failing. Nodes and every pod's requests become
the pool's true free GPUs (allocatable on Ready, schedulable nodes minus what all pods request).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kubernetes import client as k8s

from inferofabric.backends.base import (
    LOST_EVICTED,
    LOST_NODE,
    JobState,
    JobStatus,
    PoolProbe,
)
from inferofabric.backends.kubernetes_manifests import (
    IMAGE_PULL_ERRORS,
    TERMINATED_PHASES,
    KubernetesConfig,
    gpu_quantity,
    gpu_type_for,
    k8s_name,
)
from inferofabric.models.common import Health

# -- status interpretation (pure) ------------------------------------------------------------------


def _condition(conditions: Iterable[Any] | None, kind: str) -> Any | None:
    return next((c for c in conditions or [] if c.type == kind and c.status == "True"), None)


def _pod_problem(pod: k8s.V1Pod) -> tuple[str, str] | None:
    """Why a pod is stuck, as (reason, message): image pull errors and unschedulable pods."""
    status = pod.status or k8s.V1PodStatus()
    for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason in (*IMAGE_PULL_ERRORS, "CreateContainerConfigError"):
            return waiting.reason, waiting.message or ""
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return "Unschedulable", cond.message or ""
    return None


# Pod status reasons (and DisruptionTarget condition reasons) that mean the cluster took the pod away.
_LOST_POD_REASONS = {"Evicted": LOST_EVICTED, "Preempting": LOST_EVICTED, "NodeLost": LOST_NODE,
                     "NodeShutdown": LOST_NODE, "Shutdown": LOST_NODE, "Terminated": LOST_NODE,
                     "PreemptionByScheduler": LOST_EVICTED, "EvictionByEvictionAPI": LOST_EVICTED,
                     "DeletionByTaintManager": LOST_NODE, "DeletionByPodGC": LOST_NODE,
                     "TerminationByKubelet": LOST_NODE}


def pod_lost_class(pod: k8s.V1Pod) -> str | None:
    """Why the cluster, not the workload, ended this pod (evicted, preempted, its node lost); None
    when the pod ended on its own."""
    status = pod.status or k8s.V1PodStatus()
    if status.reason in _LOST_POD_REASONS:
        return _LOST_POD_REASONS[status.reason]
    disruption = _condition(status.conditions, "DisruptionTarget")
    if disruption is not None:
        return _LOST_POD_REASONS.get(disruption.reason or "", LOST_EVICTED)
    return None


def _exit_code(pods: list[k8s.V1Pod]) -> int | None:
    for pod in pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            if cs.state and cs.state.terminated is not None:
                return int(cs.state.terminated.exit_code)
    return None


def newest_first(pods: Iterable[k8s.V1Pod]) -> list[k8s.V1Pod]:
    """Pods by creation time, newest first (a Job with retries has one pod per try)."""

    def key(pod: k8s.V1Pod) -> tuple[str, str]:
        meta = pod.metadata
        created: datetime | None = meta.creation_timestamp if meta else None
        return (created.isoformat() if created else "", (meta.name or "") if meta else "")

    return sorted(pods, key=key, reverse=True)


def job_status_from(job_id: str, job: k8s.V1Job, pods: list[k8s.V1Pod]) -> JobStatus:
    """Map a Job and its pods to a fabric status. Conditions decide terminal states; otherwise a running
    pod means running (an *active* pod may still be pending: the Job counts pending pods as active)."""
    st = job.status or k8s.V1JobStatus()
    pods = newest_first(pods)
    details: dict[str, Any] = {
        "job_name": job.metadata.name if job.metadata else k8s_name(job_id),
        "active": st.active or 0,
        "succeeded": st.succeeded or 0,
        "failed": st.failed or 0,
        "pods": [
            {
                "name": p.metadata.name,
                "phase": p.status.phase if p.status else None,
                "node": p.spec.node_name if p.spec else None,
            }
            for p in pods
            if p.metadata
        ],
    }
    base = JobStatus(
        job_id=job_id,
        state=JobState.PENDING,
        started_at=st.start_time,
        details=details,
        exit_code=_exit_code(pods),
    )
    complete, failed = _condition(st.conditions, "Complete"), _condition(st.conditions, "Failed")
    if complete is not None:
        finished = st.completion_time or complete.last_transition_time
        return base.model_copy(update={"state": JobState.SUCCEEDED, "finished_at": finished})
    if failed is not None:
        message = ": ".join(x for x in (failed.reason, failed.message) if x)
        update = {"state": JobState.FAILED, "message": message, "finished_at": failed.last_transition_time}
        lost = pod_lost_class(pods[0]) if pods else None
        if lost:
            pod = pods[0]
            why = (pod.status.reason if pod.status else None) or "DisruptionTarget"
            update.update(state=JobState.LOST, message=f"pod {why} ({lost}): {message}")
            return base.model_copy(update={**update, "details": {**details, "reason": failed.reason, "class": lost}})
        return base.model_copy(update={**update, "details": {**details, "reason": failed.reason}})
    problem = next((pr for pr in map(_pod_problem, pods) if pr), None)
    if problem is not None:
        message = f"{problem[0]}: {problem[1]}".rstrip(": ")
        return base.model_copy(update={"message": message, "details": {**details, "reason": problem[0]}})
    if any(p.status and p.status.phase == "Running" for p in pods) or ((st.active or 0) > 0 and not pods):
        return base.model_copy(update={"state": JobState.RUNNING})
    return base


# -- capacity (pure) -------------------------------------------------------------------------------


def pod_gpus(pod: k8s.V1Pod) -> int:
    """GPUs a pod holds: its containers' requests (limits when no request), or its largest init
    container if that is larger, as the scheduler computes it."""

    def one(container: k8s.V1Container) -> int:
        res = container.resources
        if res is None:
            return 0
        return gpu_quantity(res.requests) if gpu_quantity(res.requests) else gpu_quantity(res.limits)

    spec = pod.spec
    if spec is None:
        return 0
    main = sum(one(c) for c in spec.containers or [])
    init = max((one(c) for c in spec.init_containers or []), default=0)
    return max(main, init)


def node_unusable_reason(node: k8s.V1Node) -> str | None:
    """Why a GPU node takes no new work: cordoned, or its Ready condition is not True."""
    if node.spec is not None and node.spec.unschedulable:
        return "cordoned"
    ready = next(
        (c for c in (node.status.conditions if node.status else None) or [] if c.type == "Ready"), None
    )
    if ready is None or ready.status != "True":
        return "NotReady"
    return None


def capacity_probe(nodes: list[k8s.V1Node], pods: list[k8s.V1Pod], config: KubernetesConfig) -> PoolProbe:
    """Health and GPU capacity from one node list and one pod list."""
    used: dict[str, int] = {}
    for pod in pods:
        phase = pod.status.phase if pod.status else None
        if pod.spec is not None and pod.spec.node_name and phase not in TERMINATED_PHASES:
            used[pod.spec.node_name] = used.get(pod.spec.node_name, 0) + pod_gpus(pod)
    total: dict[str, int] = {}
    free: dict[str, int] = {}
    unusable: dict[str, str] = {}
    usable = 0
    for node in nodes:
        allocatable = gpu_quantity(node.status.allocatable if node.status else None)
        name = node.metadata.name if node.metadata and node.metadata.name else "?"
        if allocatable <= 0:
            continue
        reason = node_unusable_reason(node)
        if reason:
            unusable[name] = reason
            continue
        usable += 1
        labels = (node.metadata.labels if node.metadata else None) or {}
        gpu_type = gpu_type_for(labels.get(config.gpu_label, "unknown"), config.gpu_label_map)
        total[gpu_type] = total.get(gpu_type, 0) + allocatable
        free[gpu_type] = free.get(gpu_type, 0) + max(0, allocatable - used.get(name, 0))
    health, reason_text = _health(usable, unusable)
    details = {
        "free": free,
        "nodes": usable,
        "gpu_nodes": usable + len(unusable),
        "unusable": unusable,
        "namespace": config.namespace,
    }
    return PoolProbe(health=health, reason=reason_text, gpus=total, details=details)


def _health(usable: int, unusable: dict[str, str]) -> tuple[Health, str]:
    if usable == 0:
        why = f"{len(unusable)} GPU node(s), none usable" if unusable else "no GPU nodes"
        return Health.UNHEALTHY, why
    if unusable:
        listed = ", ".join(f"{n} ({r})" for n, r in sorted(unusable.items()))
        return Health.DEGRADED, f"GPU nodes not usable: {listed}"
    return Health.HEALTHY, ""
