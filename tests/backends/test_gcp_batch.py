"""GCP Batch back end against the wire-level fake: the real google-cloud-batch client, real HTTP."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth import identity_pool
from google.cloud import batch_v1

from inferofabric.backends.base import (
    BackendConfigError,
    BackendUnavailable,
    JobRejected,
    JobRequest,
    JobState,
    job_id_for,
)
from inferofabric.backends.gcp_batch import GcpBatchBackend, batch_job_id, label_value
from inferofabric.backends.registry import backend_for
from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec

try:  # `tests` is a package only when tests/__init__.py exists; otherwise pytest puts tests/ on sys.path
    from tests.fakes.gcp_batch_api import FakeGcpBatch, gcp_batch_fake, gcp_pool_document
except ModuleNotFoundError:
    from fakes.gcp_batch_api import (  # type: ignore[no-redef]
        FakeGcpBatch,
        gcp_batch_fake,
        gcp_pool_document,
    )

State = batch_v1.JobStatus.State
SCRIPT = {"script": {"text": "echo hi"}}
POOL_PROVIDER = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci"
SECRET_VALUE = "hf_s3cr3t-value-that-must-not-leak"
fake = gcp_batch_fake  # the fixture, under a short name


def make_backend(fake: FakeGcpBatch, tmp_path: Path, **gcp: Any) -> GcpBatchBackend:
    backend = backend_for(PoolSpec.model_validate(gcp_pool_document(fake, **gcp)), tmp_path)
    assert isinstance(backend, GcpBatchBackend)
    return backend


def make_request(workload: str = "llama-serve", attempt: int = 1, **spec: Any) -> JobRequest:
    workload_spec = WorkloadSpec.model_validate(
        {
            "team": "nlp",
            "image": "us-docker.pkg.dev/acme/serve:1.2",
            "command": ["python", "-m", "serve"],
            "args": ["--port", "8080"],
            "resources": {"gpu": {"type": "A100", "count": 2}, "cpu": 8, "memory": "64Gi"},
            "max_runtime_seconds": 3600,
            "max_retries": 2,
            **spec,
        }
    )
    return JobRequest(
        job_id=job_id_for(workload, attempt),
        workload_id=workload,
        attempt=attempt,
        spec=workload_spec,
        gpu_type="A100",
        gpus=2,
        env={"MODEL": "llama-3-8b", "HF_TOKEN": SECRET_VALUE},
        secret_env=["HF_TOKEN"],
    )


@pytest.fixture
def backend(fake: FakeGcpBatch, tmp_path: Path) -> GcpBatchBackend:
    return make_backend(fake, tmp_path)


def raw_post(fake: FakeGcpBatch, job_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Talk to the fake without the client, to check it rejects what the real service rejects."""
    url = f"{fake.url}/v1/projects/acme-ml/locations/us-central1/jobs?jobId={job_id}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


# ---- launch -------------------------------------------------------------------------------------------


def test_launch_builds_the_job(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    status = backend.launch(make_request())

    assert status.state is JobState.PENDING
    job = fake.job("llama-serve-a1")
    task = job.task_groups[0].task_spec
    container = task.runnables[0].container
    assert container.image_uri == "us-docker.pkg.dev/acme/serve:1.2"
    assert container.entrypoint == "python"
    assert list(container.commands) == ["-m", "serve", "--port", "8080"]
    assert (task.compute_resource.cpu_milli, task.compute_resource.memory_mib) == (8000, 65536)
    assert task.max_run_duration.seconds == 3600
    assert task.max_retry_count == 2
    instance = job.allocation_policy.instances[0]
    assert instance.install_gpu_drivers
    assert instance.policy.machine_type == "a2-highgpu-1g"
    assert [(a.type_, a.count) for a in instance.policy.accelerators] == [("nvidia-tesla-a100", 2)]
    assert dict(job.labels) == {
        "inferofabric-workload": "llama-serve",
        "inferofabric-team": "nlp",
        "inferofabric-attempt": "1",
    }
    assert job.logs_policy.destination == batch_v1.LogsPolicy.Destination.CLOUD_LOGGING
    assert task.environment.variables["MODEL"] == "llama-3-8b"


def test_secret_is_the_fabrics_own_value_in_a_secret_of_the_attempt(
    fake: FakeGcpBatch, backend: GcpBatchBackend
) -> None:
    """The job references a Secret Manager secret the fabric created for this attempt from its sealed
    value (never one named after the variable, which every team would share), and it goes when the
    job ends. The value never crosses the wire to Batch."""
    backend.launch(make_request())
    env = fake.job("llama-serve-a1").task_groups[0].task_spec.environment
    assert "HF_TOKEN" not in env.variables
    reference = env.secret_variables["HF_TOKEN"]
    assert reference == "projects/acme-ml/secrets/inferofabric-llama-serve-a1-hf_token/versions/latest"
    assert fake.secret_value(reference) == SECRET_VALUE.encode()
    batch_bodies = b"".join(r.body for r in fake.requests if "/jobs" in r.path)
    assert SECRET_VALUE.encode() not in batch_bodies and SECRET_VALUE.encode() not in fake.bodies()
    assert all(SECRET_VALUE not in str(r.query) for r in fake.requests)

    other_team = make_request(attempt=2)
    backend.launch(other_team)
    assert len(fake.secrets) == 2  # one per attempt: nothing shared

    fake.advance("llama-serve-a1", batch_v1.JobStatus.State.SUCCEEDED)
    assert backend.status("llama-serve-a1").state.value == "succeeded"
    assert list(fake.secrets) == ["projects/acme-ml/secrets/inferofabric-llama-serve-a2-hf_token"]
    backend.cancel("llama-serve-a2")
    assert fake.secrets == {}


def test_pool_options_reach_the_allocation_policy(fake: FakeGcpBatch, tmp_path: Path) -> None:
    backend = make_backend(
        fake,
        tmp_path,
        machine_type={"A100": "a2-highgpu-2g"},
        service_account_email="runner@acme-ml.iam.gserviceaccount.com",
        network="projects/acme-ml/global/networks/gpu",
    )
    backend.launch(make_request())

    policy = fake.job("llama-serve-a1").allocation_policy
    assert policy.instances[0].policy.machine_type == "a2-highgpu-2g"
    assert policy.service_account.email == "runner@acme-ml.iam.gserviceaccount.com"
    assert policy.network.network_interfaces[0].network == "projects/acme-ml/global/networks/gpu"


def test_retried_launch_creates_one_job(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    first = backend.launch(make_request())
    fake.advance("llama-serve-a1", State.RUNNING)
    second = backend.launch(make_request())

    creates = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert len(creates) == 2 and len(fake.jobs) == 1  # the second answered 409 ALREADY_EXISTS
    assert len(fake.secrets) == 1  # and found the attempt's secret (a second version, same secret)
    assert first.job_id == second.job_id == "llama-serve-a1"
    assert second.state is JobState.RUNNING


def test_job_ids_are_made_valid_for_batch(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    long_workload = "w" + "x" * 61  # 62 chars: "-a1" / "-a2" push it past 63
    for attempt in (1, 2):
        backend.launch(make_request(workload=long_workload, attempt=attempt))
    backend.launch(make_request(workload="9lives"))

    ids = sorted(name.rsplit("/", 1)[-1] for name in fake.jobs)
    assert len(ids) == 3 and all(len(i) <= 63 and i[0].isalpha() for i in ids)
    assert batch_job_id("ok-id-a1") == "ok-id-a1"
    assert all(batch_job_id(i) == i for i in ids)  # idempotent: ids read back map to themselves
    assert sorted(backend.list_jobs()) == sorted(
        [job_id_for(long_workload, 1), job_id_for(long_workload, 2), "9lives-a1"]
    )
    assert backend.status(job_id_for(long_workload, 2)).state is JobState.PENDING


def test_label_values_are_sanitized() -> None:
    assert label_value("Team.NLP/Research") == "team-nlp-research"
    assert len(label_value("x" * 100)) == 63


def test_unknown_gpu_type_is_rejected(backend: GcpBatchBackend) -> None:
    request = make_request().model_copy(update={"gpu_type": "B200"})
    with pytest.raises(JobRejected, match="B200"):
        backend.launch(request)


def test_permission_denied_rejects_the_launch(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    fake.deny_project("acme-ml")
    with pytest.raises(JobRejected, match="403"):
        backend.launch(make_request())


# ---- status, cancel, logs, list ---------------------------------------------------------------------


def test_status_follows_the_job_through_its_states(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    request = make_request()
    backend.launch(request)
    for batch_state, expected in [
        (State.SCHEDULED, JobState.PENDING),
        (State.RUNNING, JobState.RUNNING),
        (State.SUCCEEDED, JobState.SUCCEEDED),
    ]:
        fake.advance(request.job_id, batch_state)
        assert backend.status(request.job_id).state is expected

    status = backend.status(request.job_id)
    assert status.finished_at is not None
    assert status.logs_url is not None and fake.job(request.job_id).uid in status.logs_url


def test_failed_job_carries_the_last_event(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    backend.launch(make_request())
    fake.advance("llama-serve-a1", State.RUNNING)
    fake.advance("llama-serve-a1", State.FAILED, "Task 0 failed due to exit code 137.")

    status = backend.status("llama-serve-a1")
    assert status.state is JobState.FAILED
    assert "exit code 137" in status.message and status.exit_code == 137


def test_capacity_exhaustion_stays_pending(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    backend.launch(make_request())
    fake.exhaust_capacity("llama-serve-a1")

    status = backend.status("llama-serve-a1")
    assert status.state is JobState.PENDING
    assert "resource exhausted" in status.message


def test_capacity_exhausted_at_creation(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    fake.capacity_exhausted = True
    assert "resource exhausted" in backend.launch(make_request()).message


def test_unknown_job_is_lost(backend: GcpBatchBackend) -> None:
    assert backend.status("never-launched-a1").state is JobState.LOST


def test_cancel_deletes_and_is_idempotent(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    backend.launch(make_request())
    fake.advance("llama-serve-a1", State.RUNNING)

    backend.cancel("llama-serve-a1")
    job_deletes = [r for r in fake.requests if r.method == "DELETE" and "/jobs/" in r.path]
    assert len(job_deletes) == 1 and fake.secrets == {}  # the job and its attempt's secret
    assert backend.status("llama-serve-a1").state is JobState.CANCELLED
    fake.finish_deletions()
    assert backend.status("llama-serve-a1").state is JobState.LOST
    backend.cancel("llama-serve-a1")  # NotFound is success
    backend.cancel("never-launched-a1")


def test_logs_is_a_cloud_logging_link(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    backend.launch(make_request())
    text = backend.logs("llama-serve-a1")
    assert "console.cloud.google.com/logs" in text and fake.job("llama-serve-a1").uid in text


def test_list_jobs_only_unfinished_fabric_jobs(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    for attempt in (1, 2, 3):
        backend.launch(make_request(attempt=attempt))
    fake.advance("llama-serve-a2", State.SUCCEEDED)
    status, _ = raw_post(fake, "not-ours", {"taskGroups": [{"taskSpec": {"runnables": [SCRIPT]}}]})
    assert status == 200

    assert sorted(backend.list_jobs()) == ["llama-serve-a1", "llama-serve-a3"]


# ---- probe and failures -------------------------------------------------------------------------------


def test_probe_healthy(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    probe = backend.probe()
    assert probe.health is Health.HEALTHY and probe.gpus is None
    assert fake.requests[-1].query.get("pageSize") == ["1"]


def test_probe_unhealthy_when_permission_denied(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    fake.deny_project("acme-ml")
    probe = backend.probe()
    assert probe.health is Health.UNHEALTHY and "denied" in probe.reason


def test_outage_is_unavailable_fast(fake: FakeGcpBatch, backend: GcpBatchBackend) -> None:
    fake.outage = True
    started = time.monotonic()
    for call in (backend.probe, lambda: backend.launch(make_request()), lambda: backend.status("x-a1")):
        with pytest.raises(BackendUnavailable, match="503"):
            call()
    assert time.monotonic() - started < 10
    fake.outage = False
    assert backend.probe().health is Health.HEALTHY  # the same client recovers


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung API front end."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_dead_and_hung_endpoints_fail_within_10s(
    fake: FakeGcpBatch, tmp_path: Path, silent_endpoint: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        for endpoint in (dead, silent_endpoint):
            backend = make_backend(fake, tmp_path, endpoint=endpoint)
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                backend.probe()
            assert time.monotonic() - started < 10


# ---- configuration -------------------------------------------------------------------------------------


def test_config_defaults_and_errors(fake: FakeGcpBatch, tmp_path: Path) -> None:
    document = gcp_pool_document(fake)
    del document["gcp"]["location"]
    config = GcpBatchBackend(PoolSpec.model_validate(document), tmp_path).config
    assert config.location == "us-central1"  # from the pool's region
    assert config.accelerator_type["H100"] == "nvidia-h100-80gb"

    with pytest.raises(BackendConfigError, match="project"):
        make_backend(fake, tmp_path, project="")
    with pytest.raises(BackendConfigError, match="zone"):
        make_backend(fake, tmp_path, zone="us-central1-a")
    with pytest.raises(BackendConfigError, match="only one"):
        make_backend(fake, tmp_path, credentials={"anonymous": True, "service_account_file": "/x.json"})


def test_missing_credentials_file_is_a_config_error(fake: FakeGcpBatch, tmp_path: Path) -> None:
    backend = make_backend(fake, tmp_path, credentials={"service_account_file": str(tmp_path / "nope.json")})
    probe = backend.probe()
    assert probe.health is Health.UNHEALTHY and "nope.json" in probe.reason
    with pytest.raises(BackendConfigError, match="credentials"):
        backend.launch(make_request())


def test_workload_identity_config_loads(fake: FakeGcpBatch, tmp_path: Path) -> None:
    token = tmp_path / "oidc-token"
    token.write_text("eyJhbGciOi.fake.token")
    config = tmp_path / "wif.json"
    config.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": f"{POOL_PROVIDER}/providers/github",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": "https://sts.googleapis.com/v1/token",
                "credential_source": {"file": str(token)},
            }
        )
    )
    backend = make_backend(fake, tmp_path, credentials={"workload_identity_config": str(config)})
    assert isinstance(backend._credentials(), identity_pool.Credentials)
    assert isinstance(backend.client, batch_v1.BatchServiceClient)  # no network needed to build it


# ---- the fake itself rejects what the real service rejects ----------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "body", "status"),
    [
        ("Bad_ID", {"taskGroups": [{"taskSpec": {"runnables": [SCRIPT]}}]}, 400),
        ("ok", {"taskGroups": []}, 400),
        ("ok", {"taskGroups": [{"taskSpec": {}}]}, 400),
        ("ok", {"taskGroups": [{"taskSpec": {"runnables": [SCRIPT]}}], "colour": 1}, 400),
    ],
)
def test_fake_rejects_invalid_jobs(
    fake: FakeGcpBatch, job_id: str, body: dict[str, Any], status: int
) -> None:
    code, answer = raw_post(fake, job_id, body)
    assert code == status and answer["error"]["status"] == "INVALID_ARGUMENT"
