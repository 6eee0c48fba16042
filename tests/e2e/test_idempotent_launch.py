"""A retried launch never starts a second job, on any back end.

Temporal retries an activity whose worker died or whose answer was lost; the retry runs the same
`launch_job` with the same input. Here the real activity runs twice through Temporal's
ActivityEnvironment (the second time as attempt 2, the way a retry arrives) against each back end's
fake (moto for AWS), and the back end must hold exactly one job afterwards.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from inferofabric.activities.jobs import JobActivities
from inferofabric.backends.azure_batch import azure_job_id, secret_env_var
from inferofabric.backends.base import JobStatus, job_id_for
from inferofabric.backends.kubernetes_manifests import k8s_name
from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import PoolSpec, WorkloadSpec
from inferofabric.models.messages import LaunchInput

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

# On a local pool the command really runs: every start appends a line to launches.log in the job dir.
SPEC = WorkloadSpec.model_validate({
    "team": "vision",
    "image": "ghcr.io/acme/resnet:1.4",
    "command": ["sh", "-c", "echo started >> launches.log; sleep 0.3"],
    "resources": {"gpu": {"type": "A100", "count": 1}},
    "env": {"EPOCHS": "3"},
    "annotations": {"sim.inferofabric.io/duration": "600s"},
})
NAMESPACE = "gpu-jobs"

# A back end under test: its pool, and how many jobs it holds for a fabric job id (after the launches).
Target = tuple[PoolSpec, Callable[[str], int]]


@pytest.fixture
def kubernetes(tmp_path: Path) -> Iterator[Target]:
    api = FakeKubeApi().start()
    api.add_node("gpu-node-1", gpus=8)
    pool = PoolSpec.model_validate({
        "name": "dc1-k8s", "location": "on-prem", "backend": "kubernetes", "gpus": {"A100": 8},
        "kubernetes": {"api_server": api.url, "namespace": NAMESPACE, "request_timeout": 2},
    })

    def count(job_id: str) -> int:
        pods = api.job_pods(k8s_name(job_id), NAMESPACE)
        assert len(pods) == len([j for (ns, _), j in api.jobs.items() if ns == NAMESPACE])
        return len(api.jobs)

    yield pool, count
    api.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoAws]:
    with start_moto(managed=True) as env:
        yield env


@pytest.fixture
def aws_batch(moto: MotoAws) -> Target:
    queue = f"retry-{uuid.uuid4().hex[:6]}"
    moto.create_job_queue(queue)

    def count(job_id: str) -> int:
        return len(moto.client("batch").list_jobs(jobQueue=queue)["jobSummaryList"])

    return moto.pool_spec("aws-use1", job_queue=queue), count


@pytest.fixture
def gcp_batch() -> Iterator[Target]:
    api = FakeGcpBatch().start()
    yield PoolSpec.model_validate(gcp_pool_document(api)), lambda job_id: len(api.jobs)
    api.stop()


@pytest.fixture
def azure_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.setenv(secret_env_var(TEST_KEY_SECRET), TEST_KEY)
    with FakeAzureBatch() as api:
        api.add_pool("gpu-pool")

        def count(job_id: str) -> int:
            assert list(api.tasks[azure_job_id(job_id)]) == ["main"]
            return len(api.jobs)

        yield PoolSpec.model_validate(azure_pool_document(api)), count


@pytest.fixture
def simulated(tmp_path: Path) -> Target:
    pool = PoolSpec.model_validate({"name": "sim-a", "location": "on-prem", "backend": "simulated",
                                    "gpus": {"A100": 8}})
    return pool, lambda job_id: len(SimulatedBackend(pool, tmp_path).ledger())


@pytest.fixture
def local(tmp_path: Path) -> Target:
    pool = PoolSpec.model_validate({"name": "this-host", "location": "on-prem", "backend": "local",
                                    "gpus": {"A100": 1}, "local": {"discover_gpus": False}})

    def count(job_id: str) -> int:
        job_dir = tmp_path / "local" / pool.name / "jobs" / job_id
        for _ in range(100):  # the command runs 0.3 s: let it end, so every start it made is logged
            if (job_dir / "exit_code").exists():
                break
            time.sleep(0.05)
        assert (job_dir / "exit_code").read_text().strip() == "0"
        return len((job_dir / "launches.log").read_text().splitlines())

    return pool, count


BACKENDS = ["kubernetes", "aws_batch", "gcp_batch", "azure_batch", "simulated", "local"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retried_launch_starts_one_job(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_HOME", str(tmp_path))
    pool, jobs_on_backend = request.getfixturevalue(backend)
    workload = f"retry-{uuid.uuid4().hex[:8]}"
    launch = LaunchInput(pool=pool, workload_id=workload, attempt=1, job_id=job_id_for(workload, 1),
                         spec=SPEC.model_copy(update={"name": workload}), gpu_type="A100", gpus=1)

    env = ActivityEnvironment()
    first: JobStatus = await env.run(JobActivities(tmp_path).launch_job, launch)
    env.info = dataclasses.replace(env.info, attempt=2)  # Temporal's retry: same input, next attempt
    retried: JobStatus = await env.run(JobActivities(tmp_path).launch_job, launch)

    assert first.job_id == retried.job_id == launch.job_id
    assert first.details.get("aws_job_id") == retried.details.get("aws_job_id")
    assert jobs_on_backend(launch.job_id) == 1
