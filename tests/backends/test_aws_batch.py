"""AWS Batch back end against moto's real HTTP server (Batch in Docker-free mode).

Nothing here patches boto3: every call goes over HTTP to moto, so endpoint handling, retries,
timeouts and error bodies are the real ones.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferofabric.backends.aws_batch import (
    CANCEL_REASON,
    AwsBatchBackend,
    AwsBatchConfig,
    batch_job_name,
    env_secret_resolver,
    logs_console_url,
    map_job_state,
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

try:
    from tests.fakes.aws import MotoAws, free_port, moto_aws
except ImportError:  # pytest's rootdir-relative imports when tests/ is not a package
    from fakes.aws import MotoAws, free_port, moto_aws  # type: ignore[no-redef]

__all__ = ["moto_aws"]  # the fixture is used by name

IMAGE = "nvcr.io/nvidia/pytorch:24.05"


def _request(workload: str, attempt: int = 1, image: str = IMAGE, **spec: Any) -> JobRequest:
    workload_spec = WorkloadSpec.model_validate({
        "name": workload, "team": "vision", "image": image, "command": ["python", "train.py"],
        "args": ["--epochs", "1"],
        "resources": {"gpu": {"type": ["A100"], "count": 2}, "cpu": 8, "memory": "64Gi"},
        **spec,
    })
    return JobRequest(
        job_id=job_id_for(workload, attempt), workload_id=workload, attempt=attempt,
        spec=workload_spec, gpu_type="A100", gpus=2,
    )


def _backend(env: MotoAws, tmp_path: Path, **aws: Any) -> AwsBatchBackend:
    backend = backend_for(env.pool_spec(**aws), tmp_path)
    assert isinstance(backend, AwsBatchBackend)
    return backend


def _jobs_named(env: MotoAws, name: str, queue: str = "gpu-queue") -> list[dict[str, Any]]:
    batch = env.client("batch")
    answer = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}])
    return list(answer["jobSummaryList"])


def _describe_job(env: MotoAws, aws_job_id: str) -> dict[str, Any]:
    return dict(env.client("batch").describe_jobs(jobs=[aws_job_id])["jobs"][0])


def _secret_names(env: MotoAws, job_id: str) -> list[str]:
    answer = env.client("secretsmanager").list_secrets(
        Filters=[{"Key": "name", "Values": [f"inferofabric/{job_id}/"]}]
    )
    return [secret["Name"] for secret in answer["SecretList"]]


# --- launch ------------------------------------------------------------------------------------


def test_launch_twice_creates_one_job(moto_aws: MotoAws, tmp_path: Path) -> None:
    backend = _backend(moto_aws, tmp_path)
    request = _request("resnet-once")
    first = backend.launch(request)
    second = _backend(moto_aws, tmp_path).launch(request)  # a retried activity: fresh instance
    assert first.details["aws_job_id"] == second.details["aws_job_id"]
    assert len(_jobs_named(moto_aws, "resnet-once-a1")) == 1
    job = _describe_job(moto_aws, first.details["aws_job_id"])
    assert job["tags"]["inferofabric:workload"] == "resnet-once"
    assert job["tags"]["inferofabric:attempt"] == "1"
    assert job["tags"]["inferofabric:team"] == "vision"


def test_job_definition_reused_for_same_image_and_shape(moto_aws: MotoAws, tmp_path: Path) -> None:
    backend = _backend(moto_aws, tmp_path)
    one = backend.launch(_request("jd-share-one"))
    two = backend.launch(_request("jd-share-two"))
    other = backend.launch(_request("jd-share-three", image="nvcr.io/nvidia/pytorch:24.06"))
    definition = {s.details["aws_job_id"]: _describe_job(moto_aws, s.details["aws_job_id"])["jobDefinition"]
                  for s in (one, two, other)}
    assert definition[one.details["aws_job_id"]] == definition[two.details["aws_job_id"]]
    assert definition[other.details["aws_job_id"]] != definition[one.details["aws_job_id"]]
    arn = definition[one.details["aws_job_id"]]
    name = arn.split("/")[-1].split(":")[0]
    revisions = moto_aws.client("batch").describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
    assert len(revisions) == 1
    container = revisions[0]["containerProperties"]
    assert container["image"] == "nvcr.io/nvidia/pytorch:24.05"
    assert container["command"] == ["python", "train.py", "--epochs", "1"]
    requirements = {r["type"]: r["value"] for r in container["resourceRequirements"]}
    assert requirements == {"VCPU": "8", "MEMORY": str(64 * 1024), "GPU": "2"}


def test_retry_and_timeout_are_passed(moto_aws: MotoAws, tmp_path: Path) -> None:
    request = _request("deadline", max_retries=2, max_runtime_seconds=3600)
    status = _backend(moto_aws, tmp_path).launch(request)
    job = _describe_job(moto_aws, status.details["aws_job_id"])
    assert job["timeout"] == {"attemptDurationSeconds": 3600}


def test_secret_value_never_reaches_batch(moto_aws: MotoAws, tmp_path: Path) -> None:
    secret_value = "sup3r-s3cret-value-42"
    request = _request("secretive").model_copy(
        update={"env": {"HF_TOKEN": secret_value, "PLAIN": "visible"}, "secret_env": ["HF_TOKEN"]}
    )
    backend = _backend(moto_aws, tmp_path)
    status = backend.launch(request)
    backend.launch(request)  # a retried launch updates the secret idempotently
    job = _describe_job(moto_aws, status.details["aws_job_id"])
    definitions = moto_aws.client("batch").describe_job_definitions(jobDefinitions=[job["jobDefinition"]])
    assert secret_value not in json.dumps(job, default=str)
    assert secret_value not in json.dumps(definitions, default=str)
    secrets = definitions["jobDefinitions"][0]["containerProperties"]["secrets"]
    assert [s["name"] for s in secrets] == ["HF_TOKEN"]
    assert ":secret:inferofabric/secretive-a1/HF_TOKEN" in secrets[0]["valueFrom"]
    stored = moto_aws.client("secretsmanager").get_secret_value(SecretId=secrets[0]["valueFrom"])
    assert stored["SecretString"] == secret_value
    assert {"name": "PLAIN", "value": "visible"} in job["container"]["environment"]
    assert "HF_TOKEN" not in {e["name"] for e in job["container"]["environment"]}


# --- status / logs / cancel ----------------------------------------------------------------------


def test_status_succeeded_and_secrets_cleaned(moto_aws: MotoAws, tmp_path: Path) -> None:
    request = _request("finisher").model_copy(update={"env": {"K": "v"}, "secret_env": ["K"]})
    backend = _backend(moto_aws, tmp_path)
    backend.launch(request)
    assert _secret_names(moto_aws, request.job_id) == ["inferofabric/finisher-a1/K"]
    status = backend.status(request.job_id)
    assert status.state is JobState.SUCCEEDED
    assert status.finished_at is not None
    assert status.logs_url and status.logs_url.startswith("https://us-east-1.console.aws.amazon.com/cloudwatch/")
    assert _secret_names(moto_aws, request.job_id) == []  # finished: the secret is gone


def test_status_failed(moto_aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # moto (same process) fails the job at once
    backend = _backend(moto_aws, tmp_path)
    backend.launch(_request("crasher"))
    assert backend.status("crasher-a1").state is JobState.FAILED


def test_unknown_job_is_lost_and_cancel_is_noop(moto_aws: MotoAws, tmp_path: Path) -> None:
    backend = _backend(moto_aws, tmp_path)
    assert backend.status("never-launched-a1").state is JobState.LOST
    backend.cancel("never-launched-a1")
    assert "not available" in backend.logs("never-launched-a1")


def test_pending_running_then_cancelled(
    moto_aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With MOTO_SIMPLE_BATCH_FAIL_AFTER=4 moto holds the submit request for 4 s before stopping the
    # job; with a timed progression the job walks SUBMITTED..RUNNING meanwhile. A terminate in that
    # window makes it FAILED with our reason, which the back end reports as cancelled.
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "4")
    request = _request("cancel-me").model_copy(update={"env": {"K": "v"}, "secret_env": ["K"]})
    launched: list[Any] = []
    backend = _backend(moto_aws, tmp_path)
    with moto_aws.batch_job_progression({"progression": "time", "seconds": 0.3}):
        retried = _backend(moto_aws, tmp_path)
        launcher = threading.Thread(target=lambda: launched.append(retried.launch(request)))
        launcher.start()
        seen = _watch_until_running(backend, request.job_id, timeout=3.5)
        assert seen[-1] is JobState.RUNNING, seen
        assert JobState.PENDING in seen
        assert request.job_id in backend.list_jobs()
        backend.cancel(request.job_id)
        launcher.join(timeout=10)
    status = backend.status(request.job_id)
    assert status.state is JobState.CANCELLED, status
    assert CANCEL_REASON in status.message
    assert launched and launched[0].state is JobState.CANCELLED
    assert _secret_names(moto_aws, request.job_id) == []
    assert request.job_id not in backend.list_jobs()


def _watch_until_running(backend: AwsBatchBackend, job_id: str, timeout: float) -> list[JobState]:
    """States seen (LOST before the job exists is skipped) until RUNNING or the timeout."""
    seen: list[JobState] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backend.status(job_id).state
        if state is not JobState.LOST and (not seen or seen[-1] is not state):
            seen.append(state)
        if state is JobState.RUNNING:
            break
        time.sleep(0.05)
    return seen


def test_logs_tail(moto_aws: MotoAws, tmp_path: Path) -> None:
    backend = _backend(moto_aws, tmp_path)
    status = backend.launch(_request("chatty"))
    stream = status.details["log_stream"]
    assert stream
    assert "not available" in backend.logs("chatty-a1")
    logs = moto_aws.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": f"epoch {i}"} for i in range(5)]
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=events)
    assert backend.logs("chatty-a1", tail=2).splitlines() == ["epoch 3", "epoch 4"]


# --- probe -------------------------------------------------------------------------------------


def test_probe_healthy_then_queue_disabled(moto_aws: MotoAws, tmp_path: Path) -> None:
    moto_aws.create_job_queue("probe-queue")
    backend = _backend(moto_aws, tmp_path, job_queue="probe-queue", compute_environment="gpu-ce")
    probe = backend.probe()
    assert probe.health is Health.HEALTHY, probe
    assert probe.gpus is None
    assert probe.details["maxvCpus"] == 96
    assert probe.details["instanceTypes"] == ["p4d.24xlarge"]
    moto_aws.client("batch").update_job_queue(jobQueue="probe-queue", state="DISABLED")
    probe = backend.probe()
    assert probe.health is Health.UNHEALTHY
    assert "DISABLED" in probe.reason


def test_probe_compute_environment_disabled_is_degraded(moto_aws: MotoAws, tmp_path: Path) -> None:
    moto_aws.create_compute_environment("spare-ce")
    moto_aws.create_job_queue("spare-queue", compute_environment="spare-ce")
    moto_aws.client("batch").update_compute_environment(computeEnvironment="spare-ce", state="DISABLED")
    probe = _backend(moto_aws, tmp_path, job_queue="spare-queue", compute_environment="spare-ce").probe()
    assert probe.health is Health.DEGRADED, probe


def test_probe_missing_queue_or_environment(moto_aws: MotoAws, tmp_path: Path) -> None:
    assert _backend(moto_aws, tmp_path, job_queue="no-such-queue").probe().health is Health.UNHEALTHY
    probe = _backend(moto_aws, tmp_path, compute_environment="no-such-ce").probe()
    assert probe.health is Health.UNHEALTHY and "no-such-ce" in probe.reason


def test_dead_endpoint_is_unavailable_fast(moto_aws: MotoAws, tmp_path: Path) -> None:
    backend = _backend(moto_aws, tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.probe()
    with pytest.raises(BackendUnavailable):
        backend.launch(_request("nowhere"))
    assert time.monotonic() - started < 10


# --- credentials -------------------------------------------------------------------------------


def test_permission_denied_is_rejected(moto_aws: MotoAws, tmp_path: Path) -> None:
    iam = moto_aws.client("iam")
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    secrets = {"aws-key-id": key["AccessKeyId"], "aws-key-secret": key["SecretAccessKey"]}
    credentials = {"access_key_id_secret": "aws-key-id", "secret_access_key_secret": "aws-key-secret"}
    backend = _backend(moto_aws, tmp_path, credentials=credentials)
    backend.secret_resolver = secrets.__getitem__  # what the control plane will do
    with moto_aws.iam_enforced():
        with pytest.raises(JobRejected, match="permission denied"):
            backend.launch(_request("forbidden"))
        probe = backend.probe()
    assert probe.health is Health.UNHEALTHY and "not authorized" in probe.reason
    assert key["SecretAccessKey"] not in probe.reason


def test_unknown_access_key_is_rejected(
    moto_aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_SECRET_BOGUS_ID", "AKIAIOSFODNN7BOGUS00")
    monkeypatch.setenv("FABRIC_SECRET_BOGUS_KEY", "not-a-real-secret")
    credentials = {"access_key_id_secret": "bogus-id", "secret_access_key_secret": "bogus.key"}
    backend = _backend(moto_aws, tmp_path, credentials=credentials)
    with moto_aws.iam_enforced(), pytest.raises(JobRejected):
        backend.launch(_request("impostor"))


def test_missing_secret_reference_is_config_error(moto_aws: MotoAws, tmp_path: Path) -> None:
    credentials = {"access_key_id_secret": "absent-id", "secret_access_key_secret": "absent-key"}
    with pytest.raises(BackendConfigError, match="FABRIC_SECRET_ABSENT_ID"):
        _backend(moto_aws, tmp_path, credentials=credentials).probe()


def test_assumed_role(moto_aws: MotoAws, tmp_path: Path) -> None:
    role = "arn:aws:iam::123456789012:role/fabric-pool"
    backend = _backend(moto_aws, tmp_path, credentials={"role_arn": role, "external_id": "xyz"})
    assert backend.probe().health is Health.HEALTHY


def test_assumed_role_credentials_are_the_ones_used(
    moto_aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default chain holds a user who may only assume the role; only the role may use Batch.
    iam = moto_aws.client("iam")
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    created = iam.create_role(RoleName="fabric-batch-user", AssumeRolePolicyDocument=json.dumps(trust))
    role = created["Role"]["Arn"]
    iam.put_role_policy(RoleName="fabric-batch-user", PolicyName="all", PolicyDocument=json.dumps(allow))
    iam.create_user(UserName="assumer")
    only_sts = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
    iam.put_user_policy(UserName="assumer", PolicyName="sts", PolicyDocument=json.dumps(only_sts))
    key = iam.create_access_key(UserName="assumer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.delenv("AWS_SECURITY_TOKEN")
    with moto_aws.iam_enforced():
        direct = _backend(moto_aws, tmp_path).probe()
        assumed = _backend(moto_aws, tmp_path, credentials={"role_arn": role}).probe()
    assert direct.health is Health.UNHEALTHY and "not authorized" in direct.reason
    assert assumed.health is Health.HEALTHY, assumed


def test_profile(moto_aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[profile gpu]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert _backend(moto_aws, tmp_path, credentials={"profile": "gpu"}).probe().health is Health.HEALTHY
    with pytest.raises(BackendConfigError):
        _backend(moto_aws, tmp_path, credentials={"profile": "missing"}).probe()


# --- pure helpers --------------------------------------------------------------------------------


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        AwsBatchConfig.model_validate({"job_queue": "q", "credentials": {"profile": "a", "role_arn": "r"}})
    with pytest.raises(ValueError):
        AwsBatchConfig.model_validate({"job_queue": "q", "credentials": {"access_key_id_secret": "a"}})
    with pytest.raises(ValueError):
        AwsBatchConfig.model_validate({"job_queue": "q", "unknown": 1})
    assert AwsBatchConfig.model_validate({"job_queue": "q"}).log_group == "/aws/batch/job"
    pool = PoolSpec.model_validate(
        {"name": "aws-local", "location": "cloud", "backend": "aws-batch", "aws": {"job_queue": "q"}}
    )
    with pytest.raises(BackendConfigError, match="region"):
        AwsBatchBackend(pool, Path("."))


def test_job_names_follow_aws_rules() -> None:
    assert batch_job_name("train-resnet-a3") == "train-resnet-a3"
    assert batch_job_name("weird.id/with:chars") == "weird-id-with-chars"
    long_a, long_b = "x" * 200 + "-a1", "x" * 200 + "-a2"
    assert len(batch_job_name(long_a)) == 128
    assert batch_job_name(long_a) != batch_job_name(long_b)
    assert batch_job_name("-leading")[0].isalnum()


def test_state_mapping() -> None:
    now = datetime.now(UTC)
    assert map_job_state("SUBMITTED", "", now)[0] is JobState.PENDING
    assert map_job_state("RUNNABLE", "", now) == (JobState.PENDING, "RUNNABLE")
    state, message = map_job_state("RUNNABLE", "", now - timedelta(minutes=30))
    assert state is JobState.PENDING and "waiting for capacity" in message
    assert map_job_state("STARTING", "", now)[0] is JobState.PENDING
    assert map_job_state("RUNNING", "", now)[0] is JobState.RUNNING
    assert map_job_state("SUCCEEDED", "", now)[0] is JobState.SUCCEEDED
    assert map_job_state("FAILED", "Essential container in task exited", now)[0] is JobState.FAILED
    assert map_job_state("FAILED", CANCEL_REASON, now)[0] is JobState.CANCELLED


def test_logs_console_url_encoding() -> None:
    url = logs_console_url("eu-west-1", "/aws/batch/job", "def/default/abc")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Faws$252Fbatch$252Fjob/log-events/def$252Fdefault$252Fabc"
    )


def test_env_secret_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_SECRET_AWS_PROD_KEY", "v")
    assert env_secret_resolver("aws-prod-key") == "v"
    with pytest.raises(BackendConfigError, match="reserved"):
        env_secret_resolver("key")
