"""Tokens (the door's API keys), the identity header and the role table (pure: no server)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inferofabric.auth.identity import HEADER, identity_payload, read_identity, stamped
from inferofabric.auth.roles import Request, authorize
from inferofabric.auth.tokens import AuthError, Identity, create_token, token_claims, verify_token

KEY = b"k" * 48
NOW = 1_800_000_000.0


def member(team: str = "ads") -> str:
    return create_token(KEY, "member", team=team, subject="alice", now=NOW)


def test_a_token_proves_its_identity() -> None:
    identity = verify_token(KEY, member(), now=NOW + 5)
    assert (identity.subject, identity.role, identity.team) == ("alice", "member", "ads")
    assert identity.expires == NOW + 30 * 86400


def test_tokens_from_another_fabric_and_expired_tokens_are_refused() -> None:
    foreign = create_token(b"x" * 48, "admin", now=NOW)
    with pytest.raises(AuthError, match="not one this fabric issued"):
        verify_token(KEY, foreign, now=NOW)
    short = create_token(KEY, "admin", ttl=timedelta(seconds=10), now=NOW)
    with pytest.raises(AuthError, match="expired"):
        verify_token(KEY, short, now=NOW + 20)


def test_a_forged_grant_with_a_guessed_secret_is_refused() -> None:
    grant = member().split("~")[0]
    with pytest.raises(AuthError, match="not one this fabric issued"):
        verify_token(KEY, f"{grant}~{'g' * 64}", now=NOW)
    with pytest.raises(AuthError, match="not a fabric token"):
        verify_token(KEY, grant, now=NOW)


def test_an_agent_token_names_its_pool() -> None:
    agent = verify_token(KEY, create_token(KEY, "agent", pool="dc1", now=NOW), now=NOW)
    assert (agent.role, agent.pool) == ("agent", "dc1")
    with pytest.raises(ValueError, match="needs --pool"):
        create_token(KEY, "agent", now=NOW)


def test_the_identity_header_replaces_any_fabric_header_a_caller_sent() -> None:
    forged = identity_payload(Identity(subject="root", role="admin"))
    headers = stamped({HEADER: forged, "fabric-auth": forged, "other": forged},
                      Identity(subject="alice", role="member", team="ads"))
    assert set(headers) == {HEADER, "other"}
    found = read_identity(headers)
    assert found is not None and found[0].subject == "alice" and not found[1]
    assert read_identity(stamped({HEADER: forged}, None)) is None


def test_claims_are_readable_without_the_key_but_say_nothing_secret() -> None:
    claims = token_claims(member())
    assert claims["role"] == "member" and claims["team"] == "ads" and "secret" not in str(claims)


@pytest.mark.parametrize(("role", "team", "action", "on_team", "allowed"), [
    ("member", "ads", "start:WorkloadWorkflow", "ads", True),
    ("member", "ads", "start:WorkloadWorkflow", "vision", False),
    ("member", "ads", "update:cancel", "vision", False),
    ("member", "ads", "update:cancel", "ads", True),
    ("operator", None, "update:cancel", "vision", True),
    ("operator", None, "control:drain", None, True),
    ("operator", None, "control:set_policy", None, False),
    ("member", "ads", "control:register_pool", None, False),
    ("member", "ads", "control:list_pools", None, True),
    ("member", "ads", "signal:relocate", "ads", False),
    ("operator", None, "signal:admitted", "ads", False),
    ("system", None, "signal:admitted", "ads", True),
    ("agent", None, "signal:job_state", "ads", True),
    ("agent", None, "signal:relocate", "ads", False),
    ("agent", None, "start:WorkloadWorkflow", "ads", False),
    ("admin", None, "control:put_secret", None, True),
])
def test_roles(role: str, team: str | None, action: str, on_team: str | None, allowed: bool) -> None:
    identity = Identity(subject="x", role=role, team=team)
    request = Request(action=action, target="w", team=on_team)
    if allowed:
        authorize(identity, request)
    else:
        with pytest.raises(AuthError):
            authorize(identity, request)
