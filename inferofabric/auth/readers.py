"""Reads need a token too: who may read what, on the paths that never reach the gate.

A client on the fabric's host reads the store directly (`FabricClient(store_url=...)`: queue, pools,
policy, cost, budgets, the audit log) and reads job output from the pool itself (`fabric logs`), so no
workflow and no gate sees those reads. `reader_identity` checks the caller's token there with the
fabric's signing key, as the front door would: a missing, malformed, foreign or expired token is an
AuthError (the SDK raises PermissionDenied; the CLI prints one line and exits 3). What it may then
read: the audit log is for operators and admins; a member reads only its own team's job output and
cost lines (`scoped_cost_view`).

The control activities that need to know who asked (a member storing its team's secret, a member's
cost report) read the identity the gate checked from their ControlWorkflow's start (`caller_identity`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from inferofabric.auth import tokens
from inferofabric.auth.identity import read_identity
from inferofabric.auth.tokens import KEY_FILE, AuthError, Identity, signing_key, verify_token

AUDIT_READERS = ("admin", "operator", "system")
NO_TOKEN = ("no token: set FABRIC_TOKEN (see `fabric token create`) or use the token `fabric up` wrote "
            "under FABRIC_HOME")


def reader_key(home: Path) -> bytes:
    """The fabric's signing key, as the worker has it; never made here (a read must not create one)."""
    if not os.environ.get("FABRIC_AUTH_KEY") and not (home / KEY_FILE).exists():
        raise AuthError(f"cannot check the token here: no signing key (FABRIC_AUTH_KEY, or {home / KEY_FILE}); "
                        "read through the fabric's host")
    return signing_key(home)


def reader_identity(token: str | None, home: Path, now: float | None = None) -> Identity:
    """The identity a token proves, checked with the fabric's key exactly as the front door checks
    it (tokens.verify_token: signature, secret half, expiry); agents read nothing here."""
    if not token or not token.strip():
        raise AuthError(NO_TOKEN)
    identity = verify_token(reader_key(home), token, now=time.time() if now is None else now)
    if identity.role not in (*tokens.ROLES, tokens.SYSTEM):
        raise AuthError(f"a {identity.role} token reads nothing here")
    return identity


def audit_scope(identity: Identity) -> str | None:
    """Whose audit rows `identity` reads: None for everyone's (operators, admins, the fabric), a
    member its own team's only."""
    if identity.role in AUDIT_READERS:
        return None
    if identity.role == "member" and identity.team:
        return identity.team
    raise AuthError(f"{identity.describe()} may not read the audit log: that needs the operator or admin role "
                    "(a member reads its own team's rows)")


def require_team_reader(identity: Identity, team: str | None, what: str) -> None:
    """A member reads only its own team's `what`; every other role reads everyone's."""
    if identity.role == "member" and (team is None or team != identity.team):
        raise AuthError(f"{identity.describe()} may not read {what} of team {team!r}")


def scoped_cost_view(store: Any, identity: Identity, by: str = "team", start: str | None = None,
                     end: str | None = None, step: str | None = None, workload_id: str | None = None,
                     idle: bool = False) -> dict[str, Any]:
    """`fabric cost` as `identity` may see it: everything for operators and admins; for a member, only
    its own team's lines (idle on-prem cost is per pool, no team's lines: shown as it is)."""
    from inferofabric.store.cost import cost_view
    from inferofabric.store.ledger import GROUPS, STEPS, lines, summarize
    from inferofabric.store.tables import LedgerRow

    if identity.role != "member" or idle:
        return cost_view(store, by, start, end, step, workload_id, idle)
    team = identity.team
    if workload_id is not None:
        view = cost_view(store, by, start, end, step, workload_id, idle)
        mine = [line for line in view["lines"] if line.get("team") == team]
        return {**view, "lines": mine, "cost_total": round(sum(line["cost"] for line in mine), 6)}
    if by in ("team", "workload"):  # rows that name the team (by team: with its share of idle cost)
        view = cost_view(store, by, start, end, step, workload_id, idle)
        field = "key" if by == "team" else "team"
        return {**view, "rows": [row for row in view["rows"] if row.get(field) == team]}
    if by not in GROUPS:
        raise ValueError(f"--by {by!r}: one of {', '.join(GROUPS)}")
    if step is not None and step not in STEPS:
        raise ValueError(f"--step {step!r}: one of {', '.join(STEPS)}")
    begin = datetime.fromisoformat(start) if start else None
    until = datetime.fromisoformat(end) if end else None
    found = lines(store, begin, until, where=LedgerRow.team == team)
    return {"by": by, "step": step, "from": start, "to": end, "rows": summarize(found, by, step)}


def visible_secrets(rows: list[Any], identity: Identity) -> list[dict[str, Any]]:
    """`fabric secret list`: names, pool scope, owner and sharing (never values); a member sees its own
    team's and those shared with it."""
    from inferofabric.secrets import owner_of, shared_teams

    out = []
    for row in rows:
        shared = shared_teams(row.shared_with)
        if identity.role == "member" and row.team != identity.team and identity.team not in shared:
            continue
        out.append({"name": row.name, "pool": row.pool, "owner": owner_of(row.team), "shared_with": shared})
    return out


def authorize_put_secret(identity: Identity, name: str, team: str | None, existing_team: str | None,
                         exists: bool) -> None:
    """An admin sets any secret (a team's, or the fabric's own with `team` None); a member only its own
    team's, and never over another team's or the fabric's secret of the same name."""
    if identity.role in ("admin", tokens.SYSTEM):
        return
    if identity.role != "member":
        raise AuthError(f"{identity.describe()} may not put_secret: that needs the admin role (or a member of "
                        "the secret's team)")
    if team is None:
        raise AuthError(f"{identity.describe()} may not set the fabric's own secret {name!r}: that needs the "
                        "admin role")
    if team != identity.team:
        raise AuthError(f"{identity.describe()} may not set a secret of team {team!r}")
    if exists and existing_team != team:
        whose = "the fabric's own" if existing_team is None else f"team {existing_team!r}'s"
        raise AuthError(f"{identity.describe()} may not replace secret {name!r}: it is {whose}")


def caller_identity(headers: Mapping[str, Any]) -> Identity:
    """Who started a control workflow, from its start's headers (what the gate checked before the
    workflow's first line): the identity the front door or the control plane stamped."""
    found = read_identity(headers)
    if found is None:
        raise AuthError(NO_TOKEN)
    return found[0]
