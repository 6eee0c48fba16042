"""A real moto HTTP server for AWS tests, with Batch in its Docker-free ("simple") mode.

Why a server and not `mock_aws`: the back end must be exercised through boto3's real HTTP stack
(endpoint, timeouts, retries, error bodies). moto's Batch normally runs jobs in Docker; there is no
Docker engine here, so the server is switched to `batch_simple` through its `/moto-api/config`
endpoint (`{"batch": {"use_docker": false}}`): submitted jobs then finish at once, SUCCEEDED, or
FAILED when the environment variable MOTO_SIMPLE_BATCH_FAIL_AFTER is set (to N: the submit
request sleeps N seconds before failing the job, a window in which the job is RUNNING).

moto keeps its state per process, not per server: `start_moto` resets it, and tests should use
their own queue and job names.

Reuse from another test module::

    from tests.fakes.aws import moto_aws  # noqa: F401  (the module-scoped fixture)

    def test_something(moto_aws: MotoAws) -> None:
        pool = moto_aws.pool_spec("aws-use1", gpus={"A100": 8})
        ...
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from inferofabric.models.pool import PoolSpec

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def free_port() -> int:
    """A TCP port nothing listens on right now (also used as a 'dead endpoint')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoAws:
    """A running moto server plus the Batch resources every AWS test needs."""

    endpoint_url: str
    region: str = REGION
    service_role_arn: str = ""
    job_queue: str = "gpu-queue"
    compute_environment: str = "gpu-ce"
    created_queues: list[str] = field(default_factory=list)

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client against the fake, with the dummy credentials unless given others."""
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint_url, **kwargs)

    def moto_api(
        self, path: str, body: bytes, content_type: str = "application/json", expect_json: bool = True
    ) -> Any:
        """POST to one of moto's own control endpoints (`/moto-api/...`)."""
        request = urllib.request.Request(
            self.endpoint_url + path, data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            data = answer.read()
        return json.loads(data) if expect_json and data else None

    def create_compute_environment(self, name: str, managed: bool = False) -> str:
        """An ENABLED compute environment; MANAGED ones get a VPC subnet and GPU instance types."""
        kwargs: dict[str, Any] = {
            "computeEnvironmentName": name,
            "type": "MANAGED" if managed else "UNMANAGED",
            "state": "ENABLED",
            "serviceRole": self.service_role_arn,
        }
        if managed:
            kwargs["computeResources"] = self._managed_resources()
        return str(self.client("batch").create_compute_environment(**kwargs)["computeEnvironmentArn"])

    def _managed_resources(self) -> dict[str, Any]:
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=f"sg-{vpc}", Description="batch", VpcId=vpc)["GroupId"]
        iam = self.client("iam")
        profile = iam.create_instance_profile(InstanceProfileName=f"batch-{vpc}")["InstanceProfile"]["Arn"]
        return {
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 96,
            "desiredvCpus": 0,
            "instanceTypes": ["p4d.24xlarge"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        }

    def create_job_queue(self, name: str, compute_environment: str | None = None) -> str:
        """An ENABLED queue on the given (default: the shared) compute environment."""
        order = [{"order": 1, "computeEnvironment": compute_environment or self.compute_environment}]
        answer = self.client("batch").create_job_queue(
            jobQueueName=name, state="ENABLED", priority=1, computeEnvironmentOrder=order
        )
        self.created_queues.append(name)
        return str(answer["jobQueueArn"])

    def pool_spec(self, name: str = "aws-use1", job_queue: str | None = None, **aws: Any) -> PoolSpec:
        """A PoolSpec for an aws-batch pool pointing at this fake (extra `aws:` keys via kwargs)."""
        aws_doc = {"job_queue": job_queue or self.job_queue, "endpoint_url": self.endpoint_url, **aws}
        return PoolSpec.model_validate({
            "name": name, "location": "cloud", "backend": "aws-batch", "region": self.region,
            "gpus": {"A100": 64}, "price_per_gpu_hour": {"A100": 4.10}, "aws": aws_doc,
        })

    def moto_config(self) -> dict[str, Any]:
        """moto's current service settings (`GET /moto-api/config`)."""
        with urllib.request.urlopen(self.endpoint_url + "/moto-api/config", timeout=10) as answer:
            return dict(json.loads(answer.read()))

    @contextmanager
    def batch_job_progression(self, transition: dict[str, Any]) -> Iterator[None]:
        """How moto moves jobs through SUBMITTED..RUNNING, e.g. `{"progression": "time", "seconds": 0.2}`.

        moto's default ("manual", advanced only by its Docker runner) leaves simple-mode jobs
        SUBMITTED until they finish; the other progressions make the early states observable.
        """
        body = {"model_name": "batch::job", "transition": transition}
        self.moto_api("/moto-api/state-manager/set-transition", json.dumps(body).encode(), expect_json=False)
        try:
            yield
        finally:
            unset = json.dumps({"model_name": "batch::job"}).encode()
            self.moto_api("/moto-api/state-manager/unset-transition", unset, expect_json=False)

    @contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """Make moto check signatures and IAM policies (it accepts anything by default)."""
        answer = self.moto_api("/moto-api/reset-auth", b"0", "text/plain")
        previous = answer["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
        try:
            yield
        finally:
            self.moto_api("/moto-api/reset-auth", str(previous).encode(), "text/plain")


@contextmanager
def dummy_aws_environment() -> Iterator[None]:
    """Dummy credentials and no shared config files, so nothing can reach a real account."""
    with tempfile.TemporaryDirectory() as empty, pytest.MonkeyPatch.context() as patch:
        for key, value in DUMMY_ENV.items():
            patch.setenv(key, value)
        patch.setenv("AWS_CONFIG_FILE", os.path.join(empty, "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(empty, "credentials"))
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", raising=False)
        yield


@contextmanager
def start_moto(managed: bool = False) -> Iterator[MotoAws]:
    """Start moto on 127.0.0.1 (a free port), Batch without Docker, an IAM role, a compute environment
    (`gpu-ce`) and a job queue (`gpu-queue`); restore moto's Batch setting on exit.
    """
    with dummy_aws_environment():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        env = MotoAws(endpoint_url=f"http://{host}:{port}")
        env.moto_api("/moto-api/reset", b"")
        previous = env.moto_config()
        env.moto_api("/moto-api/config", json.dumps({"batch": {"use_docker": False}}).encode())
        try:
            _create_batch_resources(env, managed)
            yield env
        finally:
            env.moto_api("/moto-api/config", json.dumps({"batch": previous.get("batch", {})}).encode())
            server.stop()


def _create_batch_resources(env: MotoAws, managed: bool) -> None:
    role = env.client("iam").create_role(
        RoleName="inferofabric-batch-service",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    env.service_role_arn = role["Role"]["Arn"]
    env.create_compute_environment(env.compute_environment, managed=managed)
    env.create_job_queue(env.job_queue)


@pytest.fixture(scope="module")
def moto_aws() -> Iterator[MotoAws]:
    """Module-scoped moto server with a MANAGED GPU compute environment `gpu-ce` and queue `gpu-queue`."""
    with start_moto(managed=True) as env:
        yield env
