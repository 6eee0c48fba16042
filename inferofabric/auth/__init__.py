"""Locked doors: who may change what in the fabric (docs/security.md).

- `tokens`: signed identities (PyJWT, HS256) and the per-request proofs clients send;
- `roles`: which role may do which action, and a member only for its own team;
- `client`: the Temporal client interceptor that attaches a proof to every start, signal and update;
- `gate`: the worker's workflow interceptor that checks them before any workflow code runs;
- `audit`: who did what, when, with what result (`fabric audit`).
"""
