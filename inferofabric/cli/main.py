"""`fabric`: the command line, built on the SDK. Tables for people, `--json` for scripts.

Exit codes: 0 ok; 1 the operation failed (a workload failed, the server refused); 2 bad input
(file, spec, policy, a name already taken); 3 not found, or not allowed (no valid token, or a role
that may not do it); 4 the fabric is unreachable or did not answer in time; 130 interrupted.

Start-up is kept fast: this module and the command modules import typer and little else at the top;
each command imports what it uses (the SDK, the store, the models) when it runs.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from inferofabric.cli import admin, cost, endpoints, policy, pools, stack_commands, workloads

EXIT_CODES = ("Exit codes: 0 ok · 1 the operation failed · 2 bad input · 3 not found or not allowed · "
              "4 fabric unreachable or no answer in time · 130 interrupted.")

app = typer.Typer(
    help="InferoFabric: one control plane and policy over on-prem and cloud GPU pools.",
    epilog="Examples:  fabric up  ·  fabric submit -f job.yaml --wait  ·  fabric explain ID  ·  fabric queue\n\n"
           + EXIT_CODES,
    no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(pools.pool_app, name="pool")
app.add_typer(policy.policy_app, name="policy")
app.add_typer(admin.secret_app, name="secret")
app.add_typer(admin.schedule_app, name="schedule")
app.add_typer(admin.token_app, name="token")
app.add_typer(endpoints.endpoint_app, name="endpoint")
stack_commands.register(app)
workloads.register(app)
cost.register(app)
admin.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"fabric {version('inferofabric')}")
        except PackageNotFoundError:
            print("fabric (not installed as a package)")
        raise typer.Exit(0)


@app.callback()
def _options(
    _version_flag: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False,
) -> None:
    """InferoFabric: one control plane and policy over on-prem and cloud GPU pools."""


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of a failure meant for people; None for a bug (which keeps its traceback).

    Error classes are looked up only in modules already imported: an error of a module the command
    never loaded cannot have been raised, and importing it here would slow every failure down."""
    def raised(module: str, *names: str) -> bool:
        loaded = sys.modules.get(module)
        return loaded is not None and any(isinstance(error, getattr(loaded, n)) for n in names if hasattr(loaded, n))

    # The fabric's own errors (the SDK's, the store's NotFound) are all in inferofabric.errors.
    if raised("inferofabric.errors", "FabricUnreachable", "NoAnswer"):
        return 4
    if door_refusal(error):
        return 3
    if raised("inferofabric.errors", "FabricNotFound", "PermissionDenied", "NotFound") or \
            raised("inferofabric.auth.tokens", "AuthError"):
        return 3
    if raised("inferofabric.errors", "AlreadyExists", "InvalidInput") or \
            raised("inferofabric.config_file", "FileError") or raised("pydantic", "ValidationError"):
        return 2
    if raised("inferofabric.errors", "FabricError"):
        return 1
    return None


def door_refusal(error: BaseException) -> bool:
    """A call the fabric's front door refused (no or a bad API key, or a call the role may not make)."""
    service = sys.modules.get("temporalio.service")
    if service is None or not isinstance(error, service.RPCError):
        return False
    return error.status in (service.RPCStatusCode.PERMISSION_DENIED, service.RPCStatusCode.UNAUTHENTICATED)


def main() -> None:
    code = _run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal core's and gRPC's native threads can abort
    # the process while Python tears down (an occasional SIGABRT after a command that succeeded).
    # Every command has finished its own clean-up by now.
    os._exit(code)


def _run() -> int:
    from inferofabric.cli.common import print_error

    try:
        app()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            import traceback

            traceback.print_exc()  # a bug, not a user mistake: keep the traceback for the report
            return 1
        print_error(_message(error))
        return code
    return 0


def _message(error: BaseException) -> str:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(error, pydantic.ValidationError):
        from inferofabric.config_file import validation_message

        return validation_message(error)
    return str(error)


if __name__ == "__main__":
    main()
