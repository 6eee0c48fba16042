"""A small wire-level fake of the Kubernetes API server, for testing the kubernetes back end.

The back end talks to it through the real `kubernetes` Python client over real HTTP, so the tests
exercise URL building, query parameters, JSON (de)serialisation and error mapping exactly as they
would against a cluster. Only what the back end uses is implemented: nodes, pods (+ logs), secrets
and batch/v1 Jobs. It rejects what a real API server rejects (duplicate names, missing required
fields, unknown Job fields under strict field validation, unknown resources) with real `Status`
objects, and a tiny "controller" turns each new Job into one pod, scheduled onto a node with free
GPUs or left Pending/Unschedulable, so capacity and status can be observed end to end.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GPU = "nvidia.com/gpu"
GPU_LABEL = "nvidia.com/gpu.product"
TERMINATED_PHASES = ("Succeeded", "Failed")
JOB_SPEC_FIELDS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completionMode",
    "completions",
    "manualSelector",
    "managedBy",
    "maxFailedIndexes",
    "parallelism",
    "podFailurePolicy",
    "podReplacementPolicy",
    "selector",
    "successPolicy",
    "suspend",
    "template",
    "ttlSecondsAfterFinished",
}
JOB_TOP_FIELDS = {"apiVersion", "kind", "metadata", "spec", "status"}

Obj = dict[str, Any]


def now() -> str:
    """RFC 3339 timestamps, as the API server writes them (second precision, 'Z')."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the fake answers with a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": kind})


def invalid(kind: str, name: str, field: str, why: str = "Required value") -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind}.batch "{name}" is invalid: {field}: {why}',
        {"name": name, "kind": kind, "causes": [{"reason": "FieldValueRequired", "field": field}]},
    )


def selector_matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors (`a=b,c=d`, `a!=b`), the subset the back end sends."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        else:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
    return True


def field_matches(pod: Obj, selector: str | None) -> bool:
    """The pod field selectors the back end may use: spec.nodeName and status.phase (= and !=)."""
    paths = {"spec.nodeName": pod["spec"].get("nodeName", ""), "status.phase": pod["status"].get("phase", "")}
    for term in filter(None, (selector or "").split(",")):
        negate = "!=" in term
        key, value = term.split("!=" if negate else "=", 1)
        if key not in paths:
            raise ApiError(
                400, "BadRequest", f'"{key}" is not a known field selector: only "spec.nodeName"...'
            )
        if (paths[key] == value.lstrip("=")) == negate:
            return False
    return True


def gpu_request(pod: Obj) -> int:
    total = 0
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        total += int(requests.get(GPU, limits.get(GPU, 0)))  # extended resources: requests default to limits
    return total


class FakeKubeApi:
    """State plus test controls. Start with `start()`; `url` is what the back end's `api_server` takes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.nodes: dict[str, Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.secrets: dict[tuple[str, str], Obj] = {}
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.services: dict[tuple[str, str], Obj] = {}
        self.logs: dict[str, str] = {}  # pod name -> log text
        self.requests: list[tuple[str, str, Obj | None]] = []  # (method, path?query, body) as received
        self.outage: int | None = None  # answer every request with this HTTP status (e.g. 503)
        self.hang = threading.Event()  # while set, requests stall (a wedged API server)
        self.forbidden: set[tuple[str, str]] = set()  # (verb, resource) answered with 403
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeKubeApi:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: later connections are refused, as with an API server that is down."""
        self.hang.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- test controls ----------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        gpus: int = 8,
        product: str = "NVIDIA-A100-SXM4-80GB",
        ready: bool = True,
        unschedulable: bool = False,
        labels: dict[str, str] | None = None,
    ) -> Obj:
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": self._meta(
                name, None, {"kubernetes.io/hostname": name, GPU_LABEL: product, **(labels or {})}
            ),
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {
                "allocatable": {"cpu": "64", "memory": "512Gi", GPU: str(gpus)},
                "capacity": {"cpu": "64", "memory": "512Gi", GPU: str(gpus)},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                    }
                ],
            },
        }
        with self.lock:
            self.nodes[name] = node
        return node

    def add_pod(
        self,
        name: str,
        node: str,
        gpus: int,
        namespace: str = "other",
        phase: str = "Running",
        use_limits_only: bool = False,
    ) -> Obj:
        """A pod the fabric did not start, consuming GPUs on a node (for the capacity math)."""
        amounts = {GPU: str(gpus)}
        resources = {"limits": amounts} if use_limits_only else {"requests": amounts, "limits": amounts}
        pod = self._pod(name, namespace, {}, [{"name": "c", "image": "x", "resources": resources}])
        pod["spec"]["nodeName"] = node
        pod["status"]["phase"] = phase
        with self.lock:
            self.pods[(namespace, name)] = pod
        return pod

    def job(self, name: str, namespace: str = "default") -> Obj:
        with self.lock:
            return self.jobs[(namespace, name)]

    def job_pods(self, name: str, namespace: str = "default") -> list[Obj]:
        with self.lock:
            return [
                p
                for (ns, _), p in self.pods.items()
                if ns == namespace and p["metadata"]["labels"].get("job-name") == name
            ]

    def succeed(self, job: str, namespace: str = "default", log: str = "") -> None:
        self._finish(job, namespace, "Succeeded", 0, "Complete", "CompletionsReached", "", log)

    def fail(
        self,
        job: str,
        namespace: str = "default",
        reason: str = "BackoffLimitExceeded",
        message: str = "Job has reached the specified backoff limit",
        exit_code: int = 1,
    ) -> None:
        self._finish(job, namespace, "Failed", exit_code, "Failed", reason, message, "")

    def evict(self, job: str, namespace: str = "default", reason: str = "Evicted") -> None:
        """The cluster takes the pod away (node pressure, preemption, a lost node): the pod fails with
        `reason` and a DisruptionTarget condition, and the Job (backoffLimit spent) fails."""
        self.fail(job, namespace, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit",
                  exit_code=137)
        with self.lock:
            for pod in self.job_pods(job, namespace):
                pod["status"]["reason"] = reason
                pod["status"].setdefault("conditions", []).append(
                    {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                     "lastTransitionTime": now()})

    def image_pull_error(
        self, job: str, namespace: str = "default", reason: str = "ImagePullBackOff"
    ) -> None:
        for pod in self.job_pods(job, namespace):
            image = pod["spec"]["containers"][0]["image"]
            pod["status"].update(
                phase="Pending",
                containerStatuses=[
                    {
                        "name": pod["spec"]["containers"][0]["name"],
                        "image": image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {"reason": reason, "message": f'Back-off pulling image "{image}"'}
                        },
                    }
                ],
            )

    def make_unschedulable(self, job: str, namespace: str = "default") -> None:
        for pod in self.job_pods(job, namespace):
            pod["spec"].pop("nodeName", None)
            pod["status"] = self._unschedulable_status(len(self.nodes))

    # -- request handling -------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: Obj | None) -> tuple[int, Obj | str]:
        """Route one request; returns (HTTP status, JSON object or plain text)."""
        with self.lock:
            self.requests.append((method, raw_path, copy.deepcopy(body)))
            if self.outage:
                return self.outage, ApiError(self.outage, "ServiceUnavailable", "etcd unavailable").status()
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            with self.lock:
                return self._route(method, parts.path.rstrip("/").split("/")[1:], query, body)
        except ApiError as error:
            return error.code, error.status()

    def _route(self, method: str, seg: list[str], query: dict[str, str], body: Obj | None) -> tuple[int, Any]:
        if seg == ["api", "v1", "nodes"] and method == "GET":
            self._authorize("list", "nodes")
            return 200, self._list("NodeList", list(self.nodes.values()))
        if seg == ["api", "v1", "pods"] and method == "GET":
            self._authorize("list", "pods")
            return 200, self._list_pods(None, query)
        if seg[:3] == ["api", "v1", "namespaces"] and len(seg) >= 5:
            ns, resource, rest = seg[3], seg[4], seg[5:]
            if resource == "pods":
                return self._pods(method, ns, rest, query)
            if resource == "secrets":
                return self._secrets(method, ns, rest, body)
            if resource == "services":
                return self._services(method, ns, rest, body)
        if seg[:4] == ["apis", "batch", "v1", "namespaces"] and len(seg) >= 6 and seg[5] == "jobs":
            return self._jobs(method, seg[4], seg[6:], query, body)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _authorize(self, verb: str, resource: str) -> None:
        if (verb, resource) in self.forbidden:
            raise ApiError(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:x:agent" '
                f'cannot {verb} resource "{resource}"',
            )

    def _pods(self, method: str, ns: str, rest: list[str], query: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and not rest:
            self._authorize("list", "pods")
            return 200, self._list_pods(ns, query)
        if method == "GET" and len(rest) == 2 and rest[1] == "log":
            self._authorize("get", "pods/log")
            return 200, self._log(ns, rest[0], query)
        if method == "GET" and len(rest) == 1:
            return 200, self._get(self.pods, ns, rest[0], "pods")
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _secrets(self, method: str, ns: str, rest: list[str], body: Obj | None) -> tuple[int, Any]:
        if method == "POST" and not rest:
            self._authorize("create", "secrets")
            secret = self._named(body, "Secret")
            self._create(self.secrets, ns, secret, "secrets")
            return 201, secret
        name = rest[0] if rest else ""
        if method == "GET":
            return 200, self._get(self.secrets, ns, name, "secrets")
        if method == "PUT":
            self._authorize("update", "secrets")
            self._get(self.secrets, ns, name, "secrets")
            secret = self._named(body, "Secret")
            secret["metadata"] = {
                **secret["metadata"],
                **self._meta(name, ns, secret["metadata"].get("labels")),
            }
            self.secrets[(ns, name)] = secret
            return 200, secret
        if method == "DELETE":
            self._authorize("delete", "secrets")
            self._get(self.secrets, ns, name, "secrets")
            del self.secrets[(ns, name)]
            return 200, self._deleted(name, "secrets")
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def _services(self, method: str, ns: str, rest: list[str], body: Obj | None) -> tuple[int, Any]:
        """Services: create (a port and a selector are required, as the API server checks), get, delete."""
        if method == "POST" and not rest:
            self._authorize("create", "services")
            service = self._named(body, "Service")
            spec = service.get("spec") or {}
            if not spec.get("ports"):
                raise invalid("Service", service["metadata"]["name"], "spec.ports")
            if not spec.get("selector"):
                raise invalid("Service", service["metadata"]["name"], "spec.selector")
            self._create(self.services, ns, service, "services")
            return 201, service
        name = rest[0] if rest else ""
        if method == "GET":
            return 200, self._get(self.services, ns, name, "services")
        if method == "DELETE":
            self._authorize("delete", "services")
            self._get(self.services, ns, name, "services")
            return 200, self.services.pop((ns, name))  # the API server answers with the deleted Service
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def _jobs(
        self, method: str, ns: str, rest: list[str], query: dict[str, str], body: Obj | None
    ) -> tuple[int, Any]:
        if method == "POST" and not rest:
            self._authorize("create", "jobs")
            job = self._validate_job(body)
            self._create(self.jobs, ns, job, "jobs")
            self._run_controller(ns, job)
            return 201, job
        if method == "GET" and not rest:
            self._authorize("list", "jobs")
            jobs = [
                j
                for (n, _), j in self.jobs.items()
                if n == ns and selector_matches(j["metadata"].get("labels", {}), query.get("labelSelector"))
            ]
            return 200, self._list("JobList", jobs, "batch/v1")
        name = rest[0] if rest else ""
        if method == "GET":
            self._authorize("get", "jobs")
            return 200, self._get(self.jobs, ns, name, "jobs")
        if method == "DELETE":
            self._authorize("delete", "jobs")
            self._get(self.jobs, ns, name, "jobs")
            del self.jobs[(ns, name)]
            policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy", "Background")
            if policy != "Orphan":  # foreground/background deletion removes the pods too (here: at once)
                for pod in self.job_pods(name, ns):
                    del self.pods[(ns, pod["metadata"]["name"])]
            return 200, self._deleted(name, "jobs", "batch")
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    # -- validation -------------------------------------------------------------------------------
    def _named(self, body: Obj | None, kind: str) -> Obj:
        obj = copy.deepcopy(body or {})
        if not obj.get("metadata", {}).get("name"):
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                {"kind": kind.lower() + "s"},
            )
        return obj

    def _validate_job(self, body: Obj | None) -> Obj:
        job = self._named(body, "Job")
        name = job["metadata"]["name"]
        unknown = sorted(set(job) - JOB_TOP_FIELDS) + sorted(
            f"spec.{k}" for k in set(job.get("spec", {})) - JOB_SPEC_FIELDS
        )
        if unknown:
            raise ApiError(400, "BadRequest", f'strict decoding error: unknown field "{unknown[0]}"')
        containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        if not containers:
            raise invalid("Job", name, "spec.template.spec.containers")
        for i, container in enumerate(containers):
            for field in ("name", "image"):
                if not container.get(field):
                    raise invalid("Job", name, f"spec.template.spec.containers[{i}].{field}")
        if len(name) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
            raise invalid("Job", name, "metadata.name", "Invalid value: must be a DNS-1123 label")
        return job

    # -- helpers ----------------------------------------------------------------------------------
    def _meta(self, name: str, ns: str | None, labels: dict[str, str] | None = None) -> Obj:
        meta: Obj = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(len(self.requests) + 1),
            "creationTimestamp": now(),
            "labels": dict(labels or {}),
        }
        if ns:
            meta["namespace"] = ns
        return meta

    def _create(self, store: dict[tuple[str, str], Obj], ns: str, obj: Obj, resource: str) -> None:
        name = obj["metadata"]["name"]
        if (ns, name) in store:
            group = "batch" if resource == "jobs" else ""
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource}{"." + group if group else ""} "{name}" already exists',
                {"name": name, "group": group, "kind": resource},
            )
        obj["metadata"] = {**obj["metadata"], **self._meta(name, ns, obj["metadata"].get("labels"))}
        obj.setdefault("status", {})
        store[(ns, name)] = obj

    def _get(self, store: dict[tuple[str, str], Obj], ns: str, name: str, resource: str) -> Obj:
        if (ns, name) not in store:
            raise not_found(resource, name)
        return store[(ns, name)]

    def _list(self, kind: str, items: list[Obj], api_version: str = "v1") -> Obj:
        return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": items}

    def _list_pods(self, ns: str | None, query: dict[str, str]) -> Obj:
        pods = [
            p
            for (n, _), p in self.pods.items()
            if (ns is None or n == ns)
            and selector_matches(p["metadata"].get("labels", {}), query.get("labelSelector"))
            and field_matches(p, query.get("fieldSelector"))
        ]
        return self._list("PodList", pods)

    def _log(self, ns: str, name: str, query: dict[str, str]) -> str:
        pod = self._get(self.pods, ns, name, "pods")
        if pod["status"].get("phase") == "Pending":
            raise ApiError(
                400,
                "BadRequest",
                f'container "{pod["spec"]["containers"][0]["name"]}" in pod '
                f'"{name}" is waiting to start: ContainerCreating',
            )
        lines = self.logs.get(name, "").splitlines(keepends=True)
        tail = int(query.get("tailLines", len(lines)))
        return "".join(lines[-tail:] if tail else [])

    def _deleted(self, name: str, kind: str, group: str = "") -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": group, "kind": kind},
        }

    # -- the controller ---------------------------------------------------------------------------
    def _pod(self, name: str, ns: str, labels: dict[str, str], containers: list[Obj]) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._meta(name, ns, labels),
            "spec": {"containers": copy.deepcopy(containers), "restartPolicy": "Never"},
            "status": {"phase": "Pending"},
        }

    def _run_controller(self, ns: str, job: Obj) -> None:
        """The Job controller plus the scheduler, in one step: one pod, bound where its GPUs fit."""
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": job["metadata"]["uid"],
        }
        pod = self._pod(f"{name}-{uuid.uuid4().hex[:5]}", ns, labels, template["spec"]["containers"])
        pod["spec"]["affinity"] = template["spec"].get("affinity")
        node = self._fit(pod)
        if node is None:
            pod["status"] = self._unschedulable_status(len(self.nodes))
        else:
            pod["spec"]["nodeName"] = node
            pod["status"] = {
                "phase": "Running",
                "startTime": now(),
                "containerStatuses": [
                    {
                        "name": pod["spec"]["containers"][0]["name"],
                        "image": pod["spec"]["containers"][0]["image"],
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now()}},
                    }
                ],
            }
        self.pods[(ns, pod["metadata"]["name"])] = pod
        job["status"] = {"active": 1, "startTime": now()}

    def _fit(self, pod: Obj) -> str | None:
        wanted = gpu_request(pod)
        allowed = self._affinity_values(pod)
        for name, node in self.nodes.items():
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
            label = node["metadata"]["labels"].get(GPU_LABEL)
            if (
                not ready
                or node["spec"].get("unschedulable")
                or (allowed is not None and label not in allowed)
            ):
                continue
            used = sum(
                gpu_request(p)
                for p in self.pods.values()
                if p["spec"].get("nodeName") == name and p["status"].get("phase") not in TERMINATED_PHASES
            )
            if int(node["status"]["allocatable"].get(GPU, 0)) - used >= wanted:
                return name
        return None

    def _affinity_values(self, pod: Obj) -> set[str] | None:
        terms = (
            ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms") or []
        values = {
            v
            for t in terms
            for e in t.get("matchExpressions", [])
            if e["key"] == GPU_LABEL
            for v in e.get("values", [])
        }
        return values if terms else None

    def _unschedulable_status(self, nodes: int) -> Obj:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": now(),
                    "message": f"0/{nodes} nodes are available: {nodes} Insufficient {GPU}.",
                }
            ],
        }

    def _finish(
        self,
        job_name: str,
        ns: str,
        phase: str,
        exit_code: int,
        condition: str,
        reason: str,
        message: str,
        log: str,
    ) -> None:
        with self.lock:
            job = self.jobs[(ns, job_name)]
            for pod in self.job_pods(job_name, ns):
                pod["status"].update(
                    phase=phase,
                    containerStatuses=[
                        {
                            "name": pod["spec"]["containers"][0]["name"],
                            "image": pod["spec"]["containers"][0]["image"],
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "terminated": {
                                    "exitCode": exit_code,
                                    "reason": "Completed" if exit_code == 0 else "Error",
                                    "finishedAt": now(),
                                }
                            },
                        }
                    ],
                )
                self.logs[pod["metadata"]["name"]] = log
            counts = {"succeeded": 1} if phase == "Succeeded" else {"failed": 1}
            job["status"] = {
                **job["status"],
                "active": 0,
                **counts,
                "conditions": [
                    {
                        "type": condition,
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastProbeTime": now(),
                        "lastTransitionTime": now(),
                    }
                ],
            }
            if phase == "Succeeded":
                job["status"]["completionTime"] = now()


def decode_secret(secret: Obj) -> dict[str, str]:
    """The plain values of a stored Secret (tests assert on them; the API itself stores base64)."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _handler_for(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            while api.hang.is_set():  # a wedged server: accept the request, never answer in time
                time.sleep(0.05)
            body = json.loads(raw) if raw else None
            code, payload = api.handle(self.command, self.path, body)
            is_text = isinstance(payload, str)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if is_text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to tell
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

    return Handler
