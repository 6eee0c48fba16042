"""What every command shares: option types, running an SDK call, one-line failures.

Kept light on purpose: `fabric --help` and completion import this module and typer only. Everything
heavy (the Temporal SDK, the store, pydantic models, rich tables) is imported inside the command that
needs it, so a command pays only for what it uses.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

T = TypeVar("T")

AddressOpt = Annotated[str | None, typer.Option("--address", envvar="FABRIC_TEMPORAL_ADDRESS",
                                                help="Temporal address of the fabric [default: 127.0.0.1:7233]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FileOpt = Annotated[Path, typer.Option("-f", "--file", help="YAML file ('-' for stdin).")]
HomeOpt = Annotated[Path | None, typer.Option(envvar="FABRIC_HOME", help="State directory [default: ~/.inferofabric]")]


def fabric_home(home: Path | None) -> Path:
    return (home or Path(os.environ.get("FABRIC_HOME", "~/.inferofabric"))).expanduser()


def fail(message: str, code: int) -> None:
    """Print one line on stderr and leave with `code` (see the exit codes in `fabric --help`)."""
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    from inferofabric.cli import render

    render.err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    from inferofabric.cli import render

    render.err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def run(coroutine: Awaitable[T]) -> T:
    """Run an SDK call (user-facing failures become one line and an exit code in `main`)."""
    return asyncio.run(coroutine)  # type: ignore[arg-type]


async def client_for(address: str | None) -> Any:
    from inferofabric.sdk.client import FabricClient
    from inferofabric.settings import read_store_url

    return await FabricClient.connect(address, store_url=read_store_url(address))


def with_client(address: str | None, action: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        return await action(await client_for(address))

    return run(go())


def console() -> Any:
    from inferofabric.cli import render

    return render.console
