"""Errors the SDK raises for user mistakes and unreachable servers (the CLI prints them in one line)."""


class FabricError(Exception):
    """Base of SDK errors; its message is meant for people."""


class FabricNotFound(FabricError):
    """A pool, workload, secret or schedule that does not exist."""


class InvalidInput(FabricError):
    """The control plane refused the input (a bad pool, policy or spec)."""


class WorkloadNotFound(FabricNotFound):
    pass


class AlreadyExists(FabricError):
    """A name that is already taken (a workload id, a pool, a schedule id): CLI exit code 2."""


class WorkloadExists(AlreadyExists):
    pass


class PermissionDenied(FabricError):
    """The request carried no valid token, or its role does not allow it (CLI exit code 3)."""


class FabricUnreachable(ConnectionError):
    """No Temporal server answers at the address (shown as a one-line error by the CLI, exit code 4)."""


class NoAnswer(FabricError):
    """The server is there but nothing answered in time (no fabric worker polls its task queue, or it is
    overloaded): CLI exit code 4, with what it waited for."""
