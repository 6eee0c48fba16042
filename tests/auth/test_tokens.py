"""Tokens, proofs and the role table (pure: no server)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inferofabric.auth.roles import Request, authorize
from inferofabric.auth.tokens import AuthError, Identity, create_token, make_proof, token_claims, verify_proof

KEY = b"k" * 48
NOW = 1_800_000_000.0


def member(team: str = "ads") -> str:
    return create_token(KEY, "member", team=team, subject="alice", now=NOW)


def test_a_proof_names_one_request_and_carries_the_identity() -> None:
    proof = make_proof(member(), "start:WorkloadWorkflow", "w-1", now=NOW)
    identity = verify_proof(KEY, proof, "start:WorkloadWorkflow", "w-1", now=NOW + 5)
    assert identity == Identity(subject="alice", role="member", team="ads", token_id=identity.token_id)


@pytest.mark.parametrize(("action", "target", "now", "why"), [
    ("start:WorkloadWorkflow", "w-2", NOW, "another request"),        # replayed on another workload
    ("update:cancel", "w-1", NOW, "another request"),                # replayed as another action
    ("start:WorkloadWorkflow", "w-1", NOW + 3600, "expired"),         # a proof lives minutes, not hours
])
def test_a_proof_is_good_for_nothing_else(action: str, target: str, now: float, why: str) -> None:
    proof = make_proof(member(), "start:WorkloadWorkflow", "w-1", now=NOW)
    with pytest.raises(AuthError, match=why):
        verify_proof(KEY, proof, action, target, now=now)


def test_tokens_from_another_fabric_and_expired_tokens_are_refused() -> None:
    foreign = create_token(b"x" * 48, "admin", now=NOW)
    with pytest.raises(AuthError, match="not one this fabric issued"):
        verify_proof(KEY, make_proof(foreign, "a", "t", now=NOW), "a", "t", now=NOW)
    short = create_token(KEY, "admin", ttl=timedelta(seconds=10), now=NOW)
    with pytest.raises(AuthError, match="expired"):
        verify_proof(KEY, make_proof(short, "a", "t", now=NOW + 20), "a", "t", now=NOW + 20)


def test_a_forged_grant_with_a_guessed_secret_is_refused() -> None:
    grant = member().split("~")[0]
    with pytest.raises(AuthError, match="not signed with the token's secret"):
        verify_proof(KEY, make_proof(f"{grant}~{'g' * 64}", "a", "t", now=NOW), "a", "t", now=NOW)


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
