"""`fabric endpoint ...`: deploy, list, status, explain, scale, update, delete, logs, and `key`
(create, list, revoke the keys callers use instead of a fabric token)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, JsonOpt, console, fabric_home, fail, with_client

endpoint_app = typer.Typer(help="Inference endpoints: replicas on-prem first, burst under load, zero when idle.",
                           no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="The endpoint's name.")]
key_app = typer.Typer(help="Endpoint keys: a caller's credential for one endpoint (`Authorization: Bearer <key>`).",
                      no_args_is_help=True)
endpoint_app.add_typer(key_app, name="key")


def _load_spec(file: Any) -> Any:
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.endpoint import EndpointSpec

    documents = load_documents(file)
    if len(documents) != 1:
        fail(f"{file}: expected one endpoint document, found {len(documents)}", 2)
    return parse(EndpointSpec, documents[0], str(file))


def _table(statuses: list[Any]) -> Any:
    from rich.table import Table

    table = Table("NAME", "TEAM", "STATE", "READY", "DESIRED", "REPLICAS", "WHERE", "URL")
    for status in statuses:
        where = sorted({f"{r.pool} ({r.location.value})" for r in status.replicas if r.pool and r.location and r.live})
        table.add_row(status.name, status.team, status.state.value, str(status.ready), str(status.desired),
                      f"{status.min}..{status.max}", ", ".join(where) or "-", status.url)
    return table


def _replicas(status: Any) -> Any:
    from rich.table import Table

    table = Table("REPLICA", "VERSION", "STATE", "POOL", "LOCATION", "ADDRESS", "ROLE", "MESSAGE")
    for replica in status.replicas:
        table.add_row(replica.id, str(replica.version), replica.state, replica.pool or "-",
                      replica.location.value if replica.location else "-", replica.address or "-",
                      replica.role.value, replica.message[:60])
    return table


def _print(status: Any, json_out: bool) -> None:
    if json_out:
        print(json.dumps(status.model_dump(mode="json", exclude={"spec"}), indent=2))
        return
    console().print(_table([status]))
    if status.replicas:
        console().print(_replicas(status))
    if status.reason:
        console().print(f"autoscaler: {status.reason}")


@endpoint_app.command()
def deploy(file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Deploy the endpoint in a YAML file and print its URL.

    Each replica is placed like any workload (on-prem first, burst when the policy says, compliance
    on every replica). Example: fabric endpoint deploy -f examples/endpoint.yaml
    """
    spec = _load_spec(file)

    async def go(client: Any) -> Any:
        handle = await client.deploy_endpoint(spec)
        return await handle.status()

    status = with_client(address, go)
    if json_out:
        _print(status, True)
        return
    console().print(f"endpoint [bold]{status.name}[/] deployed ({status.state.value}; replicas "
                    f"{status.min}..{status.max}): {status.url}")


@endpoint_app.command("list")
def list_endpoints(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Deployed endpoints with their state, ready replicas and where they run."""
    statuses = with_client(address, lambda client: client.endpoints())
    if json_out:
        print(json.dumps([s.model_dump(mode="json", exclude={"spec"}) for s in statuses], indent=2))
        return
    if not statuses:
        console().print("no endpoints (fabric endpoint deploy -f endpoint.yaml)")
        return
    console().print(_table(statuses))


@endpoint_app.command()
def status(name: NameArg, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """One endpoint: state, URL, desired and ready replicas, and every replica (where, state)."""
    _print(with_client(address, lambda client: client.endpoint(name).status()), json_out)


@endpoint_app.command()
def explain(name: NameArg, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Why the endpoint has the replicas it has, and why each replica runs where it runs."""
    async def go(client: Any) -> tuple[Any, dict[str, Any]]:
        endpoint = await client.endpoint(name).status()
        placements: dict[str, Any] = {}
        for replica in endpoint.replicas:
            if replica.live:
                try:
                    explanation = await client.get(replica.id).explain()
                except Exception as error:  # the replica's workload may be gone already
                    placements[replica.id] = str(error)
                    continue
                decision = explanation.decisions[-1] if explanation.decisions else None
                placements[replica.id] = (f"{decision.pool} ({decision.mode}): {decision.reason}" if decision
                                          else (explanation.queue.reason if explanation.queue else replica.message))
        return endpoint, placements

    endpoint, placements = with_client(address, go)
    if json_out:
        print(json.dumps({"endpoint": endpoint.model_dump(mode="json", exclude={"spec"}), "placements": placements},
                         indent=2))
        return
    _print(endpoint, False)
    console().print("\n[bold]where and why[/]")
    for replica_id, why in placements.items():
        console().print(f"  {replica_id}: {why}", highlight=False)
    console().print("\n[bold]events[/]")
    for event in endpoint.events:
        console().print(f"  {event}", highlight=False)


@endpoint_app.command()
def scale(name: NameArg,
          min_replicas: Annotated[int | None, typer.Option("--min", help="Fewest replicas.")] = None,
          max_replicas: Annotated[int | None, typer.Option("--max", help="Most replicas.")] = None,
          address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Change the replica range. Example: fabric endpoint scale sentiment --min 2 --max 8"""
    if min_replicas is None and max_replicas is None:
        fail("say --min, --max or both", 2)
    _print(with_client(address, lambda client: client.endpoint(name).scale(min_replicas, max_replicas)), json_out)


@endpoint_app.command()
def update(name: NameArg, file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Roll out a new spec (new image, command, resources): new replicas first, an old one goes only once
    a new one is ready. Example: fabric endpoint update sentiment -f endpoint-v2.yaml"""
    spec = _load_spec(file)
    if spec.name != name:
        fail(f"{file} describes endpoint {spec.name!r}, not {name!r}", 2)
    status = with_client(address, lambda client: client.endpoint(name).update(spec))
    if json_out:
        _print(status, True)
        return
    console().print(f"endpoint {name}: rolling to version {status.version}")


@endpoint_app.command()
def delete(name: NameArg, address: AddressOpt = None) -> None:
    """Stop every replica and remove the endpoint."""
    status = with_client(address, lambda client: client.endpoint(name).delete())
    console().print(f"endpoint {name} deleted ({len([r for r in status.replicas if r.live])} replica(s) still "
                    "stopping)" if any(r.live for r in status.replicas) else f"endpoint {name} deleted")


@endpoint_app.command()
def logs(name: NameArg, tail: Annotated[int, typer.Option(help="Lines per replica.")] = 50,
         address: AddressOpt = None) -> None:
    """The last lines of every live replica's output, one block per replica."""
    async def go(client: Any) -> list[tuple[str, str]]:
        endpoint = await client.endpoint(name).status()
        blocks = []
        for replica in endpoint.replicas:
            if replica.live and replica.pool:
                blocks.append((f"{replica.id} on {replica.pool}", await client.get(replica.id).logs(tail)))
        return blocks

    blocks = with_client(address, go)
    if not blocks:
        console().print(f"endpoint {name} has no replica running")
    for title, text in blocks:
        console().print(f"[bold]== {title}[/]", highlight=False)
        print(text.rstrip() or "(no output yet)")


# -- endpoint keys ---------------------------------------------------------------------------------------
def _key_store(name: str, address: str | None) -> tuple[Any, Any, str]:
    """The store, the caller's verified identity and the endpoint's team, once the caller may manage
    the endpoint's keys (admin, operator, or a member of its team). Runs where the store and the
    fabric's key are (`fabric up`'s host, or FABRIC_DATABASE_URL and FABRIC_AUTH_KEY): the key checks
    the caller's token here, as `fabric token create` signs here."""
    import os
    import time

    from inferofabric.auth.client import find_token
    from inferofabric.auth.tokens import KEY_FILE, AuthError, signing_key, verify_token
    from inferofabric.settings import read_store_url
    from inferofabric.store.db import get_store

    home = fabric_home(None)
    store_url = read_store_url(address)
    if store_url is None:
        fail("endpoint keys are kept in the fabric's store: run this where it is (FABRIC_DATABASE_URL, or the "
             "host of `fabric up`)", 2)
    if not os.environ.get("FABRIC_AUTH_KEY") and not (home / KEY_FILE).exists():
        fail(f"no signing key here to check your token with: run on the control plane (FABRIC_AUTH_KEY, or "
             f"{home / KEY_FILE} that `fabric up` creates)", 2)
    token = find_token(home)
    if not token:
        fail("no token: set FABRIC_TOKEN (`fabric token create`)", 3)
    try:
        identity = verify_token(signing_key(home), str(token), now=time.time())
    except AuthError as error:
        fail(str(error), 3)
    team = with_client(address, lambda client: client.endpoint(name).status()).team
    if not (identity.role in ("admin", "operator") or (identity.role == "member" and identity.team == team)):
        fail(f"{identity.describe()} may not manage the keys of endpoint {name!r} of team {team!r}", 3)
    return get_store(store_url), identity, team


def _key_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "endpoint": row.endpoint, "team": row.team, "label": row.label,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None, "revoked_by": row.revoked_by}


@key_app.command("create")
def key_create(name: NameArg,
               label: Annotated[str, typer.Option("--label", help="What the key is for (shown by `key list`).")] = "",
               address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Print a new key for endpoint NAME, once (the fabric keeps only its hash). Callers send it as
    `Authorization: Bearer <key>`. Example: fabric endpoint key create sentiment --label web-frontend"""
    from inferofabric.store.endpoint_keys import create_key

    store, identity, team = _key_store(name, address)
    key, row = create_key(store, name, team, identity.subject, label)
    if json_out:
        print(json.dumps({**_key_json(row), "key": key}, indent=2))
        return
    console().print(f"endpoint key {row.id} for {name} (shown once; send it as `Authorization: Bearer <key>`):",
                    highlight=False)
    print(key)


@key_app.command("list")
def key_list(name: NameArg, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """The keys of endpoint NAME: id, label, who made it and when, and whether it is revoked."""
    from rich.table import Table

    from inferofabric.store.endpoint_keys import list_keys

    store, _, _ = _key_store(name, address)
    rows = list_keys(store, name)
    if json_out:
        print(json.dumps([_key_json(r) for r in rows], indent=2))
        return
    if not rows:
        console().print(f"endpoint {name} has no keys (fabric endpoint key create {name})", highlight=False)
        return
    table = Table("ID", "LABEL", "CREATED BY", "CREATED", "REVOKED")
    for row in rows:
        table.add_row(row.id, row.label or "-", row.created_by, row.created_at.strftime("%Y-%m-%d %H:%M"),
                      f"{row.revoked_at:%Y-%m-%d %H:%M} by {row.revoked_by}" if row.revoked_at else "-")
    console().print(table)


@key_app.command("revoke")
def key_revoke(name: NameArg, key_id: Annotated[str, typer.Argument(help="The key's id (`key list`).")],
               address: AddressOpt = None) -> None:
    """Revoke one key of endpoint NAME: the gateway refuses it within a second."""
    from inferofabric.store.endpoint_keys import revoke_key

    store, identity, _ = _key_store(name, address)
    if revoke_key(store, name, key_id, identity.subject) is None:
        fail(f"endpoint {name!r} has no key {key_id!r}", 3)
    console().print(f"endpoint key {key_id} of {name} revoked", highlight=False)
