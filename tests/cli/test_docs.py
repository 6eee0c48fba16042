"""The README's commands and SDK snippet, extracted and run as written against an embedded stack of
their own, so the docs cannot drift from the code again. A line with a placeholder (ID, NAME, FILE)
is skipped; everything else must exit 0 and print what it promises."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

from .util import fabric_up, free_port, stack_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PLACEHOLDER = re.compile(r"\b(ID|NAME|FILE|POOL|CLASS)\b")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuations joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        command = line.split("  #")[0].split(" # ")[0].strip()
        if command and not command.startswith("#"):
            out.append(command)
    return out


def block_with(text: str, needle: str) -> str:
    found = [b for b in blocks(text, "bash") if needle in b]
    assert len(found) == 1, f"README: expected one bash block with {needle!r}"
    return found[0]


async def shell(command: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_shell(
        command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    port = free_port()
    env = {**stack_env(tmp_path, port), "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    async with fabric_up(tmp_path, port):
        quick = commands(block_with(text, "fabric up"))
        assert quick[0].endswith("fabric up") and quick[1].startswith("export PATH")
        outputs = {}
        for command in quick[2:]:  # the stack is up; PATH is set above
            code, out = await shell(command, env)
            assert code == 0, f"README quick start: `{command}` exited {code}:\n{out}"
            assert out.strip(), f"README quick start: `{command}` printed nothing"
            outputs[command] = out
        query = next(c for c in quick if c.startswith("temporal workflow list"))
        assert "resnet50-train" in outputs[query], outputs[query]

        ran = 0
        for command in commands(block_with(text, "fabric queue --json")):
            if PLACEHOLDER.search(command):
                continue
            code, out = await shell(command, env)
            assert code == 0, f"README queue section: `{command}` exited {code}:\n{out}"
            ran += 1
        assert ran >= 3

        (snippet,) = [b for b in blocks(text, "python") if "FabricClient.connect" in b]
        assert "127.0.0.1:7233" in snippet
        script = tmp_path / "snippet.py"
        script.write_text(snippet.replace("127.0.0.1:7233", f"127.0.0.1:{port}"))
        code, out = await shell(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", env)
        assert code == 0, f"README SDK snippet failed:\n{out}"
        assert "state=" in out and "decisions=" in out, out
