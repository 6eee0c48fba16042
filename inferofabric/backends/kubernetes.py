"""The on-prem Kubernetes back end: GPU capacity from nodes and pods, one batch/v1 Job per attempt.

It runs inside the pool's agent (see `registry.AGENT_BACKENDS`), next to the cluster, with the
agent's service account or a kubeconfig. Everything goes through the official `kubernetes` client
with a private `ApiClient` per back-end instance: the process-wide default configuration is never
touched, so one process can drive several clusters. Every call carries a timeout, so a dead API
server turns into `BackendUnavailable` within seconds instead of wedging an activity.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import Field

from inferofabric.backends.base import (
    LOST_EVICTED,
    LOST_GONE,
    LOST_NODE,
    Backend,
    BackendConfigError,
    BackendError,
    BackendThrottled,
    BackendUnavailable,
    JobRejected,
    JobRequest,
    JobState,
    JobStatus,
    PoolProbe,
)
from inferofabric.backends.kubernetes_service import (
    PORT_ANNOTATION,
    build_replica_service,
    replica_address,
    replica_port,
)
from inferofabric.models.common import Health, StrictModel
from inferofabric.models.pool import PoolSpec

GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "inferofabric"
JOB_ID_ANNOTATION = "inferofabric.io/job-id"
CONTAINER_NAME = "workload"
KNOWN_GPU_TYPES = ("A100", "H100", "H200", "L4", "L40S", "T4", "V100", "A10G")
TERMINATED_PHASES = ("Succeeded", "Failed")
IMAGE_PULL_ERRORS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
MAX_NAME = 63
_M = TypeVar("_M", k8s.V1Job, k8s.V1Secret, k8s.V1Service)
log = logging.getLogger(__name__)
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class KubernetesConfig(StrictModel):
    """The pool file's `kubernetes:` sub-document. Unknown keys are errors (a typo must not go unnoticed)."""

    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path ('~' expanded); default: $KUBECONFIG"
    )
    context: str | None = None
    in_cluster: bool = Field(
        default=False, description="use the pod's service account (the agent in the cluster)"
    )
    namespace: str = "default"
    gpu_label: str = "nvidia.com/gpu.product"
    gpu_label_map: dict[str, str] = Field(
        default_factory=dict, description="node label value -> fabric GPU type"
    )
    image_pull_secret: str | None = None
    api_server: str | None = Field(
        default=None, description="URL override without auth (tests, kubectl proxy)"
    )
    request_timeout: float = Field(default=5.0, gt=0, description="seconds per API call")

    @property
    def kubeconfig_path(self) -> str | None:
        return str(Path(self.kubeconfig).expanduser()) if self.kubeconfig else None


# -- pure helpers (no API calls): naming, GPU types, quantities, the Job manifest ------------------


def k8s_name(job_id: str) -> str:
    """The Job name for a fabric job id: DNS-1123, at most 63 chars (the Job controller copies it into
    a pod label, whose values are capped at 63). Long ids keep a prefix plus a hash, so they stay unique
    and deterministic (a retried launch must find the same Job)."""
    name = re.sub(r"[^a-z0-9-]", "-", job_id.lower()).strip("-") or "job"
    if len(name) <= MAX_NAME and name == job_id:
        return name
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 11].rstrip('-')}-{digest}"


def secret_name(job_name: str) -> str:
    return f"{job_name}-env"


def pull_secret_name(job_name: str) -> str:
    return f"{job_name}-pull"


def gpu_type_for(label_value: str, label_map: dict[str, str]) -> str:
    """Fabric GPU type for a node label value: the map first, then the first known type among the value's
    tokens (`NVIDIA-A100-SXM4-80GB` -> `A100`), else the raw value, so an unknown card still shows up."""
    if label_value in label_map:
        return label_map[label_value]
    known = {t.upper(): t for t in KNOWN_GPU_TYPES}
    for token in re.split(r"[^A-Za-z0-9]+", label_value):
        if token.upper() in known:
            return known[token.upper()]
    return label_value


def label_values_for(
    gpu_types: Iterable[str], label_map: dict[str, str], seen: Iterable[str] = ()
) -> list[str]:
    """Node label values that satisfy the accepted GPU types: mapped values, values seen on nodes that the
    heuristic maps to the type, and the type itself when nothing maps to it (clusters labelled plainly)."""
    candidates = [*label_map, *seen]
    values: list[str] = []
    for gpu_type in gpu_types:
        matches = [v for v in candidates if gpu_type_for(v, label_map) == gpu_type]
        for value in matches or [gpu_type]:
            if value not in values:
                values.append(value)
    return values


def label_value(value: str) -> str:
    """A string made safe as a label value (<= 63 chars, alphanumeric at both ends)."""
    return _LABEL_VALUE_BAD.sub("-", value)[:MAX_NAME].strip("-_.")


def cpu_quantity(cpu: float) -> str:
    return str(int(cpu)) if float(cpu).is_integer() else f"{round(cpu * 1000)}m"


def gpu_quantity(amounts: dict[str, str] | None) -> int:
    """GPUs in a resource map; extended resources are whole numbers, but tolerate '2.0'."""
    raw = (amounts or {}).get(GPU_RESOURCE)
    return int(float(raw)) if raw else 0


def _labels(request: JobRequest) -> dict[str, str]:
    """Labels on the Job and its pods: the user's, then the fabric's (which win, since clean-up and
    accounting select on them)."""
    user = {**request.spec.labels, **request.labels}
    labels = {k: label_value(v) for k, v in user.items() if _LABEL_KEY.match(k)}
    labels.update(
        {
            "inferofabric.io/workload": label_value(request.workload_id),
            "inferofabric.io/team": label_value(request.spec.team),
            "inferofabric.io/project": label_value(request.spec.project),
            "inferofabric.io/attempt": str(request.attempt),
            MANAGED_BY: MANAGED_BY_VALUE,
        }
    )
    return labels


def _env(request: JobRequest, job_name: str) -> list[dict[str, Any]]:
    """Plain values inline; secret ones only as references to the per-job Secret, never their values."""
    secret = set(request.secret_env)
    env: list[dict[str, Any]] = []
    for name, value in request.env.items():
        if name in secret:
            env.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name(job_name), "key": name}}}
            )
        else:
            env.append({"name": name, "value": value})
    return env


def _resources(request: JobRequest) -> dict[str, Any]:
    resources = request.spec.resources
    out: dict[str, Any] = {"requests": {"cpu": cpu_quantity(resources.cpu), "memory": resources.memory}}
    per_pod = request.gpus // request.spec.replicas  # a gang's reservation covers every replica
    if per_pod > 0:
        out["limits"] = {GPU_RESOURCE: str(per_pod)}
    return out


def _affinity(request: JobRequest, config: KubernetesConfig, seen: Iterable[str]) -> dict[str, Any] | None:
    """Require a node whose GPU label is one of the accepted types (none for CPU-only jobs)."""
    types = list(request.spec.gpu_types)
    if request.gpu_type and request.gpu_type not in types:
        types.append(request.gpu_type)
    if request.gpus <= 0 or not types:
        return None
    values = label_values_for(types, config.gpu_label_map, seen)
    expression = {"key": config.gpu_label, "operator": "In", "values": values}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }


def _pull_secrets(request: JobRequest, config: KubernetesConfig, job_name: str) -> list[dict[str, str]]:
    names = [request.spec.image_pull_secret or config.image_pull_secret]
    if request.image_pull_credentials:
        names.append(pull_secret_name(job_name))
    return [{"name": n} for n in names if n]


def _pod_spec(
    request: JobRequest, config: KubernetesConfig, job_name: str, seen: Iterable[str]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": request.spec.image,
        "resources": _resources(request),
    }
    if request.spec.command:
        container["command"] = list(request.spec.command)
    if request.spec.args:
        container["args"] = list(request.spec.args)
    if request.env:
        container["env"] = _env(request, job_name)
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    affinity = _affinity(request, config, seen)
    if affinity:
        pod["affinity"] = affinity
        # GPU nodes are commonly tainted so that only GPU work lands there.
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    pull = _pull_secrets(request, config, job_name)
    if pull:
        pod["imagePullSecrets"] = pull
    return pod


def build_job_manifest(
    request: JobRequest, config: KubernetesConfig, seen_label_values: Iterable[str] = ()
) -> dict[str, Any]:
    """The batch/v1 Job for one attempt, as a plain dict (pure, so it can be schema-validated offline).

    `seen_label_values` are GPU label values observed on nodes; they let the affinity match cards the
    map does not list. No secret value is ever part of the result.
    """
    job_name = k8s_name(request.job_id)
    labels = _labels(request)
    annotations = {**request.spec.annotations, JOB_ID_ANNOTATION: request.job_id}
    port = replica_port(request.env, request.spec.labels)
    if port is not None:  # an endpoint's replica: its Service's port (kubernetes_service.py)
        annotations[PORT_ANNOTATION] = str(port)
    spec: dict[str, Any] = {
        "backoffLimit": request.spec.max_retries,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(request.spec.annotations)},
            "spec": _pod_spec(request, config, job_name, seen_label_values),
        },
    }
    if request.spec.max_runtime_seconds:
        spec["activeDeadlineSeconds"] = request.spec.max_runtime_seconds
    replicas = request.spec.replicas
    if replicas > 1:
        # A gang: one Indexed Job whose pods all run at once (each gets JOB_COMPLETION_INDEX); it is
        # complete when every replica succeeded. The fabric reserved all their GPUs on this pool.
        spec.update({"completionMode": "Indexed", "completions": replicas, "parallelism": replicas})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def build_env_secret(request: JobRequest, config: KubernetesConfig) -> dict[str, Any] | None:
    """The Secret holding the values of `request.secret_env`, or None when the job has none."""
    values = {name: request.env[name] for name in request.secret_env if name in request.env}
    if not values:
        return None
    return _secret(
        secret_name(k8s_name(request.job_id)),
        request,
        config,
        "Opaque",
        {k: v.encode() for k, v in values.items()},
    )


def build_pull_secret(request: JobRequest, config: KubernetesConfig) -> dict[str, Any] | None:
    """A dockerconfigjson Secret from resolved registry credentials (`registry`/`server`, `username`,
    `password`), for images whose registry the cluster cannot pull from on its own."""
    creds = request.image_pull_credentials
    if not creds:
        return None
    registry = creds.get("registry") or creds.get("server") or request.spec.image.split("/", 1)[0]
    auth = base64.b64encode(f"{creds.get('username', '')}:{creds.get('password', '')}".encode()).decode()
    config_json = {
        "auths": {
            registry: {
                "username": creds.get("username", ""),
                "password": creds.get("password", ""),
                "auth": auth,
            }
        }
    }
    return _secret(
        pull_secret_name(k8s_name(request.job_id)),
        request,
        config,
        "kubernetes.io/dockerconfigjson",
        {".dockerconfigjson": json.dumps(config_json).encode()},
    )


def _secret(
    name: str, request: JobRequest, config: KubernetesConfig, kind: str, data: dict[str, bytes]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": config.namespace, "labels": _labels(request)},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


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


def _newest_first(pods: Iterable[k8s.V1Pod]) -> list[k8s.V1Pod]:
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
    pods = _newest_first(pods)
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


# -- the back end ----------------------------------------------------------------------------------


class KubernetesBackend(Backend):
    """A pool that is one namespace of a Kubernetes cluster with NVIDIA GPU nodes."""

    kind: ClassVar[str] = "kubernetes"
    config_model = KubernetesConfig
    config: KubernetesConfig

    def __init__(self, pool: PoolSpec, home: Path) -> None:
        super().__init__(pool, home)
        self._secrets_gone: set[str] = set()  # finished Jobs whose Secrets were removed

    # -- clients ----------------------------------------------------------------------------------
    @cached_property
    def api_client(self) -> k8s.ApiClient:
        """One private client per instance, built on first use (constructing a back end reads no files)."""
        cfg = k8s.Configuration()
        try:
            if self.config.api_server:
                cfg.host = self.config.api_server.rstrip("/")
            elif self.config.in_cluster:
                from kubernetes.config import load_incluster_config

                load_incluster_config(client_configuration=cfg)
            else:
                from kubernetes.config import load_kube_config

                load_kube_config(
                    config_file=self.config.kubeconfig_path,
                    context=self.config.context,
                    client_configuration=cfg,
                    persist_config=False,
                )
        except Exception as error:  # ConfigException, missing file, bad YAML: all a pool-file problem
            raise BackendConfigError(
                f"pool {self.pool.name!r}: cannot load Kubernetes config: {error}"
            ) from error
        # Retry a refused/dropped connection once; never re-send after a read timeout or an HTTP status,
        # so a wedged server costs at most two timeouts.
        cfg.retries = urllib3.Retry(total=2, connect=2, read=1, status=0, redirect=0, backoff_factor=0)
        return k8s.ApiClient(configuration=cfg)

    @cached_property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    @cached_property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api_client)

    @property
    def ns(self) -> str:
        return self.config.namespace

    @property
    def timeout(self) -> float:
        return self.config.request_timeout

    @contextlib.contextmanager
    def _errors(self, action: str, rejected: tuple[int, ...] = ()) -> Iterator[None]:
        """Translate client errors: transport failures and 5xx/429 are transient; `rejected` statuses are
        the job's fault (JobRejected); 401/403 elsewhere mean the agent's credentials or RBAC are wrong."""
        try:
            yield
        except ApiException as error:
            raise self._translate(action, error, rejected) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise BackendUnavailable(f"{action}: Kubernetes API unreachable: {error}") from error

    def _translate(self, action: str, error: ApiException, rejected: tuple[int, ...]) -> BackendError:
        status = int(error.status or 0)
        text = f"{action}: HTTP {status} {_status_message(error)}"
        if status == 429:
            return BackendThrottled(text)
        if status == 0 or status >= 500:
            return BackendUnavailable(text)
        if status in rejected:
            return JobRejected(text)
        if status in (401, 403):
            return BackendConfigError(text)
        return JobRejected(text) if rejected else BackendUnavailable(text)

    # -- Backend interface ------------------------------------------------------------------------
    def probe(self) -> PoolProbe:
        with self._errors("probe"):
            nodes = self.core.list_node(_request_timeout=self.timeout).items
            pods = self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed", _request_timeout=self.timeout
            ).items
        return capacity_probe(nodes, pods, self.config)

    def launch(self, request: JobRequest) -> JobStatus:
        seen = self._seen_label_values(request)
        manifest = build_job_manifest(request, self.config, seen)
        for secret in (build_env_secret(request, self.config), build_pull_secret(request, self.config)):
            if secret is not None:
                self._put_secret(secret)
        with self._errors(f"create job {manifest['metadata']['name']}", rejected=(400, 403, 404, 422)):
            try:
                self.batch.create_namespaced_job(
                    self.ns,
                    _model(k8s.V1Job, manifest),
                    field_validation="Strict",
                    _request_timeout=self.timeout,
                )
            except ApiException as error:
                if error.status != 409:  # AlreadyExists: a retried launch; report the Job we started
                    raise
        port = manifest["metadata"]["annotations"].get(PORT_ANNOTATION)  # an endpoint replica's (build_job_manifest)
        if port is not None:
            self._create_service(build_replica_service(manifest["metadata"]["name"], self.ns,
                                                       manifest["metadata"]["labels"], int(port)))
        return self.status(request.job_id)

    def status(self, job_id: str) -> JobStatus:
        name = k8s_name(job_id)
        with self._errors(f"read job {name}"):
            try:
                job = self.batch.read_namespaced_job(name, self.ns, _request_timeout=self.timeout)
            except ApiException as error:
                if error.status == 404:
                    return JobStatus(job_id=job_id, state=JobState.LOST, message=f"job {name} not found")
                raise
            pods = self._job_pods(name)
        status = self._with_address(job_status_from(job_id, job, pods), job)
        if status.state.terminal:
            # No pod will start again: the job's Secrets (env values, registry credentials) go now, not
            # whenever someone deletes the finished Job.
            self._delete_secrets_quietly(name)
        return status

    def cancel(self, job_id: str) -> None:
        name = k8s_name(job_id)
        with self._errors(f"delete job {name}"):
            # Foreground: the Job disappears only after its pods, so "cancelled" means nothing still runs.
            options = k8s.V1DeleteOptions(propagation_policy="Foreground")
            self._delete_missing_ok(
                lambda: self.batch.delete_namespaced_job(
                    name, self.ns, body=options, _request_timeout=self.timeout
                )
            )
            self._delete_secrets(name)
            self._delete_missing_ok(
                lambda: self.core.delete_namespaced_service(name, self.ns, _request_timeout=self.timeout))

    def logs(self, job_id: str, tail: int = 200) -> str:
        name = k8s_name(job_id)
        with self._errors(f"logs of job {name}"):
            pods = _newest_first(self._job_pods(name))
            if not pods or not pods[0].metadata or not pods[0].metadata.name:
                return ""
            try:
                text = self.core.read_namespaced_pod_log(
                    pods[0].metadata.name,
                    self.ns,
                    container=CONTAINER_NAME,
                    tail_lines=tail,
                    _request_timeout=self.timeout,
                )
            except ApiException as error:
                if error.status in (400, 404):  # container not started yet, or pod just went away
                    return ""
                raise
        return str(text or "")

    def list_jobs(self) -> list[str]:
        with self._errors("list jobs"):
            jobs = self.batch.list_namespaced_job(
                self.ns, label_selector=f"{MANAGED_BY}={MANAGED_BY_VALUE}", _request_timeout=self.timeout
            ).items
        return [_job_id_of(job) for job in jobs if job.metadata and job.metadata.name]

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """Every fabric Job and its pods in two list calls (not two reads per job)."""
        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
        with self._errors("list jobs and pods"):
            jobs = self.batch.list_namespaced_job(self.ns, label_selector=selector,
                                                  _request_timeout=self.timeout).items
            pods = self.core.list_namespaced_pod(self.ns, label_selector=selector,
                                                 _request_timeout=self.timeout).items
        by_job: dict[str, list[k8s.V1Pod]] = {}
        for pod in pods:
            name = ((pod.metadata.labels or {}) if pod.metadata else {}).get("job-name")
            if name:
                by_job.setdefault(name, []).append(pod)
        found: dict[str, JobStatus] = {}
        for job in jobs:
            if not (job.metadata and job.metadata.name):
                continue
            job_id = _job_id_of(job)
            status = self._with_address(job_status_from(job_id, job, by_job.get(job.metadata.name, [])), job)
            found[job_id] = status
            if status.state.terminal and job.metadata.name not in self._secrets_gone:
                self._delete_secrets_quietly(job.metadata.name)
                self._secrets_gone.add(job.metadata.name)
        for job_id in known:
            if job_id not in found:
                found[job_id] = JobStatus(job_id=job_id, state=JobState.LOST, details={"class": LOST_GONE},
                                          message=f"job {k8s_name(job_id)} not found")
        return found

    # -- helpers ----------------------------------------------------------------------------------
    def _with_address(self, status: JobStatus, job: k8s.V1Job) -> JobStatus:
        """An endpoint replica that runs is reachable through its Service."""
        if status.state == JobState.RUNNING and job.metadata and job.metadata.name:
            address = replica_address(job.metadata.name, self.ns, job.metadata.annotations)
            if address:
                status.details["address"] = address
        return status

    def _create_service(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        with self._errors(f"create service {name}", rejected=(400, 403, 404, 422)):
            try:
                self.core.create_namespaced_service(self.ns, _model(k8s.V1Service, manifest),
                                                    _request_timeout=self.timeout)
            except ApiException as error:
                if error.status != 409:  # a retried launch: the Service is there
                    raise

    def _delete_secrets(self, job_name: str) -> None:
        for secret in (secret_name(job_name), pull_secret_name(job_name)):
            self._delete_missing_ok(
                lambda s=secret: self.core.delete_namespaced_secret(s, self.ns, _request_timeout=self.timeout)
            )

    def _delete_secrets_quietly(self, job_name: str) -> None:
        """Best effort from `status`: a failed clean-up must not hide the job's state (the next look
        retries it)."""
        try:
            with self._errors(f"delete secrets of job {job_name}"):
                self._delete_secrets(job_name)
        except BackendError as error:
            log.warning(
                "kubernetes pool %s: could not delete secrets of %s: %s", self.pool.name, job_name, error
            )

    def _job_pods(self, name: str) -> list[k8s.V1Pod]:
        return list(
            self.core.list_namespaced_pod(
                self.ns, label_selector=f"job-name={name}", _request_timeout=self.timeout
            ).items
        )

    def _seen_label_values(self, request: JobRequest) -> list[str]:
        """GPU label values on the cluster's nodes, only when the map cannot translate every accepted type
        (then a node labelled `NVIDIA-A100-SXM4-80GB` still satisfies `A100`)."""
        mapped = set(self.config.gpu_label_map.values())
        if request.gpus <= 0 or all(t in mapped for t in request.spec.gpu_types):
            return []
        with self._errors("list nodes"):
            nodes = self.core.list_node(_request_timeout=self.timeout).items
        labels = (n.metadata.labels or {} for n in nodes if n.metadata)
        return sorted({v for ls in labels if (v := ls.get(self.config.gpu_label))})

    def _put_secret(self, manifest: dict[str, Any]) -> None:
        """Create the Secret, or replace it when a retried launch finds the one it created before."""
        name = manifest["metadata"]["name"]
        body = _model(k8s.V1Secret, manifest)
        with self._errors(f"create secret {name}", rejected=(400, 403, 404, 422)):
            try:
                self.core.create_namespaced_secret(self.ns, body, _request_timeout=self.timeout)
            except ApiException as error:
                if error.status != 409:
                    raise
                self.core.replace_namespaced_secret(name, self.ns, body, _request_timeout=self.timeout)

    @staticmethod
    def _delete_missing_ok(call: Any) -> None:
        try:
            call()
        except ApiException as error:
            if error.status != 404:
                raise


def _model(cls: type[_M], data: dict[str, Any]) -> _M:
    """A client model from a manifest dict (the client serialises models, not dicts)."""
    model = cls.from_dict(data)
    if model is None:
        raise JobRejected(f"cannot build a {cls.__name__} from the manifest")
    return model


def _job_id_of(job: k8s.V1Job) -> str:
    """The fabric job id: the annotation (long ids are hashed into the name), else the Job name."""
    meta = job.metadata
    assert meta is not None and meta.name is not None
    return (meta.annotations or {}).get(JOB_ID_ANNOTATION, meta.name)


def _status_message(error: ApiException) -> str:
    """The `message` of the API server's Status body, falling back to the HTTP reason."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)
