"""The command line that runs a `local` job inside bubblewrap (`bwrap`): settings + paths -> argv.

Why a sandbox: a `local` job is code from whoever may submit work, run as a real process on the
worker's host. Unconfined, it ran as the worker's user (root) and read `$FABRIC_HOME/auth.key` (and
so minted an admin token), `/proc/<worker>/environ` and `/etc/shadow`, and wrote the fabric's
database. Why bubblewrap: it is the well-kept, unprivileged sandbox that Flatpak is built on
(namespaces set up by a small audited C program); a sandbox made here out of `unshare` calls and
mount tricks would be the kind of home-made confinement that fails open.

What the job gets (the argv below; `tests/backends/test_local_sandbox.py` checks it from inside):

- its own PID namespace (`--unshare-pid`) with its own `/proc`: the worker and every other process
  of the host are invisible and cannot be signalled; `--die-with-parent` ends the sandbox with its
  wrapper, `--new-session` keeps it off any terminal;
- the host's files read-only (`read_only`, default `/`), minus what must stay secret: `$FABRIC_HOME`
  (an empty read-only tmpfs over it), the password hashes (`/etc/shadow`, `/etc/gshadow`), and any
  path the pool lists in `hidden`; its own `/tmp` and `/dev` (plus the host's `/dev/nvidia*` so GPUs
  work);
- write access to its own job directory (its `HOME` and working directory) and its checkpoint
  directory, bound at the same paths as on the host, so paths in its environment stay true;
- no network at all (`--unshare-net`: only its own loopback), unless the pool says
  `network: host` (an endpoint's replica listens on a host port the gateway reaches: only such a
  pool serves endpoints). On the embedded stack Temporal and the store listen on the host's loopback: a job with
  the host's network could reach them as any local user can (docs/security.md).

It runs as an unprivileged user (`run_as`, chosen by the back end: never root), so file permissions
apply inside too. When the worker is root, bwrap starts as root (it must reach the job directory,
which the job's user may not: `$FABRIC_HOME` is often under a 0700 home or temporary directory) and
`setpriv` (util-linux), the first program inside, drops to that user for good: no groups, no
capabilities (bounding set emptied), no_new_privs, and every bwrap mount is nosuid. When the worker
is not root, bwrap runs unprivileged as the worker's user (a user namespace) and no drop is needed.

This module only builds the argv: it reads nothing from disk except in `host_devices` and
`existing_files`, which the back end calls once per launch.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Files that hold secrets on any host and are hidden even from a read-only view of /etc.
SECRET_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
INSTALL_HINT = ("install it with `apt-get install bubblewrap` (Debian/Ubuntu) or `dnf install bubblewrap`, "
                "or set the pool's `local: {sandbox: none}` to run jobs unconfined (not recommended)")


@dataclass(frozen=True)
class SandboxPaths:
    """Where things are on the host for one job (absolute paths)."""

    fabric_home: str
    job_dir: str
    cwd: str
    writable: Sequence[str] = ()  # besides the job dir: the job's checkpoint directory
    read_only: Sequence[str] = ("/",)
    hidden_dirs: Sequence[str] = ()  # besides $FABRIC_HOME: directories that must not be visible
    hidden_files: Sequence[str] = ()  # existing files to hide (SECRET_FILES that exist here, ...)
    devices: Sequence[str] = field(default_factory=tuple)  # /dev/nvidia* present on the host
    programs: Sequence[str] = ()  # host programs the sandbox itself needs (setpriv), always visible
    host_network: bool = False  # the host's network (endpoint replicas; `network: host` pools)


def setpriv_argv(setpriv: str, uid: int, gid: int) -> list[str]:
    """The prefix that turns root into `uid:gid` for good before the job's command runs."""
    if uid == 0 or gid == 0:
        raise ValueError("a local job never runs as root")
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def bubblewrap_argv(bwrap: str, paths: SandboxPaths, command: Sequence[str]) -> list[str]:
    """The bwrap command line that runs `command` confined as described in this module's docstring.

    Order matters (bwrap applies its options in order): the read-only view first, then private
    /proc, /dev and /tmp, then tmpfs over what is hidden, then the writable binds punched back
    through them, and last the hidden directories made read-only (their tmpfs, not the binds).
    """
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try"]
    if not paths.host_network:
        argv.append("--unshare-net")
    for path in _outermost(paths.read_only):
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for device in paths.devices:
        argv += ["--dev-bind-try", device, device]
    argv += ["--perms", "1777", "--tmpfs", "/tmp"]
    # Read-only paths under /tmp (a checkout or virtualenv there) are shown again over the private
    # /tmp: named explicitly, never /tmp as a whole.
    tmp_views = _outermost(p for p in paths.read_only if _under_any(p, ["/tmp"]) and _norm(p) != "/tmp")
    for path in tmp_views:
        argv += ["--ro-bind-try", path, path]
    hidden = [paths.fabric_home, *paths.hidden_dirs]
    # A hidden directory needs a tmpfs only where the read-only view shows it (not under /tmp, whose
    # tmpfs already hides it unless a view shows it again, nor outside every read-only path).
    masked = [d for d in _outermost(hidden)
              if (_under_any(d, paths.read_only) and not _under_any(d, ["/tmp"])) or _under_any(d, tmp_views)]
    for directory in masked:
        argv += ["--perms", "0755", "--tmpfs", directory]
    # The way down to each writable bind through those tmpfs (and /tmp's): directories the job can
    # pass (bwrap would make them 0700, root's, when it runs as root).
    for directory in _parents_to_create([paths.job_dir, *paths.writable], [*masked, "/tmp"]):
        argv += ["--perms", "0755", "--dir", directory]
    for path in paths.hidden_files:
        if _under_any(path, paths.read_only) and not _under_any(path, [*hidden, "/tmp"]):
            argv += ["--ro-bind", "/dev/null", path]
    for path in [paths.job_dir, *paths.writable]:
        argv += ["--bind", path, path]
    for program in paths.programs:
        if not _under_any(program, paths.read_only):
            argv += ["--ro-bind", program, program]  # setpriv, when `read_only` is a short allow-list
    for directory in masked:
        argv += ["--remount-ro", directory]
    argv += ["--chdir", paths.cwd, "--", *command]
    return argv


def unsearchable_ancestor(path: str, uid: int, gids: Sequence[int], stop: Sequence[str]) -> str | None:
    """The outermost directory above `path` that `uid` may not pass (no x bit for it), stopping at
    the first one under `stop` (what the sandbox replaces by a tmpfs anyway). Such a directory (a
    0700 home or temporary directory holding $FABRIC_HOME) would block the job's own paths: the back
    end hides it behind a tmpfs, which costs nothing (the job could not look inside it anyway)."""
    current = "/"
    for part in _norm(path).strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if _under_any(current, stop):
            return None
        try:
            info = os.stat(current)
        except OSError:
            return None
        if info.st_uid == uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in gids:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return current
    return None


def host_devices() -> list[str]:
    """The NVIDIA device nodes of this host (`/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`, ...)."""
    return sorted(glob.glob("/dev/nvidia*"))


def existing_files(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def _norm(path: str) -> str:
    return os.path.normpath(path) if path.startswith("/") else os.path.normpath("/" + path)


def _under_any(path: str, roots: Iterable[str]) -> bool:
    path = _norm(path)
    return any(os.path.commonpath([path, _norm(root)]) == _norm(root) for root in roots)


def _parents_to_create(targets: Iterable[str], tmpfs_roots: Sequence[str]) -> list[str]:
    """Every directory strictly between a tmpfs root and a target below it, parents first."""
    wanted: set[str] = set()
    for target in targets:
        roots = [r for r in tmpfs_roots if _under_any(target, [r]) and _norm(target) != _norm(r)]
        if not roots:
            continue
        root = max((_norm(r) for r in roots), key=len)
        current = os.path.dirname(_norm(target))
        while current != root and len(current) > len(root):
            wanted.add(current)
            current = os.path.dirname(current)
    return sorted(wanted, key=lambda p: (p.count("/"), p))


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths with those inside another one dropped, parents first."""
    normalized = sorted({_norm(p) for p in paths}, key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in normalized:
        if not _under_any(path, kept):
            kept.append(path)
    return kept
