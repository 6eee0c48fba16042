"""The Kubernetes back end's configuration and the manifests it builds (pure: no API calls).

A pool's `kubernetes:` section (KubernetesConfig), the names the fabric gives a job's objects (a Job
per attempt, its env and pull Secrets), and the Job and Secret manifests: labels, env (secret values
by reference to the attempt's own Secret), GPU resources, GPU-type node affinity, pull secrets.
kubernetes.py creates them; tests check them against the Kubernetes schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from inferofabric.backends.base import JobRequest
from inferofabric.backends.kubernetes_service import PORT_ANNOTATION, replica_port
from inferofabric.models.common import StrictModel

GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "inferofabric"
JOB_ID_ANNOTATION = "inferofabric.io/job-id"
CONTAINER_NAME = "workload"
KNOWN_GPU_TYPES = ("A100", "H100", "H200", "L4", "L40S", "T4", "V100", "A10G")
TERMINATED_PHASES = ("Succeeded", "Failed")
IMAGE_PULL_ERRORS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
MAX_NAME = 63
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
