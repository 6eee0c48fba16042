"""The on-prem Kubernetes back end: GPU capacity from nodes and pods, one batch/v1 Job per attempt.

It runs inside the pool's agent (see `registry.AGENT_BACKENDS`), next to the cluster, with the
agent's service account or a kubeconfig. Everything goes through the official `kubernetes` client
with a private `ApiClient` per back-end instance: the process-wide default configuration is never
touched, so one process can drive several clusters. Every call carries a timeout, so a dead API
server turns into `BackendUnavailable` within seconds instead of wedging an activity.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from inferofabric.backends.base import (
    LOST_GONE,
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
    checked_job_id,
)
from inferofabric.backends.kubernetes_manifests import (
    CONTAINER_NAME,
    JOB_ID_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    KubernetesConfig,
    build_env_secret,
    build_job_manifest,
    build_pull_secret,
    k8s_name,
    pull_secret_name,
    secret_name,
)
from inferofabric.backends.kubernetes_service import (
    PORT_ANNOTATION,
    build_replica_service,
    replica_address,
)
from inferofabric.backends.kubernetes_status import (
    capacity_probe,
    job_status_from,
    newest_first,
)
from inferofabric.models.pool import PoolSpec

_M = TypeVar("_M", k8s.V1Job, k8s.V1Secret, k8s.V1Service)
log = logging.getLogger(__name__)


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
        name = k8s_name(checked_job_id(job_id))
        with self._errors(f"logs of job {name}"):
            pods = newest_first(self._job_pods(name))
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
