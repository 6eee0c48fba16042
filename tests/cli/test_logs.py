"""The long-running commands' terminal gets one line per event; the log file gets the traceback."""

from __future__ import annotations

import logging
from pathlib import Path

from inferofabric.logs import setup_logging


def test_a_failure_is_one_line_on_the_terminal_and_whole_in_the_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    path = setup_logging(tmp_path)
    try:
        try:
            raise ValueError("no secret named 'db-password'\nsecond line")
        except ValueError:
            logging.getLogger("temporalio.activity").warning("Completing activity as failed", exc_info=True)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    terminal = capsys.readouterr().err.strip().splitlines()
    assert len(terminal) == 1, terminal
    assert terminal[0].endswith("Completing activity as failed (ValueError: no secret named 'db-password')  "
                                "[details: fabric.log]")
    written = path.read_text()
    assert "Traceback (most recent call last)" in written and "second line" in written
    assert path == tmp_path / "logs" / "fabric.log"
