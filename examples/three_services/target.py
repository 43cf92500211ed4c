"""The cachestorm target of the three-service sample: reads GET the backend, writes PUT auth.

    locust -f locustfile.py --headless --target examples/three_services/target.py:ThreeServices

On the master, :meth:`ThreeServices.setup` starts embedded Redis and PostgreSQL (or uses
``--redis-url``/``--pg-dsn``) and then auth, the backend and the frontend as processes, unless all
of ``--auth-url``, ``--backend-url`` and ``--frontend-url`` are given; the URLs go into the parsed
options, which Locust sends to the workers. The bug modes are options too, passed to the services
when they start: ``--backend-l1-ignores-invalidations`` and ``--frontend-misses-reconnect``.

What the history gets: a read's ``source`` is ``hit:l1``, ``hit:l2`` or ``miss`` (the backend's
``X-Served-By``); the sweep reports the L1 and L2 of every key beside auth's version; the tier
events are auth's commits (``commit:auth``), the backend's L1 drops (``drop:l1``) and the
frontend's pushes (``push:frontend``), for the cascade check. docs/three-services.md has the rest.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from geventhttpclient import HTTPClient

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    # Loaded by file (--target FILE.py:Class), only this file's own directory is on sys.path.
    sys.path.insert(0, str(ROOT))

from cachestorm import embedded  # noqa: E402
from cachestorm.services import ServiceError, redact  # noqa: E402
from cachestorm.target import AfterCommit, Cached, NoEffect, Read, TargetContext, TierEvent  # noqa: E402
from examples.three_services import common  # noqa: E402
from examples.three_services.processes import Services, StartError  # noqa: E402

log = logging.getLogger("cachestorm")
URL_FLAGS = ("--auth-url", "--backend-url", "--frontend-url")
SOURCES = {"l1": "hit:l1", "l2": "hit:l2", "db": "miss"}


def _bugs(parsed: Any) -> tuple[bool, bool]:
    return bool(parsed.backend_l1_ignores_invalidations), bool(parsed.frontend_misses_reconnect)


class ThreeServices:
    """auth + backend (L1 over L2) + frontend, driven through their HTTP APIs."""

    #: Operations fires ``TARGET read hit:l1`` etc.: one Locust row per serving tier.
    reports_requests = False
    #: Its tiers and their cascade are what this sample is for: a run that could not judge them
    #: is not a pass.
    needed_checks = ("tier_staleness", "cascade")
    #: The bug modes the session's services were started with (None: not started here).
    started_bugs: tuple[bool, bool] | None = None

    def __init__(self, context: TargetContext) -> None:
        o = context.options
        users = context.role == "users"
        concurrency = 200 if users else 2
        self.auth = HTTPClient.from_url(o.auth_url, concurrency=concurrency, network_timeout=10)
        self.backend = HTTPClient.from_url(o.backend_url, concurrency=concurrency, network_timeout=10)
        self.frontend_url = str(o.frontend_url)
        self.bugs = _bugs(o)
        self.reset_ns = 0

    # -- the target ----------------------------------------------------------------------

    def key(self, index: int) -> str:
        return common.user_key(index)

    def read(self, key: str) -> Read:
        response = self.backend.get(f"/users/{common.user_id(key)}")
        body = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"backend answered {response.status_code}: {body[:200]!r}")
        tier = response.get(common.SERVED_BY)
        return Read(int(json.loads(body)["version"]), SOURCES.get(str(tier)))

    def write(self, key: str) -> int:
        payload = json.dumps({"name": f"user {secrets.token_hex(4)}"})
        response = self.auth.put(
            f"/users/{common.user_id(key)}", body=payload, headers={"Content-Type": "application/json"}
        )
        raw = response.read()
        status = response.status_code
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        version = answer.get("version") if isinstance(answer, dict) else None
        if status == 200:
            return int(version) if isinstance(version, int) else -1
        if 400 <= status < 500:
            raise NoEffect(f"auth answered {status}: {answer}")
        if isinstance(version, int):
            raise AfterCommit(version, str(answer.get("error", status)))
        raise RuntimeError(f"auth answered {status}: {raw[:200]!r}")

    def reset(self, keys: Sequence[str]) -> None:
        self.reset_ns = time.time_ns()
        self._post(self.auth, "/admin/reset", {"keys": len(keys)})
        self._post(self.backend, "/admin/reset", {})

    def sweep(self, keys: Sequence[str]) -> Iterator[Cached]:
        rows = self._get(self.backend, f"/debug/sweep?keys={len(keys)}")
        for row in rows:
            key = common.user_key(int(row["id"]))
            for tier in ("l1", "l2"):
                held = row[tier]
                yield Cached(key, held["version"], row["db"], held["held"], tier)

    def tier_events(self) -> list[TierEvent]:
        events: list[TierEvent] = []
        sources = ((self.auth, "/debug/events"), (self.backend, "/debug/events"))
        found = [self._get(client, f"{path}?since={self.reset_ns}") for client, path in sources]
        frontend = HTTPClient.from_url(self.frontend_url.replace("ws://", "http://", 1), network_timeout=10)
        try:
            found.append(self._get(frontend, f"/debug/events?since={self.reset_ns}"))
        finally:
            frontend.close()
        for batch in found:
            events.extend(
                TierEvent(e["key"], int(e["version"]), e["tier"], e["what"], int(e["t_ns"])) for e in batch
            )
        return events

    def notifications_url(self) -> str:
        return self.frontend_url

    def describe(self) -> str:
        l1, frontend = self.bugs
        bugs = [
            name
            for name, on in (
                ("backend L1 ignores invalidations", l1),
                ("frontend misses reconnect", frontend),
            )
            if on
        ]
        return "three services (auth, backend L1 over L2, frontend)" + (
            f", bugs: {', '.join(bugs)}" if bugs else ", no bug mode"
        )

    def close(self) -> None:
        for client in (self.auth, self.backend):
            client.close()

    @staticmethod
    def _get(client: HTTPClient, path: str) -> Any:
        response = client.get(path)
        body = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {body[:200]!r}")
        return json.loads(body)

    @staticmethod
    def _post(client: HTTPClient, path: str, payload: Any) -> Any:
        response = client.post(path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        body = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {body[:200]!r}")
        return json.loads(body)

    # -- the session ---------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--auth-url", env_var="THREE_SERVICES_AUTH_URL", default="", help="auth's URL. Empty: start it."
        )
        parser.add_argument(
            "--backend-url",
            env_var="THREE_SERVICES_BACKEND_URL",
            default="",
            help="backend's URL. Empty: start it.",
        )
        parser.add_argument(
            "--frontend-url",
            env_var="THREE_SERVICES_FRONTEND_URL",
            default="",
            help="frontend's WebSocket URL. Empty: start it.",
        )
        parser.add_argument(
            "--backend-l1-ignores-invalidations",
            action="store_true",
            default=False,
            help="Bug mode: the backend acknowledges invalidations but keeps its L1 entries until their TTL.",
        )
        parser.add_argument(
            "--frontend-misses-reconnect",
            action="store_true",
            default=False,
            help="Bug mode: the frontend does not replay the changes committed while its LISTEN was down.",
        )
        parser.add_argument(
            "--backend-l1-ttl-ms", type=float, default=5000.0, help="The backend's L1 TTL (ms)."
        )
        parser.add_argument(
            "--frontend-reconnect-every-s",
            type=float,
            default=2.0,
            help="The frontend drops and re-opens its LISTEN connection this often (0: never).",
        )
        parser.add_argument(
            "--frontend-reconnect-pause-ms",
            type=float,
            default=200.0,
            help="How long the frontend stays away from PostgreSQL at each reconnect (ms).",
        )

    @classmethod
    def setup(cls, environment: Any) -> None:
        parsed = environment.parsed_options
        given = [flag for flag in URL_FLAGS if getattr(parsed, flag[2:].replace("-", "_"))]
        if given and len(given) < len(URL_FLAGS):
            embedded.fatal(f"{', '.join(given)} given: give all of {', '.join(URL_FLAGS)} or none.")
        if given:
            return  # services run elsewhere, with whatever bug modes they were started with
        try:
            if not (parsed.redis_url and parsed.pg_dsn):
                log.info("three services: starting embedded Redis and PostgreSQL")
                urls = embedded.start_embedded().urls
                assert urls is not None
                parsed.redis_url, parsed.pg_dsn = urls.redis_url, urls.pg_dsn
            l1_bug, frontend_bug = _bugs(parsed)
            backend = ["--l1-ttl-ms", str(parsed.backend_l1_ttl_ms)]
            frontend = ["--reconnect-every-s", str(parsed.frontend_reconnect_every_s)]
            frontend += ["--reconnect-pause-ms", str(parsed.frontend_reconnect_pause_ms)]
            services = Services(
                parsed.pg_dsn,
                parsed.redis_url,
                backend_flags=backend + (["--ignore-invalidations"] if l1_bug else []),
                frontend_flags=frontend + (["--no-replay"] if frontend_bug else []),
            )
            embedded.adopt(services)
            started = services.start()
        except (ServiceError, StartError) as e:
            detail = getattr(e, "detail", "")
            embedded.fatal(f"{e}\n{detail}" if detail else str(e))
        parsed.auth_url, parsed.backend_url, parsed.frontend_url = (
            started.auth,
            started.backend,
            started.frontend,
        )
        cls.started_bugs = (l1_bug, frontend_bug)
        log.info(
            "three services: auth %s, backend %s, frontend %s (redis %s, postgresql %s)",
            started.auth,
            started.backend,
            started.frontend,
            redact(parsed.redis_url),
            redact(parsed.pg_dsn),
        )

    @classmethod
    def run_problem(cls, environment: Any) -> str | None:
        """The bug modes are the services' start-up flags: a web UI run cannot change them."""
        if cls.started_bugs is not None and _bugs(environment.parsed_options) != cls.started_bugs:
            return "the three services' bug modes are fixed when they start: restart locust to change them"
        return None

    @classmethod
    def teardown(cls) -> None:
        embedded.stop()
