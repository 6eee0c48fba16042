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
        query = next(c for c in quick if "temporal workflow list" in c)
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


def transcript(text: str, start: str) -> list[str]:
    """The `$ command` lines of the console transcript that contains `start` (comments dropped)."""
    (block,) = [b for b in re.findall(r"```\w*\n(.*?)```", text, re.DOTALL) if start in b]
    return [line[2:].split("  #")[0].strip() for line in block.splitlines() if line.startswith("$ ")]


async def test_the_docs_commands_run_as_written(tmp_path: Path) -> None:
    """docs/admission.md's walk-through (a quota borrowed, a preemption, an 8-GPU job's turn), its
    what-if commands, and docs/security.md's token commands."""
    admission = (ROOT / "docs" / "admission.md").read_text()
    port = free_port()
    env = {**stack_env(tmp_path, port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    async with fabric_up(tmp_path, port):
        walk = transcript(admission, "fabric policy set -f examples/admission-policy.yaml")
        assert len(walk) >= 8
        for command in walk:
            if "..." in command:  # the doc's shorthand for the clean-up
                continue
            if command == "fabric queue":
                await _until_queued(env, "ads-big")
            code, out = await shell(command, env)
            assert code == 0, f"docs/admission.md: `{command}` exited {code}:\n{out}"
            if command.startswith("fabric list --team vision"):
                assert out.count("vision-batch-") >= 7, out
        for command in commands(block_with(admission, "fabric policy simulate")):
            code, out = await shell(command, env)
            assert code == 0 and out.strip(), f"docs/admission.md: `{command}` exited {code}:\n{out}"

        security = (ROOT / "docs" / "security.md").read_text()
        for command in commands(block_with(security, "fabric token create --role admin")):
            if "<" in command:  # export FABRIC_TOKEN=<the printed text>
                continue
            code, out = await shell(command, env)
            assert code == 0 and out.strip().count(".") == 2, f"docs/security.md: `{command}`:\n{out}"  # a JWT


async def _until_queued(env: dict[str, str], workload: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        code, out = await shell("fabric queue --json", env)
        if code == 0 and workload in out:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{workload} never joined the queue")
