"""The fabric's front door (docs/security.md): the one address users, other-language clients, the
`temporal` CLI and pool agents are given. Temporal itself listens only where the control plane's
own workers reach it, as etcd sits behind the Kubernetes API server.

- `rules`: what each kind of caller may call (pure);
- `server`: the gRPC forwarding proxy (authenticate, authorize, admit, stamp, audit, forward);
- `tls`: the CA and certificate the door serves (Temporal SDKs use TLS with an API key);
- `process`: the door as a process of the embedded stack (`python -m inferofabric.door`).
"""
