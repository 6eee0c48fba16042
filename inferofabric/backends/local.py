"""The `local` pool: really runs a workload's command as a process on this host, in a sandbox.

The container image is not used: the command runs directly, with the workload's env,
`CUDA_VISIBLE_DEVICES` set to the GPUs assigned to it (found through NVML), and its output in
$FABRIC_HOME/logs/<job_id>.log. It runs inside bubblewrap (`local_sandbox.py`: its own PID
namespace, the host read-only, $FABRIC_HOME hidden, only its job directory writable) as an
unprivileged user, never root. A small shell wrapper outside the sandbox writes the exit code to a
file when the command ends, so the outcome survives a worker restart; job state lives under
$FABRIC_HOME/local/<pool>/. See docs/backends/local.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferofabric.backends import gpu_discovery, local_sandbox
from inferofabric.backends._files import create_json_exclusive, read_json, tail_lines, write_json_atomic
from inferofabric.backends.base import (
    Backend,
    BackendConfigError,
    JobRejected,
    JobRequest,
    JobState,
    JobStatus,
    PoolProbe,
)
from inferofabric.models.common import Health
from inferofabric.models.endpoint import ENDPOINT_LABEL
from inferofabric.models.pool import LocalSettings

# `$0` is the exit-code file (in the job directory, the wrapper's working directory); the command
# follows. The wrapper runs as the worker's user outside the sandbox, in a directory the job may write
# to: the code goes to a fresh file (mktemp: O_EXCL, never through a link the job planted) renamed
# over `$0` (a rename replaces a link, never follows it); the sticky directory keeps the job from
# swapping the temporary file. status() trusts only files the worker's user owns.
WRAPPER = '"$@"; code=$?; tmp=$(mktemp "$0.XXXXXX") && echo $code > "$tmp" && mv -fT "$tmp" "$0"; exit $code'
_children: dict[str, subprocess.Popen[bytes]] = {}
STOP_GRACE_SECONDS = 5.0  # SIGTERM, then this long, then SIGKILL (cancel and max_runtime_seconds)
NOBODY = 65534
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"

LocalConfig = LocalSettings  # the pool's `local:` block (inferofabric/models/pool.py)


class LocalBackend(Backend):
    kind = "local"
    config_model = LocalConfig

    @property
    def _dir(self) -> Path:
        return self.home / "local" / self.pool.name

    def _job_dir(self, job_id: str) -> Path:
        return self._dir / "jobs" / job_id

    def _process_record(self, job_id: str) -> dict[str, Any]:
        """The wrapper's pid, start time, GPUs and port. The worker's own copy, outside the job directory
        (the job may write there: a pid it planted must never be what cancel signals); the copy in the
        job directory (process.json) is for people and tools."""
        return read_json(self._dir / "processes" / f"{job_id}.json") or read_json(
            self._job_dir(job_id) / "process.json") or {}

    def _log_path(self, job_id: str) -> Path:
        return self.home / "logs" / f"{job_id}.log"

    def _host_gpus(self) -> list[gpu_discovery.HostGpu]:
        return gpu_discovery.discover() if self.config.discover_gpus else []

    def probe(self) -> PoolProbe:
        try:
            self._sandbox_tool()
        except BackendConfigError as error:
            return PoolProbe(health=Health.UNHEALTHY, reason=str(error), gpus=None,
                             details={"sandbox": self.config.sandbox})
        gpus = self._host_gpus()
        if not gpus:
            return PoolProbe(health=Health.HEALTHY, reason="host answering (no NVML GPUs: declared inventory used)",
                             gpus=None, details={"nvml": False})
        return PoolProbe(health=Health.HEALTHY, reason=f"host answering, {len(gpus)} GPU(s) via NVML",
                         gpus=gpu_discovery.inventory(gpus),
                         details={"nvml": True, "gpus": [g.__dict__ for g in gpus]})

    # -- GPU assignment -------------------------------------------------------------------------------
    @contextmanager
    def _gpu_table(self) -> Iterator[dict[str, Any]]:
        """The host's GPU-index -> job table under an exclusive file lock (several workers may launch)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with (self._dir / "gpus.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = read_json(self._dir / "gpus.json") or {}
            yield table
            write_json_atomic(self._dir / "gpus.json", table)

    def _assign_gpus(self, request: JobRequest) -> list[int]:
        if request.gpus == 0:
            return []
        host = [g for g in self._host_gpus() if request.gpu_type in (None, g.gpu_type)]
        if not host:
            return []  # no NVML: the declared inventory is a quota, nothing to pin
        with self._gpu_table() as table:
            for index, job_id in list(table.items()):
                if self._finished(job_id):
                    del table[index]
            free = [g.index for g in host if str(g.index) not in table]
            if len(free) < request.gpus:
                raise JobRejected(f"only {len(free)} free {request.gpu_type} GPU(s) on this host, "
                                  f"need {request.gpus}")
            chosen = free[: request.gpus]
            for device in chosen:
                table[str(device)] = request.job_id
            return chosen

    def _finished(self, job_id: str) -> bool:
        directory = self._job_dir(job_id)
        return not directory.exists() or _ours(directory / "exit_code")

    # -- the sandbox and the job's user ---------------------------------------------------------------
    def _sandbox_tool(self) -> str | None:
        """The sandbox program's path (None for `sandbox: none`); a clear, non-retryable error if absent."""
        if self.config.sandbox == "none":
            return None
        if self.config.sandbox == "podman":
            if shutil.which("podman") is None:
                raise BackendConfigError(f"pool {self.pool.name!r} asks for `sandbox: podman`, but podman is not "
                                         "installed on this host; use `sandbox: bubblewrap` (the default)")
            raise BackendConfigError(f"pool {self.pool.name!r}: `sandbox: podman` is not supported by the local "
                                     "back end yet; use `sandbox: bubblewrap` (the default)")
        bwrap = shutil.which("bwrap", path=SYSTEM_PATH)
        if bwrap is None:
            raise BackendConfigError(f"pool {self.pool.name!r} runs local jobs in bubblewrap, but `bwrap` is not "
                                     f"installed on this host: {local_sandbox.INSTALL_HINT}")
        return bwrap

    def _job_user(self) -> tuple[int, int] | None:
        """(uid, gid) the worker (root) switches a job to; None when the worker is not root and the job
        runs as the worker's own user. Never root."""
        wanted = self.config.run_as
        if os.geteuid() != 0:
            if wanted is not None and _lookup_user(wanted, self.pool.name)[0] != os.geteuid():
                raise BackendConfigError(f"pool {self.pool.name!r}: `run_as: {wanted}` needs the worker to run as "
                                         "root; an unprivileged worker runs jobs as its own user")
            return None
        uid, gid = _lookup_user(wanted, self.pool.name) if wanted is not None else _nobody()
        if uid == 0 or gid == 0:
            raise BackendConfigError(f"pool {self.pool.name!r}: a local job never runs as root "
                                     f"(run_as: {wanted}); name an unprivileged user")
        return uid, gid

    def _checkpoint_dir(self, request: JobRequest) -> Path | None:
        """The job's checkpoint directory when it is told one (FABRIC_CHECKPOINT_DIR): the one the pool
        gives this workload, never a path of the workload's choosing (it is bound writable)."""
        root = self.pool.checkpoint_root or str(self.home / "checkpoints")
        expected = Path(root) / request.spec.team / request.workload_id
        told = request.env.get("FABRIC_CHECKPOINT_DIR")
        return expected if told is not None and Path(told) == expected else None

    def _prepare_dirs(self, directory: Path, checkpoint: Path | None, user: tuple[int, int] | None) -> None:
        """The job directory stays the worker's (so do its state files) and is writable by the job's
        group; sticky, so the job can add files but never replace the worker's (process.json, ...)."""
        if checkpoint is not None:
            checkpoint.mkdir(parents=True, exist_ok=True)
        if user is None:
            return
        uid, gid = user
        os.chown(directory, os.geteuid(), gid)
        directory.chmod(0o1770)
        if checkpoint is not None:
            os.chown(checkpoint, uid, gid)

    def _argv(self, directory: Path, checkpoint: Path | None, tool: str | None, user: tuple[int, int] | None,
              command: list[str]) -> list[str]:
        """What the wrapper runs: bwrap around (setpriv around) the command, or setpriv around it."""
        drop: list[str] = []
        if user is not None:
            setpriv = shutil.which("setpriv", path=SYSTEM_PATH)
            if setpriv is None:
                raise BackendConfigError("the worker runs as root and needs `setpriv` (util-linux) to run local jobs "
                                         "as an unprivileged user: apt-get install util-linux")
            drop = local_sandbox.setpriv_argv(setpriv, *user)
        if tool is None:
            return [*drop, *command]
        hidden = [*self.config.hidden]
        uid, gids = (user[0], [user[1]]) if user is not None else (os.geteuid(), os.getgroups())
        for path in [directory, *([checkpoint] if checkpoint is not None else [])]:
            blocked = local_sandbox.unsearchable_ancestor(str(path.resolve()), uid, gids,
                                                          [str(self.home.resolve()), "/tmp", *hidden])
            if blocked is not None:
                hidden.append(blocked)
        paths = local_sandbox.SandboxPaths(
            fabric_home=str(self.home.resolve()), job_dir=str(directory.resolve()),
            cwd=self.config.workdir or str(directory.resolve()),
            writable=[str(checkpoint.resolve())] if checkpoint is not None else [],
            read_only=self.config.read_only, hidden_dirs=[p for p in hidden if not os.path.isfile(p)],
            hidden_files=local_sandbox.existing_files([*local_sandbox.SECRET_FILES,
                                                       *(p for p in hidden if os.path.isfile(p))]),
            devices=local_sandbox.host_devices(), programs=drop[:1],
            host_network=self.config.network == "host")
        return local_sandbox.bubblewrap_argv(tool, paths, [*drop, *command])

    # -- jobs -----------------------------------------------------------------------------------------
    def launch(self, request: JobRequest) -> JobStatus:
        command = request.spec.command + request.spec.args
        if not command:
            raise JobRejected("a local pool runs the workload's command directly: set `command:`")
        if ENDPOINT_LABEL in request.spec.labels and self.config.network != "host":
            raise JobRejected(
                f"pool {self.pool.name!r} runs jobs without network (local: {{network: isolated}}), so it cannot "
                "serve an endpoint: a replica listens on a host port, and with the host's network it could reach "
                "the fabric's loopback services as any local user can. Set local: {network: host} only where "
                "every submitter is trusted, or serve from a Kubernetes pool")
        tool = self._sandbox_tool()  # before anything is created: a pool that cannot confine runs nothing
        user = self._job_user()
        directory = self._job_dir(request.job_id)
        if not create_json_exclusive(directory / "job.json", {"job_id": request.job_id,
                                                               "workload_id": request.workload_id,
                                                               "created_at": time.time()}):
            return self.status(request.job_id)  # a retried launch: the job already exists
        checkpoint = self._checkpoint_dir(request)
        self._prepare_dirs(directory, checkpoint, user)
        devices = self._assign_gpus(request)
        env = job_environment(request, directory, devices)
        port = None
        if ENDPOINT_LABEL in request.spec.labels:
            # Replicas of an endpoint share this host: each listens on a free port of its own ($PORT),
            # which the job's status gives the gateway as its address.
            port = free_port()
            env["PORT"] = str(port)
        log_path = self._log_path(request.job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv(directory, checkpoint, tool, user, command)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "exit_code", *argv],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(directory) if tool else self.config.workdir or str(directory), start_new_session=True,
            )
        _children[request.job_id] = process
        record = {"pid": process.pid, "started_at": time.time(), "gpus": devices, "port": port,
                  "max_runtime_seconds": request.spec.max_runtime_seconds}
        write_json_atomic(self._dir / "processes" / f"{request.job_id}.json", record)
        write_json_atomic(directory / "process.json", record)
        return self.status(request.job_id)

    def status(self, job_id: str) -> JobStatus:
        directory = self._job_dir(job_id)
        if not (directory / "job.json").exists():
            return JobStatus(job_id=job_id, state=JobState.LOST, message="no such job on this host")
        process = self._process_record(job_id)
        started = datetime.fromtimestamp(process["started_at"], UTC) if "started_at" in process else None
        child = _children.get(job_id)
        if child is not None and child.poll() is not None:
            _children.pop(job_id, None)  # reap it so it does not linger as a zombie
        if _ours(directory / "cancelled"):
            return JobStatus(job_id=job_id, state=JobState.CANCELLED, started_at=started, message="cancelled")
        limit = process.get("max_runtime_seconds")
        code = _exit_code(directory / "exit_code")
        pid = process.get("pid")
        if limit and started is not None and code is None and pid is not None and _alive(pid) \
                and time.time() - process["started_at"] > limit:
            _mark(directory / "timed_out")
            self._stop(job_id, pid)
        if _ours(directory / "timed_out"):
            return JobStatus(job_id=job_id, state=JobState.FAILED, started_at=started, exit_code=code,
                             message=f"exceeded max_runtime_seconds ({limit} s): stopped",
                             logs_url=str(self._log_path(job_id)), details={"reason": "max_runtime_seconds"})
        if code is not None:
            finished = datetime.fromtimestamp((directory / "exit_code").lstat().st_mtime, UTC)
            state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
            return JobStatus(job_id=job_id, state=state, exit_code=code, started_at=started, finished_at=finished,
                             message=f"exited with code {code}",
                             logs_url=str(self._log_path(job_id)))
        if pid is None:
            return JobStatus(job_id=job_id, state=JobState.PENDING, message="starting")
        if _alive(pid):
            port = process.get("port")
            return JobStatus(job_id=job_id, state=JobState.RUNNING, started_at=started,
                             message=f"pid {pid}" + (f", port {port}" if port else ""),
                             logs_url=str(self._log_path(job_id)),
                             details={"address": f"127.0.0.1:{port}"} if port else {})
        return JobStatus(job_id=job_id, state=JobState.FAILED, started_at=started,
                         message="the process ended without an exit code (killed with its wrapper)")

    def cancel(self, job_id: str) -> None:
        directory = self._job_dir(job_id)
        if not directory.exists():
            return
        _mark(directory / "cancelled")
        pid = self._process_record(job_id).get("pid")
        if pid and _alive(pid):
            self._stop(job_id, pid)

    def _stop(self, job_id: str, pid: int) -> None:
        """SIGTERM to the job's own processes (inside the sandbox; unconfined, the wrapper's process
        group), up to STOP_GRACE_SECONDS to end, then SIGKILL to the wrapper's group: bwrap dies, and
        with it (--die-with-parent, its PID namespace) whatever was left in the sandbox."""
        inside = _sandboxed(pid)
        if inside:
            for target in inside:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(target, signal.SIGTERM)
        else:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            child = _children.get(job_id)
            if child is not None:
                child.poll()
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            child = _children.get(job_id)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)

    def logs(self, job_id: str, tail: int = 200) -> str:
        from inferofabric.backends.base import checked_job_id  # a plain id only: never a path out of logs/

        return tail_lines(self._log_path(checked_job_id(job_id)), tail)

    def list_jobs(self) -> list[str]:
        jobs = self._dir / "jobs"
        if not jobs.exists():
            return []
        return sorted(d.name for d in jobs.iterdir()
                      if d.is_dir() and not _ours(d / "exit_code") and not _ours(d / "cancelled")
                      and not _ours(d / "timed_out"))


# What a local job gets of the worker's own environment: a minimal PATH and locale, never the rest
# (the worker holds FABRIC_SECRET_KEY, the database URL, cloud credentials).
INHERITED = ("LANG", "LC_ALL", "TZ")
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"


def job_environment(request: JobRequest, directory: Path, devices: list[int]) -> dict[str, str]:
    """The workload's env, the fabric's FABRIC_* variables and a minimal PATH/HOME: least privilege."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(PATH=MINIMAL_PATH, HOME=str(directory))
    env.update({k: v for k, v in request.env.items()})
    env.update({"FABRIC_WORKLOAD_ID": request.workload_id, "FABRIC_JOB_ID": request.job_id,
                "CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))})
    return env


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _lookup_user(name: str, pool: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        if name.isdigit():
            return int(name), int(name)  # a bare uid with no passwd entry: its own group number
        raise BackendConfigError(f"pool {pool!r}: run_as user {name!r} does not exist on this host") from None
    return entry.pw_uid, entry.pw_gid


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return NOBODY, NOBODY
    return entry.pw_uid, entry.pw_gid


def _ours(path: Path) -> bool:
    """A state file the worker wrote: a regular file its user owns (not one the job put there)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _exit_code(path: Path) -> int | None:
    """The wrapper's exit code; None while there is none (or only a file the job forged)."""
    if not _ours(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        text = handle.read(32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 1


def _mark(path: Path) -> None:
    """Create a marker file safely in a directory the job may write to (never through its links)."""
    if not _ours(path):
        write_json_atomic(path, {"at": time.time()})


def _sandboxed(pid: int) -> list[int]:
    """The job's processes inside its sandbox: descendants of the wrapper in another PID namespace,
    without the namespace's init (bwrap's; a signal to it would tear everything down at once)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], list(children.get(pid, []))
    while queue:
        current = queue.pop()
        queue.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as handle:
                nspid = next((line.split()[1:] for line in handle if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspid) > 1 and nspid[-1] != "1":
            found.append(current)
    return found
