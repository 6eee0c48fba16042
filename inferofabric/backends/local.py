"""The `local` pool: really runs a workload's command as a process on this host.

The container image is not used (there is no container runtime here): the command runs directly,
with the workload's env, `CUDA_VISIBLE_DEVICES` set to the GPUs assigned to it (found through
NVML), and its output in $FABRIC_HOME/logs/<job_id>.log. A small shell wrapper writes the exit code
to a file when the command ends, so the outcome survives a worker restart; job state lives under
$FABRIC_HOME/local/<pool>/.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from inferofabric.backends import gpu_discovery
from inferofabric.backends._files import create_json_exclusive, read_json, tail_lines, write_json_atomic
from inferofabric.backends.base import Backend, JobRejected, JobRequest, JobState, JobStatus, PoolProbe
from inferofabric.models.common import Health
from inferofabric.models.endpoint import ENDPOINT_LABEL

# `$0` is the exit-code file; the command follows. The code is written atomically via rename.
WRAPPER = '"$@"; code=$?; echo $code > "$0.tmp" && mv "$0.tmp" "$0"; exit $code'
_children: dict[str, subprocess.Popen[bytes]] = {}


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    discover_gpus: bool = True
    workdir: str | None = None


class LocalBackend(Backend):
    kind = "local"
    config_model = LocalConfig

    @property
    def _dir(self) -> Path:
        return self.home / "local" / self.pool.name

    def _job_dir(self, job_id: str) -> Path:
        return self._dir / "jobs" / job_id

    def _log_path(self, job_id: str) -> Path:
        return self.home / "logs" / f"{job_id}.log"

    def _host_gpus(self) -> list[gpu_discovery.HostGpu]:
        return gpu_discovery.discover() if self.config.discover_gpus else []

    def probe(self) -> PoolProbe:
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
        return not directory.exists() or (directory / "exit_code").exists()

    # -- jobs -----------------------------------------------------------------------------------------
    def launch(self, request: JobRequest) -> JobStatus:
        command = request.spec.command + request.spec.args
        if not command:
            raise JobRejected("a local pool runs the workload's command directly: set `command:`")
        directory = self._job_dir(request.job_id)
        if not create_json_exclusive(directory / "job.json", {"job_id": request.job_id,
                                                               "workload_id": request.workload_id,
                                                               "created_at": time.time()}):
            return self.status(request.job_id)  # a retried launch: the job already exists
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
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, str(directory / "exit_code"), *command],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.config.workdir or str(directory), start_new_session=True,
            )
        _children[request.job_id] = process
        write_json_atomic(directory / "process.json", {"pid": process.pid, "started_at": time.time(),
                                                       "gpus": devices, "port": port})
        return self.status(request.job_id)

    def status(self, job_id: str) -> JobStatus:
        directory = self._job_dir(job_id)
        if not (directory / "job.json").exists():
            return JobStatus(job_id=job_id, state=JobState.LOST, message="no such job on this host")
        process = read_json(directory / "process.json") or {}
        started = datetime.fromtimestamp(process["started_at"], UTC) if "started_at" in process else None
        child = _children.get(job_id)
        if child is not None and child.poll() is not None:
            _children.pop(job_id, None)  # reap it so it does not linger as a zombie
        if (directory / "cancelled").exists():
            return JobStatus(job_id=job_id, state=JobState.CANCELLED, started_at=started, message="cancelled")
        exit_file = directory / "exit_code"
        if exit_file.exists():
            code = int(exit_file.read_text().strip() or 1)
            finished = datetime.fromtimestamp(exit_file.stat().st_mtime, UTC)
            state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
            return JobStatus(job_id=job_id, state=state, exit_code=code, started_at=started, finished_at=finished,
                             message=f"exited with code {code}",
                             logs_url=str(self._log_path(job_id)))
        pid = process.get("pid")
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
        (directory / "cancelled").touch()
        pid = (read_json(directory / "process.json") or {}).get("pid")
        if pid and _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
                child = _children.get(job_id)
                if child is not None:
                    child.poll()
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)

    def logs(self, job_id: str, tail: int = 200) -> str:
        return tail_lines(self._log_path(job_id), tail)

    def list_jobs(self) -> list[str]:
        jobs = self._dir / "jobs"
        if not jobs.exists():
            return []
        return sorted(d.name for d in jobs.iterdir()
                      if d.is_dir() and not (d / "exit_code").exists() and not (d / "cancelled").exists())


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
