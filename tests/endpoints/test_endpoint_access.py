"""Who may call an endpoint, end to end: a real worker and admission loop, the gateway as a real server,
the `fabric endpoint key` commands as a user types them, and requests over real HTTP.

- `access: token` (the default) refuses a request without a credential, with a forged one, or with a
  token of another team's member, and serves a fabric token of the team (or an admin's) and an
  endpoint key its team made, until the key is revoked; `access: public` serves anyone;
- an EndpointWorkflow started with replicas in its input (an address of the sender's choosing, a
  name of another team's workload) is refused: the gateway never routes there and the other team's
  workload keeps running.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cli.util import fabric_cli, free_port
from failover.util import eventually, job, sim_pool, suffix
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy

from inferofabric.auth.client import find_token
from inferofabric.auth.tokens import create_token, signing_key
from inferofabric.gateway.server import Gateway
from inferofabric.gateway.server import start as start_gateway
from inferofabric.models.common import WorkloadState
from inferofabric.workflows.endpoint import endpoint_id


@pytest_asyncio.fixture
async def gateway(fabric: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    """The gateway with its defaults: the fabric's key from FABRIC_HOME, the endpoint keys from the
    client's store."""
    port = free_port()
    monkeypatch.setenv("FABRIC_GATEWAY_URL", f"http://127.0.0.1:{port}")
    served = await start_gateway(fabric.client, port, hold_timeout=20)
    try:
        yield served
    finally:
        await served.close()


def endpoint(name: str, **changes: Any) -> dict[str, Any]:
    return {"name": name, "team": "nlp", "image": "ghcr.io/acme/echo:1",
            "resources": {"gpu": {"type": "A100", "count": 1}}, "replicas": {"min": 1, "max": 1},
            "annotations": {"sim.inferofabric.io/latency": "5ms"}, **changes}


def member(fabric: Any, team: str) -> str:
    return create_token(signing_key(fabric.home), "member", team=team, subject=f"someone-of-{team}", now=time.time())


async def get(url: str, credential: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with aiohttp.ClientSession() as session, session.post(url, data=b"hi", headers=headers) as answer:
        return answer.status, await answer.text()


async def test_tokens_and_endpoint_keys_at_the_gateway(fabric: Any, gateway: Gateway, database_url: str) -> None:
    client = fabric.client
    await client.register_pool(sim_pool(f"dc-{suffix()}", "on-prem", 2))
    guarded = await client.deploy_endpoint(endpoint("guarded"))
    public = await client.deploy_endpoint(endpoint("open", access="public"))
    assert (await guarded.status()).spec.access == "token"
    for handle in (guarded, public):
        await eventually(lambda h=handle: _ready(h), 30, f"{handle.name} ready")
    url = guarded.url + "predict"

    admin = find_token(fabric.home)
    assert admin
    for credential, code, words in [(None, 401, "needs `Authorization: Bearer"), ("garbage", 401, "not a fabric token"),
                                    (member(fabric, "vision"), 403, "may not call team 'nlp'")]:
        status, text = await get(url, credential)
        assert status == code and words in text and "Traceback" not in text, (credential, status, text)
    for credential in (admin, member(fabric, "nlp")):
        status, text = await get(url, credential)
        assert status == 200 and json.loads(text)["endpoint"] == "guarded", text
    status, text = await get(public.url + "predict")
    assert status == 200, text

    # Endpoint keys, from the CLI where the store and the fabric's key are.
    env = {"FABRIC_DATABASE_URL": database_url}
    code, out, err = await fabric_cli(fabric, "endpoint", "key", "create", "guarded", "--label", "web", env=env)
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("fek_") and len(key) > 40
    status, text = await get(url, key)
    assert status == 200, text
    status, _ = await get(public.url.replace("/open/", "/ghost/") + "x", key)
    assert status == 404
    code, out, err = await fabric_cli(fabric, "endpoint", "key", "list", "guarded", "--json", env=env)
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["label"] == "web" and listed["revoked_at"] is None and key not in out
    assert listed["created_by"] == "admin"
    # Another team's member may neither make nor revoke guarded's keys; nlp's member may.
    outsider = {**env, "FABRIC_TOKEN": member(fabric, "vision")}
    for args in (["create", "guarded"], ["revoke", "guarded", listed["id"]], ["list", "guarded"]):
        code, _, err = await fabric_cli(fabric, "endpoint", "key", *args, env=outsider)
        assert code == 3 and "may not manage the keys of endpoint 'guarded'" in err, (args, err)
    code, _, err = await fabric_cli(fabric, "endpoint", "key", "revoke", "guarded", listed["id"],
                                    env={**env, "FABRIC_TOKEN": member(fabric, "nlp")})
    assert code == 0, err

    async def refused() -> bool:
        return (await get(url, key))[0] == 401

    await eventually(refused, 5, "the revoked key refused")
    code, out, _ = await fabric_cli(fabric, "endpoint", "key", "list", "guarded", "--json", env=env)
    assert json.loads(out)[0]["revoked_by"] == "someone-of-nlp"
    code, _, err = await fabric_cli(fabric, "endpoint", "key", "revoke", "guarded", "nope", env=env)
    assert code == 3 and "has no key 'nope'" in err
    for handle in (guarded, public):
        await handle.delete()


async def _ready(handle: Any) -> Any:
    status = await handle.status()
    return status if status.ready >= 1 else None


async def test_an_endpoint_started_with_forged_replicas_never_routes_to_them(fabric: Any, gateway: Gateway) -> None:
    client = fabric.client
    # Where a forged replica would send the gateway (the Temporal UI's API, say): a listener that counts.
    connections: list[int] = []

    async def count(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    forged_address = f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    # Another team's workload, which a forged replica names (the endpoint would cancel its "replica").
    await client.register_pool(sim_pool(f"dc-{suffix()}", "on-prem", 2))
    victim = await client.submit(job(f"victim-{suffix()}", team="vision"))

    async def running() -> Any:
        status = await victim.status()
        return status if status.state == WorkloadState.RUNNING else None

    await eventually(running, 30, "the other team's workload running")

    spec = endpoint("forged", access="public", replicas={"min": 0, "max": 1})
    forged_replica = {"id": victim.id, "version": 1, "state": "running", "backend": "local",
                      "address": forged_address, "stopping": True, "stop_at": 0.0, "served": True, "seq": 99}
    inputs = [
        {"spec": spec, "replicas": [forged_replica], "tag": "x1", "ever_ready": True, "scale": {"desired": 1}},
        {"spec": spec, "replicas": [{**forged_replica, "stopping": False, "stop_at": None}]},
        {"spec": spec, "carried": {"replicas": [forged_replica]}},  # a field nobody knows: refused too
    ]
    for forged in inputs:
        handle = await client.temporal.start_workflow("EndpointWorkflow", forged, id=endpoint_id("forged"),
                                                      task_queue=fabric.task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 20)
        cause = failure.value.cause
        assert getattr(cause, "type", None) == "InvalidInput", cause
        assert "deployed from its spec alone" in str(cause), cause
        status, text = await get(gateway_url(gateway) + "/e/forged/x")
        assert status != 200, text
    # A start that asks for retries is refused too (a retry gets the first input back as a continued run).
    handle = await client.temporal.start_workflow(
        "EndpointWorkflow", {"spec": spec}, id=endpoint_id("forged"), task_queue=fabric.task_queue,
        retry_policy=RetryPolicy(maximum_attempts=3))
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 20)
    assert "without a retry policy" in str(failure.value.cause)

    await asyncio.sleep(1.5)
    assert not connections, "the gateway connected to the forged address"
    assert (await victim.status()).state == WorkloadState.RUNNING  # never cancelled by the forged "endpoint"
    listener.close()
    await victim.cancel()

    # The same spec, sent as a person may send it, deploys and serves from the fabric's own replica.
    handle = await client.deploy_endpoint({**spec, "replicas": {"min": 1, "max": 1}})
    await eventually(lambda: _ready(handle), 30, "the honest endpoint ready")
    status, text = await get(handle.url + "x")
    assert status == 200 and json.loads(text)["replica"].startswith("forged-"), text
    assert not connections
    await handle.delete()


def gateway_url(gateway: Gateway) -> str:
    import os

    return os.environ["FABRIC_GATEWAY_URL"]
