"""`fabric endpoint ...` as a person types it: the URL on deploy, the JSON status, scaling, and
one-line errors with the documented exit codes (2 bad input, 3 not found or not allowed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from cli.util import fabric_cli
from failover.util import eventually, sim_pool


def one_line(err: str) -> bool:
    return "Traceback" not in err and len([line for line in err.splitlines() if line.strip()]) == 1


async def test_deploy_status_scale_explain_and_delete_from_the_cli(fabric: Any, tmp_path: Path,
                                                                   monkeypatch: Any) -> None:
    monkeypatch.setenv("FABRIC_GATEWAY_URL", "http://127.0.0.1:8235")
    await fabric.client.register_pool(sim_pool("dc", "on-prem", 4))
    spec = {"name": "echo", "team": "nlp", "image": "ghcr.io/acme/echo:1", "replicas": {"min": 1, "max": 3},
            "resources": {"gpu": {"type": "A100", "count": 1}}}
    path = tmp_path / "endpoint.yaml"
    path.write_text(yaml.safe_dump(spec))

    code, out, err = await fabric_cli(fabric, "endpoint", "deploy", "-f", str(path),
                                      env={"FABRIC_GATEWAY_URL": "http://127.0.0.1:8235"})
    assert code == 0, err
    assert "http://127.0.0.1:8235/e/echo/" in out

    async def placed() -> Any:
        code, out, err = await fabric_cli(fabric, "endpoint", "status", "echo", "--json",
                                          env={"FABRIC_GATEWAY_URL": "http://127.0.0.1:8235"})
        assert code == 0, err
        status = json.loads(out)
        running = [r for r in status["replicas"] if r["state"] == "running"]
        return status if running else None

    status = await eventually(placed, 30, "a replica running")
    assert {"name", "url", "state", "desired", "ready", "replicas"} <= set(status)
    assert status["url"] == "http://127.0.0.1:8235/e/echo/" and status["desired"] == 1
    assert {"id", "pool", "location", "state"} <= set(status["replicas"][0])
    assert status["replicas"][0]["pool"] == "dc" and status["replicas"][0]["location"] == "on-prem"

    code, out, err = await fabric_cli(fabric, "endpoint", "scale", "echo", "--min", "2", "--json")
    assert code == 0 and json.loads(out)["min"] == 2, err
    code, out, err = await fabric_cli(fabric, "endpoint", "list", "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["echo"], err
    code, out, err = await fabric_cli(fabric, "endpoint", "explain", "echo")
    assert code == 0 and "where and why" in out and "dc" in out, err

    # Mistakes: one line each, with the documented exit code.
    for args, expected, words in [
        (["endpoint", "status", "ghost"], 3, "no endpoint named 'ghost'"),
        (["endpoint", "delete", "ghost"], 3, "no endpoint named 'ghost'"),
        (["endpoint", "deploy", "-f", "/nonexistent.yaml"], 2, "no such file"),
        (["endpoint", "scale", "echo"], 2, "say --min, --max or both"),
        (["endpoint", "scale", "echo", "--min", "5", "--max", "2"], 2, "cannot exceed"),
        (["endpoint", "deploy", "-f", str(path)], 2, "already deployed"),
    ]:
        code, _, err = await fabric_cli(fabric, *args)
        assert code == expected and words in err and one_line(err), (args, code, err)

    # Locked doors: a member of another team may neither deploy for nlp nor scale nlp's endpoint.
    code, token, err = await fabric_cli(fabric, "token", "create", "--role", "member", "--team", "vision")
    assert code == 0, err
    other = {"FABRIC_TOKEN": token.strip().splitlines()[-1]}
    code, _, err = await fabric_cli(fabric, "endpoint", "scale", "echo", "--max", "9", env=other)
    assert code == 3 and "may not" in err and one_line(err), err
    spec2 = tmp_path / "other.yaml"
    spec2.write_text(yaml.safe_dump({**spec, "name": "echo2"}))
    code, _, err = await fabric_cli(fabric, "endpoint", "deploy", "-f", str(spec2), env=other)
    assert code == 3 and "may not deploy endpoints for team 'nlp'" in err, err

    code, out, err = await fabric_cli(fabric, "endpoint", "delete", "echo")
    assert code == 0 and "deleted" in out, err
    code, out, err = await fabric_cli(fabric, "endpoint", "list", "--json")
    assert code == 0 and json.loads(out) == [], out


async def test_the_policy_sets_auto_suspend_once_for_every_endpoint(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(sim_pool("dc", "on-prem", 2))
    await client.set_policy("placement: {default: on-prem}\nendpoints: {scale_to_zero_after: 7m}\n")
    spec = {"name": "quiet", "team": "nlp", "image": "img", "resources": {"gpu": {"type": "A100", "count": 1}}}
    inherits = await client.deploy_endpoint(spec)
    own = await client.deploy_endpoint({**spec, "name": "own", "scale_to_zero_after": "30s"})
    assert (await inherits.status()).spec.scale_to_zero_after == "7m"
    assert (await own.status()).spec.scale_to_zero_after == "30s"
    for handle in (inherits, own):
        await handle.delete()
