"""Small process helpers shared by the embedded services, the notifier and the tests.

Everything here is plain blocking code on purpose: under a gevent-monkey-patched Locust master
``time.sleep``, ``subprocess`` and sockets are cooperative, and in plain Python they simply block.
No threads are used, because gevent's patched world and real OS threads mix badly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# From <linux/prctl.h>. Not exposed by the standard library.
PR_SET_PDEATHSIG = 1

# Loaded once in the parent: calling dlopen between fork and exec is not async-signal-safe.
_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms; children then rely on stop() alone
    _libc = None


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return the new soft limit.

    1,000 WebSocket clients (plus their server-side sockets when client and server share a
    process, as in the tests) exceed the common default soft limit of 1,024 descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be used as the soft value: the kernel caps descriptors at
    # fs.nr_open, so aim for a large finite number instead.
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``.

    Another process can take it before our child binds it; callers retry on a clash.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the thread that forked it dies.

    This is what keeps children from being orphaned when our process is SIGKILLed and neither
    atexit nor ``stop()`` can run. It must run after any uid change (``subprocess`` calls
    ``preexec_fn`` after ``setreuid``), because the kernel clears the setting on a credential
    change.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _libc is None:
            return
        _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal will ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


_forked_from: list[int] = []


def _note_parent() -> None:
    _forked_from[:] = [os.getpid()]


def _follow_parent() -> None:
    if _libc is None or not _forked_from:
        return
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != _forked_from[0]:
        os.kill(os.getpid(), signal.SIGTERM)


def forked_children_die_with_parent() -> None:
    """Every child this process forks from now on gets SIGTERM when its parent dies.

    Locust's ``--processes`` forks its workers after loading the locustfile and before the ``init``
    event, so this must be called at import time. Without it, a SIGKILLed master's forked
    workers run on until Locust's heartbeat timeout (60 s), holding their ports and load. Children
    started through ``subprocess`` with :func:`die_with_parent` set their own signal after this.
    """
    if not _forked_from and hasattr(os, "register_at_fork"):
        _note_parent()
        os.register_at_fork(before=_note_parent, after_in_child=_follow_parent)


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[subprocess.Popen[bytes]]:
    """Wait up to ``timeout`` seconds for all ``procs`` to exit; return those still running."""
    deadline = time.monotonic() + timeout
    pending = [p for p in procs if p.poll() is None]
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [p for p in pending if p.poll() is None]
    return pending


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process; a zombie counts as gone since it has exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state follows the parenthesised command name, which may contain spaces.
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
