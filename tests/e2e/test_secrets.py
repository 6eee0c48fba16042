"""Secret values reach the job and nothing else: not workflow history, search attributes, memos,
queries, the ControlWorkflow that stored them, nor (on Kubernetes) the Job object.

History payloads are base64-encoded JSON, so a plain substring search of `history.to_json()` would
miss a leak: the scan below decodes every base64 string it meets, and is checked against a plain
env value that *must* be found the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client

from inferofabric.backends.kubernetes_manifests import k8s_name, secret_name
from inferofabric.models import WorkloadSpec, WorkloadState, WorkloadStatus
from inferofabric.sdk.errors import FabricError
from inferofabric.worker.main import build_agent_worker

try:  # `tests` is a package only when tests/__init__.py exists; otherwise pytest puts tests/ on sys.path
    from tests.fakes.k8s_api import FakeKubeApi, decode_secret
except ModuleNotFoundError:
    from fakes.k8s_api import FakeKubeApi, decode_secret  # type: ignore[no-redef]

SECRET = "s3cr3t-value-123"
PLAIN = "plain-marker-7f3a"  # an ordinary env value: it is in history, and the scan must find it
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()
NAMESPACE = "gpu-jobs"


@pytest.fixture
def fabric_temporal(own_namespace: Client) -> Client:
    """This module's workloads live in a namespace of their own (see conftest.own_namespace)."""
    return own_namespace


def spec(command: list[str]) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "team": "payments",
        "image": "ghcr.io/acme/migrate:2.0",
        "command": command,
        "resources": {"gpu": {"type": "A100", "count": 1}},
        "env": {"DB_PASSWORD": {"secret": "db-password"}, "APP_MODE": PLAIN},
    })


def contains(node: Any, needle: str) -> bool:
    """`needle` anywhere in a JSON-like tree, also inside base64-encoded strings (payload data)."""
    if isinstance(node, dict):
        return any(contains(k, needle) or contains(v, needle) for k, v in node.items())
    if isinstance(node, list | tuple):
        return any(contains(item, needle) for item in node)
    if not isinstance(node, str):
        return needle in repr(node)
    if needle in node:
        return True
    try:
        decoded = base64.b64decode(node, validate=True)
    except (binascii.Error, ValueError):
        return False
    return needle.encode() in decoded


async def history_of(fabric: Any, workflow_id: str) -> Any:
    history = await fabric.temporal.get_workflow_handle(workflow_id).fetch_history()
    return json.loads(history.to_json())


async def wait_for(handle: Any, state: WorkloadState, timeout: float = 20.0) -> WorkloadStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status = None
    while loop.time() < deadline:
        try:
            status = await handle.status()
        except FabricError:
            status = None
        if status is not None and (status.state == state or status.state.terminal):
            break
        await asyncio.sleep(0.1)
    assert status is not None and status.state == state, f"{handle.id}: {status}"
    return status


async def assert_nowhere_but_the_job(fabric: Any, handle: Any) -> None:
    """The workload's history, visibility record and query answers, and every ControlWorkflow run of
    this fabric (set_secret included), never carry the secret value."""
    history = await history_of(fabric, handle.id)
    assert contains(history, PLAIN), "the scan must see inside history payloads"
    assert not contains(history, SECRET), "secret value in the workload's history"

    description = await fabric.temporal.get_workflow_handle(handle.id).describe()
    attributes = {pair.key.name: pair.value for pair in description.typed_search_attributes}
    memo = await description.memo()
    assert attributes["FabricPool"] and memo["backend"]  # the record is there...
    assert not contains(attributes, SECRET) and not contains(memo, SECRET)  # ...without the value
    listed = [w for w in await fabric.client.list() if w.id == handle.id]
    assert listed and not contains([w.model_dump(mode="json") for w in listed], SECRET)
    answers = [await handle.status(), await handle.explain()]
    assert not contains([a.model_dump(mode="json") for a in answers], SECRET)

    query = f"WorkflowType = 'ControlWorkflow' AND TaskQueue = '{fabric.task_queue}'"
    for _ in range(50):  # visibility is eventually consistent
        runs = [w.id async for w in fabric.temporal.list_workflows(query)]
        if any(run.startswith("fabric-control-put_secret-") for run in runs):
            break
        await asyncio.sleep(0.1)
    assert any(run.startswith("fabric-control-put_secret-") for run in runs), runs
    for run in runs:
        control = await history_of(fabric, run)
        if run.startswith("fabric-control-put_secret-"):
            assert contains(control, "db-password")  # the secret's name travels, sealed value only
        assert not contains(control, SECRET), f"secret value in the history of {run}"


def test_scan_sees_base64_payloads() -> None:
    encoded = base64.b64encode(json.dumps({"env": {"DB_PASSWORD": SECRET}}).encode()).decode()
    assert contains({"events": [{"payloads": [{"data": encoded}]}]}, SECRET)
    assert not contains({"data": base64.b64encode(b"nothing here").decode()}, SECRET)


async def test_secret_reaches_local_job_and_nothing_else(fabric: Any) -> None:
    pool = f"local-{uuid.uuid4().hex[:6]}"
    await fabric.client.register_pool({"name": pool, "location": "on-prem", "backend": "local",
                                       "gpus": {"A100": 1}, "local": {"discover_gpus": False}})
    await fabric.client.set_policy({"placement": {"default": [pool]}})
    await fabric.client.set_secret("db-password", SECRET, team="payments")
    assert await fabric.client.secrets() == [{"name": "db-password", "pool": None, "owner": "payments",
                                              "shared_with": []}]

    # The command compares a digest: the value itself written in the spec would be in history by design.
    check = f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -d" " -f1)" = {DIGEST} && echo ok'
    handle = await fabric.client.submit(spec(["sh", "-c", check]))
    done = await wait_for(handle, WorkloadState.SUCCEEDED)  # `test` exits 1 unless the value arrived
    assert done.pool == pool
    assert (fabric.home / "logs" / f"{done.job_id}.log").read_text() == "ok\n"

    await assert_nowhere_but_the_job(fabric, handle)
    assert SECRET not in fabric.store.get_secret("db-password").ciphertext  # stored sealed


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    api.add_node("gpu-node-1", gpus=8)
    yield api
    api.stop()


async def test_kubernetes_job_references_a_secret(fabric: Any, kube_api: FakeKubeApi) -> None:
    pool = f"k8s-{uuid.uuid4().hex[:6]}"
    await fabric.client.register_pool({
        "name": pool, "location": "on-prem", "backend": "kubernetes", "gpus": {"A100": 8},
        "kubernetes": {"api_server": kube_api.url, "namespace": NAMESPACE, "request_timeout": 2},
    })
    await fabric.client.set_policy({"placement": {"default": [pool]}})
    await fabric.client.set_secret("db-password", SECRET, team="payments")

    async with build_agent_worker(fabric.temporal, pool, fabric.home):
        handle = await fabric.client.submit(spec(["./migrate"]))
        running = await wait_for(handle, WorkloadState.RUNNING)
        job_name = k8s_name(running.job_id)
        job = kube_api.job(job_name, NAMESPACE)
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DB_PASSWORD"] == {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": secret_name(job_name), "key": "DB_PASSWORD"}}}
        assert env["APP_MODE"] == {"name": "APP_MODE", "value": PLAIN}
        assert SECRET not in json.dumps(job)
        job_posts = [body for method, path, body in kube_api.requests if method == "POST" and "/jobs" in path]
        assert job_posts and not contains(job_posts, SECRET)  # not even on the wire
        # The value lives only in the job's Secret, which the cluster injects into the container.
        assert decode_secret(kube_api.secrets[(NAMESPACE, secret_name(job_name))]) == {"DB_PASSWORD": SECRET}

        kube_api.succeed(job_name, NAMESPACE, log="migrated\n")
        await wait_for(handle, WorkloadState.SUCCEEDED)
        assert (NAMESPACE, secret_name(job_name)) not in kube_api.secrets  # not left behind in the cluster
        await assert_nowhere_but_the_job(fabric, handle)


# -- secrets have owners -------------------------------------------------------------------------------
def member_client(fabric: Any, team: str, subject: str) -> Any:
    from inferofabric.auth.tokens import create_token, signing_key
    from inferofabric.sdk.client import FabricClient

    made = create_token(signing_key(fabric.home), "member", team=team, subject=subject, now=time.time())
    return FabricClient(fabric.temporal, task_queue=fabric.task_queue, store_url=fabric.client.store_url, token=made)


async def local_pool(fabric: Any) -> str:
    pool = f"local-{uuid.uuid4().hex[:6]}"
    await fabric.client.register_pool({"name": pool, "location": "on-prem", "backend": "local",
                                       "gpus": {"A100": 1}, "local": {"discover_gpus": False}})
    await fabric.client.set_policy({"placement": {"default": [pool]}})
    return pool


def owned_spec(team: str, secret: str, name: str) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": team, "image": "busybox", "resources": {"gpu": {"type": "A100", "count": 1}},
        "command": ["sh", "-c", 'printf "%s" "$PW"; echo; echo leaked-or-not'],
        "env": {"PW": {"secret": secret}}})


async def test_a_workload_may_not_use_another_teams_or_the_fabrics_secret(fabric: Any) -> None:
    pool = await local_pool(fabric)
    await fabric.client.set_secret("db-password", SECRET, team="payments")  # the admin sets payments' secret
    await fabric.client.set_secret("pool-cred", "fabric-only-value", fabric=True)
    ads = member_client(fabric, "ads", "mallory")
    for name, secret, whose in (("steal", "db-password", "team 'payments'"),
                                ("steal-fabric", "pool-cred", "the fabric's own")):
        handle = await ads.submit(owned_spec("ads", secret, name))
        done = await wait_for(handle, WorkloadState.FAILED)
        assert f"secret {secret!r} is {whose}" in done.message and "\n" not in done.message, done.message
        assert done.attempts <= 1
    # The job never ran: the local pool never made a job folder or a log for those attempts.
    jobs = fabric.home / "local" / pool / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())
    assert not list((fabric.home / "logs").glob("steal*.log"))
    assert not fabric.store.active_reservations()


async def test_members_set_their_own_teams_secrets_only_and_sharing_opens_one_to_another_team(fabric: Any) -> None:
    from inferofabric.sdk.errors import PermissionDenied

    pool = await local_pool(fabric)
    await fabric.client.set_secret("pool-cred", "x", fabric=True)
    ads, vision = member_client(fabric, "ads", "alice"), member_client(fabric, "vision", "victor")
    await ads.set_secret("ads-key", SECRET)  # a member's secret is its own team's
    with pytest.raises(PermissionDenied, match="may not set a secret of team 'vision'"):
        await ads.set_secret("vision-key", "v", team="vision")
    with pytest.raises(PermissionDenied, match="may not set the fabric's own secret"):
        await ads.set_secret("pool-cred", "mine now", fabric=True)
    with pytest.raises(PermissionDenied, match="may not replace secret 'pool-cred'"):
        await ads.set_secret("pool-cred", "mine now")
    with pytest.raises(PermissionDenied, match="may not replace secret 'ads-key'"):
        await vision.set_secret("ads-key", "overwritten")
    assert fabric.store.get_secret("pool-cred").team is None  # nothing changed
    listed = {s["name"]: s for s in await fabric.client.secrets()}
    assert (listed["ads-key"]["owner"], listed["pool-cred"]["owner"]) == ("ads", "fabric")
    assert [s["name"] for s in await vision.secrets()] == []  # a member sees its team's (and shared) only

    refused = [e for e in await fabric.client.audit(limit=100) if e["action"] == "put_secret"
               and e["result"] == "refused"]
    assert {e["identity"] for e in refused} == {"alice", "victor"}

    # Shared with vision: vision's workload gets it (and the job sees it: the digest matches).
    await ads.set_secret("ads-key", SECRET, share_with=["vision"])
    assert [s["name"] for s in await vision.secrets()] == ["ads-key"]
    check = f'test "$(printf %s "$PW" | sha256sum | cut -d" " -f1)" = {DIGEST} && echo ok'
    spec = owned_spec("vision", "ads-key", "shared-use").model_copy(update={"command": ["sh", "-c", check]})
    done = await wait_for(await vision.submit(spec), WorkloadState.SUCCEEDED)
    assert done.pool == pool and (fabric.home / "logs" / f"{done.job_id}.log").read_text() == "ok\n"
