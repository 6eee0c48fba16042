"""The client half: which token this host's CLI and SDK use, and how a control-plane client that
reaches Temporal directly carries the identity that token proves.

Through the front door (the normal path) the token is Temporal's API key and the door stamps the
identity. A client of the control plane's own (the embedded stack, the worker, tests) talks to
Temporal itself: it verifies the token with the fabric's key on this host and stamps the identity
as the door would (inferofabric/auth/identity.py). A token that does not verify is refused here,
before anything is sent (AuthError, with the reason); no token stamps nothing, and the gate refuses
the request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from inferofabric.auth.identity import with_identity
from inferofabric.auth.tokens import Identity, admin_token_path, signing_key, verify_token

TokenSource = Callable[[], str | None]


def find_token(home: Path | None = None) -> str | None:
    """`$FABRIC_TOKEN`, else the admin token `fabric up` wrote under FABRIC_HOME (the local operator's)."""
    if os.environ.get("FABRIC_TOKEN"):
        return os.environ["FABRIC_TOKEN"].strip()
    base = home or Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser()
    try:
        return admin_token_path(base).read_text().strip() or None
    except OSError:
        return None


class TokenIdentity:
    """The identity `token()` proves, verified with the fabric's key (cached per token text)."""

    def __init__(self, token: TokenSource, key: bytes | Callable[[], bytes]) -> None:
        self._token = token
        self._key = key
        self._cached: tuple[str, Identity] | None = None

    def __call__(self) -> Identity | None:
        text = self._token()
        if not text:
            return None
        if self._cached is not None and self._cached[0] == text and self._cached[1].expires > time.time():
            return self._cached[1]
        key = self._key() if callable(self._key) else self._key
        identity = verify_token(key, text, now=time.time())  # AuthError: said at once, nothing sent
        self._cached = (text, identity)
        return identity


def _home_key() -> bytes:
    return signing_key(Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser())


def with_token(client: Client, token: TokenSource | str | None, key: bytes | None = None) -> Client:
    """The same direct connection, carrying the identity `token` proves (checked with `key`, default
    the key under FABRIC_HOME) on every request."""
    source: TokenSource = token if callable(token) else (lambda: token)  # type: ignore[assignment,return-value]
    return with_identity(client, TokenIdentity(source, key if key is not None else _home_key))
