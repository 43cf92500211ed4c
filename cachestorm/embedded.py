"""The session's services, and the way out that takes them along.

:func:`setup_services` gives a session its Redis, PostgreSQL and notifier: the ones
``--redis-url``, ``--pg-dsn`` and ``--ws-url`` name, checked, or embedded ones started on free
loopback ports when none is named. The reference cache uses it, and so may any target that wants
a Redis and a PostgreSQL of its own for a demo or a test (docs/targets.md). Services started for
the session are stopped when Locust quits (:func:`stop`) or at :func:`fatal`.

Example, a target's setup::

    @classmethod
    def setup(cls, environment):
        embedded.setup_services(environment)   # then parsed_options.redis_url etc. are set
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Protocol

import psutil
import psycopg

from cachestorm import schema
from cachestorm.services import (
    WILDCARD,
    EmbeddedServices,
    ServiceError,
    check_pg,
    check_redis,
    check_ws,
    redact,
)

log = logging.getLogger("cachestorm")
SERVICE_FLAGS = ("--redis-url", "--pg-dsn", "--ws-url")


class Stoppable(Protocol):
    def stop(self) -> None: ...


_services: list[Any] = []


def adopt(services: Stoppable) -> None:
    """Stop ``services`` when the session ends, or at :func:`fatal`."""
    _services.append(services)


def stop() -> None:
    """Stop every adopted service, newest first."""
    while _services:
        services = _services.pop()
        with contextlib.suppress(Exception):
            services.stop()


def fatal(message: str, code: int = 2) -> None:
    """Print one line and leave, taking every child process (services, forked workers) along."""
    sys.stderr.write(f"cachestorm: {message}\n")
    sys.stderr.flush()
    stop()
    with contextlib.suppress(Exception):
        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        psutil.wait_procs(children, timeout=5)
    os._exit(code)


def session_services() -> EmbeddedServices | None:
    """The embedded services started for this session, if any (the nemesis faults only these)."""
    return next((s for s in reversed(_services) if isinstance(s, EmbeddedServices)), None)


def start_embedded(**kwargs: Any) -> EmbeddedServices:
    """Start embedded Redis, PostgreSQL and notifier for the session (``EmbeddedServices.start``'s
    arguments), stopped when it ends; leaves with one line when they cannot start."""
    services = EmbeddedServices()
    adopt(services)
    try:
        services.start(**kwargs)
    except ServiceError as e:
        fatal(str(e))
    return services


#: The session's service URLs, ``(redis_url, pg_dsn, ws_url)``, on the master.
_session_urls: tuple[str, str, str] = ("", "", "")


def setup_services(environment: Any) -> tuple[str, str, str]:
    """Check the named services or start embedded ones, and put their URLs in the parsed options,
    which Locust sends to every worker. Leaves with one line (:func:`fatal`) when one is unusable."""
    global _session_urls
    parsed = environment.parsed_options
    named = (parsed.redis_url or "", parsed.pg_dsn or "", parsed.ws_url or "")
    given = [flag for flag, url in zip(SERVICE_FLAGS, named, strict=True) if url]
    if 0 < len(given) < len(SERVICE_FLAGS):
        missing = [flag for flag in SERVICE_FLAGS if flag not in given]
        fatal(
            f"{', '.join(given)} given but {', '.join(missing)} not: "
            "give all three service URLs, or none to start embedded services."
        )
    try:
        if not given:
            log.info("cachestorm: no service URLs given, starting embedded Redis, PostgreSQL and notifier")
            maxmemory = parsed.redis_maxmemory or None
            bind = getattr(parsed, "services_bind", "") or "127.0.0.1"
            advertise = getattr(parsed, "services_advertise", "") or ""
            if bind == WILDCARD and not advertise:
                fatal(
                    f"--services-bind {WILDCARD} needs --services-advertise HOST: the address workers "
                    "reach the embedded services by."
                )
            services = start_embedded(
                redis_maxmemory=maxmemory,
                redis_eviction_policy=parsed.redis_eviction_policy if maxmemory else None,
                bind=bind,
                advertise=advertise,
            )
            assert services.urls is not None
            urls = services.urls
            parsed.redis_url, parsed.pg_dsn, parsed.ws_url = urls.redis_url, urls.pg_dsn, urls.ws_url
            log.info(
                "cachestorm: embedded services: redis %s, postgresql %s, notifier %s",
                redact(urls.redis_url),
                redact(urls.pg_dsn),
                urls.ws_url,
            )
        else:
            check_redis(named[0])
            check_pg(named[1])
            check_ws(named[2])
            with psycopg.connect(named[1], autocommit=True) as conn:
                schema.install(conn)
    except ServiceError as e:
        fatal(str(e))
    _session_urls = (parsed.redis_url, parsed.pg_dsn, parsed.ws_url)
    return _session_urls


def session_urls() -> tuple[str, str, str] | None:
    """The session's service URLs on the master, or None when no target set them up."""
    return _session_urls if all(_session_urls) else None


def adopt_posted_urls(environment: Any) -> str | None:
    """Take the URLs of a run started from the web UI, whose form posts every field.

    A blank field keeps the session's service; a new URL is checked first. Returns what is wrong,
    in one line, when a new URL does not work: the run must not start against it.
    """
    global _session_urls
    parsed = environment.parsed_options
    posted = (parsed.redis_url, parsed.pg_dsn, parsed.ws_url)
    wanted = tuple(new or old for new, old in zip(posted, _session_urls, strict=True))
    if wanted != _session_urls:
        try:
            for check, new, old in zip((check_redis, check_pg, check_ws), wanted, _session_urls, strict=True):
                if new != old:
                    check(new)
            with psycopg.connect(wanted[1], autocommit=True) as conn:
                schema.install(conn)
        except ServiceError as e:
            parsed.redis_url, parsed.pg_dsn, parsed.ws_url = _session_urls
            return str(e)
        _session_urls = (wanted[0], wanted[1], wanted[2])
    parsed.redis_url, parsed.pg_dsn, parsed.ws_url = _session_urls
    return None
