"""Schema checks, offline: the install manifests and the Jobs the back end builds are valid Kubernetes.

`kubernetes-validate` ships the OpenAPI-derived JSON schemas; strict mode also rejects unknown fields,
which is what the API server does with `fieldValidation=Strict` (the back end sends it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from inferofabric.backends.base import JobRequest, job_id_for
from inferofabric.backends.kubernetes_manifests import (
    KubernetesConfig,
    build_env_secret,
    build_job_manifest,
    build_pull_secret,
)
from inferofabric.models.workload import WorkloadSpec

K8S_VERSION = "1.37.0"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
FILES = sorted(DEPLOY.glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')}: {error.message} at {list(error.path)}")


def test_schema_version_is_available() -> None:
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()


def test_expected_manifest_files() -> None:
    names = {path.name for path in FILES}
    assert {
        "namespace.yaml",
        "serviceaccount.yaml",
        "role.yaml",
        "clusterrole.yaml",
        "agent-deployment.yaml",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_deploy_manifests_are_valid(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        validate(doc)


def rules(kind: str) -> dict[str, set[str]]:
    doc = next(d for p in FILES for d in documents(p) if d["kind"] == kind)
    return {resource: set(rule["verbs"]) for rule in doc["rules"] for resource in rule["resources"]}


def test_rbac_is_least_privilege() -> None:
    assert rules("Role") == {
        "jobs": {"create", "get", "list", "watch", "delete"},
        "pods": {"get", "list", "watch"},
        "pods/log": {"get"},
        "secrets": {"create", "get", "update", "delete"},
        "services": {"create", "delete"},  # an endpoint replica's Service
    }
    assert rules("ClusterRole") == {"nodes": {"get", "list", "watch"}, "pods": {"list"}}
    assert not any("*" in verbs for verbs in [*rules("Role").values(), *rules("ClusterRole").values()])


def test_bindings_point_at_the_agent_service_account() -> None:
    docs = [d for p in FILES for d in documents(p)]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/inferofabric/fabric:0.1.0"
    assert container["args"] == ["agent", "--pool", "$(FABRIC_POOL)"]
    assert {e["name"] for e in container["env"]} >= {"FABRIC_TEMPORAL_ADDRESS", "FABRIC_POOL"}
    assert pod["securityContext"]["runAsNonRoot"] is True and container["resources"]["requests"]


def request(**spec: Any) -> JobRequest:
    workload = WorkloadSpec.model_validate(
        {
            "name": "finetune",
            "team": "nlp",
            "project": "Chat Bots/v2",
            "image": "registry.acme.io/ft:2",
            "command": ["torchrun"],
            "args": ["--nproc-per-node", "4", "train.py"],
            "resources": {"gpu": {"type": ["A100", "H100"], "count": 4}, "cpu": 2.5, "memory": "128Gi"},
            "labels": {"cost-center": "r&d 42"},
            "annotations": {"acme.io/owner": "jo"},
            "max_retries": 3,
            "max_runtime_seconds": 7200,
            **spec,
        }
    )
    return JobRequest(
        job_id=job_id_for("finetune", 2),
        workload_id="finetune",
        attempt=2,
        spec=workload,
        gpu_type=next(iter(workload.gpu_types), None),
        gpus=workload.gpu_count,
        env={"MODE": "fast", "WANDB_KEY": "k"},
        secret_env=["WANDB_KEY"],
        image_pull_credentials={"username": "bot", "password": "pw"},
    )


CONFIG = KubernetesConfig(
    namespace="gpu-jobs",
    image_pull_secret="regcred",
    gpu_label_map={"NVIDIA-A100-SXM4-80GB": "A100", "NVIDIA-H100-80GB-HBM3": "H100"},
)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"max_runtime_seconds": None, "image_pull_secret": "own"},
        {"resources": {"cpu": 1, "memory": "1Gi"}},
    ],
    ids=["gpu", "no-deadline", "cpu-only"],
)
def test_generated_job_is_valid(spec: dict[str, Any]) -> None:
    job = build_job_manifest(request(**spec), CONFIG, seen_label_values=["NVIDIA-L4"])
    validate(job)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_generated_secrets_are_valid() -> None:
    for secret in (build_env_secret(request(), CONFIG), build_pull_secret(request(), CONFIG)):
        assert secret is not None
        validate(secret)


def test_a_gang_is_one_valid_indexed_job_with_per_replica_gpus() -> None:
    spec = WorkloadSpec.model_validate({"name": "ddp", "team": "vision", "image": "ghcr.io/acme/ddp:1",
                                        "replicas": 4, "resources": {"gpu": {"type": "A100", "count": 2}}})
    request = JobRequest(job_id=job_id_for("ddp", 1), workload_id="ddp", attempt=1, spec=spec, gpu_type="A100",
                         gpus=spec.total_gpus)
    manifest = build_job_manifest(request, KubernetesConfig())
    validate(manifest)
    job = manifest["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 4, 4)
    limits = job["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "2"}  # per replica; the fabric reserved 8 on the pool
