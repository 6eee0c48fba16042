"""AWS Batch back end: one pool = one job queue in one account and region.

Why it looks the way it does:

* AWS Batch has no idempotency token, so the deterministic job id is used as the Batch *job name*
  and `launch` first looks for a job with that name in the queue. `submit_job` itself goes through a
  client that never retries: a read timeout must not silently submit a second copy; the activity's
  own retry comes back through the look-up instead.
* Job definitions are shared by content: the name is a hash of the container properties (image,
  command, vCPUs, memory, GPUs, role, secrets), so re-launching the same image reuses one revision.
* Secret environment values never reach Batch: each one is stored in Secrets Manager under
  `inferofabric/<job_id>/<VAR>` and only its ARN is put in the job definition. They are deleted by
  `cancel` and once `status` sees the job finished.
* Every API error is sorted into the fabric's vocabulary: transient (BackendUnavailable),
  refused for good (JobRejected) or misconfigured (BackendConfigError).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferofabric.backends.base import (
    LOST_NODE,
    LOST_RECLAIMED,
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
from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec

log = logging.getLogger(__name__)

CANCEL_REASON = "cancelled by inferofabric"
DEFAULT_LOG_GROUP = "/aws/batch/job"
TAG_WORKLOAD = "inferofabric:workload"
TAG_ATTEMPT = "inferofabric:attempt"
TAG_TEAM = "inferofabric:team"
TAG_JOB = "inferofabric:job"
SECRET_PREFIX = "inferofabric"
ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
FINISHED_STATUSES = ("SUCCEEDED", "FAILED")
RUNNABLE_PATIENCE_SECONDS = 120  # RUNNABLE longer than this usually means "no capacity"
MIN_ATTEMPT_SECONDS = 60  # AWS Batch refuses shorter attempt timeouts
JOB_NAME_MAX = 128
FABRIC_JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*-a\d+$")

_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 5}
# Calls that are safe to repeat get two retries; submit_job gets none (see the module docstring).
CLIENT_CONFIG = Config(**_TIMEOUTS, retries={"max_attempts": 2, "mode": "standard"})
SUBMIT_CONFIG = Config(**_TIMEOUTS, retries={"total_max_attempts": 1, "mode": "standard"})

_THROTTLING_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "ServerException", "RequestTimeout", "RequestTimeoutException",
}
_AUTH_CODES = {
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "AuthFailure",
    "UnauthorizedOperation", "InvalidSignatureException", "MissingAuthenticationToken",
}
_CONNECTION_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
)
_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.NoRegionError,
)


# --- configuration -------------------------------------------------------------------------------


def env_secret_resolver(name: str) -> str:
    """Default secret resolver: the value of `FABRIC_SECRET_<NAME>` (upper case, non-alphanumerics -> `_`).

    It exists so a pool file can name a secret without the control plane being wired up yet; the
    control plane replaces it by setting `backend.secret_resolver`.
    """
    variable = "FABRIC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    if variable == "FABRIC_SECRET_KEY" or variable.startswith("FABRIC_SECRET_KEY_"):
        # Those hold the keys of inferofabric.secrets (sealed secrets): never hand them out.
        raise BackendConfigError(f"secret name {name!r} is reserved (it maps to {variable})")
    try:
        return os.environ[variable]
    except KeyError:
        raise BackendConfigError(f"secret {name!r} is not set (expected variable {variable})") from None


class AwsCredentials(BaseModel):
    """How to authenticate: one of a profile, two secret references, a role to assume, or nothing.

    Nothing at all means boto3's default chain (environment, instance profile, SSO, ...).
    """

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    access_key_id_secret: str | None = None
    secret_access_key_secret: str | None = None
    role_arn: str | None = None
    external_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one_method(self) -> AwsCredentials:
        keys = (self.access_key_id_secret, self.secret_access_key_secret)
        if any(keys) and not all(keys):
            raise ValueError("access_key_id_secret and secret_access_key_secret go together")
        methods = [bool(self.profile), all(keys), bool(self.role_arn)]
        if sum(methods) > 1:
            raise ValueError("credentials: use one of profile, access_key_id_secret/..., role_arn")
        if self.external_id and not self.role_arn:
            raise ValueError("credentials.external_id only applies with role_arn")
        return self

    @property
    def method(self) -> Literal["profile", "keys", "role", "default"]:
        if self.profile:
            return "profile"
        if self.access_key_id_secret:
            return "keys"
        if self.role_arn:
            return "role"
        return "default"


class AwsBatchConfig(BaseModel):
    """The pool file's `aws:` sub-document."""

    model_config = ConfigDict(extra="forbid")

    job_queue: str = Field(min_length=1)
    compute_environment: str | None = None
    credentials: AwsCredentials = Field(default_factory=AwsCredentials)
    endpoint_url: str | None = None
    job_role_arn: str | None = None
    log_group: str = DEFAULT_LOG_GROUP


# --- small pure helpers --------------------------------------------------------------------------


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


def logs_console_url(region: str, log_group: str, log_stream: str) -> str:
    """CloudWatch console link; the console wants each path part URL-encoded twice with `%` as `$`."""

    def enc(value: str) -> str:
        return quote(quote(value, safe=""), safe="").replace("%", "$")

    return (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(log_group)}/log-events/{enc(log_stream)}"
    )


def _ms_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _is_fabric_cancel(reason: str) -> bool:
    lowered = reason.lower()
    return "inferofabric" in lowered and ("cancel" in lowered or "terminat" in lowered)


def _log_stream(job: dict[str, Any]) -> str | None:
    stream = job.get("container", {}).get("logStreamName")
    if not stream:
        attempts = job.get("attempts") or []
        stream = attempts[-1].get("container", {}).get("logStreamName") if attempts else None
    return stream or None


def _exit_code(job: dict[str, Any]) -> int | None:
    code = job.get("container", {}).get("exitCode")
    if code is None and job.get("attempts"):
        code = job["attempts"][-1].get("container", {}).get("exitCode")
    return code if isinstance(code, int) else None


_HOST_LOST_RE = re.compile(r"Host EC2 \(instance [^)]*\) terminated|host EC2.*terminated", re.I)


def lost_class(job: dict[str, Any]) -> str | None:
    """Why AWS took a FAILED job away (None: the job itself failed).

    Batch reports an instance that went away (Spot interruption, a terminated or failed host) as
    "Host EC2 (instance i-...) terminated." on the job or its last attempt; a Spot job's lost host is
    a reclaim, an on-demand one a lost node."""
    reasons = [str(job.get("statusReason", ""))]
    reasons += [str(a.get("statusReason", "")) for a in (job.get("attempts") or [])[-1:]]
    if not any(_HOST_LOST_RE.search(r) for r in reasons):
        return None
    text = " ".join(reasons).lower()
    return LOST_RECLAIMED if "spot" in text or job.get("tags", {}).get("inferofabric:spot") == "true" else LOST_NODE


def _pick_job(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of several jobs sharing a name, the live one if any, else the newest: the one that matters."""
    if not summaries:
        return None
    live = [s for s in summaries if s.get("status") in ACTIVE_STATUSES]
    return max(live or summaries, key=lambda s: s.get("createdAt", 0))


def map_job_state(aws_status: str, reason: str, created_at: datetime | None) -> tuple[JobState, str]:
    """AWS Batch status (and its reason) -> the fabric's JobState and a human message."""
    now = datetime.now(UTC)
    if aws_status == "RUNNABLE":
        waited = (now - created_at).total_seconds() if created_at else 0
        if waited > RUNNABLE_PATIENCE_SECONDS:
            return JobState.PENDING, f"waiting for capacity (RUNNABLE for {int(waited)}s)"
        return JobState.PENDING, "RUNNABLE"
    if aws_status in ("SUBMITTED", "PENDING", "STARTING"):
        return JobState.PENDING, aws_status
    if aws_status == "RUNNING":
        return JobState.RUNNING, ""
    if aws_status == "SUCCEEDED":
        return JobState.SUCCEEDED, reason
    if aws_status == "FAILED":
        return (JobState.CANCELLED if _is_fabric_cancel(reason) else JobState.FAILED), reason
    return JobState.PENDING, f"unknown AWS Batch status {aws_status}"


# --- error sorting -------------------------------------------------------------------------------


def _client_error_kind(error: botocore.exceptions.ClientError) -> str:
    """'unavailable', 'auth' or 'invalid', from the error code and the HTTP status."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    http_status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _THROTTLING_CODES or http_status == 429:
        return "throttled"
    if http_status >= 500:
        return "unavailable"
    if code in _AUTH_CODES or http_status in (401, 403) or code in ("401", "403"):
        return "auth"
    return "invalid"


def translate_error(error: Exception, action: str, refused: type[BackendError] = JobRejected) -> BackendError:
    """Turn a boto3/botocore exception into the fabric's error types.

    `refused` is what a permanent refusal becomes: JobRejected for a launch, BackendConfigError
    where the request is the fabric's own (a status look-up refused for permissions means the pool's
    credentials are wrong, not the job).
    """
    if isinstance(error, BackendError):
        return error
    if isinstance(error, _CONNECTION_ERRORS):
        return BackendUnavailable(f"AWS Batch {action}: endpoint unreachable: {error}")
    if isinstance(error, _CREDENTIAL_ERRORS):
        return BackendConfigError(f"AWS Batch {action}: credentials: {error}")
    if isinstance(error, botocore.exceptions.ClientError):
        kind = _client_error_kind(error)
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        if kind == "throttled":
            return BackendThrottled(f"AWS Batch {action}: throttled: {_short(message)}")
        if kind == "unavailable":
            return BackendUnavailable(f"AWS Batch {action}: {message}")
        if kind == "auth":
            return refused(f"AWS Batch {action}: permission denied: {_short(message)}")
        return refused(f"AWS Batch {action}: {_short(message)}")
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return BackendUnavailable(f"AWS Batch {action}: {error}")
    raise error


def _short(message: str) -> str:
    """moto (and some AWS front doors) put an XML document in the message; keep the readable part."""
    match = re.search(r"<Message>(.*?)</Message>", message, re.S)
    return match.group(1) if match else message


def _error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --- the back end --------------------------------------------------------------------------------


class AwsBatchBackend(Backend):
    """A pool backed by one AWS Batch job queue."""

    kind: ClassVar[str] = "aws-batch"
    config_model: ClassVar[type[BaseModel] | None] = AwsBatchConfig
    config: AwsBatchConfig

    def __init__(
        self, pool: PoolSpec, home: Path, secret_resolver: Callable[[str], str] | None = None
    ) -> None:
        super().__init__(pool, home)
        if pool.region in ("", "local"):
            raise BackendConfigError(f"pool {pool.name!r}: aws-batch needs `region:` (for example us-east-1)")
        # The control plane may also assign this attribute after construction: clients are built lazily.
        self.secret_resolver: Callable[[str], str] = secret_resolver or env_secret_resolver
        self._clients: dict[str, Any] = {}
        self._session: boto3.Session | None = None
        self._lock = threading.Lock()
        self._job_ids: dict[str, str] = {}  # Batch job name -> jobId seen last
        self._secrets_gone: set[str] = set()  # jobs whose Secrets Manager entries were removed

    # -- clients --

    @property
    def region(self) -> str:
        return self.pool.region

    def _client(self, service: str, *, submit: bool = False) -> Any:
        """One client per service per back end (the no-retry submit client is separate)."""
        key = f"{service}:submit" if submit else service
        with self._lock:
            if key not in self._clients:
                session = self._session_locked()
                self._clients[key] = session.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.config.endpoint_url,
                    config=SUBMIT_CONFIG if submit else CLIENT_CONFIG,
                )
            return self._clients[key]

    def _session_locked(self) -> boto3.Session:
        if self._session is None:
            self._session = self._build_session()
        return self._session

    def _build_session(self) -> boto3.Session:
        """A boto3 session for the configured credentials method; never logs a secret value."""
        creds = self.config.credentials
        try:
            if creds.method == "profile":
                return boto3.Session(profile_name=creds.profile, region_name=self.region)
            if creds.method == "keys":
                assert creds.access_key_id_secret and creds.secret_access_key_secret
                return boto3.Session(
                    aws_access_key_id=self.secret_resolver(creds.access_key_id_secret),
                    aws_secret_access_key=self.secret_resolver(creds.secret_access_key_secret),
                    region_name=self.region,
                )
            if creds.method == "role":
                return self._assumed_role_session()
            return boto3.Session(region_name=self.region)
        except _CREDENTIAL_ERRORS as error:
            raise BackendConfigError(f"pool {self.pool.name!r}: AWS credentials: {error}") from None

    def _assumed_role_session(self) -> boto3.Session:
        """A session whose credentials come from STS AssumeRole and refresh themselves before expiry."""
        creds = self.config.credentials
        base = boto3.Session(region_name=self.region)
        sts = base.client(
            "sts", region_name=self.region, endpoint_url=self.config.endpoint_url, config=CLIENT_CONFIG
        )

        def fetch() -> dict[str, str]:
            kwargs: dict[str, Any] = {
                "RoleArn": creds.role_arn,
                "RoleSessionName": f"inferofabric-{self.pool.name}"[:64],
            }
            if creds.external_id:
                kwargs["ExternalId"] = creds.external_id
            try:
                answer = sts.assume_role(**kwargs)["Credentials"]
            except Exception as error:
                raise translate_error(error, "assume role", refused=BackendConfigError) from None
            return {
                "access_key": answer["AccessKeyId"],
                "secret_key": answer["SecretAccessKey"],
                "token": answer["SessionToken"],
                "expiry_time": answer["Expiration"].isoformat(),
            }

        botocore_session = base._session
        botocore_session._credentials = DeferredRefreshableCredentials(
            refresh_using=fetch, method="sts-assume-role"
        )
        return boto3.Session(botocore_session=botocore_session, region_name=self.region)

    @contextmanager
    def _calling(self, action: str, refused: type[BackendError] = BackendConfigError) -> Iterator[None]:
        """Run AWS calls, re-raising their errors as the fabric's error types."""
        try:
            yield
        except BackendError:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise translate_error(error, action, refused) from None

    # -- job look-up --

    def _find_jobs(self, name: str) -> list[dict[str, Any]]:
        """Summaries of every job with this exact name in the queue, whatever their status.

        With `filters`, AWS ignores `jobStatus` and returns jobs in every status; the JOB_NAME
        filter is case-insensitive and treats a trailing `*` as a prefix, so matches are re-checked.
        """
        paginator = self._client("batch").get_paginator("list_jobs")
        pages = paginator.paginate(
            jobQueue=self.config.job_queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        return [job for page in pages for job in page.get("jobSummaryList", []) if job.get("jobName") == name]

    def _describe(self, job_id: str) -> dict[str, Any] | None:
        jobs = self._client("batch").describe_jobs(jobs=[job_id]).get("jobs", [])
        return jobs[0] if jobs else None

    def _lookup(self, name: str, *, use_cache: bool = False) -> dict[str, Any] | None:
        """Full description of the job that carries this name (see `_pick_job`), or None.

        `use_cache` describes the job id seen last for this name directly (one call instead of two);
        `launch` never uses it, since it must see every job with the name.
        """
        if use_cache and name in self._job_ids:
            job = self._describe(self._job_ids[name])
            if job is not None:
                return job
        summary = _pick_job(self._find_jobs(name))
        if summary is None:
            return None
        self._job_ids[name] = summary["jobId"]
        return self._describe(summary["jobId"])

    def _to_status(self, job_id: str, job: dict[str, Any]) -> JobStatus:
        aws_status = str(job.get("status", ""))
        created = _ms_to_datetime(job.get("createdAt"))
        state, message = map_job_state(aws_status, str(job.get("statusReason", "")), created)
        lost = lost_class(job) if state == JobState.FAILED else None
        if lost:
            state = JobState.LOST
        stream = _log_stream(job)
        return JobStatus(
            job_id=job_id,
            state=state,
            message=message,
            exit_code=_exit_code(job),
            started_at=_ms_to_datetime(job.get("startedAt")),
            finished_at=_ms_to_datetime(job.get("stoppedAt")),
            logs_url=logs_console_url(self.region, self.config.log_group, stream) if stream else None,
            details={
                "aws_status": aws_status,
                "aws_job_id": job.get("jobId"),
                "job_queue": self.config.job_queue,
                "log_stream": stream,
                "attempts": len(job.get("attempts") or []),
                **({"class": lost} if lost else {}),
            },
        )

    # -- launch --

    def launch(self, request: JobRequest) -> JobStatus:
        name = batch_job_name(request.job_id)
        with self._calling("launch: look-up", refused=JobRejected):
            existing = self._lookup(name)
        if existing is not None:
            log.info("aws-batch %s: job %s already exists (%s)", self.pool.name, name, existing.get("jobId"))
            return self._to_status(request.job_id, existing)
        with self._calling("launch", refused=JobRejected):
            secret_arns = self._store_secrets(request)
            definition = self._ensure_job_definition(container_properties(request, self.config, secret_arns))
            job_id = self._submit(request, name, definition)
            job = self._describe(job_id)
        log.info("aws-batch %s: submitted %s as %s", self.pool.name, name, job_id)
        if job is None:
            return JobStatus(job_id=request.job_id, state=JobState.PENDING, message="SUBMITTED",
                             details={"aws_job_id": job_id})
        return self._to_status(request.job_id, job)

    def _store_secrets(self, request: JobRequest) -> dict[str, str]:
        """Put each secret env value into Secrets Manager; return variable -> secret ARN."""
        arns: dict[str, str] = {}
        for variable in sorted(set(request.secret_env)):
            if variable not in request.env:
                raise JobRejected(f"secret variable {variable} has no resolved value")
            name = secret_name(request.job_id, variable)
            arns[variable] = self._put_secret(name, request.env[variable], request)
        return arns

    def _put_secret(self, name: str, value: str, request: JobRequest) -> str:
        """create_secret, or put_secret_value when it exists already (a retried launch)."""
        client = self._client("secretsmanager")
        try:
            answer = client.create_secret(
                Name=name,
                SecretString=value,
                Description=f"inferofabric job {request.job_id}",
                Tags=[
                    {"Key": TAG_WORKLOAD, "Value": request.workload_id},
                    {"Key": TAG_JOB, "Value": request.job_id},
                ],
            )
        except botocore.exceptions.ClientError as error:
            if _error_code(error) != "ResourceExistsException":
                raise
            answer = client.put_secret_value(SecretId=name, SecretString=value)
        return str(answer["ARN"])

    def _ensure_job_definition(self, props: dict[str, Any]) -> str:
        """ARN of the ACTIVE job definition for these properties, registering it the first time."""
        client = self._client("batch")
        name = job_definition_name(props)
        answer = client.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
        found = answer.get("jobDefinitions", [])
        if found:
            return str(max(found, key=lambda d: d.get("revision", 0))["jobDefinitionArn"])
        registered = client.register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties=props,
            propagateTags=True,
            tags={"inferofabric:managed": "true"},
        )
        return str(registered["jobDefinitionArn"])

    def _submit(self, request: JobRequest, name: str, definition: str) -> str:
        spec = request.spec
        secret = set(request.secret_env)
        environment = [{"name": k, "value": v} for k, v in sorted(request.env.items()) if k not in secret]
        kwargs: dict[str, Any] = {
            "jobName": name,
            "jobQueue": self.config.job_queue,
            "jobDefinition": definition,
            "retryStrategy": {"attempts": spec.max_retries + 1},
            "propagateTags": True,
            "tags": self._tags(request),
        }
        if environment:
            kwargs["containerOverrides"] = {"environment": environment}
        if spec.max_runtime_seconds:
            kwargs["timeout"] = {"attemptDurationSeconds": max(MIN_ATTEMPT_SECONDS, spec.max_runtime_seconds)}
        return str(self._client("batch", submit=True).submit_job(**kwargs)["jobId"])

    @staticmethod
    def _tags(request: JobRequest) -> dict[str, str]:
        tags = {
            TAG_WORKLOAD: request.workload_id,
            TAG_ATTEMPT: str(request.attempt),
            TAG_TEAM: request.spec.team,
            TAG_JOB: request.job_id,
        }
        if request.gpu_type:
            tags["inferofabric:gpu-type"] = request.gpu_type
        return tags

    # -- status / cancel / logs --

    def status(self, job_id: str) -> JobStatus:
        name = batch_job_name(job_id)
        with self._calling("status"):
            job = self._lookup(name, use_cache=True)
        if job is None:
            message = f"no job named {name} in {self.config.job_queue}"
            return JobStatus(job_id=job_id, state=JobState.LOST, message=message)
        status = self._to_status(job_id, job)
        if status.state.terminal:
            self._delete_secrets_quietly(job_id)
        return status

    def cancel(self, job_id: str) -> None:
        name = batch_job_name(job_id)
        with self._calling("cancel"):
            batch = self._client("batch")
            for job in self._find_jobs(name):
                if job.get("status") not in FINISHED_STATUSES:
                    batch.terminate_job(jobId=job["jobId"], reason=CANCEL_REASON)
                    log.info("aws-batch %s: terminated %s (%s)", self.pool.name, name, job["jobId"])
            self._delete_secrets(job_id)

    def _delete_secrets(self, job_id: str) -> None:
        """Remove every `inferofabric/<job_id>/...` secret, immediately (no recovery window)."""
        client = self._client("secretsmanager")
        prefix = f"{SECRET_PREFIX}/{job_id}/"
        pages = client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
        for page in pages:
            for secret in page.get("SecretList", []):
                if not str(secret.get("Name", "")).startswith(prefix):
                    continue
                try:
                    client.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
                except botocore.exceptions.ClientError as error:
                    if _error_code(error) != "ResourceNotFoundException":
                        raise

    def _delete_secrets_quietly(self, job_id: str) -> None:
        """Best-effort clean-up from `status`: a failure here must not hide the job's state."""
        try:
            self._delete_secrets(job_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning("aws-batch %s: could not delete secrets of %s: %s", self.pool.name, job_id, error)

    def logs(self, job_id: str, tail: int = 200) -> str:
        name = batch_job_name(checked_job_id(job_id))
        with self._calling("logs"):
            job = self._lookup(name, use_cache=True)
            stream = _log_stream(job) if job else None
            if not stream:
                return "logs are not available yet (the job has no CloudWatch log stream)"
            try:
                answer = self._client("logs").get_log_events(
                    logGroupName=self.config.log_group, logStreamName=stream, limit=max(1, min(tail, 10_000)),
                    startFromHead=False,
                )
            except botocore.exceptions.ClientError as error:
                if _error_code(error) == "ResourceNotFoundException":
                    return f"logs are not available yet (no log stream {stream} in {self.config.log_group})"
                raise
        return "\n".join(str(event.get("message", "")).rstrip("\n") for event in answer.get("events", []))

    # -- pool-level --

    def probe(self) -> PoolProbe:
        batch = self._client("batch")  # a wrong credentials reference raises BackendConfigError here
        try:
            with self._calling("probe"):
                queues = batch.describe_job_queues(jobQueues=[self.config.job_queue])
                queue = next(iter(queues.get("jobQueues", [])), None)
                environment = self._describe_compute_environment()
        except BackendConfigError as error:
            # The API refused us (bad keys, missing permission): a pool problem for the health
            # monitor to show, not a crash of the probe.
            return PoolProbe(health=Health.UNHEALTHY, reason=str(error))
        return self._judge(queue, environment)

    def _describe_compute_environment(self) -> dict[str, Any] | None:
        if not self.config.compute_environment:
            return None
        answer = self._client("batch").describe_compute_environments(
            computeEnvironments=[self.config.compute_environment]
        )
        return next(iter(answer.get("computeEnvironments", [])), None)

    def _judge(self, queue: dict[str, Any] | None, environment: dict[str, Any] | None) -> PoolProbe:
        """Health from the queue (must be ENABLED+VALID) and the named compute environment."""
        details: dict[str, Any] = {"job_queue": self.config.job_queue}
        if queue is None:
            return PoolProbe(health=Health.UNHEALTHY, reason=f"job queue {self.config.job_queue} not found",
                             details=details)
        details.update(queue_state=queue.get("state"), queue_status=queue.get("status"))
        if queue.get("state") != "ENABLED" or queue.get("status") != "VALID":
            reason = f"job queue {queue.get('state')}/{queue.get('status')}: {queue.get('statusReason', '')}"
            return PoolProbe(health=Health.UNHEALTHY, reason=reason.rstrip(": "), details=details)
        if not self.config.compute_environment:
            return PoolProbe(health=Health.HEALTHY, details=details)
        if environment is None:
            return PoolProbe(health=Health.UNHEALTHY, details=details,
                             reason=f"compute environment {self.config.compute_environment} not found")
        details.update(_environment_details(environment))
        if environment.get("state") != "ENABLED" or environment.get("status") != "VALID":
            reason = f"compute environment {environment.get('state')}/{environment.get('status')}"
            if environment.get("statusReason"):
                reason += f": {environment['statusReason']}"
            return PoolProbe(health=Health.DEGRADED, reason=reason, details=details)
        return PoolProbe(health=Health.HEALTHY, details=details)

    def list_jobs(self) -> list[str]:
        with self._calling("list jobs"):
            summaries = self._active_jobs()
            names = {s["jobName"] for s in summaries if FABRIC_JOB_NAME_RE.match(s["jobName"])}
            others = [s["jobId"] for s in summaries if s["jobName"] not in names]
            names.update(self._tagged_names(others))
        return sorted(names)

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """Every fabric job of the queue in few calls: list the live ones (per status, paged), then
        describe them and the known ones that finished, 100 ids per describe_jobs."""
        found: dict[str, JobStatus] = {}
        by_name = {batch_job_name(job_id): job_id for job_id in known}
        with self._calling("watch jobs"):
            batch_ids = {s["jobId"] for s in self._active_jobs()}
            batch_ids |= {cached for job_id in known if (cached := self._job_ids.get(batch_job_name(job_id)))}
            ordered = sorted(batch_ids)
            for start in range(0, len(ordered), 100):
                for job in self._client("batch").describe_jobs(jobs=ordered[start : start + 100]).get("jobs", []):
                    name = str(job.get("jobName", ""))
                    # The fabric's tag names the job; a fabric id is its own name (DNS labels pass
                    # batch_job_name unchanged) when tags are not returned.
                    job_id = (job.get("tags") or {}).get(TAG_JOB) or by_name.get(name) or (
                        name if FABRIC_JOB_NAME_RE.match(name) else None)
                    if not job_id:
                        continue
                    self._job_ids[job["jobName"]] = job["jobId"]
                    status = self._to_status(job_id, job)
                    previous = found.get(job_id)
                    if previous is None or (previous.state.terminal and not status.state.terminal):
                        found[job_id] = status
        for job_id in known:
            if job_id not in found:
                found[job_id] = self.status(job_id)  # not seen before by this process: look it up by name
        for job_id, status in found.items():
            if status.state.terminal and job_id not in self._secrets_gone:
                self._delete_secrets_quietly(job_id)
                self._secrets_gone.add(job_id)
        return found

    def _active_jobs(self) -> list[dict[str, Any]]:
        """Summaries of the queue's live jobs, one paged list_jobs per live status. (The paging is
        done by hand: botocore's list_jobs paginator came back empty against moto's server.)"""
        batch = self._client("batch")
        jobs: list[dict[str, Any]] = []
        for status in ACTIVE_STATUSES:
            kwargs: dict[str, Any] = {"jobQueue": self.config.job_queue, "jobStatus": status}
            while True:
                page = batch.list_jobs(**kwargs)
                jobs += page.get("jobSummaryList", [])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        return jobs

    def _tagged_names(self, job_ids: list[str]) -> set[str]:
        """Names of the jobs (by id) that carry the fabric's tag: describe_jobs takes 100 at a time."""
        names: set[str] = set()
        for start in range(0, len(job_ids), 100):
            for job in self._client("batch").describe_jobs(jobs=job_ids[start : start + 100]).get("jobs", []):
                if TAG_WORKLOAD in (job.get("tags") or {}):
                    names.add(job["jobName"])
        return names


def _environment_details(environment: dict[str, Any]) -> dict[str, Any]:
    resources = environment.get("computeResources") or {}
    details: dict[str, Any] = {
        "compute_environment": environment.get("computeEnvironmentName"),
        "compute_environment_state": environment.get("state"),
        "compute_environment_status": environment.get("status"),
        "compute_environment_type": environment.get("type"),
    }
    for key in ("maxvCpus", "minvCpus", "desiredvCpus", "instanceTypes", "type"):
        if key in resources:
            details["compute_resources_" + key if key == "type" else key] = resources[key]
    return details
