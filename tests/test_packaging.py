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
               "FABRIC_SECRET_KEY": "fernet-key", "FABRIC_AUTH_KEY": "auth-key",
               "FABRIC_GATEWAY_TOKEN": "gateway-token",
               "OAUTH2_PROXY_OIDC_ISSUER_URL": "https://login.example.com", "OAUTH2_PROXY_CLIENT_ID": "fabric-ui",
               "OAUTH2_PROXY_CLIENT_SECRET": "oidc-secret",
               "OAUTH2_PROXY_COOKIE_SECRET": "cookie-secret-32-bytes-long-abcd",
               "OAUTH2_PROXY_EMAIL_DOMAINS": "example.com"}
# The embedded stack's processes (Temporal and its UI, the worker, the door, the gateway), plus what a
# multi-container deployment adds: PostgreSQL, its one-shots, the engine's certificates, the UI's login.
EXPECTED_SERVICES = {"postgresql", "temporal-schema", "fabric-db", "certs", "temporal", "temporal-setup",
                     "temporal-ui", "oauth2-proxy", "fabric-worker", "fabric-door", "fabric-gateway"}
ONE_SHOTS = {"certs", "temporal-schema", "fabric-db", "temporal-setup"}
# Who dials Temporal itself, and the client certificate (certs.sh's directory) each one presents.
ENGINE_CLIENTS = {"fabric-worker": "fabric-worker", "fabric-door": "fabric-door",
                  "fabric-gateway": "fabric-gateway", "temporal-ui": "temporal-ui",
                  "temporal-setup": "temporal-admin-tools"}
CERTS_SCRIPT = ROOT / "deploy/compose/certs.sh"


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
    assert set(worker["depends_on"]) == {"certs", "temporal", "temporal-setup", "fabric-db"}


def test_compose_gateway() -> None:
    """The embedded stack's gateway process, as a service of the same image with a system token."""
    gateway = service("fabric-gateway")
    assert [*gateway["entrypoint"], *gateway["command"]][:3] == ["python", "-m", "inferofabric.gateway"]
    assert environment("fabric-gateway")["FABRIC_TOKEN"].startswith("${FABRIC_GATEWAY_TOKEN:?")
    assert any(str(p).endswith(":8235") for p in gateway["ports"])
    assert importlib.util.find_spec("inferofabric.gateway.__main__") is not None


def published_ports(name: str) -> list[str]:
    return [str(port) for port in service(name).get("ports", [])]


def networks(name: str) -> set[str]:
    found = service(name).get("networks", [])
    return set(found if isinstance(found, list) else found.keys())


def test_compose_publishes_only_the_door_the_gateway_and_the_ui_login() -> None:
    """docs/security.md: the door is the only published gRPC port; the UI only behind its login."""
    publishing = {name for name, spec in compose()["services"].items() if spec.get("ports")}
    assert publishing == {"fabric-door", "fabric-gateway", "oauth2-proxy"}
    assert published_ports("fabric-door") == ["${FABRIC_DOOR_BIND:-0.0.0.0}:${FABRIC_DOOR_PORT:-7233}:7233"]
    # HTTP only, and loopback unless the operator says otherwise.
    assert published_ports("fabric-gateway") == ["${FABRIC_GATEWAY_BIND:-127.0.0.1}:${FABRIC_GATEWAY_PORT:-8235}:8235"]
    assert published_ports("oauth2-proxy") == ["${TEMPORAL_UI_BIND:-127.0.0.1}:${TEMPORAL_UI_PORT:-8080}:4180"]
    for name in ("temporal", "temporal-ui", "postgresql", "fabric-worker"):
        assert "ports" not in service(name), name
    for name, spec in compose()["services"].items():
        assert spec.get("network_mode") in (None, "none"), f"{name} leaves the stack's networks"


def test_compose_networks_keep_the_engine_room_internal() -> None:
    defined = compose()["networks"]
    assert defined["internal"] == {"internal": True}
    outward = {name for name, spec in defined.items() if not (spec or {}).get("internal")}
    assert outward == {"edge", "egress"}
    # The engine, its database and the one-shots: the internal network only.
    for name in ("postgresql", "temporal-schema", "fabric-db", "temporal", "temporal-setup", "temporal-ui"):
        assert networks(name) == {"internal"}, name
    assert networks("fabric-door") == networks("fabric-gateway") == networks("oauth2-proxy") == {"internal", "edge"}
    # The worker reaches the back ends' APIs; nothing of it is published.
    assert networks("fabric-worker") == {"internal", "egress"}
    assert service("certs")["network_mode"] == "none"
    for name, spec in compose()["services"].items():
        # Published ports need a network with a way out; everything else talks inside.
        if spec.get("ports"):
            assert networks(name) & outward, name
        if name != "certs":
            assert "internal" in networks(name) and "network_mode" not in spec, name
            assert "default" not in networks(name), name


def test_compose_temporal_requires_client_certificates() -> None:
    env = environment("temporal")
    assert env["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    for setting in ("SERVER_CERT", "FRONTEND_CERT"):
        assert env[f"TEMPORAL_TLS_{setting}"] == "/certs/temporal/tls.pem"
    for setting in ("SERVER_KEY", "FRONTEND_KEY"):
        assert env[f"TEMPORAL_TLS_{setting}"] == "/certs/temporal/tls.key"
    assert env["TEMPORAL_TLS_SERVER_CA_CERT"] == env["TEMPORAL_TLS_CLIENT1_CA_CERT"] == "/certs/temporal/ca.pem"
    assert env["TEMPORAL_TLS_INTERNODE_SERVER_NAME"] == env["TEMPORAL_TLS_FRONTEND_SERVER_NAME"] == "temporal"
    assert env["TEMPORAL_TLS_INTERNODE_DISABLE_HOST_VERIFICATION"] == "false"
    assert env["TEMPORAL_TLS_FRONTEND_DISABLE_HOST_VERIFICATION"] == "false"
    assert "certs:/certs:ro" in service("temporal")["volumes"]
    assert service("temporal")["depends_on"]["certs"]["condition"] == "service_completed_successfully"


def issued_certificates() -> set[str]:
    """The leaf directories deploy/compose/certs.sh issues (TEMPORAL_HOST defaults to temporal)."""
    script = CERTS_SCRIPT.read_text()
    names = {"temporal"} if re.search(r'^issue "\$TEMPORAL_HOST"', script, re.MULTILINE) else set()
    for loop in re.findall(r"^for name in ([^;]+); do\n\s+issue ", script, re.MULTILINE):
        names.update(loop.split())
    return names


def test_compose_engine_clients_present_their_certificates() -> None:
    """Everything that dials Temporal carries the engine's mTLS client settings, from certs.sh's files."""
    assert set(ENGINE_CLIENTS.values()) | {"temporal"} == issued_certificates()
    for name, leaf in ENGINE_CLIENTS.items():
        env = environment(name)
        prefix = "FABRIC_ENGINE_TLS_" if name.startswith("fabric-") else "TEMPORAL_TLS_"
        assert env[f"{prefix}CA"] == f"/certs/{leaf}/ca.pem", name
        assert env[f"{prefix}CERT"] == f"/certs/{leaf}/tls.pem", name
        assert env[f"{prefix}KEY"] == f"/certs/{leaf}/tls.key", name
        assert env[f"{prefix}SERVER_NAME"] == "temporal", name
        assert "certs:/certs:ro" in service(name)["volumes"], name
        assert service(name)["depends_on"]["certs"]["condition"] == "service_completed_successfully", name
    assert environment("temporal-ui")["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true"
    # The worker and the gateway dial the engine by its service name; the door forwards to it.
    for name in ("fabric-worker", "fabric-gateway"):
        env = environment(name)
        assert env["FABRIC_TEMPORAL_ADDRESS"] == env["FABRIC_ENGINE_ADDRESS"] == "temporal:7233"
    # Only the certs one-shot holds the CA's key.
    holders = {name for name, spec in compose()["services"].items()
               if any(str(v).startswith("certs-ca:") for v in spec.get("volumes", []))}
    assert holders == {"certs"}
    assert "certs:/certs" in service("certs")["volumes"]


def test_compose_door() -> None:
    door, worker = service("fabric-door"), service("fabric-worker")
    assert door["image"] == worker["image"] and worker["build"]["dockerfile"] == "Dockerfile"
    assert [*door["entrypoint"], *door["command"]] == [
        "python", "-m", "inferofabric.door", "--host", "0.0.0.0", "--port", "7233", "--upstream", "temporal:7233"]
    assert importlib.util.find_spec("inferofabric.door.__main__") is not None
    env, worker_env = environment("fabric-door"), environment("fabric-worker")
    # The door verifies the tokens the worker's key signs, and audits into the same store.
    assert env["FABRIC_AUTH_KEY"] == worker_env["FABRIC_AUTH_KEY"]
    assert env["FABRIC_AUTH_KEY"].startswith("${FABRIC_AUTH_KEY:?")
    assert env["FABRIC_DATABASE_URL"] == worker_env["FABRIC_DATABASE_URL"]
    for name in ("FABRIC_NAMESPACE", "FABRIC_TASK_QUEUE"):
        assert env[name] == worker_env[name]
    # Its own home (its TLS CA, the file users are given): not the worker's volume.
    assert "door-home:/var/lib/inferofabric" in door["volumes"]
    assert env["FABRIC_HOME"] == "/var/lib/inferofabric"
    assert not set(door["volumes"]) & set(worker["volumes"]) - {"certs:/certs:ro"}
    assert "fabric-door:/var/lib/inferofabric/tls/ca.pem" in COMPOSE_FILE.read_text()  # the usage lines
    assert set(door["depends_on"]) == {"certs", "temporal", "temporal-setup", "fabric-db"}


def test_compose_ui_sits_behind_its_login() -> None:
    proxy = service("oauth2-proxy")
    assert proxy["image"].startswith("quay.io/oauth2-proxy/oauth2-proxy:")
    env = environment("oauth2-proxy")
    assert env["OAUTH2_PROXY_PROVIDER"] == "oidc"
    assert env["OAUTH2_PROXY_UPSTREAMS"] == "http://temporal-ui:8080/"
    assert env["OAUTH2_PROXY_HTTP_ADDRESS"] == "0.0.0.0:4180"
    for name in ("OIDC_ISSUER_URL", "CLIENT_ID", "CLIENT_SECRET", "COOKIE_SECRET", "EMAIL_DOMAINS"):
        assert env[f"OAUTH2_PROXY_{name}"].startswith(f"${{OAUTH2_PROXY_{name}:?"), name
    assert "ports" not in service("temporal-ui")
    # Writes go through the door (token, roles, audit), never through the UI's own certificate.
    assert environment("temporal-ui")["TEMPORAL_DISABLE_WRITE_ACTIONS"] == "true"


def test_compose_requires_every_secret_without_docker() -> None:
    """The static half of test_docker_compose_config_requires_the_secrets (which needs Compose)."""
    text = COMPOSE_FILE.read_text()
    example = (ROOT / "deploy/compose/env.example").read_text()
    for name in COMPOSE_ENV:
        assert f"${{{name}:?set {name} (see deploy/compose/env.example)}}" in text, name
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f"env.example lacks {name}="
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required == set(COMPOSE_ENV)


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


# -- the engine's mTLS: certs.sh's PKI, the door's upstream channel, connect()'s plain path ---------------
@pytest.fixture(scope="module")
def engine_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/compose/certs.sh run here (as the certs one-shot runs it, with this user as every owner)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl here")
    base = tmp_path_factory.mktemp("pki")
    uid = str(os.getuid())
    env = {**os.environ, "CA_DIR": str(base / "ca"), "CERTS_DIR": str(base / "certs"), "FABRIC_UID": uid,
           "TEMPORAL_UID": uid}
    done = subprocess.run(["sh", str(CERTS_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return base


def rerun_certs(base: Path) -> str:
    uid = str(os.getuid())
    env = {**os.environ, "CA_DIR": str(base / "ca"), "CERTS_DIR": str(base / "certs"), "FABRIC_UID": uid,
           "TEMPORAL_UID": uid}
    done = subprocess.run(["sh", str(CERTS_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_certs_script_issues_the_engine_pki(engine_pki: Path) -> None:
    certs = engine_pki / "certs"
    ca = engine_pki / "ca" / "ca.pem"
    assert {p.name for p in certs.iterdir()} == issued_certificates()
    for leaf in issued_certificates():
        folder = certs / leaf
        assert openssl("verify", "-CAfile", str(ca), str(folder / "tls.pem")).strip().endswith(": OK")
        assert (folder / "ca.pem").read_bytes() == ca.read_bytes()
        assert (folder / "tls.key").stat().st_mode & 0o777 == 0o400, leaf
        text = openssl("x509", "-in", str(folder / "tls.pem"), "-noout", "-text")
        assert "TLS Web Client Authentication" in text, leaf
        assert ("TLS Web Server Authentication" in text) == (leaf == "temporal"), leaf
    server = openssl("x509", "-in", str(certs / "temporal" / "tls.pem"), "-noout", "-ext", "subjectAltName")
    assert "DNS:temporal" in server and "IP Address:127.0.0.1" in server
    # The CA's key never lands in the volume the services mount.
    assert not list(certs.rglob("ca.key"))
    # Idempotent: a second run keeps every certificate; a lost key reissues that leaf only.
    before = {leaf: (certs / leaf / "tls.pem").read_bytes() for leaf in issued_certificates()}
    assert rerun_certs(engine_pki).count("certificate is current") == len(before)
    (certs / "fabric-gateway" / "tls.key").unlink()
    assert "fabric-gateway: issuing" in rerun_certs(engine_pki)
    after = {leaf: (certs / leaf / "tls.pem").read_bytes() for leaf in issued_certificates()}
    assert {leaf for leaf in before if before[leaf] != after[leaf]} == {"fabric-gateway"}


def engine_env(base: Path, leaf: str) -> dict[str, str]:
    folder = base / "certs" / leaf
    return {"FABRIC_ENGINE_TLS_CA": str(folder / "ca.pem"), "FABRIC_ENGINE_TLS_CERT": str(folder / "tls.pem"),
            "FABRIC_ENGINE_TLS_KEY": str(folder / "tls.key"), "FABRIC_ENGINE_TLS_SERVER_NAME": "temporal"}


def test_engine_tls_settings() -> None:
    from inferofabric.door.upstream import EngineTlsError, engine_tls

    assert engine_tls({}) is None
    with pytest.raises(EngineTlsError, match="FABRIC_ENGINE_TLS_KEY not set"):
        engine_tls({"FABRIC_ENGINE_TLS_CA": "/x/ca.pem", "FABRIC_ENGINE_TLS_CERT": "/x/tls.pem"})
    with pytest.raises(EngineTlsError, match="FABRIC_ENGINE_TLS_SERVER_NAME is set"):
        engine_tls({"FABRIC_ENGINE_TLS_SERVER_NAME": "temporal"})
    missing = {"FABRIC_ENGINE_TLS_CA": "/nowhere/ca.pem", "FABRIC_ENGINE_TLS_CERT": "/nowhere/tls.pem",
               "FABRIC_ENGINE_TLS_KEY": "/nowhere/tls.key"}
    with pytest.raises(EngineTlsError, match=r"^FABRIC_ENGINE_TLS_CA=/nowhere/ca.pem: cannot read it"):
        engine_tls(missing)


async def test_upstream_channel_presents_the_engine_client_certificate(engine_pki: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A gRPC server that requires client certificates, as Temporal does in the stack: the door's
    channel gets through with its certificate and the server name `temporal`; nothing else does."""
    import grpc

    from inferofabric.door.upstream import upstream_channel

    server_dir = engine_pki / "certs" / "temporal"
    ca = (server_dir / "ca.pem").read_bytes()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {
        "Call": grpc.unary_unary_rpc_method_handler(lambda request, _context: request)}),))
    credentials = grpc.ssl_server_credentials(
        [((server_dir / "tls.key").read_bytes(), (server_dir / "tls.pem").read_bytes())],
        root_certificates=ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    address = f"127.0.0.1:{port}"
    try:
        for name, value in engine_env(engine_pki, "fabric-door").items():
            monkeypatch.setenv(name, value)
        async with upstream_channel(address, [("grpc.max_receive_message_length", 1 << 20)]) as channel:
            assert await channel.unary_unary("/test.Echo/Call")(b"ping", timeout=10) == b"ping"
        monkeypatch.setenv("FABRIC_ENGINE_TLS_SERVER_NAME", "not-temporal")
        async with upstream_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/test.Echo/Call")(b"ping", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # TLS without a client certificate: refused by the server.
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca), options=[
                ("grpc.ssl_target_name_override", "temporal")]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/test.Echo/Call")(b"ping", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_connect_dials_the_engine_with_its_client_certificate(engine_pki: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from temporalio.service import TLSConfig

    from inferofabric import connection
    from inferofabric.sdk.errors import FabricUnreachable

    seen: list[Any] = []

    class FakeClient:
        @staticmethod
        async def connect(address: str, **kwargs: Any) -> str:
            seen.append(kwargs["tls"])
            return address

    monkeypatch.setattr(connection, "Client", FakeClient)
    for name in ("FABRIC_ENGINE_TLS_CA", "FABRIC_ENGINE_TLS_CERT", "FABRIC_ENGINE_TLS_KEY",
                 "FABRIC_ENGINE_TLS_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    await connection.connect("temporal:7233", "default")
    assert seen.pop() is False  # no engine certificate configured: plaintext, as `fabric up`'s loopback engine
    env = engine_env(engine_pki, "fabric-worker")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    await connection.connect("temporal:7233", "default")
    tls = seen.pop()
    assert isinstance(tls, TLSConfig) and tls.domain == "temporal"
    folder = engine_pki / "certs" / "fabric-worker"
    assert tls.client_cert == (folder / "tls.pem").read_bytes()
    assert tls.client_private_key == (folder / "tls.key").read_bytes()
    assert tls.server_root_ca_cert == (folder / "ca.pem").read_bytes()
    # Through the door (its own TLS and the caller's token) the engine's certificate is never sent.
    door = TLSConfig(server_root_ca_cert=b"door ca")
    await connection.connect("fabric.example.com:7233", "default", api_key="token", tls=door)
    assert seen.pop() is door
    # A certificate file that is not there: one clear line, before any dialling.
    monkeypatch.setenv("FABRIC_ENGINE_TLS_KEY", "/nowhere/tls.key")
    with pytest.raises(FabricUnreachable) as failed:
        await connection.connect("temporal:7233", "default")
    assert str(failed.value) == ("cannot dial the fabric's engine at temporal:7233: "
                                 "FABRIC_ENGINE_TLS_KEY=/nowhere/tls.key: cannot read it (No such file or directory)")
    assert not seen


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
