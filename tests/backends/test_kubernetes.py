"""The Kubernetes back end against a wire-level fake API server, through the real `kubernetes` client."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferofabric.backends.base import (
    BackendConfigError,
    BackendUnavailable,
    JobRejected,
    JobRequest,
    JobState,
    job_id_for,
)
from inferofabric.backends.kubernetes import KubernetesBackend
from inferofabric.backends.kubernetes_manifests import KubernetesConfig, build_job_manifest, gpu_type_for, k8s_name
from inferofabric.backends.registry import backend_for
from inferofabric.models.common import Health, Location
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec

try:
    from tests.fakes.k8s_api import FakeKubeApi, decode_secret
except ModuleNotFoundError:  # pytest put tests/ itself on sys.path (no tests/__init__.py)
    from fakes.k8s_api import FakeKubeApi, decode_secret  # type: ignore[no-redef]

NS = "gpu-jobs"
SECRET_VALUE = "s3cr3t-hf-token-value"


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    """A fresh fake API server on 127.0.0.1 (random port), stopped after the test."""
    api = FakeKubeApi().start()
    yield api
    api.stop()


def make_pool(url: str, **extra: Any) -> PoolSpec:
    kubernetes = {
        "api_server": url,
        "namespace": NS,
        "request_timeout": 2,
        "gpu_label_map": {"NVIDIA-H100-80GB-HBM3": "H100"},
        **extra,
    }
    return PoolSpec(
        name="dc1-gpu",
        location=Location.ON_PREM,
        backend="kubernetes",
        region="dc1",
        gpus={"A100": 16},
        kubernetes=kubernetes,
    )


@pytest.fixture
def backend(kube_api: FakeKubeApi, tmp_path: Path) -> KubernetesBackend:
    """The back end, built through the registry from a pool file pointing at the fake."""
    made = backend_for(make_pool(kube_api.url), tmp_path)
    assert isinstance(made, KubernetesBackend)
    return made


def make_request(attempt: int = 1, gpus: int = 2, types: list[str] | None = None, **spec: Any) -> JobRequest:
    workload = WorkloadSpec.model_validate(
        {
            "name": "train-llm",
            "team": "research",
            "project": "llm",
            "image": "ghcr.io/acme/train:1.0",
            "command": ["python", "train.py"],
            "args": ["--epochs", "3"],
            "resources": {"gpu": {"type": types or ["A100"], "count": gpus}, "cpu": 8, "memory": "64Gi"},
            "max_retries": 2,
            "max_runtime_seconds": 3600,
            **spec,
        }
    )
    return JobRequest(
        job_id=job_id_for("train-llm", attempt),
        workload_id="train-llm",
        attempt=attempt,
        spec=workload,
        gpu_type=(types or ["A100"])[0],
        gpus=gpus,
        env={"EPOCHS": "3", "HF_TOKEN": SECRET_VALUE},
        secret_env=["HF_TOKEN"],
    )


# -- capacity -----------------------------------------------------------------------------------


def test_probe_counts_allocatable_minus_requests(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    kube_api.add_node("a2", gpus=8)
    kube_api.add_node("h1", gpus=4, product="NVIDIA-H100-80GB-HBM3")
    kube_api.add_node("cpu1", gpus=0, product="")
    kube_api.add_pod("p1", "a1", 3)
    kube_api.add_pod("p2", "a2", 1, use_limits_only=True)  # limits count when there are no requests
    kube_api.add_pod("done", "a2", 4, phase="Succeeded")  # finished pods hold nothing
    kube_api.add_pod("dead", "h1", 4, phase="Failed")
    probe = backend.probe()
    assert probe.health == Health.HEALTHY
    assert probe.gpus == {"A100": 16, "H100": 4}
    assert probe.details["free"] == {"A100": 12, "H100": 4}
    assert probe.details["nodes"] == 3


def test_probe_excludes_cordoned_and_not_ready(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    kube_api.add_node("a2", gpus=8, unschedulable=True)
    kube_api.add_node("a3", gpus=8, ready=False)
    probe = backend.probe()
    assert probe.health == Health.DEGRADED
    assert probe.gpus == {"A100": 8}
    assert probe.details["unusable"] == {"a2": "cordoned", "a3": "NotReady"}
    assert "a2 (cordoned)" in probe.reason


def test_probe_unhealthy_without_usable_gpu_nodes(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    assert backend.probe().health == Health.UNHEALTHY  # no nodes at all
    kube_api.add_node("a1", gpus=8, ready=False)
    probe = backend.probe()
    assert probe.health == Health.UNHEALTHY
    assert probe.gpus == {}


def test_probe_lists_pods_once(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    for i in range(5):
        kube_api.add_node(f"n{i}")
    backend.probe()
    assert [path.split("?")[0] for _, path, _ in kube_api.requests] == ["/api/v1/nodes", "/api/v1/pods"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("Tesla-T4", "T4"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-A10G", "A10G"),
        ("Tesla-V100-SXM2-16GB", "V100"),
        ("NVIDIA-GeForce-RTX-4090", "NVIDIA-GeForce-RTX-4090"),
        ("custom-card", "MyCard"),
    ],
)
def test_gpu_label_mapping(value: str, expected: str) -> None:
    assert gpu_type_for(value, {"custom-card": "MyCard"}) == expected


def test_custom_label_and_map(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    kube_api.add_node("x", gpus=2, labels={"acme.io/gpu": "big-one"})
    pool = make_pool(kube_api.url, gpu_label="acme.io/gpu", gpu_label_map={"big-one": "H200"})
    assert KubernetesBackend(pool, tmp_path).probe().gpus == {"H200": 2}


# -- launch -------------------------------------------------------------------------------------


def test_launch_creates_job(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    status = backend.launch(make_request())
    assert status.state == JobState.RUNNING
    job = kube_api.job("train-llm-a1", NS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/acme/train:1.0"
    assert container["command"] == ["python", "train.py"] and container["args"] == ["--epochs", "3"]
    assert container["resources"] == {
        "limits": {"nvidia.com/gpu": "2"},
        "requests": {"cpu": "8", "memory": "64Gi"},
    }
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 3600
    assert "ttlSecondsAfterFinished" not in spec and pod["restartPolicy"] == "Never"
    expression = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"][0]
    # The map has no A100 entry, so the label values seen on nodes are matched by the heuristic.
    assert expression == {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-A100-SXM4-80GB"],
    }
    assert job["metadata"]["labels"] == {
        "inferofabric.io/workload": "train-llm",
        "inferofabric.io/team": "research",
        "inferofabric.io/project": "llm",
        "inferofabric.io/attempt": "1",
        "app.kubernetes.io/managed-by": "inferofabric",
    }
    assert pod.get("imagePullSecrets") is None
    create = next(q for q in kube_api.requests if q[0] == "POST" and "/jobs" in q[1])
    assert "fieldValidation=Strict" in create[1]


def test_secret_env_goes_to_a_secret(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    backend.launch(make_request())
    env = kube_api.job("train-llm-a1", NS)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "EPOCHS", "value": "3"} in env
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "train-llm-a1-env", "key": "HF_TOKEN"}},
    } in env
    assert decode_secret(kube_api.secrets[(NS, "train-llm-a1-env")]) == {"HF_TOKEN": SECRET_VALUE}
    job_bodies = [json.dumps(body) for method, path, body in kube_api.requests if "/jobs" in path and body]
    assert job_bodies and not any(SECRET_VALUE in body for body in job_bodies)
    assert SECRET_VALUE not in json.dumps(kube_api.job("train-llm-a1", NS))


def test_affinity_uses_reverse_map_and_pull_secret(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    pool = make_pool(
        kube_api.url,
        image_pull_secret="regcred",
        gpu_label_map={"NVIDIA-H100-80GB-HBM3": "H100", "NVIDIA-H100-NVL": "H100"},
    )
    kube_api.add_node("h1", gpus=8, product="NVIDIA-H100-NVL")
    KubernetesBackend(pool, tmp_path).launch(make_request(types=["H100", "L4"]))
    pod = kube_api.job("train-llm-a1", NS)["spec"]["template"]["spec"]
    values = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"][0]["values"]
    assert values == ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-NVL", "L4"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert [p["spec"]["nodeName"] for p in kube_api.job_pods("train-llm-a1", NS)] == ["h1"]


def test_cpu_only_job_has_no_gpu_limits(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    backend.launch(make_request(gpus=0, resources={"cpu": 0.5, "memory": "1Gi"}, image_pull_secret="mine"))
    pod = kube_api.job("train-llm-a1", NS)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    assert "affinity" not in pod and pod["imagePullSecrets"] == [{"name": "mine"}]


def test_retried_launch_creates_one_job(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    first = backend.launch(make_request())
    second = backend.launch(make_request())
    assert first.state == second.state == JobState.RUNNING
    assert list(kube_api.jobs) == [(NS, "train-llm-a1")]
    assert len(kube_api.job_pods("train-llm-a1", NS)) == 1
    assert (
        sum(
            1
            for m, p, _ in kube_api.requests
            if m == "POST" and p.startswith(f"/apis/batch/v1/namespaces/{NS}/jobs")
        )
        == 2
    )


def test_long_job_id_is_truncated_and_hashed(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    request = make_request().model_copy(update={"job_id": "w" * 70 + "-a1"})
    name = k8s_name(request.job_id)
    assert len(name) <= 63 and name != k8s_name("w" * 70 + "-a2")
    backend.launch(request)
    assert (NS, name) in kube_api.jobs
    assert backend.list_jobs() == [request.job_id]
    assert backend.status(request.job_id).state == JobState.RUNNING


def test_forbidden_is_rejected(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    kube_api.forbidden.add(("create", "jobs"))
    with pytest.raises(JobRejected, match="403"):
        backend.launch(make_request())
    assert not JobRejected.retryable


def test_probe_forbidden_is_a_config_error(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.forbidden.add(("list", "nodes"))
    with pytest.raises(BackendConfigError, match="403"):
        backend.probe()


# -- status -------------------------------------------------------------------------------------


def test_status_transitions(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    request = make_request()
    assert backend.launch(request).state == JobState.RUNNING
    kube_api.succeed(request.job_id, NS)
    status = backend.status(request.job_id)
    assert status.state == JobState.SUCCEEDED and status.exit_code == 0
    assert status.finished_at is not None and status.started_at is not None


def test_status_failed_with_reason(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    request = make_request()
    backend.launch(request)
    kube_api.fail(
        request.job_id,
        NS,
        reason="DeadlineExceeded",
        message="Job was active longer than specified",
        exit_code=137,
    )
    status = backend.status(request.job_id)
    assert status.state == JobState.FAILED and status.exit_code == 137
    assert status.message.startswith("DeadlineExceeded") and status.details["reason"] == "DeadlineExceeded"


def test_status_image_pull_error(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    request = make_request()
    backend.launch(request)
    kube_api.image_pull_error(request.job_id, NS)
    status = backend.status(request.job_id)
    assert status.state == JobState.PENDING
    assert "ImagePullBackOff" in status.message and status.details["reason"] == "ImagePullBackOff"


def test_status_unschedulable(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=1)  # too small for 2 GPUs: the fake scheduler leaves the pod Pending
    request = make_request()
    status = backend.launch(request)
    assert status.state == JobState.PENDING
    assert status.details["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in status.message


def test_status_unknown_job_is_lost(backend: KubernetesBackend) -> None:
    assert backend.status("nope-a1").state == JobState.LOST


# -- cancel, logs, list ---------------------------------------------------------------------------


def test_cancel_removes_job_and_secret(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    request = make_request()
    backend.launch(request)
    backend.cancel(request.job_id)
    assert not kube_api.jobs and not kube_api.secrets and not kube_api.job_pods(request.job_id, NS)
    delete = next(body for method, path, body in kube_api.requests if method == "DELETE" and "/jobs/" in path)
    assert delete is not None and delete["propagationPolicy"] == "Foreground"
    backend.cancel(request.job_id)  # already gone: no error
    assert backend.status(request.job_id).state == JobState.LOST


def test_logs(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    assert backend.logs("train-llm-a1") == ""  # no job, no pod
    kube_api.add_node("a1", gpus=1)
    request = make_request()
    backend.launch(request)
    assert backend.logs(request.job_id) == ""  # pod pending: the container has not started
    kube_api.add_node("a2", gpus=8)
    backend.cancel(request.job_id)
    backend.launch(request)
    kube_api.succeed(request.job_id, NS, log="".join(f"step {i}\n" for i in range(10)))
    assert backend.logs(request.job_id, tail=2) == "step 8\nstep 9\n"


def test_list_jobs(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.add_node("a1", gpus=8)
    backend.launch(make_request(attempt=1))
    backend.launch(make_request(attempt=2))
    assert sorted(backend.list_jobs()) == ["train-llm-a1", "train-llm-a2"]


# -- outages --------------------------------------------------------------------------------------


def test_api_503_is_unavailable(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.outage = 503
    for call in (backend.probe, lambda: backend.launch(make_request()), lambda: backend.status("x-a1")):
        with pytest.raises(BackendUnavailable, match="503"):
            call()
    assert BackendUnavailable.retryable


def test_closed_port_fails_fast(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    kube_api.stop()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        backend.probe()
    assert time.monotonic() - started < 10


def test_wedged_api_server_times_out(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    backend = KubernetesBackend(make_pool(kube_api.url, request_timeout=0.5), tmp_path)
    kube_api.hang.set()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.probe()
    with pytest.raises(BackendUnavailable):
        backend.launch(make_request())
    assert time.monotonic() - started < 10
    kube_api.hang.clear()


# -- configuration --------------------------------------------------------------------------------


def test_config_defaults_and_strictness() -> None:
    config = KubernetesConfig(kubeconfig="~/.kube/config")
    assert config.namespace == "default" and config.gpu_label == "nvidia.com/gpu.product"
    assert config.request_timeout == 5 and not config.in_cluster
    assert config.kubeconfig_path is not None and not config.kubeconfig_path.startswith("~")
    with pytest.raises(ValueError):
        KubernetesConfig.model_validate({"namepsace": "typo"})


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    pool = PoolSpec(
        name="dc1-gpu",
        location=Location.ON_PREM,
        backend="kubernetes",
        kubernetes={"kubeconfig": str(tmp_path / "missing"), "context": "dc1"},
    )
    with pytest.raises(BackendConfigError):
        KubernetesBackend(pool, tmp_path).probe()


def test_kubeconfig_context_selects_server(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    """A real kubeconfig file (token auth) pointing at the fake: the chosen context's server is used."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "other",
                "clusters": [
                    {"name": "dc1", "cluster": {"server": kube_api.url}},
                    {"name": "other", "cluster": {"server": "http://127.0.0.1:1"}},
                ],
                "users": [{"name": "agent", "user": {"token": "abc"}}],
                "contexts": [
                    {"name": "dc1", "context": {"cluster": "dc1", "user": "agent", "namespace": NS}},
                    {"name": "other", "context": {"cluster": "other", "user": "agent"}},
                ],
            }
        )
    )
    kube_api.add_node("a1", gpus=8)
    pool = PoolSpec(
        name="dc1-gpu",
        location=Location.ON_PREM,
        backend="kubernetes",
        kubernetes={"kubeconfig": str(kubeconfig), "context": "dc1", "namespace": NS},
    )
    assert KubernetesBackend(pool, tmp_path).probe().gpus == {"A100": 8}


def test_manifest_is_pure_and_deterministic() -> None:
    config = KubernetesConfig(namespace=NS, gpu_label_map={"NVIDIA-A100-SXM4-80GB": "A100"})
    first, second = build_job_manifest(make_request(), config), build_job_manifest(make_request(), config)
    assert first == second and first["metadata"]["name"] == "train-llm-a1"
    assert SECRET_VALUE not in json.dumps(first)


# -- the fake rejects what a real API server rejects -------------------------------------------------


def raw(api: FakeKubeApi, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One plain HTTP request to the fake, bypassing the client (which would refuse to send bad objects)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        api.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"


def job_body(name: str = "j1", **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": "busybox"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}, **spec},
    }


def test_fake_rejects_like_a_real_api_server(kube_api: FakeKubeApi) -> None:
    assert raw(kube_api, "POST", JOBS, job_body())[0] == 201
    code, status = raw(kube_api, "POST", JOBS, job_body())
    assert (code, status["kind"], status["reason"]) == (409, "Status", "AlreadyExists")
    assert raw(kube_api, "POST", JOBS, job_body(name=""))[1]["reason"] == "Invalid"
    no_image = job_body("j2")
    del no_image["spec"]["template"]["spec"]["containers"][0]["image"]
    code, status = raw(kube_api, "POST", JOBS, no_image)
    assert code == 422 and "containers[0].image" in status["message"]
    no_containers = job_body("j3")
    no_containers["spec"]["template"]["spec"]["containers"] = []
    assert raw(kube_api, "POST", JOBS, no_containers)[0] == 422
    code, status = raw(kube_api, "POST", JOBS, job_body("j4", backofLimit=3))
    assert code == 400 and "unknown field" in status["message"]
    assert raw(kube_api, "GET", f"/apis/batch/v1/namespaces/{NS}/cronjobs")[0] == 404
    assert raw(kube_api, "GET", f"{JOBS}/missing")[1]["reason"] == "NotFound"


async def test_a_throttling_api_server_is_slowness_not_an_outage(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    """HTTP 429 from every call: the probe says "throttled" (neither a failed nor a good probe), so a
    monitor that already saw the pool healthy keeps it healthy however long the throttling lasts."""
    from inferofabric.activities.jobs import JobActivities
    from inferofabric.backends.base import BackendThrottled
    from inferofabric.models.common import Health
    from inferofabric.workflows.monitor import next_health

    kube_api.add_node("a1", gpus=8)
    kube_api.outage = 429
    pool = make_pool(kube_api.url)
    with pytest.raises(BackendThrottled):
        backend_for(pool, tmp_path).probe()
    health: Health | None = Health.HEALTHY
    for failures in range(1, 20):
        probe = await JobActivities(tmp_path).probe_pool(pool)
        assert probe.ok and probe.throttled
        health = next_health(health, probe, failures, 0, unhealthy_after=2, healthy_after=2)
    assert health == Health.HEALTHY


def test_an_endpoint_replica_gets_a_service_and_an_address(kube_api: FakeKubeApi, backend: KubernetesBackend) -> None:
    """A replica serves until stopped; its Service (named like its Job, selecting its pods, on the
    endpoint's port) is the address the gateway routes to, and it goes when the replica is stopped."""
    from inferofabric.models.endpoint import EndpointSpec

    kube_api.add_node("a1", gpus=8)
    endpoint = EndpointSpec.model_validate({"name": "chat", "team": "nlp", "image": "ghcr.io/acme/chat:1", "port": 9000,
                                            "resources": {"gpu": {"type": "A100", "count": 1}}})
    workload = endpoint.replica_workload("chat-ab12-r1", 1)
    request = JobRequest(job_id=job_id_for("chat-ab12-r1", 1), workload_id="chat-ab12-r1", attempt=1, spec=workload,
                         gpu_type="A100", gpus=1, env={"PORT": "9000"})
    status = backend.launch(request)
    assert status.state == JobState.RUNNING
    assert status.details["address"] == f"chat-ab12-r1-a1.{NS}.svc:9000"
    service = kube_api.services[(NS, "chat-ab12-r1-a1")]
    assert service["spec"]["selector"] == {"job-name": "chat-ab12-r1-a1"}
    assert service["spec"]["ports"][0]["port"] == 9000 and service["spec"]["ports"][0]["targetPort"] == 9000
    assert backend.snapshot([request.job_id])[request.job_id].details["address"] == status.details["address"]
    backend.launch(request)  # a retried launch: the Service already there is fine
    backend.cancel(request.job_id)
    assert (NS, "chat-ab12-r1-a1") not in kube_api.services
    # Other workloads get no Service.
    backend.launch(make_request())
    assert list(kube_api.services) == []
