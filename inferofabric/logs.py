"""Logging of the long-running commands (`fabric up`, `worker`, `agent`): one line per event on the
terminal, the whole story (tracebacks included) in a log file a user can send.

Temporal's worker logs every failed activity with its traceback; most are the fabric working as
designed (a job a pool rejected, a secret that does not exist) and a screenful each would drown what
matters. The terminal gets `time level source: message (ExceptionType: its message)`; the log file
under FABRIC_HOME/logs/ gets everything, and `--debug` puts the tracebacks on the terminal too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

LOG_NAME = "fabric.log"


class OneLine(logging.Formatter):
    """A record on one line: an exception is named, not printed out."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        error = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record).splitlines()[0]
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if error is not None:
            detail = str(error).splitlines()[0] if str(error) else ""
            line += f" ({type(error).__name__}{': ' + detail if detail else ''})"
        return line + "  [details: fabric.log]" if error is not None else line


def setup_logging(home: Path, debug: bool = False) -> Path:
    """Send log records to the terminal (one line each, unless `debug`) and to FABRIC_HOME/logs/fabric.log
    (rotated at 10 MB, 5 kept); returns the log file's path."""
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)  # jobs' output and the fabric's own log: the owner's only
    path = folder / LOG_NAME
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
    path.chmod(0o600)
    to_file = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"))
    to_file.setLevel(logging.INFO)
    terminal = logging.StreamHandler()
    terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
                          if debug else OneLine())
    terminal.setLevel(logging.DEBUG if debug else logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fabric", False):
            root.removeHandler(handler)
    for handler in (to_file, terminal):
        setattr(handler, "_fabric", True)  # noqa: B010 - a mark for the next setup_logging to find
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return path
