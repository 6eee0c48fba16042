"""The package's structure as a contract: its layers hold ([tool.importlinter] in pyproject.toml, checked by
import-linter as `make imports` does) and no module grows past what one reader takes in."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
MAX_LINES = 650


def _package_folders() -> dict[str, Path]:
    """Each folder of the package under its import name: inferofabric/, and the top-level folders that
    pyproject's package-dir maps into it (workflows/ is `inferofabric.workflows`, ...)."""
    mapped = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    return {"inferofabric": ROOT / "inferofabric", **{name: ROOT / folder for name, folder in mapped.items()}}


def _installed_layout(tree: Path) -> Path:
    """The package as it is installed, as symlinks under `tree` (the Makefile's build/mypy-src, made here
    afresh): import-linter walks the folder of the `inferofabric` it imports."""
    package = tree / "inferofabric"
    package.mkdir(parents=True)
    for entry in (ROOT / "inferofabric").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, folder in _package_folders().items():
        if name != "inferofabric":
            (package / name.removeprefix("inferofabric.")).symlink_to(folder)
    return tree


def test_the_layer_contract_holds(tmp_path: Path) -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), "import-linter is a dev dependency: pip install -e '.[dev]'"
    tree = _installed_layout(tmp_path / "tree")
    # From inside the tree: lint-imports puts its working directory first on sys.path.
    result = subprocess.run([str(lint_imports), "--no-cache", "--no-logo", str(PYPROJECT)], cwd=tree,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    # Read whole: a layer that is missing (as workflows/ would be outside the tree) fails the contract.
    assert "0 broken" in result.stdout, result.stdout


def test_no_module_passes_the_line_limit() -> None:
    offenders = []
    for folder in _package_folders().values():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not offenders, f"modules over {MAX_LINES} lines (split them): " + ", ".join(offenders)
