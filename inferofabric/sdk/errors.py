"""Errors the SDK raises for user mistakes and unreachable servers (the CLI prints them in one line)."""


class FabricError(Exception):
    """Base of SDK errors; its message is meant for people."""


class FabricNotFound(FabricError):
    """A pool, workload, secret or schedule that does not exist."""


class InvalidInput(FabricError):
    """The control plane refused the input (a bad pool, policy or spec)."""


class WorkloadNotFound(FabricNotFound):
    pass


class WorkloadExists(FabricError):
    pass


class PermissionDenied(FabricError):
    """The request carried no valid token, or its role does not allow it (CLI exit code 3)."""
