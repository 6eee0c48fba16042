"""A `local` job runs sandboxed (bubblewrap, docs/backends/local.md): these jobs are real processes
that try what an attacker's job did — read the fabric's signing key, the worker's environment and
/etc/shadow, write next to the fabric's database, outlive their time — and fail, while an honest
job still writes its outputs, logs, reads its env, keeps a checkpoint and serves on a host port."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inferofabric.backends import local as local_backend
from inferofabric.backends.base import BackendConfigError, JobRejected, JobRequest, JobState, JobStatus
from inferofabric.backends.local import LocalBackend
from inferofabric.backends.local_sandbox import SandboxPaths, bubblewrap_argv
from inferofabric.models import WorkloadSpec
from inferofabric.models.common import Health
from inferofabric.models.endpoint import ENDPOINT_LABEL
from inferofabric.models.pool import PoolSpec

KEY_TEXT = "fabric-signing-key-7d1f0c"
DB_TEXT = "the fabric's database"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap is not installed (`make browser` installs it, as root)")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A FABRIC_HOME as `fabric up` leaves it: the signing key (0600) and the database next to it."""
    home = tmp_path / "fabric-home"
    home.mkdir()
    (home / "auth.key").write_text(KEY_TEXT)
    (home / "auth.key").chmod(0o600)
    (home / "fabric.db").write_text(DB_TEXT)
    return home


def backend_for(home: Path, **local: Any) -> LocalBackend:
    pool = PoolSpec.model_validate({"name": "here", "location": "on-prem", "backend": "local",
                                    "local": {"discover_gpus": False, **local}})
    return LocalBackend(pool, home)


def run(backend: LocalBackend, job_id: str, command: list[str], env: dict[str, str] | None = None,
        timeout: float = 20, **spec: Any) -> tuple[JobStatus, str]:
    """Launch the job, wait until it ends, return its final status and its logs."""
    workload = WorkloadSpec.model_validate({"name": job_id, "team": "ads", "image": "none", "command": command,
                                            **spec})
    backend.launch(JobRequest(job_id=job_id, workload_id=job_id, attempt=1, spec=workload, env=env or {}))
    deadline = time.monotonic() + timeout
    while not (status := backend.status(job_id)).state.terminal:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status, backend.logs(job_id)


@needs_bwrap
def test_a_job_cannot_read_the_fabric_key_nor_see_fabric_home(home: Path) -> None:
    script = 'cat "$1"; echo "cat=$?"; ls -A "$2"; echo "listing=$?"'
    status, logs = run(backend_for(home), "peek-key", ["sh", "-c", script, "sh", str(home / "auth.key"), str(home)])
    assert KEY_TEXT not in logs
    assert "cat=0" not in logs and "auth.key: No such file or directory" in logs, logs
    # FABRIC_HOME is an empty tmpfs but for the way down to the job's own directory.
    listing = logs.split("cat=1\n")[1].split("listing=")[0].split()
    assert listing == ["local"], logs
    assert status.state == JobState.SUCCEEDED


@needs_bwrap
def test_a_job_cannot_read_the_workers_environ_nor_signal_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MARKER", "worker-only-marker-31337")
    me = os.getpid()
    script = ('cat /proc/$1/environ; echo "environ=$?"; kill -0 $1; echo "kill=$?"; '
              'echo "processes=$(ls /proc | grep -c "^[0-9]")"')
    _, logs = run(backend_for(home), "peek-proc", ["sh", "-c", script, "sh", str(me)])
    assert "worker-only-marker-31337" not in logs
    assert "environ=0" not in logs and "kill=0" not in logs, logs
    assert "kill=1" in logs, logs
    processes = int(logs.split("processes=")[1].split()[0])
    assert processes < 10, logs  # its own PID namespace: bwrap's init, the shell, ls and grep


@needs_bwrap
def test_a_job_cannot_read_etc_shadow_and_never_runs_as_root(home: Path) -> None:
    script = 'cat /etc/shadow; echo "shadow=$?"; echo "uid=$(id -u)"; echo "gid=$(id -g)"'
    _, logs = run(backend_for(home), "peek-shadow", ["sh", "-c", script])
    assert "root:" not in logs and "shadow=0" not in logs, logs
    uid = int(logs.split("uid=")[1].split()[0])
    assert uid != 0 and int(logs.split("gid=")[1].split()[0]) != 0, logs
    if os.geteuid() == 0:
        assert uid == 65534, logs  # a root worker runs jobs as nobody by default


@needs_bwrap
def test_a_job_cannot_write_next_to_the_fabric_database(home: Path) -> None:
    script = 'echo evil > "$1/evil"; echo "new=$?"; echo evil > "$1/fabric.db"; echo "db=$?"'
    _, logs = run(backend_for(home), "write-db", ["sh", "-c", script, "sh", str(home)])
    assert "new=0" not in logs and "db=0" not in logs, logs
    assert not (home / "evil").exists()
    assert (home / "fabric.db").read_text() == DB_TEXT
    assert sorted(p.name for p in home.iterdir()) == ["auth.key", "fabric.db", "local", "logs"]


@needs_bwrap
def test_an_honest_job_writes_its_outputs_logs_reads_its_env_and_keeps_a_checkpoint(home: Path) -> None:
    checkpoint = home / "checkpoints" / "ads" / "honest"
    env = {"MODEL": "small", "FABRIC_CHECKPOINT_DIR": str(checkpoint)}
    script = ('echo "model=$MODEL"; echo result > out.txt; mkdir -p sub && echo deep > sub/x; '
              'echo step-7 > "$FABRIC_CHECKPOINT_DIR/latest"; echo "/tmp: $(echo t > /tmp/t && cat /tmp/t)"')
    status, logs = run(backend_for(home), "honest", ["sh", "-c", script], env=env)
    assert status.state == JobState.SUCCEEDED and status.exit_code == 0, (status, logs)
    assert "model=small" in logs and "/tmp: t" in logs, logs
    job_dir = home / "local" / "here" / "jobs" / "honest"
    assert (job_dir / "out.txt").read_text() == "result\n" and (job_dir / "sub" / "x").read_text() == "deep\n"
    assert (checkpoint / "latest").read_text() == "step-7\n"  # the next attempt resumes from it


@needs_bwrap
def test_a_job_past_max_runtime_seconds_is_stopped_and_fails_with_the_reason(home: Path) -> None:
    backend = backend_for(home)
    started = time.monotonic()
    status, _ = run(backend, "sleeper", ["sleep", "30"], max_runtime_seconds=2, timeout=15)
    assert status.state == JobState.FAILED, status
    assert "exceeded max_runtime_seconds (2 s)" in status.message
    assert time.monotonic() - started < 10
    pid = backend._process_record("sleeper")["pid"]
    assert not local_backend._alive(pid)
    assert backend.list_jobs() == []


@needs_bwrap
def test_cancel_asks_the_sandboxed_job_to_stop_before_killing_it(home: Path) -> None:
    backend = backend_for(home)
    spec = WorkloadSpec.model_validate({"name": "graceful", "team": "ads", "image": "none", "command": [
        "sh", "-c", 'trap "echo got-sigterm; exit 0" TERM; echo ready; while true; do sleep 0.1; done']})
    backend.launch(JobRequest(job_id="graceful", workload_id="graceful", attempt=1, spec=spec))
    deadline = time.monotonic() + 10
    while "ready" not in backend.logs("graceful"):
        assert time.monotonic() < deadline, backend.status("graceful")
        time.sleep(0.05)
    backend.cancel("graceful")
    assert backend.status("graceful").state == JobState.CANCELLED
    assert "got-sigterm" in backend.logs("graceful")
    assert not local_backend._alive(backend._process_record("graceful")["pid"])


@needs_bwrap
@pytest.mark.skipif(shutil.which("python3", path=local_backend.MINIMAL_PATH) is None, reason="no system python3")
def test_an_endpoint_replica_serves_on_a_host_port_only_where_the_pool_gives_the_hosts_network(home: Path) -> None:
    spec = WorkloadSpec.model_validate({"name": "replica", "team": "ads", "image": "none",
                                        "labels": {ENDPOINT_LABEL: "demo"}, "command": [
        "sh", "-c", 'echo hello-from-the-sandbox > index.html; exec python3 -m http.server -b 127.0.0.1 "$PORT"']})
    with pytest.raises(JobRejected, match="cannot serve an endpoint"):  # isolated by default: nothing runs
        backend_for(home).launch(JobRequest(job_id="refused", workload_id="refused", attempt=1, spec=spec))
    assert not (home / "local" / "here" / "jobs" / "refused").exists()
    backend = backend_for(home, network="host")
    status = backend.launch(JobRequest(job_id="replica", workload_id="replica", attempt=1, spec=spec))
    address = status.details["address"]
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/index.html", timeout=2) as answer:
                    assert answer.read() == b"hello-from-the-sandbox\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, backend.logs("replica")
                time.sleep(0.1)
    finally:
        backend.cancel("replica")


def test_without_bwrap_launch_fails_once_with_how_to_install_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(local_backend.shutil, "which",
                        lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    backend = backend_for(home)
    spec = WorkloadSpec.model_validate({"name": "nobwrap", "team": "ads", "image": "none", "command": ["true"]})
    with pytest.raises(BackendConfigError, match="apt-get install bubblewrap") as raised:
        backend.launch(JobRequest(job_id="nobwrap", workload_id="nobwrap", attempt=1, spec=spec))
    assert raised.value.retryable is False
    assert not (home / "local" / "here" / "jobs" / "nobwrap").exists()  # nothing ran, nothing to clean
    probe = backend.probe()
    assert probe.health == Health.UNHEALTHY and "bwrap" in probe.reason


def test_pool_settings_default_to_bubblewrap_and_refuse_root() -> None:
    assert backend_for(Path("/nonexistent")).config.sandbox == "bubblewrap"
    pool = {"name": "here", "location": "on-prem", "backend": "local"}
    with pytest.raises(ValidationError, match="never runs as root"):
        PoolSpec.model_validate({**pool, "local": {"run_as": "root"}})
    with pytest.raises(ValidationError):
        PoolSpec.model_validate({**pool, "local": {"sandbox": "chroot"}})
    old = PoolSpec.model_validate({**pool, "local": {"discover_gpus": True}})
    assert old.backend_config == {"discover_gpus": True}  # pool files from before the sandbox still load


@pytest.mark.skipif(shutil.which("podman") is not None, reason="podman is installed here")
def test_podman_says_it_is_not_installed(home: Path) -> None:
    spec = WorkloadSpec.model_validate({"name": "pod", "team": "ads", "image": "none", "command": ["true"]})
    with pytest.raises(BackendConfigError, match="podman is not installed on this host"):
        backend_for(home, sandbox="podman").launch(JobRequest(job_id="pod", workload_id="pod", attempt=1, spec=spec))


def test_the_bwrap_command_line_isolates_the_network_keeps_gpus_and_hides_fabric_home() -> None:
    paths = SandboxPaths(fabric_home="/root/.inferofabric", job_dir="/root/.inferofabric/local/p/jobs/j-a1",
                         cwd="/root/.inferofabric/local/p/jobs/j-a1", hidden_files=["/etc/shadow"],
                         devices=["/dev/nvidia0", "/dev/nvidiactl"])
    argv = bubblewrap_argv("/usr/bin/bwrap", paths, ["python", "train.py"])
    assert "--unshare-net" in argv
    replica = bubblewrap_argv("/usr/bin/bwrap", SandboxPaths(**{**paths.__dict__, "host_network": True}), ["x"])
    assert "--unshare-net" not in replica  # endpoint replicas listen on host ports
    for flag in ("--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    joined = " ".join(argv)
    assert "--tmpfs /root/.inferofabric" in joined and "--remount-ro /root/.inferofabric" in joined
    assert "--dev-bind-try /dev/nvidia0 /dev/nvidia0" in joined
    assert "--ro-bind /dev/null /etc/shadow" in joined
    # The job dir is bound after the tmpfs that hides FABRIC_HOME, and nothing else of it is.
    assert joined.index("--tmpfs /root/.inferofabric") < joined.index("--bind /root/.inferofabric/local/p/jobs/j-a1")
    assert argv[-3:] == ["--", "python", "train.py"]


@needs_bwrap
def test_a_job_has_no_network_unless_the_pool_gives_it_one(home: Path) -> None:
    """On the embedded stack Temporal listens on the host's loopback: an isolated job cannot reach it."""
    import socket as sockets

    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('REACHED')"]
    try:
        status, logs = run(backend_for(home), "isolated", probe)
        assert status.state == JobState.FAILED and "REACHED" not in logs, logs
        status, logs = run(backend_for(home, network="host"), "host-net", probe)
        assert status.state == JobState.SUCCEEDED and "REACHED" in logs, logs
    finally:
        listener.close()


@needs_bwrap
def test_a_read_only_path_under_tmp_is_shown_again_but_fabric_home_inside_it_stays_hidden() -> None:
    """A checkout or virtualenv under /tmp (a CI clone) can be named in `read_only`; FABRIC_HOME in it stays hidden."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="fabric-view-"))  # /tmp/fabric-view-*, 0755 as a git clone would be
    try:
        base.chmod(0o755)
        tools = base / "tools"
        tools.mkdir(mode=0o755)
        (tools / "hello.sh").write_text("echo hello-from-tmp\n")
        (tools / "hello.sh").chmod(0o644)
        home = base / "fabric-home"
        home.mkdir()
        (home / "auth.key").write_text(KEY_TEXT)
        (home / "auth.key").chmod(0o600)
        script = f'sh {tools / "hello.sh"}; cat {home / "auth.key"}; echo "cat=$?"'
        _, logs = run(backend_for(home, read_only=["/", str(base)]), "tmp-view", ["sh", "-c", script])
        assert "hello-from-tmp" in logs and KEY_TEXT not in logs and "cat=0" not in logs, logs
        assert "auth.key: No such file or directory" in logs, logs  # FABRIC_HOME is an empty tmpfs there too
        _, logs = run(backend_for(home), "no-tmp-view", ["sh", "-c", f'sh {tools / "hello.sh"}'])
        assert "hello-from-tmp" not in logs, logs  # /tmp stays private unless a path in it is named
    finally:
        shutil.rmtree(base, ignore_errors=True)
