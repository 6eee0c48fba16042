"""A small wire-level fake of the GCP Batch v1 REST API, for testing the real `google-cloud-batch` client.

Why a fake server rather than mocks: the back end must be exercised through the official client's
real serialization (camelCase JSON, numeric enums, google.rpc error bodies), so the fake speaks HTTP
and parses request bodies against the published `Job` schema, rejecting unknown fields the way the
real service does. It keeps jobs in memory and lets tests drive their lifecycle.

Routes (all under `/v1/projects/{project}/locations/{location}`):
    POST   /jobs?jobId=ID   create a job (409 ALREADY_EXISTS on a duplicate id)
    GET    /jobs/{id}       get a job (404 NOT_FOUND when unknown)
    GET    /jobs            list jobs (pageSize / pageToken; filter ignored)
    DELETE /jobs/{id}       start deleting a job; answers a google.longrunning Operation

Test controls: `advance`, `exhaust_capacity`, `capacity_exhausted`, `outage`, `deny_project`,
`finish_deletions`; `requests` records every raw request for wire-level assertions.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.cloud import batch_v1
from google.protobuf import json_format

_ROUTE = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/jobs(?:/(?P<job>[^/]+))?$"
)
_SECRET_ROUTE = re.compile(r"^/v1/projects/(?P<project>[^/]+)/secrets(?:/(?P<secret>[^/:]+))?(?P<verb>:addVersion)?$")
_JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
State = batch_v1.JobStatus.State


class ApiError(Exception):
    """An error the fake answers with a google.rpc Status body, as the real REST front end does."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        status = _STATUS_NAMES.get(self.code, "UNKNOWN")
        return {"error": {"code": self.code, "status": status, "message": self.message}}


@dataclass
class RecordedRequest:
    """One request as it crossed the wire: tests assert on the raw body (e.g. no secret value in it)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes


@dataclass
class FakeGcpBatch:
    """In-memory Batch service state plus the controls tests use to drive it."""

    jobs: dict[str, Any] = field(default_factory=dict)  # full job name -> batch_v1 Job protobuf
    requests: list[RecordedRequest] = field(default_factory=list)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)  # Secret Manager: name -> labels, versions
    outage: bool = False  # every call answers 503 UNAVAILABLE
    capacity_exhausted: bool = False  # new jobs stay QUEUED with a "resource exhausted" event
    denied_projects: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeGcpBatch:
        """Listen on 127.0.0.1 on a free port, serving from a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """The `endpoint` to put in a pool's `gcp:` block (or client_options api_endpoint)."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test controls ---------------------------------------------------------------------------

    def deny_project(self, project: str) -> None:
        """Answer 403 PERMISSION_DENIED for every call in this project (credentials lack access)."""
        self.denied_projects.add(project)

    def job(self, job_name_or_id: str) -> Any:
        """The stored job protobuf, by full name or bare id."""
        with self.lock:
            return self.jobs[self._find(job_name_or_id)]

    def advance(self, job_name_or_id: str, state: Any, message: str = "") -> None:
        """Move a job to `state` (a JobStatus.State), recording a STATUS_CHANGED event like Batch does."""
        with self.lock:
            job = self.jobs[self._find(job_name_or_id)]
            old = State(job.status.state).name
            description = f"Job state is set from {old} to {State(state).name} for job {job.name}."
            _set_state(job, state, f"{description} {message}".strip())

    def exhaust_capacity(self, job_name_or_id: str) -> None:
        """Keep the job QUEUED and record the event Batch emits when no zone has the machines."""
        with self.lock:
            job = self.jobs[self._find(job_name_or_id)]
            _set_state(job, State.QUEUED, _EXHAUSTED)

    def finish_deletions(self) -> None:
        """Complete every pending deletion: those jobs disappear (get answers 404)."""
        with self.lock:
            for name in [n for n, j in self.jobs.items() if j.status.state == State.DELETION_IN_PROGRESS]:
                del self.jobs[name]

    def bodies(self) -> bytes:
        """Every request body received so far, concatenated (for 'never crossed the wire' checks)."""
        return b"\n".join(r.body for r in self.requests)

    def _find(self, job_name_or_id: str) -> str:
        if job_name_or_id in self.jobs:
            return job_name_or_id
        matches = [n for n in self.jobs if n.rsplit("/", 1)[-1] == job_name_or_id]
        if len(matches) != 1:
            raise KeyError(job_name_or_id)
        return matches[0]

    # ---- API ---------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        """Route one request; raise ApiError for the error answers."""
        if self.outage:
            raise ApiError(503, "The service is currently unavailable.")
        secret_route = _SECRET_ROUTE.match(path)
        if secret_route is not None:
            with self.lock:
                return self._secret_manager(method, secret_route, query, body)
        match = _ROUTE.match(path)
        if match is None:
            raise ApiError(404, f"no route for {method} {path}")
        project, location, job_id = match.group("project", "location", "job")
        if project in self.denied_projects:
            raise ApiError(403, f"Permission 'batch.jobs.list' denied on 'projects/{project}'")
        parent = f"projects/{project}/locations/{location}"
        with self.lock:
            if method == "POST" and job_id is None:
                return self._create(parent, query.get("jobId", [""])[0], body)
            if method == "GET" and job_id is None:
                return self._list(parent, query)
            if method == "GET" and job_id is not None:
                return _to_json(self._get(f"{parent}/jobs/{job_id}"))
            if method == "DELETE" and job_id is not None:
                return self._delete(f"{parent}/jobs/{job_id}")
        raise ApiError(404, f"no route for {method} {path}")

    def _secret_manager(self, method: str, route: re.Match[str], query: dict[str, list[str]],
                        body: bytes) -> dict[str, Any]:
        """Secret Manager's REST surface, as much as the back end uses: create, add a version, delete."""
        name = f"projects/{route['project']}/secrets/{route['secret'] or query.get('secretId', [''])[0]}"
        if method == "POST" and route["secret"] is None:
            if name in self.secrets:
                raise ApiError(409, f"Secret [{name}] already exists.")
            self.secrets[name] = {"labels": json.loads(body or b"{}").get("labels", {}), "versions": []}
            return {"name": name, "replication": {"automatic": {}}}
        if name not in self.secrets:
            raise ApiError(404, f"Secret [{name}] not found or has no versions.")
        if method == "POST" and route["verb"]:
            data = base64.b64decode(json.loads(body)["payload"]["data"])
            self.secrets[name]["versions"].append(data)
            return {"name": f"{name}/versions/{len(self.secrets[name]['versions'])}", "state": "ENABLED"}
        if method == "DELETE":
            del self.secrets[name]
            return {}
        raise ApiError(404, f"no route for {method} {name}")

    def secret_value(self, reference: str) -> bytes:
        """The latest value of a secret reference (`projects/P/secrets/S/versions/latest`)."""
        return bytes(self.secrets[reference.split("/versions/", 1)[0]]["versions"][-1])

    def _create(self, parent: str, job_id: str, body: bytes) -> dict[str, Any]:
        job_id = job_id or f"j-{uuid.uuid4().hex[:12]}"  # Batch generates an id when none is given
        if not _JOB_ID.match(job_id):
            raise ApiError(400, f"job_id {job_id!r} must match {_JOB_ID.pattern}")
        job = _parse_job(body)
        name = f"{parent}/jobs/{job_id}"
        if name in self.jobs:
            raise ApiError(409, f"Resource {name!r} already exists")
        job.name = name
        job.uid = f"{job_id[:40]}-{uuid.uuid4().hex[:8]}"
        job.create_time.FromDatetime(_now())
        _set_state(job, State.QUEUED, f"Job state is set from STATE_UNSPECIFIED to QUEUED for job {name}.")
        if self.capacity_exhausted:
            _set_state(job, State.QUEUED, _EXHAUSTED)
        self.jobs[name] = job
        return _to_json(job)

    def _get(self, name: str) -> Any:
        if name not in self.jobs:
            raise ApiError(404, f"Job {name!r} not found")
        return self.jobs[name]

    def _list(self, parent: str, query: dict[str, list[str]]) -> dict[str, Any]:
        names = sorted(n for n in self.jobs if n.startswith(f"{parent}/jobs/"))
        start = int(query.get("pageToken", ["0"])[0] or 0)
        size = int(query.get("pageSize", ["0"])[0] or 0) or 100
        page = names[start : start + size]
        answer: dict[str, Any] = {"jobs": [_to_json(self.jobs[n]) for n in page]}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _delete(self, name: str) -> dict[str, Any]:
        job = self._get(name)
        _set_state(job, State.DELETION_IN_PROGRESS, f"Job {name} is being deleted.")
        location = name.split("/jobs/")[0]
        return {"name": f"{location}/operations/op-{uuid.uuid4().hex[:12]}", "done": False}


_EXHAUSTED = (
    "resource exhausted: Job scheduling is delayed: ZONE_RESOURCE_POOL_EXHAUSTED, "
    "the zone does not have enough resources available to fulfill the request."
)


def _now() -> datetime:
    return datetime.now(UTC)


def _set_state(job: Any, state: Any, description: str) -> None:
    job.status.state = state
    event = job.status.status_events.add()
    event.type_ = "STATUS_CHANGED"  # proto-plus names the field type_; JSON says "type"
    event.description = description
    event.event_time.FromDatetime(_now())
    job.update_time.FromDatetime(_now())


def _parse_job(body: bytes) -> Any:
    """Parse against the real schema: unknown fields and malformed JSON are INVALID_ARGUMENT."""
    job = batch_v1.Job.pb()()
    try:
        json_format.Parse(body or b"{}", job, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise ApiError(400, f"Invalid JSON payload received. {error}") from None
    if not job.task_groups:
        raise ApiError(400, "job.task_groups must contain exactly one task group")
    if not job.task_groups[0].task_spec.runnables:
        raise ApiError(400, "job.task_groups[0].task_spec.runnables must not be empty")
    return job


def _to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)  # type: ignore[no-any-return]


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP into `FakeGcpBatch.handle` calls and ApiErrors into google.rpc Status bodies."""

    fake: FakeGcpBatch

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.fake.requests.append(RecordedRequest(method, url.path, query, body))
        try:
            code, answer = HTTPStatus.OK, self.fake.handle(method, url.path, query, body)
        except ApiError as error:
            code, answer = HTTPStatus(error.code), error.body()
        except Exception as error:  # a fake bug must surface as a 500, not a dropped connection
            code, answer = HTTPStatus.INTERNAL_SERVER_ERROR, ApiError(500, repr(error)).body()
        payload = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


# ---- reuse from other tests -----------------------------------------------------------------------


@pytest.fixture
def gcp_batch_fake() -> Iterator[FakeGcpBatch]:
    """A running fake for one test. Import it (`from ...gcp_batch_api import gcp_batch_fake`) into a
    test module or conftest to use it; pair it with `gcp_pool_document` to get a pool that points at it."""
    fake = FakeGcpBatch().start()
    try:
        yield fake
    finally:
        fake.stop()


def gcp_pool_document(fake: FakeGcpBatch, name: str = "gcp-usc1", **gcp: Any) -> dict[str, Any]:
    """A gcp-batch pool file (as a dict) aimed at the fake, with anonymous credentials."""
    block = {"project": "acme-ml", "location": "us-central1", "credentials": {"anonymous": True}}
    return {
        "name": name,
        "location": "cloud",
        "backend": "gcp-batch",
        "region": "us-central1",
        "gpus": {"A100": 32},
        "price_per_gpu_hour": {"A100": 3.67},
        "gcp": {**block, "endpoint": fake.url, **gcp},
    }
