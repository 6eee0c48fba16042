"""Errors the SDK raises for user mistakes and unreachable servers (the CLI prints them in one line)."""


class FabricError(Exception):
    """Base of SDK errors; its message is meant for people."""


class WorkloadNotFound(FabricError):
    pass


class WorkloadExists(FabricError):
    pass
