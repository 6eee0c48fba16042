"""Every real back end, end to end through the SDK, on the real Temporal dev server.

The same workload spec goes to a kubernetes, aws-batch, gcp-batch, azure-batch and local pool. For
each one the fabric must place it there, start one job on the back end (its fake, or moto for AWS,
really holds it), follow it to `succeeded` when the back end finishes it, show its logs, and on
`cancel` remove the job from the back end and release its GPUs. The burst scenario runs with an
aws-batch pool (moto) as its cloud target. Kubernetes pools are served by an
agent on task queue `pool.<name>`: the tests run one beside the control plane's worker, and check
that without it the workload waits in `launching` and starts as soon as an agent comes up.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud import batch_v1
from moto.batch.models import Job as MotoJob
from moto.batch.models import batch_backends
from moto.batch_simple.models import BatchSimpleBackend
from moto.core import DEFAULT_ACCOUNT_ID
from temporalio.client import Client

from inferofabric.agent import run_agent
from inferofabric.backends.aws_batch import CANCEL_REASON as AWS_CANCEL_REASON
from inferofabric.backends.azure_batch import azure_job_id, secret_env_var
from inferofabric.backends.base import job_id_for
from inferofabric.backends.kubernetes_manifests import k8s_name
from inferofabric.models import WorkloadSpec, WorkloadState, WorkloadStatus
from inferofabric.models.messages import MonitorSettings
from inferofabric.sdk.errors import FabricError
from inferofabric.worker.main import build_agent_worker

try:  # `tests` is a package only when tests/__init__.py exists; otherwise pytest puts tests/ on sys.path
    from tests.fakes.aws import MotoAws, start_moto
    from tests.fakes.azure_batch_api import TEST_KEY, TEST_KEY_SECRET, FakeAzureBatch, azure_pool_document
    from tests.fakes.gcp_batch_api import FakeGcpBatch, gcp_pool_document
    from tests.fakes.k8s_api import FakeKubeApi
except ModuleNotFoundError:
    from fakes.aws import MotoAws, start_moto  # type: ignore[no-redef]
    from fakes.azure_batch_api import (  # type: ignore[no-redef]
        TEST_KEY,
        TEST_KEY_SECRET,
        FakeAzureBatch,
        azure_pool_document,
    )
    from fakes.gcp_batch_api import FakeGcpBatch, gcp_pool_document  # type: ignore[no-redef]
    from fakes.k8s_api import FakeKubeApi  # type: ignore[no-redef]

# One workload, whatever pool it lands on. On a local pool the command really runs (in its job
# directory) until the test creates the file `release`; elsewhere the fake decides when it ends.
SPEC = WorkloadSpec.model_validate({
    "team": "vision",
    "project": "e2e",
    "image": "ghcr.io/acme/resnet:1.4",
    "command": ["sh", "-c", 'echo "$GREETING"; while [ ! -e release ]; do sleep 0.1; done; echo "$DONE"'],
    "resources": {"gpu": {"type": "A100", "count": 1}, "cpu": 2, "memory": "8Gi"},
    "env": {"GREETING": "hello-from-the-fabric", "DONE": "epoch 1 done"},
})
LOG_LINE = "epoch 1 done"
K8S_NAMESPACE = "gpu-jobs"
GCP_STATE = batch_v1.JobStatus.State


def unique(prefix: str) -> str:
    """Pool names are shared by this module's tests (monitor workflow ids, agent task queues)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def wait_for(handle: Any, state: WorkloadState, timeout: float = 20.0) -> WorkloadStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status: WorkloadStatus | None = None
    while loop.time() < deadline:
        try:
            status = await handle.status()
        except FabricError:  # the workflow has not run its first task yet
            status = None
        if status is not None and status.state == state:
            return status
        if status is not None and status.state.terminal:
            break
        await asyncio.sleep(0.1)
    detail = f"{status.state}: {status.message}" if status else "no status"
    raise AssertionError(f"{handle.id} did not reach {state.value} ({detail})")


async def wait_started(handle: Any, harness: Any, timeout: float = 20.0) -> WorkloadStatus:
    """Wait until the back end holds the job, let the back end start it, then until the fabric shows
    it running (a job still pending on its pool is `launching`, not `running`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            status = await handle.status()
            if status.job_id:
                harness.launched(status.job_id)
                break
        except Exception:  # not launched yet (the fake has no such job / the workflow has not started)
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)
    harness.start(status.job_id)
    return await wait_for(handle, WorkloadState.RUNNING, timeout)


async def scheduled_queues(fabric: Any, workflow_id: str, activity: str) -> set[str]:
    """The task queues the workflow sent `activity` to, from its recorded history."""
    history = await fabric.temporal.get_workflow_handle(workflow_id).fetch_history()
    return {e.activity_task_scheduled_event_attributes.task_queue.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == activity}


@pytest.fixture
def fabric_temporal(own_namespace: Client) -> Client:
    """This module's workloads live in a namespace of their own (see conftest.own_namespace)."""
    return own_namespace


# -- what differs per back end: how to look into it and how to make its job end ---------------------


class Harness:
    backend: str
    location = "cloud"
    agent = False  # activities on the pool's own task queue (served by an agent)

    def __init__(self, pool: dict[str, Any]) -> None:
        self.pool = pool
        self.name = pool["name"]

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        """The image (None where the back end runs no image) and plain env of the job it holds."""
        raise NotImplementedError

    def start(self, job_id: str) -> None:
        """Make the job running where the back end would still be scheduling it."""

    def finish(self, job_id: str) -> None:
        """The job ends successfully, having printed LOG_LINE."""
        raise NotImplementedError

    def check_logs(self, text: str, job_id: str) -> None:
        assert LOG_LINE in text, text

    def assert_removed(self, job_id: str) -> None:
        raise NotImplementedError

    def lose(self, job_id: str) -> None:
        """The back end takes the job away: node loss, a spot reclaim, an eviction."""
        raise NotImplementedError

    def crash(self, job_id: str) -> None:
        """The job's own process exits with code 1."""
        raise NotImplementedError


class KubernetesHarness(Harness):
    backend = "kubernetes"
    location = "on-prem"
    agent = True

    def __init__(self, api: FakeKubeApi, name: str) -> None:
        super().__init__({
            "name": name, "location": "on-prem", "backend": "kubernetes", "region": "dc1",
            "gpus": {"A100": 16}, "price_per_gpu_hour": {"A100": 1.1},
            "kubernetes": {"api_server": api.url, "namespace": K8S_NAMESPACE, "request_timeout": 2},
        })
        self.api = api

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        job = self.api.job(k8s_name(job_id), K8S_NAMESPACE)
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert len(self.api.job_pods(k8s_name(job_id), K8S_NAMESPACE)) == 1
        return container["image"], {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}

    def finish(self, job_id: str) -> None:
        self.api.succeed(k8s_name(job_id), K8S_NAMESPACE, log=f"hello\n{LOG_LINE}\n")

    def lose(self, job_id: str) -> None:
        self.api.evict(k8s_name(job_id), K8S_NAMESPACE)

    def crash(self, job_id: str) -> None:
        self.api.fail(k8s_name(job_id), K8S_NAMESPACE, exit_code=1)

    def assert_removed(self, job_id: str) -> None:
        name = k8s_name(job_id)
        assert (K8S_NAMESPACE, name) not in self.api.jobs
        assert self.api.job_pods(name, K8S_NAMESPACE) == []


class AwsHarness(Harness):
    backend = "aws-batch"

    def __init__(self, moto: MotoAws, name: str, queue: str) -> None:
        super().__init__(moto.pool_spec(name, job_queue=queue).model_dump(mode="json", exclude_none=True))
        self.moto = moto
        self.queue = queue

    def jobs(self, job_id: str) -> list[dict[str, Any]]:
        batch = self.moto.client("batch")
        summaries = batch.list_jobs(jobQueue=self.queue)["jobSummaryList"]
        ids = [s["jobId"] for s in summaries if s["jobName"] == job_id]
        return list(batch.describe_jobs(jobs=ids)["jobs"]) if ids else []

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        [job] = self.jobs(job_id)
        batch = self.moto.client("batch")
        [definition] = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
        properties = definition["containerProperties"]
        assert {"type": "GPU", "value": "1"} in properties["resourceRequirements"]
        env = {e["name"]: e["value"] for e in job["container"].get("environment", [])}
        return properties["image"], env

    def finish(self, job_id: str) -> None:
        [job] = self.jobs(job_id)
        stream = job["container"]["logStreamName"]
        logs = self.moto.client("logs")
        if not logs.describe_log_groups(logGroupNamePrefix="/aws/batch/job")["logGroups"]:
            logs.create_log_group(logGroupName="/aws/batch/job")
        logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
        now = int(datetime.now().timestamp() * 1000)
        logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream,
                            logEvents=[{"timestamp": now, "message": "hello"},
                                       {"timestamp": now + 1, "message": LOG_LINE}])
        moto_job(self.moto, job["jobId"])._mark_stopped(success=True)

    def lose(self, job_id: str) -> None:
        [job] = self.jobs(job_id)
        stopped = moto_job(self.moto, job["jobId"])
        stopped.latest_attempt["statusReason"] = "Host EC2 (instance i-0a1b2c3d) terminated."  # a Spot interruption
        stopped._mark_stopped(success=False)

    def crash(self, job_id: str) -> None:
        [job] = self.jobs(job_id)
        stopped = moto_job(self.moto, job["jobId"])
        stopped.latest_attempt["container"]["exitCode"] = 1
        stopped.latest_attempt["statusReason"] = "Essential container in task exited"
        stopped._mark_stopped(success=False)

    def assert_removed(self, job_id: str) -> None:
        [job] = self.jobs(job_id)
        assert job["status"] == "FAILED" and job["statusReason"] == AWS_CANCEL_REASON, job


class GcpHarness(Harness):
    backend = "gcp-batch"

    def __init__(self, api: FakeGcpBatch, name: str) -> None:
        super().__init__(gcp_pool_document(api, name=name))
        self.api = api

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        task = self.api.job(job_id).task_groups[0].task_spec
        [instance] = self.api.job(job_id).allocation_policy.instances
        assert [a.count for a in instance.policy.accelerators] == [1]
        return task.runnables[0].container.image_uri, dict(task.environment.variables)

    def start(self, job_id: str) -> None:
        self.api.advance(job_id, GCP_STATE.SCHEDULED)
        self.api.advance(job_id, GCP_STATE.RUNNING)

    def finish(self, job_id: str) -> None:
        self.api.advance(job_id, GCP_STATE.SUCCEEDED)

    def lose(self, job_id: str) -> None:
        self.api.advance(job_id, GCP_STATE.FAILED, "Task failed with exit code 50001 (the VM was preempted).")

    def crash(self, job_id: str) -> None:
        self.api.advance(job_id, GCP_STATE.FAILED, "Task failed with exit code 1.")

    def check_logs(self, text: str, job_id: str) -> None:
        # Batch writes output to Cloud Logging; the fabric hands out the console link for this job.
        uid = self.api.job(job_id).uid
        assert "https://console.cloud.google.com/logs/query" in text and uid in text, text

    def assert_removed(self, job_id: str) -> None:
        assert self.api.job(job_id).status.state == GCP_STATE.DELETION_IN_PROGRESS
        self.api.finish_deletions()
        with pytest.raises(KeyError):
            self.api.job(job_id)


class AzureHarness(Harness):
    backend = "azure-batch"

    def __init__(self, api: FakeAzureBatch, name: str) -> None:
        super().__init__(azure_pool_document(api, name=name))
        self.api = api

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        task = self.api.tasks[azure_job_id(job_id)]["main"]
        assert task["containerSettings"]["containerRunOptions"] == "--gpus all"
        env = {e["name"]: e["value"] for e in task.get("environmentSettings", [])}
        return task["containerSettings"]["imageName"], env

    def start(self, job_id: str) -> None:
        self.api.set_task_running(azure_job_id(job_id))

    def finish(self, job_id: str) -> None:
        self.api.put_file(azure_job_id(job_id), "stdout.txt", f"hello\n{LOG_LINE}\n")
        self.api.complete_task(azure_job_id(job_id), 0)

    def lose(self, job_id: str) -> None:
        self.api.fail_node(azure_job_id(job_id))

    def crash(self, job_id: str) -> None:
        self.api.complete_task(azure_job_id(job_id), 1)

    def assert_removed(self, job_id: str) -> None:
        assert azure_job_id(job_id) not in self.api.jobs


class LocalHarness(Harness):
    backend = "local"
    location = "on-prem"

    def __init__(self, home: Path, name: str) -> None:
        super().__init__({"name": name, "location": "on-prem", "backend": "local", "gpus": {"A100": 2},
                          "local": {"discover_gpus": False}})
        self.home = home

    def job_dir(self, job_id: str) -> Path:
        return self.home / "local" / self.name / "jobs" / job_id

    def pid(self, job_id: str) -> int:
        return int(json.loads((self.job_dir(job_id) / "process.json").read_text())["pid"])

    def launched(self, job_id: str) -> tuple[str | None, dict[str, str]]:
        # The process really runs: read the environment it was started with.
        raw = Path(f"/proc/{self.pid(job_id)}/environ").read_bytes()
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        return None, env

    def finish(self, job_id: str) -> None:
        (self.job_dir(job_id) / "release").touch()

    def check_logs(self, text: str, job_id: str) -> None:
        assert text.splitlines() == ["hello-from-the-fabric", LOG_LINE], text

    def assert_removed(self, job_id: str) -> None:
        assert (self.job_dir(job_id) / "cancelled").exists()
        assert not _alive(self.pid(job_id))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# -- the scenario every back end goes through ----------------------------------------------------------


async def exercise(fabric: Any, harness: Harness) -> None:
    client = fabric.client
    registered = await client.register_pool(harness.pool)
    assert (registered.backend, registered.simulated) == (harness.backend, False)
    await client.set_policy({"placement": {"default": [harness.name]}})
    expected_queue = f"pool.{harness.name}" if harness.agent else fabric.task_queue

    # 1. It runs there, as one job holding the spec, and succeeds when the back end says so.
    handle = await client.submit(SPEC)
    status = await wait_started(handle, harness)
    assert (status.pool, status.backend, status.location) == (harness.name, harness.backend, harness.location)
    assert (status.gpu_type, status.gpus) == ("A100", 1)
    assert status.job_id == job_id_for(handle.id, 1)
    image, env = harness.launched(status.job_id)
    assert image in (SPEC.image, None)
    assert env["GREETING"] == "hello-from-the-fabric"
    assert await scheduled_queues(fabric, handle.id, "launch_job") == {expected_queue}
    listed = {w.id: w for w in await client.list(pool=harness.name)}
    assert listed[handle.id].backend == harness.backend

    harness.finish(status.job_id)
    await wait_for(handle, WorkloadState.SUCCEEDED)
    # Followed by the pool's watcher, on the pool's monitor queue (the agent's, for Kubernetes),
    # which told the workload its job ended: no activity of the workload's watched it.
    watcher = f"pool-watcher-{fabric.task_queue}-{harness.name}"
    assert await scheduled_queues(fabric, watcher, "watch_pool") == {f"{expected_queue}.monitor"}
    assert await scheduled_queues(fabric, handle.id, "watch_job") == set()
    # (`handle.logs()` is checked for every back end in test_logs_of_every_backend.)

    # 2. A cancelled workload is removed from the back end and gives its GPU back.
    second = await client.submit(SPEC)
    running = await wait_started(second, harness)
    harness.launched(running.job_id)
    cancelled = await asyncio.wait_for(second.cancel(), 30)
    assert cancelled.state == WorkloadState.CANCELLED
    assert await scheduled_queues(fabric, second.id, "cancel_job") == {expected_queue}
    harness.assert_removed(running.job_id)
    [pool] = [p for p in await client.pools() if p.name == harness.name]
    assert pool.used.get("A100", 0) == 0


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    api.add_node("gpu-node-1", gpus=8)  # NVIDIA-A100-SXM4-80GB: the agent's probe finds 8 x A100
    yield api
    api.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoAws]:
    with start_moto(managed=True) as env:
        yield env


@pytest.fixture
def moto_jobs_keep_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's Docker-free Batch ends every job as it is submitted. Make a submitted job RUNNING until the
    test stops it (`moto_job(...)._mark_stopped`), and make TerminateJob stop a running job (FAILED
    with the given reason), as AWS Batch does."""

    def start_only(self: BatchSimpleBackend, include_start_attempt: bool, job: MotoJob) -> None:
        self.backend._jobs[job.job_id] = job
        job.job_started_at = datetime.now()
        job.log_stream_name = job._stream_name
        if include_start_attempt:
            job._start_attempt()
        job.status = "RUNNING"

    terminate = MotoJob.terminate

    def terminate_and_stop(self: MotoJob, reason: str) -> None:
        terminate(self, reason)
        self._mark_stopped(success=False)

    monkeypatch.setattr(BatchSimpleBackend, "_mark_job_as_finished", start_only)
    monkeypatch.setattr(MotoJob, "terminate", terminate_and_stop)


def moto_job(moto: MotoAws, aws_job_id: str) -> MotoJob:
    return batch_backends[DEFAULT_ACCOUNT_ID][moto.region].get_job_by_id(aws_job_id)


@pytest.fixture
def gcp_api() -> Iterator[FakeGcpBatch]:
    api = FakeGcpBatch().start()
    yield api
    api.stop()


@pytest.fixture
def azure_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureBatch]:
    monkeypatch.setenv(secret_env_var(TEST_KEY_SECRET), TEST_KEY)  # the account key, by reference
    with FakeAzureBatch() as api:
        api.add_pool("gpu-pool")
        yield api


@pytest.fixture
async def agent(fabric: Any) -> AsyncIterator[Any]:
    """Start an agent for a pool name: `await agent(name)`; stopped after the test."""
    workers = []

    async def start(pool: str) -> None:
        worker = build_agent_worker(fabric.temporal, pool, fabric.home)
        await worker.__aenter__()
        workers.append(worker)

    yield start
    for worker in reversed(workers):
        await worker.__aexit__(None, None, None)


async def exercise_failure_classes(fabric: Any, harness: Harness) -> None:
    """The pool taking a job away moves the workload without using an attempt (max_attempts=1: a
    charged loss would end it); the job's own exit code 1 fails it."""
    client = fabric.client
    await client.register_pool(harness.pool)
    await client.set_policy({"placement": {"default": [harness.name]}})
    lost = await client.submit(SPEC, max_attempts=1)
    status = await wait_started(lost, harness)
    harness.lose(status.job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (status := await lost.status()).history[0].outcome.startswith("moved: job"):
        assert loop.time() < deadline and status.state != WorkloadState.FAILED, status
        await asyncio.sleep(0.2)
    assert status.state != WorkloadState.FAILED and status.attempts <= 2
    await lost.cancel()

    crashed = await client.submit(SPEC)
    status = await wait_started(crashed, harness)
    harness.crash(status.job_id)
    final = await wait_for(crashed, WorkloadState.FAILED, timeout=30)
    assert final.attempts == 1 and final.history[0].outcome == "failed"


async def test_kubernetes_eviction_moves_and_exit_code_one_fails(fabric: Any, kube_api: FakeKubeApi,
                                                                agent: Any) -> None:
    harness = KubernetesHarness(kube_api, unique("k8s"))
    await agent(harness.name)
    await exercise_failure_classes(fabric, harness)


async def test_aws_spot_interruption_moves_and_exit_code_one_fails(fabric: Any, moto: MotoAws,
                                                                  moto_jobs_keep_running: None) -> None:
    queue = unique("e2e-queue")
    moto.create_job_queue(queue)
    await exercise_failure_classes(fabric, AwsHarness(moto, unique("aws-use1"), queue))


async def test_gcp_preemption_moves_and_exit_code_one_fails(fabric: Any, gcp_api: FakeGcpBatch) -> None:
    await exercise_failure_classes(fabric, GcpHarness(gcp_api, unique("gcp-usc1")))


async def test_azure_node_failure_moves_and_exit_code_one_fails(fabric: Any, azure_api: FakeAzureBatch) -> None:
    await exercise_failure_classes(fabric, AzureHarness(azure_api, unique("azure-eus")))


# -- one test per back end -----------------------------------------------------------------------------


async def test_kubernetes_through_its_agent(fabric: Any, kube_api: FakeKubeApi, agent: Any) -> None:
    harness = KubernetesHarness(kube_api, unique("k8s"))
    await agent(harness.name)
    await exercise(fabric, harness)


async def test_aws_batch(fabric: Any, moto: MotoAws, moto_jobs_keep_running: None) -> None:
    queue = unique("e2e-queue")
    moto.create_job_queue(queue)
    await exercise(fabric, AwsHarness(moto, unique("aws-use1"), queue))


async def test_gcp_batch(fabric: Any, gcp_api: FakeGcpBatch) -> None:
    await exercise(fabric, GcpHarness(gcp_api, unique("gcp-usc1")))


async def test_azure_batch(fabric: Any, azure_api: FakeAzureBatch) -> None:
    await exercise(fabric, AzureHarness(azure_api, unique("azure-eus")))


async def test_local(fabric: Any) -> None:
    await exercise(fabric, LocalHarness(fabric.home, unique("local")))


async def test_kubernetes_without_agent_waits_in_launching_then_starts(
    fabric: Any, kube_api: FakeKubeApi
) -> None:
    name = unique("k8s-noagent")
    harness = KubernetesHarness(kube_api, name)
    # A monitor that does not give up on the silent pool within the test: this is about the launch.
    await fabric.client.register_pool(harness.pool, monitor=MonitorSettings(unhealthy_after=1000))
    await fabric.client.set_policy({"placement": {"default": [name]}})
    handle = await fabric.client.submit(SPEC)
    waiting = await wait_for(handle, WorkloadState.LAUNCHING)
    await asyncio.sleep(2)
    waiting = await handle.status()
    assert waiting.state == WorkloadState.LAUNCHING and waiting.pool == name
    assert f"launching on {name}" in waiting.message
    assert kube_api.jobs == {}  # nothing reached the cluster, nothing crashed
    description = await fabric.temporal.get_workflow_handle(handle.id).describe()
    assert description.status is not None and description.status.name == "RUNNING"

    # The agent comes up (as `fabric agent --pool` would run it): the waiting launch goes through.
    stop = asyncio.Event()
    target = fabric.temporal.service_client.config.target_host
    namespace = fabric.temporal.namespace
    serving = asyncio.create_task(run_agent(name, target, namespace, stop, home=fabric.home))
    try:
        running = await wait_for(handle, WorkloadState.RUNNING)
        assert (K8S_NAMESPACE, k8s_name(running.job_id)) in kube_api.jobs
        cancelled = await asyncio.wait_for(handle.cancel(), 30)
        assert cancelled.state == WorkloadState.CANCELLED
        harness.assert_removed(running.job_id)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)



async def test_logs_of_every_backend(fabric: Any, kube_api: FakeKubeApi, moto: MotoAws,
                                     moto_jobs_keep_running: None, gcp_api: FakeGcpBatch,
                                     azure_api: FakeAzureBatch, agent: Any) -> None:
    """`handle.logs()` of a finished workload: its output (a console link for GCP, where Batch writes to
    Cloud Logging), whatever the back end."""
    queue = unique("logs-queue")
    moto.create_job_queue(queue)
    harnesses = [KubernetesHarness(kube_api, unique("k8s")), AwsHarness(moto, unique("aws-use1"), queue),
                 GcpHarness(gcp_api, unique("gcp-usc1")), AzureHarness(azure_api, unique("azure-eus")),
                 LocalHarness(fabric.home, unique("local"))]
    await agent(harnesses[0].name)
    finished = []
    for harness in harnesses:
        await fabric.client.register_pool(harness.pool)
        await fabric.client.set_policy({"placement": {"default": [harness.name]}})
        handle = await fabric.client.submit(SPEC)
        status = await wait_started(handle, harness)
        harness.finish(status.job_id)
        finished.append((harness, handle, status.job_id))
    for _, handle, _ in finished:
        await wait_for(handle, WorkloadState.SUCCEEDED)
    texts = await asyncio.wait_for(asyncio.gather(*(handle.logs() for _, handle, _ in finished)), 5)
    for (harness, _, job_id), text in zip(finished, texts, strict=True):
        harness.check_logs(text, job_id)


async def test_burst_to_aws_batch(fabric: Any, moto: MotoAws, moto_jobs_keep_running: None) -> None:
    """The burst scenario with a real back end as the cloud target: moto holds exactly the 3 burst jobs."""
    queue = unique("burst-queue")
    moto.create_job_queue(queue)
    on_prem, cloud = unique("onprem"), unique("aws-use1")
    client = fabric.client
    await client.register_pool({"name": on_prem, "location": "on-prem", "backend": "simulated",
                                "region": "dc1", "gpus": {"A100": 8}, "price_per_gpu_hour": {"A100": 1.2}})
    await client.register_pool(moto.pool_spec(cloud, job_queue=queue))
    await client.set_policy("""
placement:
  default: on-prem
  burst:
    when: on_prem_utilization > 0.85
    target: cloud
    regions: [us-east-1]
""")
    run = uuid.uuid4().hex[:6]
    placed = []
    for i in range(10):
        spec = SPEC.model_copy(update={"name": f"train-{i}-{run}",
                                       "annotations": {"sim.inferofabric.io/duration": "600s"}})
        placed.append(await wait_for(await client.submit(spec), WorkloadState.RUNNING))
    assert [s.pool for s in placed] == [on_prem] * 7 + [cloud] * 3
    assert [s.backend for s in placed[7:]] == ["aws-batch"] * 3
    assert all(s.region == "us-east-1" for s in placed[7:])
    assert (await client.get(f"train-7-{run}").explain()).decisions[-1].mode == "burst"

    jobs = moto.client("batch").list_jobs(jobQueue=queue)["jobSummaryList"]
    assert sorted(j["jobName"] for j in jobs) == [f"train-{i}-{run}-a1" for i in (7, 8, 9)]
    assert {j["status"] for j in jobs} == {"RUNNING"}



async def test_result_returns_the_final_status(fabric: Any) -> None:
    harness = LocalHarness(fabric.home, unique("local"))
    await fabric.client.register_pool(harness.pool)
    await fabric.client.set_policy({"placement": {"default": [harness.name]}})
    handle = await fabric.client.submit(SPEC)
    running = await wait_for(handle, WorkloadState.RUNNING)
    harness.finish(running.job_id)
    final = await asyncio.wait_for(handle.result(), 20)
    assert final.state == WorkloadState.SUCCEEDED and final.pool == harness.name
