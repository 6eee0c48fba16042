"""Workflow code must stay deterministic. The fabric's workflows run outside Temporal's sandbox
(`sandboxed=False`, worker/main.py says why), so nothing intercepts clocks, randomness or I/O inside
them: this test keeps those out of workflows/ statically (the replay tests catch changed command
sequences), and checks every workflow says so explicitly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.py"))
FORBIDDEN_CALLS = {
    "datetime.now", "datetime.utcnow", "datetime.today", "date.today", "time.time", "time.sleep",
    "time.monotonic", "time.perf_counter", "uuid.uuid1", "uuid.uuid4", "asyncio.sleep", "asyncio.wait",
    "asyncio.wait_for", "asyncio.as_completed", "os.environ.get", "os.getenv", "open", "print", "input",
}
FORBIDDEN_MODULES = {"random", "secrets", "subprocess", "socket", "requests", "urllib", "http", "threading",
                     "os", "sqlite3", "sqlmodel", "sqlalchemy", "boto3", "kubernetes", "pathlib"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_module_has_no_clock_randomness_or_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS or any(name.endswith("." + call) for call in FORBIDDEN_CALLS if "." in call):
                problems.append(f"line {node.lineno}: {name}()")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for module in names:
                if module.split(".")[0] in FORBIDDEN_MODULES:
                    problems.append(f"line {node.lineno}: import {module}")
    assert not problems, f"{path.name} must stay deterministic (use workflow.now(), workflow.sleep(), " \
                         f"workflow.random(), activities for I/O): {problems}"


def test_the_check_catches_a_clock_call(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import datetime\n\ndef f():\n    return datetime.datetime.now()\n")
    with pytest.raises(AssertionError, match=r"datetime\.now"):
        test_workflow_module_has_no_clock_randomness_or_io(bad)


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "@workflow.defn" in p.read_text()], ids=lambda p: p.name)
def test_every_fabric_workflow_runs_outside_the_sandbox(path: Path) -> None:
    """A workflow left in the sandbox pays its per-payload cost on every task (worker/main.py)."""
    text = path.read_text()
    assert text.count("@workflow.defn(") == text.count("sandboxed=False)"), path.name
