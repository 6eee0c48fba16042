"""Azure Batch back end against the wire-level fake: the real azure-batch client, real HTTP, shared key."""

from __future__ import annotations

import base64
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from inferofabric.backends.azure_batch import (
    CANCEL_REASON,
    JOB_ID_KEY,
    SECRETS_REFUSED,
    WORKLOAD_KEY,
    AzureBatchBackend,
    azure_job_id,
    command_line,
    secret_env_var,
    translate_error,
)
from inferofabric.backends.base import (
    BackendConfigError,
    BackendUnavailable,
    JobRejected,
    JobRequest,
    JobState,
    job_id_for,
)
from inferofabric.backends.registry import backend_for
from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec

try:  # `tests` is a package only when tests/__init__.py exists; otherwise pytest puts tests/ on sys.path
    from tests.fakes.azure_batch_api import (
        TEST_KEY,
        TEST_KEY_SECRET,
        TEST_POOL,
        FakeAzureBatch,
        azure_batch_fake,
        azure_pool_document,
    )
except ModuleNotFoundError:
    from fakes.azure_batch_api import (  # type: ignore[no-redef]
        TEST_KEY,
        TEST_KEY_SECRET,
        TEST_POOL,
        FakeAzureBatch,
        azure_batch_fake,
        azure_pool_document,
    )

fake = azure_batch_fake  # the fixture, under a short name
SECRET_VALUE = "hf_s3cr3t-value-that-must-not-leak"
JOB = job_id_for("llama-serve", 1)


@pytest.fixture(autouse=True)
def account_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared key reaches the back end the way it does in production: the default env resolver."""
    monkeypatch.setenv(secret_env_var(TEST_KEY_SECRET), TEST_KEY)


def make_backend(fake: FakeAzureBatch, tmp_path: Path, **azure: Any) -> AzureBatchBackend:
    backend = backend_for(PoolSpec.model_validate(azure_pool_document(fake, **azure)), tmp_path)
    assert isinstance(backend, AzureBatchBackend)
    return backend


@pytest.fixture
def backend(fake: FakeAzureBatch, tmp_path: Path) -> AzureBatchBackend:
    return make_backend(fake, tmp_path)


def make_request(workload: str = "llama-serve", attempt: int = 1, gpus: int = 2, **extra: Any) -> JobRequest:
    spec = WorkloadSpec.model_validate(
        {
            "team": "nlp",
            "image": "acme.azurecr.io/serve:1.2",
            "command": ["python", "-c", 'print("it\'s up")'],
            "args": ["--name", "two words", "$HOME"],
            "resources": {"gpu": {"type": "A100", "count": gpus}},
            "max_retries": 2,
            "max_runtime_seconds": 5400,
        }
    )
    return JobRequest(
        job_id=job_id_for(workload, attempt),
        workload_id=workload,
        attempt=attempt,
        spec=spec,
        gpu_type="A100" if gpus else None,
        gpus=gpus,
        env={"MODEL": "llama-3-8b"},
        **extra,
    )


def wire_job(fake: FakeAzureBatch) -> dict[str, Any]:
    return dict(fake.calls("POST", "/jobs")[0].json)


def wire_task(fake: FakeAzureBatch, job_id: str = JOB) -> dict[str, Any]:
    return dict(fake.calls("POST", f"/jobs/{job_id}/tasks")[0].json)


# ---- launch ----------------------------------------------------------------------------------------
def test_launch_creates_job_and_container_task(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    status = backend.launch(make_request())

    assert status.state == JobState.PENDING
    job = wire_job(fake)
    assert job["id"] == JOB
    assert job["poolInfo"] == {"poolId": TEST_POOL}
    assert job["onAllTasksComplete"] == "terminatejob"
    assert job["constraints"] == {"maxWallClockTime": "PT01H30M00S", "maxTaskRetryCount": 2}
    metadata = {item["name"]: item["value"] for item in job["metadata"]}
    assert metadata[WORKLOAD_KEY] == "llama-serve"
    assert metadata["inferofabric-team"] == "nlp"
    assert metadata["inferofabric-attempt"] == "1"
    task = wire_task(fake)
    assert task["id"] == "main"
    assert task["containerSettings"]["imageName"] == "acme.azurecr.io/serve:1.2"
    assert task["containerSettings"]["containerRunOptions"] == "--gpus all"
    assert shlex.split(task["commandLine"]) == [
        "python",
        "-c",
        'print("it\'s up")',
        "--name",
        "two words",
        "$HOME",
    ]
    assert task["environmentSettings"] == [{"name": "MODEL", "value": "llama-3-8b"}]
    assert task["constraints"]["maxTaskRetryCount"] == 2


def test_launch_without_gpus_sends_no_gpu_flag(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request(gpus=0))

    assert "containerRunOptions" not in wire_task(fake)["containerSettings"]


def test_image_pull_credentials_become_the_task_registry(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    pull = {"server": "acme.azurecr.io", "username": "puller", "password": "pull-pass"}
    backend.launch(make_request().model_copy(update={"image_pull_credentials": pull}))

    registry = wire_task(fake)["containerSettings"]["registry"]
    assert registry == {"registryServer": "acme.azurecr.io", "username": "puller", "password": "pull-pass"}


def test_requests_are_signed_with_the_shared_key(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())

    assert all(
        r.headers["authorization"].startswith(f"SharedKey {fake.account_name}:") for r in fake.requests
    )


def test_retried_launch_creates_exactly_one_job_and_task(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    first = backend.launch(make_request())
    fake.set_task_running(JOB)
    again = backend.launch(make_request())

    assert len(fake.jobs) == 1 and len(fake.tasks[JOB.lower()]) == 1
    assert len(fake.calls("POST", "/jobs")) == 2  # the second answered 409 JobExists
    assert first.state == JobState.PENDING
    assert again.state == JobState.RUNNING  # a retried launch reports the job it already started


def test_launch_after_a_crash_between_job_and_task_adds_the_task(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    backend.launch(make_request())
    fake.tasks[JOB.lower()].clear()  # as if the first launch died after creating the job

    status = backend.launch(make_request())

    assert list(fake.tasks[JOB.lower()]) == ["main"]
    assert status.state == JobState.PENDING


def test_relaunch_of_a_finished_attempt_reports_its_outcome(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    backend.launch(make_request())
    fake.complete_task(JOB, exit_code=0)

    assert backend.launch(make_request()).state == JobState.SUCCEEDED


def test_long_and_odd_job_ids_are_sanitized(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    long_id = "w" * 63 + ".attempt/1"
    request = make_request().model_copy(update={"job_id": long_id})

    backend.launch(request)

    azure_id = azure_job_id(long_id)
    assert len(azure_id) <= 64 and azure_id != azure_job_id("w" * 63 + ".attempt/2")
    assert wire_job(fake)["id"] == azure_id
    assert backend.status(long_id).state == JobState.PENDING
    assert backend.list_jobs() == [long_id]


# ---- secrets ---------------------------------------------------------------------------------------
def secret_request() -> JobRequest:
    request = make_request()
    return request.model_copy(
        update={"env": {**request.env, "HF_TOKEN": SECRET_VALUE}, "secret_env": ["HF_TOKEN"]}
    )


def test_secret_env_is_refused_unless_the_pool_allows_it(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    with pytest.raises(JobRejected, match=SECRETS_REFUSED):
        backend.launch(secret_request())

    assert fake.calls("POST", "/jobs") == []
    assert all(SECRET_VALUE.encode() not in r.body for r in fake.requests)


def test_secret_env_is_sent_as_environment_when_allowed(fake: FakeAzureBatch, tmp_path: Path) -> None:
    backend = make_backend(fake, tmp_path, allow_secret_env=True)

    backend.launch(secret_request())

    assert {"name": "HF_TOKEN", "value": SECRET_VALUE} in wire_task(fake)["environmentSettings"]


def test_account_key_is_never_logged(
    fake: FakeAzureBatch, backend: AzureBatchBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        backend.launch(make_request())
        backend.status(JOB)

    assert TEST_KEY not in caplog.text


# ---- status ----------------------------------------------------------------------------------------
def test_status_follows_the_task(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    assert backend.status(JOB).state == JobState.PENDING

    fake.set_task_running(JOB)
    running = backend.status(JOB)
    assert running.state == JobState.RUNNING and running.started_at is not None

    fake.complete_task(JOB, exit_code=0)
    done = backend.status(JOB)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0)
    assert done.finished_at is not None


def test_status_non_zero_exit_is_failed(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    fake.set_task_running(JOB)
    fake.complete_task(JOB, exit_code=3)

    status = backend.status(JOB)

    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert "exit code 3" in status.message


def test_status_failure_info_is_failed(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    fake.fail_task(JOB, "ContainerPullImageFailed", "manifest for acme.azurecr.io/serve:1.2 not found")

    status = backend.status(JOB)

    assert status.state == JobState.FAILED
    assert status.message.startswith("ContainerPullImageFailed: manifest")


def test_status_job_ended_before_its_task_is_failed(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    fake.set_task_running(JOB)
    fake._terminate(fake.jobs[JOB.lower()], "MaxWallClockTimeExpiry")

    status = backend.status(JOB)

    assert status.state == JobState.FAILED
    assert "MaxWallClockTimeExpiry" in status.message


def test_status_unknown_job_is_lost(backend: AzureBatchBackend) -> None:
    assert backend.status("never-launched-a1").state == JobState.LOST


def test_status_of_a_job_the_fabric_cancelled(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.retain_deleted = True  # the service keeps a deleted job visible (state deleting) for a while
    backend.launch(make_request())
    fake.set_task_running(JOB)

    backend.cancel(JOB)

    status = backend.status(JOB)
    assert status.state == JobState.CANCELLED
    assert status.message == CANCEL_REASON


# ---- cancel ----------------------------------------------------------------------------------------
def test_cancel_terminates_then_deletes(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    fake.set_task_running(JOB)

    backend.cancel(JOB)

    [terminate] = fake.calls("POST", f"/jobs/{JOB}/terminate")
    assert terminate.json == {"terminateReason": CANCEL_REASON}
    assert len(fake.calls("DELETE", f"/jobs/{JOB}")) == 1
    assert fake.jobs == {}
    assert backend.status(JOB).state == JobState.LOST


def test_cancel_of_a_finished_job_still_deletes_it(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    fake.complete_task(JOB, exit_code=0)  # the job completes with its only task

    backend.cancel(JOB)

    assert fake.jobs == {}


def test_cancel_of_an_unknown_job_is_a_no_op(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.cancel("never-launched-a1")

    assert fake.calls("DELETE", "/jobs/never-launched-a1") == []


# ---- logs ------------------------------------------------------------------------------------------
def test_logs_tail_the_task_stdout(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())
    assert backend.logs(JOB) == ""  # nothing written yet

    fake.put_file(JOB, "stdout.txt", "".join(f"line {n}\n" for n in range(1, 301)))

    assert backend.logs(JOB, tail=2) == "line 299\nline 300\n"
    assert backend.logs(JOB).count("\n") == 200
    assert fake.calls("GET", f"/jobs/{JOB}/tasks/main/files/stdout.txt")


def test_logs_of_an_unknown_job_are_empty(backend: AzureBatchBackend) -> None:
    assert backend.logs("never-launched-a1") == ""


# ---- list_jobs -------------------------------------------------------------------------------------
def test_list_jobs_returns_live_fabric_jobs_on_this_pool(
    fake: FakeAzureBatch, backend: AzureBatchBackend
) -> None:
    backend.launch(make_request("alpha"))
    backend.launch(make_request("beta"))
    fake.complete_task(job_id_for("beta", 1), exit_code=0)  # completes the job
    fake.add_job({"id": "someone-elses", "poolInfo": {"poolId": TEST_POOL}})
    fake.add_job(
        {
            "id": "other-pool",
            "poolInfo": {"poolId": "cpu-pool"},
            "metadata": [{"name": WORKLOAD_KEY, "value": "x"}],
        }
    )

    assert backend.list_jobs() == [job_id_for("alpha", 1)]


def test_list_jobs_reports_fabric_job_ids(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    backend.launch(make_request())

    metadata = {item["name"]: item["value"] for item in wire_job(fake)["metadata"]}
    assert metadata[JOB_ID_KEY] == JOB
    assert backend.list_jobs() == [JOB]


# ---- probe -----------------------------------------------------------------------------------------
def test_probe_healthy_pool_reports_node_counts(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.set_pool(TEST_POOL, currentDedicatedNodes=3, currentLowPriorityNodes=1)

    probe = backend.probe()

    assert probe.health == Health.HEALTHY and probe.gpus is None
    assert probe.details["current_dedicated_nodes"] == 3
    assert probe.details["current_low_priority_nodes"] == 1


def test_probe_resizing_pool_is_degraded(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.set_pool(TEST_POOL, allocationState="resizing")

    probe = backend.probe()

    assert probe.health == Health.DEGRADED and "resizing" in probe.reason


def test_probe_deleting_pool_is_unhealthy(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.set_pool(TEST_POOL, state="deleting")

    probe = backend.probe()

    assert probe.health == Health.UNHEALTHY and "deleting" in probe.reason


def test_probe_missing_pool_is_unhealthy(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.remove_pool(TEST_POOL)

    probe = backend.probe()

    assert probe.health == Health.UNHEALTHY and "not found" in probe.reason


# ---- outages and authentication --------------------------------------------------------------------
@pytest.mark.parametrize("call", ["launch", "status", "probe", "cancel", "logs", "list_jobs"])
def test_outage_is_unavailable_within_ten_seconds(
    fake: FakeAzureBatch, backend: AzureBatchBackend, call: str
) -> None:
    fake.outage = True
    started = time.monotonic()

    with pytest.raises(BackendUnavailable):
        if call == "launch":
            backend.launch(make_request())
        elif call in ("status", "cancel", "logs"):
            getattr(backend, call)(JOB)
        else:
            getattr(backend, call)()

    assert time.monotonic() - started < 10
    assert len(fake.requests) == 2  # one try plus the single SDK retry


def test_unreachable_service_is_unavailable_quickly(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    fake.stop()
    started = time.monotonic()

    with pytest.raises(BackendUnavailable):
        backend.launch(make_request())

    assert time.monotonic() - started < 10


def test_hanging_service_times_out_as_unavailable(fake: FakeAzureBatch, tmp_path: Path) -> None:
    backend = make_backend(fake, tmp_path, timeout_seconds=0.5)
    fake.delay_seconds = 2
    started = time.monotonic()

    with pytest.raises(BackendUnavailable):
        backend.probe()

    assert time.monotonic() - started < 10


def test_wrong_account_key_is_rejected(
    fake: FakeAzureBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secret_env_var(TEST_KEY_SECRET), base64.b64encode(b"not the key").decode())
    backend = make_backend(fake, tmp_path)

    with pytest.raises(JobRejected, match="access denied"):
        backend.launch(make_request())
    assert backend.probe().health == Health.UNHEALTHY
    assert len(fake.calls("POST", "/jobs")) == 1  # an auth failure is not retried


def test_wrong_account_name_is_rejected(fake: FakeAzureBatch, tmp_path: Path) -> None:
    backend = make_backend(
        fake, tmp_path, credentials={"account_name": "other", "account_key_secret": TEST_KEY_SECRET}
    )

    with pytest.raises(JobRejected):
        backend.launch(make_request())


def test_missing_or_malformed_key_is_a_config_error(
    fake: FakeAzureBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(secret_env_var(TEST_KEY_SECRET))
    with pytest.raises(BackendConfigError, match="FABRIC_SECRET_AZURE_BATCH_KEY"):
        make_backend(fake, tmp_path).probe()

    monkeypatch.setenv(secret_env_var(TEST_KEY_SECRET), "not base64 !!")
    with pytest.raises(BackendConfigError, match="base64"):
        make_backend(fake, tmp_path).probe()
    assert fake.requests == []


def test_custom_secret_resolver(
    fake: FakeAzureBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(secret_env_var(TEST_KEY_SECRET))
    pool = PoolSpec.model_validate(azure_pool_document(fake))
    backend = AzureBatchBackend(pool, tmp_path, secret_resolver={TEST_KEY_SECRET: TEST_KEY}.get)

    assert backend.probe().health == Health.HEALTHY


# ---- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "azure",
    [
        {"pool_id": None},
        {"credentials": {"account_name": "acme"}},
        {"credentials": {"default": True}},  # token credentials need https
        {"credentials": {"entra": {"tenant_id": "t", "client_id": "c", "client_secret_secret": "s"}}},
        {"typo_field": 1},
    ],
)
def test_bad_config_is_a_config_error(fake: FakeAzureBatch, tmp_path: Path, azure: dict[str, Any]) -> None:
    document = azure_pool_document(fake)
    document["azure"].update(azure)
    document["azure"] = {k: v for k, v in document["azure"].items() if v is not None}

    with pytest.raises(BackendConfigError):
        backend_for(PoolSpec.model_validate(document), tmp_path)


def test_token_credential_configs_parse(fake: FakeAzureBatch, tmp_path: Path) -> None:
    url = "https://acme.eastus.batch.azure.com"
    entra = {"entra": {"tenant_id": "t", "client_id": "c", "client_secret_secret": "sp-secret"}}
    for credentials in (entra, {"default": True}):
        document = azure_pool_document(fake, account_url=url, credentials=credentials)
        assert isinstance(backend_for(PoolSpec.model_validate(document), tmp_path), AzureBatchBackend)


# ---- the fake rejects what the service rejects -----------------------------------------------------
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"id": "main", "commandLine": "true", "bogus": 1}, "InvalidRequestBody"),
        ({"id": "main"}, "MissingRequiredProperty"),
        ({"id": "bad id!", "commandLine": "true"}, "InvalidPropertyValue"),
    ],
)
def test_fake_rejects_invalid_tasks(
    fake: FakeAzureBatch, backend: AzureBatchBackend, body: dict[str, Any], code: str
) -> None:
    backend.launch(make_request())

    with pytest.raises(HttpResponseError) as raised:
        backend.client.create_task(JOB, body)  # type: ignore[arg-type]

    assert raised.value.status_code == 400 and raised.value.error is not None
    assert raised.value.error.code == code
    assert isinstance(translate_error(raised.value, "create task"), JobRejected)


def test_fake_requires_pool_info(fake: FakeAzureBatch, backend: AzureBatchBackend) -> None:
    with pytest.raises(HttpResponseError) as raised:
        backend.client.create_job({"id": "no-pool"})  # type: ignore[arg-type]

    assert raised.value.error is not None and raised.value.error.code == "MissingRequiredProperty"


def test_command_line_quoting() -> None:
    assert command_line(["sh", "-c"], ["echo $X && ls"]) == "sh -c 'echo $X && ls'"
    assert command_line([], ["--port", "80"]) == "--port 80"
