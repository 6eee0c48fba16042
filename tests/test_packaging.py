"""Packaging and deployment files: docker-compose.yml, the Dockerfile, the Makefile, and the wheel.

The wheel test builds the project the way pip does and checks that it ships one import namespace:
`workflows/`, `activities/`, `worker/` and `policies/` land under `inferofabric/` and nothing
generic (no top-level `workflows`, `tests`, ...) reaches a user's environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferofabric.models.messages import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV = {"POSTGRES_PASSWORD": "pg-secret", "FABRIC_DB_PASSWORD": "fabric-secret",
               "FABRIC_SECRET_KEY": "fernet-key", "FABRIC_GATEWAY_TOKEN": "gateway-token"}
EXPECTED_SERVICES = {"postgresql", "temporal-schema", "fabric-db", "temporal", "temporal-setup",
                     "temporal-ui", "fabric-worker", "fabric-gateway"}
ONE_SHOTS = {"temporal-schema", "fabric-db", "temporal-setup"}


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_dirs() -> dict[str, str]:
    """The package-dir mapping, e.g. {"inferofabric.workflows": "workflows"}."""
    return dict(pyproject()["tool"]["setuptools"]["package-dir"])


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# -- docker-compose.yml -----------------------------------------------------------------------------
def compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin) or a standalone Compose v2 `docker-compose`; None if neither."""
    candidates = []
    if os.environ.get("DOCKER_COMPOSE"):
        candidates.append(os.environ["DOCKER_COMPOSE"].split())
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def run_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 here (`docker compose` plugin or standalone docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV and not k.startswith("COMPOSE_")}
    # --env-file /dev/null: a developer's filled-in .env must not stand in for the variables under test.
    argv = [*command, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), "config", "--format", "json"]
    return subprocess.run(argv, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_parses() -> None:
    done = run_compose_config(COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    # Some wrappers of the compose binary drop its exit code: the rendered model is the proof.
    config = json.loads(done.stdout)
    assert set(config["services"]) == EXPECTED_SERVICES
    worker = config["services"]["fabric-worker"]
    assert [*worker["entrypoint"], *worker["command"]] == ["fabric", "worker"]
    assert worker["environment"]["FABRIC_SECRET_KEY"] == "fernet-key"
    assert worker["environment"]["FABRIC_DATABASE_URL"] == (
        "postgresql+psycopg://fabric:fabric-secret@postgresql:5432/fabric")


def test_docker_compose_config_requires_the_secrets() -> None:
    for missing in COMPOSE_ENV:
        done = run_compose_config({k: v for k, v in COMPOSE_ENV.items() if k != missing})
        assert done.returncode != 0 or not done.stdout.strip(), f"compose accepted a missing {missing}"
        assert missing in done.stderr


def test_compose_services() -> None:
    services = compose()["services"]
    assert set(services) == EXPECTED_SERVICES
    assert services["postgresql"]["image"].startswith("postgres:${POSTGRESQL_VERSION:-16}")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgresql"]["volumes"])
    assert "pg_isready" in " ".join(services["postgresql"]["healthcheck"]["test"])
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert environment("temporal")["DB"] == "postgres12"
    assert environment("temporal")["POSTGRES_SEEDS"] == "postgresql"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert any(str(p).endswith(":8080") for p in services["temporal-ui"]["ports"])
    assert environment("temporal-ui")["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_compose_worker() -> None:
    worker = service("fabric-worker")
    assert worker["build"]["context"] == "."
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    assert [*worker["entrypoint"], *worker["command"]] == ["fabric", "worker"]
    env = environment("fabric-worker")
    assert env["FABRIC_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert re.fullmatch(r"postgresql\+psycopg://fabric:\$\{FABRIC_DB_PASSWORD[^}]*\}@postgresql:5432/fabric",
                        env["FABRIC_DATABASE_URL"])
    assert env["FABRIC_SECRET_KEY"].startswith("${FABRIC_SECRET_KEY:?")
    assert set(worker["depends_on"]) == {"temporal", "temporal-setup", "fabric-db"}


def test_compose_gateway() -> None:
    """The embedded stack's gateway process, as a service of the same image with a system token."""
    gateway = service("fabric-gateway")
    assert [*gateway["entrypoint"], *gateway["command"]][:3] == ["python", "-m", "inferofabric.gateway"]
    assert environment("fabric-gateway")["FABRIC_TOKEN"].startswith("${FABRIC_GATEWAY_TOKEN:?")
    assert any(str(p).endswith(":8235") for p in gateway["ports"])
    assert importlib.util.find_spec("inferofabric.gateway.__main__") is not None


def test_compose_dependencies_are_meaningful() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        depends = spec.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for other, rule in depends.items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}, which has no healthcheck"
            elif condition == "service_completed_successfully":
                assert other in ONE_SHOTS, f"{name} waits for {other} to exit, but it is long-running"
            else:
                pytest.fail(f"{name} -> {other}: condition {condition}")
    for name in ONE_SHOTS:
        assert not str(services[name].get("restart", "no")).startswith(("always", "unless-stopped")), name


def test_compose_mounts_exist() -> None:
    for name, spec in compose()["services"].items():
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    temporal = environment("temporal")
    mounted = next(v for v in service("temporal")["volumes"] if "dynamicconfig" in v)
    host_dir = ROOT / mounted.split(":")[0]
    config_file = host_dir / Path(temporal["DYNAMIC_CONFIG_FILE_PATH"]).name
    assert isinstance(yaml.safe_load(config_file.read_text()), dict)


def test_compose_registers_the_search_attributes() -> None:
    script = (ROOT / "deploy/compose/temporal-setup.sh").read_text()
    line = re.search(r'^SEARCH_ATTRIBUTES="([^"]*)"', script, re.MULTILINE)
    assert line is not None
    registered = dict(pair.split(":") for pair in line.group(1).split())
    assert registered == SEARCH_ATTRIBUTES


@pytest.mark.parametrize("script", sorted((ROOT / "deploy/compose").glob("*.sh")), ids=lambda p: p.name)
def test_compose_scripts_are_valid_sh(script: Path) -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- Dockerfile, .dockerignore, Makefile --------------------------------------------------------------
def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["fabric"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["worker"\]$', text, re.MULTILINE)


def test_dockerignore_lets_every_package_folder_in() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    for folder in ["inferofabric", *package_dirs().values()]:
        assert f"!{folder}/" in lines, f".dockerignore drops {folder}/ from the build context"
    assert "!pyproject.toml" in lines


def test_makefile_mirrors_the_package_dir_mapping() -> None:
    makefile = (ROOT / "Makefile").read_text()
    mapped = re.search(r"^MAPPED_PACKAGES := (.*)$", makefile, re.MULTILINE)
    assert mapped is not None
    # Each mapped folder is also the sub-package's name (inferofabric.workflows <- workflows/).
    assert {f"inferofabric.{folder}": folder for folder in mapped.group(1).split()} == package_dirs()


# -- the wheel ---------------------------------------------------------------------------------------------
def source_files() -> dict[str, Path]:
    """Every module and package-data file of the source tree, keyed by its path inside the wheel."""
    tool = pyproject()["tool"]["setuptools"]
    roots = {"inferofabric": ROOT / "inferofabric"} | {
        name.replace(".", "/"): ROOT / folder for name, folder in package_dirs().items()}
    patterns = {name.replace(".", "/"): globs for name, globs in tool.get("package-data", {}).items()}
    files: dict[str, Path] = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            target = f"{prefix}/{path.relative_to(folder).as_posix()}"
            package = target.rsplit("/", 1)[0]
            if path.suffix == ".py" or any(path.match(g) for g in patterns.get(package, [])):
                files[target] = path
    return files


def can_build_offline() -> bool:
    try:
        major = int(metadata.version("setuptools").split(".")[0])
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    return major >= 68


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build from a copy of the sources, so a stale build/ here never leaks into the wheel."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ["pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"]:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    for folder in ["inferofabric", *package_dirs().values()]:
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    # Offline and fast with this environment's setuptools; else pip fetches [build-system].requires.
    isolation = ["--no-build-isolation"] if can_build_offline() else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", *isolation,
         "-w", str(base / "dist")],
        cwd=source, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (base / "dist").glob("inferofabric-*.whl")
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = wheel_names(wheel)
    top = {name.split("/")[0] for name in names}
    version = pyproject()["project"]["version"]
    assert top == {"inferofabric", f"inferofabric-{version}.dist-info"}, sorted(top)
    for generic in ["workflows/", "activities/", "worker/", "policies/", "tests/", "bench/", "deploy/"]:
        assert not any(name.startswith(generic) for name in names), generic
    with zipfile.ZipFile(wheel) as archive:
        info = f"inferofabric-{version}.dist-info"
        if f"{info}/top_level.txt" in names:
            assert archive.read(f"{info}/top_level.txt").decode().split() == ["inferofabric"]
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert re.search(r"^fabric = inferofabric\.cli\.main:main$", entry_points, re.MULTILINE)


def test_wheel_ships_every_module(wheel: Path) -> None:
    names = wheel_names(wheel)
    for required in ["inferofabric/workflows/workload.py", "inferofabric/activities/placement.py",
                     "inferofabric/worker/main.py", "inferofabric/policies/engine.py",
                     "inferofabric/store/migrations/env.py", "inferofabric/store/migrations/script.py.mako",
                     "inferofabric/store/migrations/versions/0001_initial.py", "inferofabric/cli/main.py"]:
        assert required in names, required
    # A new sub-package missing from [tool.setuptools] packages would silently vanish from the wheel.
    missing = sorted(set(source_files()) - names)
    assert not missing, f"in the source tree but not in the wheel: {missing}"


def test_installed_wheel_imports_from_its_own_namespace(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = ("import inferofabric, inferofabric.workflows.workload, inferofabric.worker.main, "
             "inferofabric.store.db as db; print(inferofabric.__file__); print(db.MIGRATIONS)")
    # Dependencies come from this environment; the package itself must come from the installed wheel.
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr
    module_file, migrations = done.stdout.split()
    assert Path(module_file).is_relative_to(target)
    assert (Path(migrations) / "versions" / "0001_initial.py").is_file()
    assert not (target / "workflows").exists() and not (target / "tests").exists()
