"""Tokens, the audit log, secrets and schedules."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, HomeOpt, JsonOpt, console, fabric_home, fail, with_client

token_app = typer.Typer(help="Tokens: who may do what (roles admin, operator, member).", no_args_is_help=True,
                        epilog="Example: fabric token create --role member --team vision --ttl 30d --name alice")
secret_app = typer.Typer(help="Store secrets that workloads reference as {secret: NAME}.", no_args_is_help=True,
                         epilog="Example: fabric secret set HF_TOKEN --from-env HF_TOKEN")
schedule_app = typer.Typer(help="Scheduled workloads (Temporal Schedules), e.g. nightly training.",
                           no_args_is_help=True,
                           epilog="Example: fabric schedule add nightly -f train.yaml --cron '0 2 * * *'")


def register(app: typer.Typer) -> None:
    app.command()(audit)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin | operator | member | agent (a pool's agent) | system "
                                                     "(the control plane's own processes, e.g. the gateway; "
                                                     "refused at the door)")],
    team: Annotated[str | None, typer.Option("--team", help="The team of a member token.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="The pool of an agent token.")] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="How long it is valid: 30d, 12h, 90m.")] = "30d",
    name: Annotated[str | None, typer.Option("--name", help="Who holds it (shown in the audit log).")] = None,
    home: HomeOpt = None,
) -> None:
    """Print a new token. Runs where the fabric's key is (FABRIC_AUTH_KEY, or FABRIC_HOME/auth.key of
    `fabric up`): tokens are signed here and never travel through Temporal. Give it as FABRIC_TOKEN."""
    import time
    from datetime import timedelta

    from inferofabric.auth.tokens import AGENT, KEY_FILE, ROLES, SYSTEM, create_token, signing_key
    from inferofabric.models.common import duration_seconds

    home_dir = fabric_home(home)
    if role not in (*ROLES, AGENT, SYSTEM):
        fail(f"unknown role {role!r}: one of {', '.join((*ROLES, AGENT, SYSTEM))}", 2)
    if role == "member" and not team:
        fail("a member token needs --team TEAM", 2)
    if role == AGENT and not pool:
        fail("an agent token needs --pool POOL (an agent serves one pool)", 2)
    if not os.environ.get("FABRIC_AUTH_KEY") and not (home_dir / KEY_FILE).exists():
        fail(f"no signing key here: run on the control plane (FABRIC_AUTH_KEY, or {home_dir / KEY_FILE} "
             "that `fabric up` creates)", 2)
    try:
        seconds = duration_seconds(ttl)
    except ValueError as error:
        fail(f"--ttl {ttl!r}: {error}", 2)
    token = create_token(signing_key(home_dir), role, team=team, subject=name, ttl=timedelta(seconds=seconds),
                         now=time.time(), pool=pool if role == AGENT else None)
    print(token)


def audit(
    limit: Annotated[int, typer.Option("--limit", help="The newest N entries.")] = 50,
    identity: Annotated[str | None, typer.Option("--identity", help="Only this identity's requests.")] = None,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Who did what: every request that changed something (or tried to), with its result."""
    from inferofabric.cli import render

    entries = with_client(address, lambda c: c.audit(limit=limit, identity=identity))
    if json_out:
        render.print_json(entries)
        return
    render.print_audit(entries)


@secret_app.command("set")
def secret_set(
    name: str,
    from_env: Annotated[str | None, typer.Option(help="Read the value from this environment variable.")] = None,
    team: Annotated[str | None, typer.Option(
        help="The team that owns it: its workloads may use it [default: a member token's own team].")] = None,
    fabric: Annotated[bool, typer.Option(
        "--fabric", help="The fabric's own (admin only): pools' credentials; no workload may use it.")] = False,
    share_with: Annotated[list[str] | None, typer.Option(
        "--share-with", help="Another team whose workloads may use it too (repeat for more).")] = None,
    pool: Annotated[str | None, typer.Option(help="Scope the secret to one pool.")] = None,
    address: AddressOpt = None,
) -> None:
    """Store a secret (value from --from-env or stdin); it is sealed here and never sent in clear text.

    A secret is a team's (--team T: an admin may set any team's, a member its own team's only) or
    the fabric's own (--fabric, admin only). A workload may use its own team's secrets and those
    shared with its team, nothing else.
    """
    if fabric and team:
        fail("a secret is a team's (--team) or the fabric's own (--fabric), not both", 2)
    if fabric and share_with:
        fail("the fabric's own secrets are not shared with teams (--share-with needs --team)", 2)
    if from_env:
        value = os.environ.get(from_env)
        if value is None:
            fail(f"environment variable {from_env} is not set", 2)
    elif sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read().rstrip("\n")
    assert value is not None
    with_client(address, lambda c: c.set_secret(name, value, pool, team=team, fabric=fabric, share_with=share_with))
    whose = "the fabric's own" if fabric else f"team {team}" if team else "your team's"
    console().print(f"stored secret {name} ({whose}" + (f", pool {pool}" if pool else "")
                    + (f", shared with {', '.join(share_with)}" if share_with else "") + ")")


@secret_app.command("list")
def secret_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Secret names with their owner (a team, or `fabric`), sharing and pool scope (never values)."""
    from inferofabric.cli import render

    names = with_client(address, lambda c: c.secrets())
    if json_out:
        render.print_json(names)
    else:
        for item in names:
            extra = [f"owner {item.get('owner', 'fabric')}"]
            if item.get("shared_with"):
                extra.append(f"shared with {', '.join(item['shared_with'])}")
            if item.get("pool"):
                extra.append(f"pool {item['pool']}")
            console().print(f"{item['name']}  ({'; '.join(extra)})", highlight=False)


@schedule_app.command("add")
def schedule_add(
    schedule_id: str,
    file: FileOpt,
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 2 * * *'.")],
    address: AddressOpt = None,
) -> None:
    """Run the workload in the file on a schedule (each run is a workload named <name>-<time>)."""
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.workload import WorkloadSpec

    documents = load_documents(file)
    if len(documents) != 1:
        fail(f"{file}: expected one workload", 2)
    spec = parse(WorkloadSpec, documents[0], str(file))
    with_client(address, lambda c: c.schedule(schedule_id, spec, cron))
    console().print(f"schedule {schedule_id}: {cron}")


@schedule_app.command("list")
def schedule_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Schedules and their next run."""
    from inferofabric.cli import render

    items: list[dict[str, Any]] = with_client(address, lambda c: c.schedules())
    if json_out:
        render.print_json(items)
    else:
        for item in items:
            console().print(f"{item['id']}  next {item['next'] or '-'}")


@schedule_app.command("remove")
def schedule_remove(schedule_id: str, address: AddressOpt = None) -> None:
    """Delete a schedule (running workloads continue)."""
    with_client(address, lambda c: c.unschedule(schedule_id))
    console().print(f"removed schedule {schedule_id}")
