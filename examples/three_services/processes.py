"""Starts the three services as child processes and stops them again.

Each child runs in its own session with its log in a file, dies with the thread that started it
(PR_SET_PDEATHSIG, so a killed Locust leaves no services behind) and announces its URL with one
``READY URL`` line; :meth:`Services.start` returns the URLs once all three have.

Example::

    services = Services(pg_dsn, redis_url, backend_flags=["--ignore-invalidations"])
    urls = services.start()        # ServiceURLs(auth=..., backend=..., frontend=...)
    services.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cachestorm.procutil import die_with_parent, tail, wait_all

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class StartError(Exception):
    """A service did not come up; the message is one line, the log's tail is in ``detail``."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class ServiceURLs:
    auth: str
    backend: str
    frontend: str


class Services:
    def __init__(
        self,
        pg_dsn: str,
        redis_url: str,
        backend_flags: list[str] | None = None,
        frontend_flags: list[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.pg_dsn = pg_dsn
        self.redis_url = redis_url
        self.backend_flags = backend_flags or []
        self.frontend_flags = frontend_flags or []
        self.startup_timeout = startup_timeout
        self.tmpdir: Path | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self) -> ServiceURLs:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="three-services-"))
        try:
            common = ["--host", HOST, "--port", "0", "--pg-dsn", self.pg_dsn]
            stores = [*common, "--redis-url", self.redis_url]
            # auth first: it creates the users table the others read.
            auth = self._ready(self._spawn("auth", ["-m", "examples.three_services.serve", "auth", *stores]))
            started = [
                self._spawn(
                    "backend",
                    ["-m", "examples.three_services.serve", "backend", *stores, *self.backend_flags],
                ),
                self._spawn(
                    "frontend", ["-m", "examples.three_services.frontend", *common, *self.frontend_flags]
                ),
            ]
            backend, frontend = (self._ready(child) for child in started)
        except BaseException:
            self.stop()
            raise
        return ServiceURLs(auth=auth, backend=backend, frontend=frontend)

    def _spawn(self, name: str, argv: list[str]) -> tuple[str, subprocess.Popen[bytes], Path]:
        assert self.tmpdir is not None
        log = self.tmpdir / f"{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509
            )
        child = (name, proc, log)
        self.children.append(child)
        return child

    def _ready(self, child: tuple[str, subprocess.Popen[bytes], Path]) -> str:
        name, proc, log = child
        deadline = time.monotonic() + self.startup_timeout
        while True:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    return line.split(" ", 1)[1].strip()
            code = proc.poll()
            if code is not None:
                raise StartError(
                    f"three services: {name} exited with code {code} before it was ready", tail(log)
                )
            if time.monotonic() > deadline:
                raise StartError(
                    f"three services: {name} was not ready after {self.startup_timeout:g} s", tail(log)
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after 5 s) and remove the logs. Idempotent."""
        children, self.children = self.children, []
        for _name, proc, _log in children:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in wait_all([p for _n, p, _l in children], 5.0):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for _name, proc, _log in children:
            proc.wait()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
