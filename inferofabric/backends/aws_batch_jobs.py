"""What the AWS Batch back end sends to Batch for a JobRequest (pure: no API calls).

The names the fabric gives a job and its secrets, the tags that mark the fabric's jobs, the job
definition's container properties (shared by content: the definition's name is their hash) and the
submit_job request of one attempt. aws_batch.py makes the calls; keeping the requests here lets
them be read and tested without boto3 or a Batch endpoint, as kubernetes_manifests.py does for Jobs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from inferofabric.backends.aws_batch_config import DEFAULT_LOG_GROUP, AwsBatchConfig
from inferofabric.backends.base import JobRequest

CANCEL_REASON = "cancelled by inferofabric"
TAG_WORKLOAD = "inferofabric:workload"
TAG_ATTEMPT = "inferofabric:attempt"
TAG_TEAM = "inferofabric:team"
TAG_JOB = "inferofabric:job"
SECRET_PREFIX = "inferofabric"
MIN_ATTEMPT_SECONDS = 60  # AWS Batch refuses shorter attempt timeouts
JOB_NAME_MAX = 128
FABRIC_JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*-a\d+$")


def batch_job_name(job_id: str) -> str:
    """`job_id` made acceptable to AWS (letters, digits, `-`, `_`; at most 128; alphanumeric first).

    Fabric ids are DNS labels and pass unchanged; anything else is rewritten, with a hash suffix
    when it had to be cut, so two long ids never collide on one name.
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "-", job_id)
    if not name or not name[0].isalnum():
        name = "j" + name
    if len(name) > JOB_NAME_MAX:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
        name = f"{name[: JOB_NAME_MAX - 13]}-{digest}"
    return name


def secret_name(job_id: str, variable: str) -> str:
    return f"{SECRET_PREFIX}/{job_id}/{variable}"


def _memory_mib(memory_bytes: int) -> int:
    return max(4, math.ceil(memory_bytes / 2**20))


def _vcpus(cpu: float) -> int:
    # EC2 compute environments (the only ones with GPUs) take whole vCPUs.
    return max(1, math.ceil(cpu))


def container_properties(
    request: JobRequest, config: AwsBatchConfig, secret_arns: dict[str, str]
) -> dict[str, Any]:
    """The job definition's container: everything that does not change between attempts of one image."""
    spec = request.spec
    requirements = [
        {"type": "VCPU", "value": str(_vcpus(spec.resources.cpu))},
        {"type": "MEMORY", "value": str(_memory_mib(spec.resources.memory_bytes))},
    ]
    gpus = request.gpus or spec.gpu_count
    if gpus:
        requirements.append({"type": "GPU", "value": str(gpus)})
    props: dict[str, Any] = {"image": spec.image, "resourceRequirements": requirements}
    command = [*spec.command, *spec.args]
    if command:
        props["command"] = command
    if config.job_role_arn:
        props["jobRoleArn"] = config.job_role_arn
    if secret_arns:
        props["secrets"] = [{"name": var, "valueFrom": arn} for var, arn in sorted(secret_arns.items())]
    if config.log_group != DEFAULT_LOG_GROUP:
        props["logConfiguration"] = {"logDriver": "awslogs", "options": {"awslogs-group": config.log_group}}
    return props


def job_definition_name(props: dict[str, Any]) -> str:
    """Deterministic name from the container properties, so one image/shape shares one definition."""
    digest = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()[:24]
    return f"inferofabric-{digest}"


def job_tags(request: JobRequest) -> dict[str, str]:
    """The tags of an attempt's job: they mark the fabric's jobs (list_jobs) and name the attempt."""
    tags = {
        TAG_WORKLOAD: request.workload_id,
        TAG_ATTEMPT: str(request.attempt),
        TAG_TEAM: request.spec.team,
        TAG_JOB: request.job_id,
    }
    if request.gpu_type:
        tags["inferofabric:gpu-type"] = request.gpu_type
    return tags


def submit_request(request: JobRequest, name: str, definition: str, job_queue: str) -> dict[str, Any]:
    """submit_job's arguments for one attempt; secret variables go by the definition's ARNs, not here."""
    spec = request.spec
    secret = set(request.secret_env)
    environment = [{"name": k, "value": v} for k, v in sorted(request.env.items()) if k not in secret]
    kwargs: dict[str, Any] = {
        "jobName": name,
        "jobQueue": job_queue,
        "jobDefinition": definition,
        "retryStrategy": {"attempts": spec.max_retries + 1},
        "propagateTags": True,
        "tags": job_tags(request),
    }
    if environment:
        kwargs["containerOverrides"] = {"environment": environment}
    if spec.max_runtime_seconds:
        kwargs["timeout"] = {"attemptDurationSeconds": max(MIN_ATTEMPT_SECONDS, spec.max_runtime_seconds)}
    return kwargs
