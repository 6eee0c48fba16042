"""Reads on the store path need a valid token too (a client on the fabric's host reads the store
directly, so no gate sees them): none or a garbage one is PermissionDenied (the CLI: one line, exit
3); the audit log is for operators and admins; a member's cost report holds its own team's lines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from inferofabric.auth.readers import reader_identity
from inferofabric.auth.tokens import AuthError, create_token, signing_key
from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.sdk.client import FabricClient
from inferofabric.sdk.errors import PermissionDenied

try:
    from tests.cli.util import fabric_cli
except ModuleNotFoundError:
    from cli.util import fabric_cli  # type: ignore[no-redef]


def client_with(fabric: Any, token: str, store: bool = True) -> FabricClient:
    return FabricClient(fabric.temporal, task_queue=fabric.task_queue,
                        store_url=fabric.client.store_url if store else None, token=token)


def agent_token(fabric: Any) -> str:
    return create_token(signing_key(fabric.home), "agent", pool="dc1", now=time.time())


def token(fabric: Any, role: str, team: str | None = None, subject: str | None = None, ttl: float = 3600) -> str:
    from datetime import timedelta

    return create_token(signing_key(fabric.home), role, team=team, subject=subject, now=time.time(),
                        ttl=timedelta(seconds=ttl))


READS = {
    "audit": lambda c: c.audit(), "cost": lambda c: c.cost(), "cost lines": lambda c: c.cost_lines("w"),
    "idle cost": lambda c: c.cost_idle(), "budgets": lambda c: c.budgets(), "policy": lambda c: c.policy(),
    "pools": lambda c: c.pools(), "queue": lambda c: c.queue(),
}


@pytest.mark.parametrize("read", sorted(READS))
async def test_store_reads_without_a_valid_token_are_refused(fabric: Any, read: str) -> None:
    foreign = create_token(b"z" * 48, "admin", now=time.time())
    grant_only = token(fabric, "admin").split("~")[0] + "~" + "0" * 64  # a grant copied from somewhere
    for text, why in (("", "no token"), ("garbage", "not a fabric token"), (foreign, "not one this fabric issued"),
                      (grant_only, "not one this fabric issued")):
        with pytest.raises(PermissionDenied, match=why):
            await READS[read](client_with(fabric, text))
    assert isinstance(await READS[read](client_with(fabric, token(fabric, "admin"))), list | dict | object)


def test_an_expired_token_reads_nothing(tmp_path: Any) -> None:
    from datetime import timedelta

    old = create_token(signing_key(tmp_path), "admin", ttl=timedelta(seconds=10), now=time.time() - 60)
    with pytest.raises(AuthError, match="expired"):
        reader_identity(old, tmp_path)
    with pytest.raises(AuthError, match="no signing key"):  # and a read never makes a key
        reader_identity(old, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


async def test_a_member_reads_its_own_teams_audit_rows_and_cost_only(fabric: Any) -> None:
    await fabric.client.register_pool({"name": "dc1", "location": "on-prem", "backend": "simulated",
                                       "region": "dc1", "gpus": {"A100": 8}, "price_per_gpu_hour": {"A100": 2.0}})
    for name, team in (("ads-train", "ads"), ("vision-train", "vision")):
        await fabric.client.submit(WorkloadSpec.model_validate({
            "name": name, "team": team, "project": f"{team}-p", "image": "img",
            "resources": {"gpu": {"type": "A100", "count": 1}},
            "annotations": {"sim.inferofabric.io/duration": "600s"}}))
    for name in ("ads-train", "vision-train"):
        for _ in range(100):
            if (await fabric.client.get(name).status()).state == WorkloadState.RUNNING:
                break
            await asyncio.sleep(0.2)
    member = client_with(fabric, token(fabric, "member", "ads", subject="alice"))
    operator = client_with(fabric, token(fabric, "operator", subject="ops"))

    with pytest.raises(PermissionDenied):
        await member.get("vision-train").cancel()  # a refused change: vision's row in the log
    everyone_rows = await operator.audit(limit=500)
    assert {row["team"] for row in everyone_rows} >= {"ads", "vision"}
    mine = await member.audit(limit=500)
    assert mine and {row["team"] for row in mine} == {"ads"}  # its own team's rows, no other team's
    through_plane = client_with(fabric, str(member.token), store=False)
    assert {row["team"] for row in await through_plane.audit(limit=500)} == {"ads"}

    everyone = {row["key"] for row in await fabric.client.cost(by="team")}
    assert everyone == {"ads", "vision"}
    assert {row["key"] for row in await member.cost(by="team")} == {"ads"}
    assert {row["key"] for row in await member.cost(by="workload")} == {"ads-train"}
    assert {row["key"] for row in await member.cost(by="project")} == {"ads-p"}
    assert {row["key"] for row in await member.cost(by="pool")} == {"dc1"}
    assert (await member.cost_lines("vision-train"))["lines"] == []
    assert [line["team"] for line in (await member.cost_lines("ads-train"))["lines"]] == ["ads"]

    # The CLI: one line, exit code 3, for a garbage token and for a member's `fabric audit`.
    env = {"FABRIC_DATABASE_URL": fabric.store.url}
    for text, read, why in (("garbage", "audit", "not a fabric token"), ("garbage", "cost", "not a fabric token"),
                            ("garbage", "budget", "not a fabric token"), ("garbage", "policy", "not a fabric token"),
                            (agent_token(fabric), "audit", "reads nothing here")):
        args = ["budget", "list"] if read == "budget" else ["policy", "show"] if read == "policy" else [read]
        code, out, err = await fabric_cli(fabric, *args, env={**env, "FABRIC_TOKEN": str(text)})
        assert code == 3 and why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, out, err = await fabric_cli(fabric, "cost", "--by", "team", "--json",
                                      env={**env, "FABRIC_TOKEN": str(member.token)})
    assert code == 0, err
    assert "vision" not in out and "ads" in out
