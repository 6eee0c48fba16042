"""Running a script that uses the SDK: `inferofabric.run(main())` instead of `asyncio.run(main())`.

The Temporal SDK's native threads can outlive the event loop and abort the process while Python
shuts down ("Fatal Python error: PyGILState_Release", exit code 134) after a script that did all it
should: temporalio/sdk-python#300, open. The fabric's own CLI leaves without interpreter finalization
for that reason; this does the same for a script, keeping its exit code and its output.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn


def run(main: Coroutine[Any, Any, Any]) -> NoReturn:
    """Run `main` to the end, flush stdout/stderr, and exit (0, the SystemExit code, 1 after an
    uncaught exception, whose traceback is printed, or 130 on Ctrl-C)."""
    code = 0
    try:
        asyncio.run(main)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if done.code is not None and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # reported as Python does, with the same exit code
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
