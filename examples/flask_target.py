"""The HTTP target pointed at examples/flask_app.py, which it starts itself when given no URL.

    locust -f locustfile.py --headless --target examples/flask_target.py:FlaskCachingApp \\
        --flask-mode cache-aside --flask-fill-delay-ms 30 --keys 8 ...

Without ``--http-base-url`` the master starts embedded Redis and PostgreSQL
(:class:`cachestorm.services.EmbeddedServices`) and the app as a server process of its own, and
puts the app's URL into the parsed options, which Locust sends to the workers. Everything else is
the plain :class:`cachestorm.http_target.HttpTarget` with the app's paths as defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cachestorm import embedded
from cachestorm.http_target import HttpTarget
from cachestorm.procutil import die_with_parent, tail
from cachestorm.target import TargetContext

APP = Path(__file__).resolve().parent / "flask_app.py"
MODES = ("cache-aside", "locked-fill")
START_TIMEOUT_S = 30.0


class AppProcess:
    """The Flask app's server process, stopped with the session (:func:`cachestorm.embedded.adopt`)."""

    def __init__(self, pg_dsn: str, redis_url: str, mode: str, fill_delay_ms: float, log: Path) -> None:
        env = {
            **os.environ,
            "FLASK_APP_PG_DSN": pg_dsn,
            "FLASK_APP_REDIS_URL": redis_url,
            "CACHE_MODE": mode,
            "FILL_DELAY_MS": str(fill_delay_ms),
            "PORT": "0",
        }
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509  # the master has no threads yet
            )

    def wait_ready(self) -> int:
        """The app's port once it printed ``READY <port>``; :class:`RuntimeError` if it did not."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    return int(line.split()[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        last = " | ".join(tail(self.log, 3).splitlines())
        raise RuntimeError(f"examples/flask_app.py did not start (its log ends: {last})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class FlaskCachingApp(HttpTarget):
    """examples/flask_app.py over HTTP: ``--flask-mode`` cache-aside (the bug) or locked-fill."""

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--flask-mode",
            env_var="CACHESTORM_FLASK_MODE",
            choices=MODES,
            default="locked-fill",
            help="The app's fill: cache-aside (the stale-set race) or locked-fill (safe).",
        )
        parser.add_argument(
            "--flask-fill-delay-ms",
            env_var="CACHESTORM_FLASK_FILL_DELAY_MS",
            type=float,
            default=0.0,
            help="The app's pause between reading the row and caching it (FILL_DELAY_MS).",
        )
        parser.set_defaults(
            http_key_path="/items/{index}",
            http_reset_path="/_cachestorm/reset",
            http_sweep_path="/_cachestorm/sweep",
            http_peek_path="/_cachestorm/peek/{index}",
        )

    @classmethod
    def setup(cls, environment: Any) -> None:
        parsed = environment.parsed_options
        if not parsed.http_base_url:
            services = embedded.start_embedded()
            urls = services.urls
            assert urls is not None
            assert services.tmpdir is not None
            app = AppProcess(
                urls.pg_dsn,
                urls.redis_url,
                parsed.flask_mode,
                parsed.flask_fill_delay_ms,
                services.tmpdir / "flask_app.log",
            )
            embedded.adopt(app)
            try:
                port = app.wait_ready()
            except RuntimeError as e:
                embedded.fatal(str(e))
            parsed.http_base_url = f"http://127.0.0.1:{port}"
        super().setup(environment)

    def __init__(self, context: TargetContext) -> None:
        super().__init__(context)
        self.mode = f"{context.options.flask_mode}, fill delay {context.options.flask_fill_delay_ms:g} ms"

    def describe(self) -> str:
        return f"examples/flask_app.py (Flask-Caching on Redis, {self.mode}): {super().describe()}"
