"""A small wire-level fake of the Azure Batch REST API, served over real HTTP for the azure-batch client.

It speaks the request and response shapes of the data-plane API (api-version 2025-06-01, the one
azure-batch 15.x sends) for the calls the fabric makes: get pool, add/get/list/terminate/delete job,
add/get task and get task file. It rejects what the service rejects (duplicates with 409 JobExists /
TaskExists, missing or unknown properties with 400, unknown jobs with 404, unsigned or wrongly signed
requests with 403 AuthenticationFailed) so tests exercise the back end's error handling through the
real client. Tests drive the rest through the control methods: move a task along, write its stdout,
resize or remove the pool, or make the whole service answer 503.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

API_VERSION = "2025-06-01"
TEST_ACCOUNT = "fabrictest"
TEST_KEY = base64.b64encode(b"inferofabric-fake-azure-batch-key").decode()
TEST_POOL = "gpu-pool"
TEST_KEY_SECRET = "azure-batch-key"  # the default resolver reads it from FABRIC_SECRET_AZURE_BATCH_KEY

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Properties the service accepts when adding a job or a task (anything else is InvalidRequestBody).
_JOB_PROPERTIES = {
    "id",
    "displayName",
    "usesTaskDependencies",
    "priority",
    "allowTaskPreemption",
    "maxParallelTasks",
    "constraints",
    "jobManagerTask",
    "jobPreparationTask",
    "jobReleaseTask",
    "commonEnvironmentSettings",
    "poolInfo",
    "onAllTasksComplete",
    "onTaskFailure",
    "networkConfiguration",
    "metadata",
}
_TASK_PROPERTIES = {
    "id",
    "displayName",
    "exitConditions",
    "commandLine",
    "containerSettings",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "affinityInfo",
    "constraints",
    "requiredSlots",
    "userIdentity",
    "multiInstanceSettings",
    "dependsOn",
    "applicationPackageReferences",
    "authenticationTokenSettings",
}
_NESTED_PROPERTIES = {
    "poolInfo": {"poolId", "autoPoolSpecification"},
    "constraints": {"maxWallClockTime", "maxTaskRetryCount", "retentionTime"},
    "containerSettings": {
        "containerRunOptions",
        "imageName",
        "registry",
        "workingDirectory",
        "containerHostBatchBindMounts",
    },
}
_ERRORS_METADATA = "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
_SIGNED_HEADERS = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class BatchApiError(Exception):
    """An error answer of the service: HTTP status plus Batch error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class RecordedRequest:
    """One request as it crossed the wire, so tests can assert exactly what the client sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeAzureBatch:
    """The fake service's state plus the HTTP server in front of it. Use as a context manager."""

    account_name: str = TEST_ACCOUNT
    account_key: str = TEST_KEY
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    outage: bool = False  # every request answers 503 ServerBusy
    delay_seconds: float = 0.0  # every request waits this long before answering (read timeouts)
    retain_deleted: bool = False  # deleted jobs stay visible in state "deleting", as they do for a while
    lock: threading.RLock = field(default_factory=threading.RLock)
    _server: ThreadingHTTPServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeAzureBatch:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05) if self._server else None,
            name="fake-azure-batch",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAzureBatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test controls ---------------------------------------------------------------------------
    def add_pool(self, pool_id: str, *, dedicated: int = 2, low_priority: int = 0) -> None:
        with self.lock:
            self.pools[pool_id] = {
                "id": pool_id,
                "url": f"{self._base()}/pools/{pool_id}",
                "eTag": "0x1",
                "lastModified": _now(),
                "creationTime": _now(),
                "state": "active",
                "stateTransitionTime": _now(),
                "allocationState": "steady",
                "allocationStateTransitionTime": _now(),
                "vmSize": "standard_nc24ads_a100_v4",
                "currentDedicatedNodes": dedicated,
                "currentLowPriorityNodes": low_priority,
                "targetDedicatedNodes": dedicated,
                "targetLowPriorityNodes": low_priority,
            }

    def set_pool(self, pool_id: str, **fields: Any) -> None:
        """Change pool properties by wire name, e.g. allocationState="resizing" or state="deleting"."""
        with self.lock:
            self.pools[pool_id].update(fields)

    def remove_pool(self, pool_id: str) -> None:
        with self.lock:
            self.pools.pop(pool_id, None)

    def set_task_running(self, job_id: str, task_id: str = "main") -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            self._transition(task, "running")
            task["executionInfo"].update(startTime=_now())
            task["nodeInfo"] = {"nodeId": "tvm-1", "poolId": self.jobs[job_id.lower()]["poolInfo"]["poolId"]}

    def complete_task(self, job_id: str, exit_code: int, task_id: str = "main") -> None:
        """The task's process exited with `exit_code` (non-zero is a failure, as the service reports it)."""
        info: dict[str, Any] = {"exitCode": exit_code, "result": "success" if exit_code == 0 else "failure"}
        if exit_code != 0:
            info["failureInfo"] = {
                "category": "usererror",
                "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure",
            }
        self._finish_task(job_id, task_id, info)

    def fail_task(self, job_id: str, code: str, message: str, task_id: str = "main") -> None:
        """The task failed before its process ran (image pull, resource files): failure info, no exit code."""
        info = {
            "result": "failure",
            "failureInfo": {"category": "usererror", "code": code, "message": message},
        }
        self._finish_task(job_id, task_id, info)

    def fail_node(self, job_id: str, task_id: str = "main") -> None:
        """The node under the task failed (a server error, not the task's): Batch's `servererror`."""
        info = {"result": "failure",
                "failureInfo": {"category": "servererror", "code": "NodeFailure",
                                "message": "The compute node became unusable"}}
        self._finish_task(job_id, task_id, info)

    def put_file(self, job_id: str, path: str, content: str | bytes, task_id: str = "main") -> None:
        data = content.encode() if isinstance(content, str) else content
        with self.lock:
            self.files[(job_id.lower(), task_id.lower(), path)] = data

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path matches `path` exactly (unquoted)."""
        with self.lock:
            return [r for r in self.requests if r.method == method and unquote(r.path) == path]

    # ---- state helpers ---------------------------------------------------------------------------
    def _base(self) -> str:
        return self.url if self._server else "http://127.0.0.1"

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id.lower())
        if job is None:
            raise BatchApiError(404, "JobNotFound", "The specified job does not exist.")
        return job

    def _task(self, job_id: str, task_id: str) -> dict[str, Any]:
        self._job(job_id)
        task = self.tasks[job_id.lower()].get(task_id.lower())
        if task is None:
            raise BatchApiError(404, "TaskNotFound", "The specified task does not exist.")
        return task

    @staticmethod
    def _transition(entity: dict[str, Any], state: str) -> None:
        entity["previousState"], entity["previousStateTransitionTime"] = (
            entity["state"],
            entity["stateTransitionTime"],
        )
        entity["state"], entity["stateTransitionTime"] = state, _now()

    def _finish_task(self, job_id: str, task_id: str, info: dict[str, Any]) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            self._transition(task, "completed")
            task["executionInfo"].update(info, endTime=_now())
            task["executionInfo"].setdefault("startTime", _now())
            job = self._job(job_id)
            every_task_done = all(t["state"] == "completed" for t in self.tasks[job_id.lower()].values())
            if job.get("onAllTasksComplete") == "terminatejob" and every_task_done:
                self._terminate(job, "AllTasksComplete")

    def _terminate(self, job: dict[str, Any], reason: str) -> None:
        self._transition(job, "completed")
        job["executionInfo"].update(endTime=_now(), terminateReason=reason)

    # ---- operations (called by the handler with the lock held) -----------------------------------
    def get_pool(self, pool_id: str) -> dict[str, Any]:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise BatchApiError(404, "PoolNotFound", "The specified pool does not exist.")
        return pool

    def add_job(self, body: dict[str, Any]) -> None:
        _check_properties(body, _JOB_PROPERTIES, required=("id", "poolInfo"))
        job_id = _check_id(body["id"])
        if job_id.lower() in self.jobs:
            raise BatchApiError(409, "JobExists", "The specified job already exists.")
        job = {
            **body,
            "url": f"{self._base()}/jobs/{job_id}",
            "eTag": "0x1",
            "lastModified": _now(),
            "creationTime": _now(),
            "state": "active",
            "stateTransitionTime": _now(),
            "onAllTasksComplete": body.get("onAllTasksComplete", "noaction"),
            "onTaskFailure": body.get("onTaskFailure", "noaction"),
            "executionInfo": {"startTime": _now(), "poolId": body["poolInfo"].get("poolId")},
        }
        self.jobs[job_id.lower()] = job
        self.tasks[job_id.lower()] = {}

    def terminate_job(self, job_id: str, body: dict[str, Any] | None) -> None:
        job = self._job(job_id)
        if job["state"] in ("completed", "deleting"):
            code = "JobCompleted" if job["state"] == "completed" else "JobBeingDeleted"
            raise BatchApiError(409, code, f"The specified job is {job['state']}.")
        self._terminate(job, (body or {}).get("terminateReason") or "UserTerminate")

    def delete_job(self, job_id: str) -> None:
        job = self._job(job_id)
        if self.retain_deleted:
            self._transition(job, "deleting")
            return
        del self.jobs[job_id.lower()], self.tasks[job_id.lower()]
        for key in [k for k in self.files if k[0] == job_id.lower()]:
            del self.files[key]

    def add_task(self, job_id: str, body: dict[str, Any]) -> None:
        job = self._job(job_id)
        _check_properties(body, _TASK_PROPERTIES, required=("id", "commandLine"))
        task_id = _check_id(body["id"])
        if job["state"] != "active":
            raise BatchApiError(409, "JobNotActive", f"The specified job is in state {job['state']}.")
        if task_id.lower() in self.tasks[job_id.lower()]:
            raise BatchApiError(409, "TaskExists", "The specified task already exists.")
        self.tasks[job_id.lower()][task_id.lower()] = {
            **body,
            "url": f"{job['url']}/tasks/{task_id}",
            "eTag": "0x1",
            "lastModified": _now(),
            "creationTime": _now(),
            "state": "active",
            "stateTransitionTime": _now(),
            "executionInfo": {"retryCount": 0, "requeueCount": 0},
        }

    def get_file(self, job_id: str, task_id: str, path: str) -> bytes:
        self._task(job_id, task_id)
        data = self.files.get((job_id.lower(), task_id.lower(), path))
        if data is None:
            raise BatchApiError(404, "FileNotFound", "The specified file does not exist.")
        return data

    # ---- auth ------------------------------------------------------------------------------------
    def check_auth(self, method: str, raw_path: str, headers: dict[str, str]) -> None:
        """Shared-key check: same string-to-sign as the service (and the client's signing policy)."""
        auth = headers.get("authorization", "")
        prefix = f"SharedKey {self.account_name}:"
        if not auth.startswith(prefix):
            raise BatchApiError(403, "AuthenticationFailed", "Server failed to authenticate the request.")
        if not hmac.compare_digest(auth[len(prefix) :], self._signature(method, raw_path, headers)):
            raise BatchApiError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is "
                "formed correctly including the signature.",
            )

    def _signature(self, method: str, raw_path: str, headers: dict[str, str]) -> str:
        url = urlsplit(raw_path)
        signed = {name: headers.get(name, "") for name in _SIGNED_HEADERS}
        if method not in ("GET", "HEAD") and not signed["content-length"]:
            signed["content-length"] = "0"
        text = method + "\n" + "\n".join(signed[name] for name in _SIGNED_HEADERS) + "\n"
        text += "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if "ocp-" in k and v)
        text += f"/{self.account_name}{url.path}"
        query = parse_qs(url.query)
        text += "".join(f"\n{name}:{query[name][0]}" for name in sorted(query) if query[name][0])
        digest = hmac.new(base64.b64decode(self.account_key), text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()


def _check_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise BatchApiError(400, "InvalidPropertyValue", f"The value provided for id is invalid: {value!r}.")
    return value


def _check_properties(body: dict[str, Any], allowed: set[str], required: tuple[str, ...]) -> None:
    """Reject unknown properties (top level and the nested objects we know) and missing required ones."""
    for name, value in body.items():
        if name not in allowed:
            raise BatchApiError(
                400, "InvalidRequestBody", f"The request body contains unknown property {name}."
            )
        nested = _NESTED_PROPERTIES.get(name)
        if nested is not None and isinstance(value, dict) and set(value) - nested:
            bad = sorted(set(value) - nested)[0]
            raise BatchApiError(
                400, "InvalidRequestBody", f"The request body contains unknown property {bad}."
            )
    for name in required:
        if body.get(name) is None:
            raise BatchApiError(
                400, "MissingRequiredProperty", f"A required property was not specified: {name}."
            )


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/pools/(?P<pool>[^/]+)$"), "_get_pool"),
    ("POST", re.compile(r"^/jobs$"), "_add_job"),
    ("GET", re.compile(r"^/jobs$"), "_list_jobs"),
    ("GET", re.compile(r"^/jobs/(?P<job>[^/]+)$"), "_get_job"),
    ("POST", re.compile(r"^/jobs/(?P<job>[^/]+)/terminate$"), "_terminate_job"),
    ("DELETE", re.compile(r"^/jobs/(?P<job>[^/]+)$"), "_delete_job"),
    ("POST", re.compile(r"^/jobs/(?P<job>[^/]+)/tasks$"), "_add_task"),
    ("GET", re.compile(r"^/jobs/(?P<job>[^/]+)/tasks/(?P<task>[^/]+)$"), "_get_task"),
    ("GET", re.compile(r"^/jobs/(?P<job>[^/]+)/tasks/(?P<task>[^/]+)/files/(?P<file>.+)$"), "_get_file"),
]


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the fake; every answer carries the service's headers and error body shape."""

    fake: FakeAzureBatch
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, url.path, parse_qs(url.query), headers, body)
        fake = self.fake
        with fake.lock:
            fake.requests.append(request)
        if fake.delay_seconds:
            time.sleep(fake.delay_seconds)
        try:
            if fake.outage:
                raise BatchApiError(503, "ServerBusy", "The server is currently unable to receive requests.")
            fake.check_auth(self.command, self.path, headers)
            if request.query.get("api-version") != [API_VERSION]:
                raise BatchApiError(400, "InvalidQueryParameterValue", "Unsupported api-version.")
            with fake.lock:
                self._route(request)
        except BatchApiError as error:
            self._send_error(error)

    def _route(self, request: RecordedRequest) -> None:
        for method, pattern, name in _ROUTES:
            match = pattern.match(request.path)
            if method == request.method and match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                getattr(self, name)(request, **params)
                return
        raise BatchApiError(
            400, "InvalidUri", f"The requested URI does not represent any resource: {request.path}"
        )

    # ---- operations ------------------------------------------------------------------------------
    def _get_pool(self, request: RecordedRequest, pool: str) -> None:
        self._send_json(200, self.fake.get_pool(pool))

    def _add_job(self, request: RecordedRequest) -> None:
        self.fake.add_job(_json_body(request))
        self._send_empty(201)

    def _list_jobs(self, request: RecordedRequest) -> None:
        self._send_json(200, {"odata.metadata": "$metadata#jobs", "value": list(self.fake.jobs.values())})

    def _get_job(self, request: RecordedRequest, job: str) -> None:
        self._send_json(200, self.fake._job(job))

    def _terminate_job(self, request: RecordedRequest, job: str) -> None:
        self.fake.terminate_job(job, _json_body(request) if request.body else None)
        self._send_empty(202)

    def _delete_job(self, request: RecordedRequest, job: str) -> None:
        self.fake.delete_job(job)
        self._send_empty(202)

    def _add_task(self, request: RecordedRequest, job: str) -> None:
        self.fake.add_task(job, _json_body(request))
        self._send_empty(201)

    def _get_task(self, request: RecordedRequest, job: str, task: str) -> None:
        self._send_json(200, self.fake._task(job, task))

    def _get_file(self, request: RecordedRequest, job: str, task: str, file: str) -> None:
        data = self.fake.get_file(job, task, file)
        self._send(200, data, "application/octet-stream")

    # ---- responses -------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json;odata=minimalmetadata")

    def _send_empty(self, status: int) -> None:
        self._send(status, b"", None)

    def _send_error(self, error: BatchApiError) -> None:
        payload = {
            "odata.metadata": f"{self.fake._base()}/$metadata#{_ERRORS_METADATA}",
            "code": error.code,
            "message": {"lang": "en-US", "value": f"{error.message}\nRequestId:fake\nTime:{_now()}"},
        }
        self._send_json(error.status, payload)

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        self.send_header("request-id", "fake-request")
        self.send_header("Content-Length", str(len(body)))
        if content_type:
            self.send_header("Content-Type", content_type)
        self.end_headers()
        # The client may have given up waiting (a read-timeout test): then there is nothing to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


def _json_body(request: RecordedRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except ValueError:
        raise BatchApiError(400, "InvalidRequestBody", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BatchApiError(400, "InvalidRequestBody", "The request body must be a JSON object.")
    return body


@pytest.fixture
def azure_batch_fake() -> Iterator[FakeAzureBatch]:
    """A started fake with one steady, active pool TEST_POOL; stopped after the test."""
    with FakeAzureBatch() as fake:
        fake.add_pool(TEST_POOL)
        yield fake


def azure_pool_document(fake: FakeAzureBatch, name: str = "azure-eus", **azure: Any) -> dict[str, Any]:
    """A pool file (as a dict) pointing an azure-batch pool at the fake; `azure` overrides settings.

    The account key is referenced as TEST_KEY_SECRET: set FABRIC_SECRET_AZURE_BATCH_KEY=TEST_KEY (or
    pass a secret_resolver) so the back end can sign requests.
    """
    settings: dict[str, Any] = {
        "account_url": fake.url,
        "pool_id": TEST_POOL,
        "credentials": {"account_name": fake.account_name, "account_key_secret": TEST_KEY_SECRET},
        "timeout_seconds": 2,
        **azure,
    }
    return {
        "name": name,
        "location": "cloud",
        "backend": "azure-batch",
        "region": "eastus",
        "gpus": {"A100": 16},
        "price_per_gpu_hour": {"A100": 3.40},
        "azure": settings,
    }
