"""The HTTP target: the system under test is a web service, read and written over HTTP.

``--target cachestorm.http_target:HttpTarget --http-base-url http://127.0.0.1:8000`` drives a
service whose entities live at ``--http-key-path`` (``/users/{index}``): a GET is a read, a PUT
(or PATCH, POST: ``--http-write-method``) a write. Each response gives

- the version: a JSON field (``--http-version-field``, a dotted path such as ``data.version``) or
  the ETag header (``--http-version-from etag``; ``"7"`` and ``W/"7"`` are version 7);
- on a read, where it came from: a response header (``--http-source-header``, ``X-Cache: HIT``)
  or a JSON field (``--http-source-field``), lower-cased (``hit``, ``miss``, ``hit:l1``); None
  when the response says nothing.

A write's outcome follows its status: 2xx is ok (its version must be in the response), a status of
``--http-no-effect-statuses`` (by default the 4xx that say the request was refused before anything
changed: 400, 401, 403, 404, 405, 409, 410, 412, 413, 415, 422, 428, 429) certainly had no effect
(``fail``), and anything else (a 5xx, another 4xx such as 408, a timeout, a lost connection) leaves
it unknown (``info``).

At each run start the master resets the keys: a POST to ``--http-reset-path`` of
``{"keys": [...], "count": N}`` (a 2xx means every key is at version 0 with empty caches, unless
the body holds ``{"versions": {key: version}}``), or, without one, a GET of every key whose
versions are where the run counts from. At stop it sweeps them for the ``divergence`` check: a
POST to ``--http-sweep-path`` of ``{"keys": [...], "indexes": [...]}`` answered by
``{"entries": [ENTRY, ...]}``, or else a GET of ``--http-peek-path`` per key answered by one ENTRY
or a list of them (one per cache tier), where ENTRY is ``{"key": KEY or "index": N (sweep only),
"cached": VERSION or null, "db": VERSION or null, "held": "entry"|"tombstone"|"absent"
(optional), "tier": NAME (optional)}``. The peek path must not fill the cache; it also serves the
write probes. Without either path the sweep yields nothing, and says so in the log.

Requests go through geventhttpclient (the client Locust's FastHttpUser uses) and appear in
Locust's statistics as ``GET /users/{index}``, ``PUT /users/{index}``; see docs/targets.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from geventhttpclient import HTTPClient

from cachestorm import embedded
from cachestorm.services import redact
from cachestorm.target import Cached, NoEffect, Read, TargetContext

log = logging.getLogger("cachestorm")

DEFAULT_NO_EFFECT = "400,401,403,404,405,409,410,412,413,415,422,428,429"
WRITE_METHODS = ("PUT", "PATCH", "POST")
VERSION_SOURCES = ("json", "etag")
HELD = ("entry", "tombstone", "absent")
#: Connections the coordinator's instance keeps: it only resets and sweeps.
COORDINATOR_CONCURRENCY = 4


def add_arguments(parser: Any) -> None:
    """The HTTP target's options, each also from ``CACHESTORM_HTTP_*``."""

    def option(name: str, default: Any, text: str, **kw: Any) -> None:
        env = "CACHESTORM_HTTP_" + name.upper().replace("-", "_")
        parser.add_argument(f"--http-{name}", env_var=env, default=default, help=text, **kw)

    option("base-url", "", "The service's base URL, e.g. http://127.0.0.1:8000 (a path prefix is kept).")
    option("key-path", "/entities/{index}", "Path of the index-th entity; {index} is 0 to --keys - 1.")
    option("write-method", "PUT", "HTTP method of a write.", choices=WRITE_METHODS)
    option("write-path", "", "Path a write goes to (default: --http-key-path); {index} as there.")
    option(
        "write-body",
        '{"value": "{random}"}',
        "Body of a write; {index}, {key} and {random} (16 hex digits) are filled in.",
    )
    option("content-type", "application/json", "Content-Type of a write's body.")
    option(
        "version-from",
        "json",
        "Where a response's version is: json (--http-version-field) or etag.",
        choices=VERSION_SOURCES,
    )
    option("version-field", "version", "Dotted path of the version in a JSON response, e.g. data.version.")
    option("source-header", "X-Cache", "Response header saying hit or miss (empty: none).")
    option("source-field", "", "Dotted path of hit/miss in a JSON response, used when the header is absent.")
    option("reset-path", "", "POSTed at each run start to reset the keys (empty: GET each key instead).")
    option("sweep-path", "", "POSTed at stop: what the caches hold beside the database (docs/targets.md).")
    option("peek-path", "", "GET per key: what the cache holds without filling it; {index} as above.")
    option("no-effect-statuses", DEFAULT_NO_EFFECT, "Write statuses that certainly changed nothing (fail).")
    option("timeout", 10.0, "Seconds to connect, and to wait for each response.", type=float)
    option("concurrency", 100, "Connections per node to the service.", type=int)
    option("header", "", "One extra request header, 'Name: value' (e.g. an API token).", is_secret=True)


@dataclass(frozen=True)
class HttpOptions:
    """The HTTP target's parsed options."""

    base_url: str
    key_path: str
    write_method: str
    write_path: str
    write_body: str
    content_type: str
    version_from: str
    version_field: str
    source_header: str
    source_field: str
    reset_path: str
    sweep_path: str
    peek_path: str
    no_effect_statuses: str
    timeout: float
    concurrency: int
    header: str

    @classmethod
    def from_parsed(cls, parsed: Any) -> HttpOptions:
        values = {name: getattr(parsed, f"http_{name}") for name in cls.__dataclass_fields__}
        values["timeout"] = float(values["timeout"])
        values["concurrency"] = int(values["concurrency"])
        return cls(**values)

    def problem(self) -> str | None:
        """What is wrong with the options, in one line, or None."""
        url = urlsplit(self.base_url)
        if not self.base_url:
            return (
                "--http-base-url (CACHESTORM_HTTP_BASE_URL) is empty: give the service's base URL, "
                "e.g. http://127.0.0.1:8000."
            )
        if url.scheme not in ("http", "https") or not url.hostname:
            return (
                f"--http-base-url is {redact(self.base_url)!r}: give an http:// or https:// URL with a host, "
                "e.g. http://127.0.0.1:8000."
            )
        try:
            url.port  # noqa: B018  # raises on a port that is not a number
        except ValueError:
            return f"--http-base-url is {redact(self.base_url)!r}: its port is not a number."
        for flag, path in (
            ("--http-key-path", self.key_path),
            ("--http-write-path", self.write_path or self.key_path),
        ):
            if not path.startswith("/") or "{index}" not in path:
                return (
                    f"{flag} is {path!r}: give a path starting with / that holds {{index}}, "
                    "e.g. /users/{index}."
                )
        if self.peek_path and (not self.peek_path.startswith("/") or "{index}" not in self.peek_path):
            return (
                f"--http-peek-path is {self.peek_path!r}: give a path starting with / that holds {{index}}."
            )
        for flag, path in (("--http-reset-path", self.reset_path), ("--http-sweep-path", self.sweep_path)):
            if path and not path.startswith("/"):
                return f"{flag} is {path!r}: give a path starting with /, or leave it empty."
        if self.version_from == "json" and not self.version_field.strip("."):
            return (
                "--http-version-field is empty: give the JSON field of the version, "
                "or --http-version-from etag."
            )
        try:
            no_effect_statuses(self.no_effect_statuses)
        except ValueError as e:
            return str(e)
        if self.timeout <= 0:
            return f"--http-timeout is {self.timeout:g}: give a number of seconds above 0."
        if self.concurrency < 1:
            return f"--http-concurrency is {self.concurrency}: give 1 or more connections."
        if self.header and ":" not in self.header:
            return "--http-header has no ':': give it as 'Name: value'."
        return None


def no_effect_statuses(text: str) -> frozenset[int]:
    """``400,404,409`` as a set of statuses; only 4xx qualify (a 5xx may come after a commit)."""
    statuses: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or not 400 <= int(part) <= 499:
            raise ValueError(
                f"--http-no-effect-statuses has {part!r}: give 4xx statuses separated by commas, "
                f"e.g. {DEFAULT_NO_EFFECT} (a 5xx may come after a commit, so it is never certain)."
            )
        statuses.add(int(part))
    return frozenset(statuses)


# --------------------------------------------------------------------------------------------------
# What a response says: pure functions of its status, headers and body


class NoVersion:
    """Returned in place of a version a response lacked: its repr is the run's one line on it."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"no version ({self.why})"


class HttpStatusError(Exception):
    """A response whose status says the request did not do what it asked."""

    def __init__(self, method: str, name: str, status: int, body: bytes) -> None:
        text = body[:200].decode("utf-8", "replace").strip()
        super().__init__(f"{method} {name}: HTTP {status}" + (f": {text}" if text else ""))
        self.status = status


def dotted(document: Any, path: str) -> Any:
    """``document``'s value at ``a.b.0.c`` (list items by position); :class:`KeyError` when absent."""
    value = document
    for part in filter(None, path.split(".")):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def as_version(value: Any) -> int | None:
    """An integer version from a JSON value or header text (``7``, ``"7"``); None otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def etag_version(etag: str) -> int | None:
    """The version an ETag names: ``"7"`` and ``W/"7"`` are 7."""
    text = etag.strip()
    if text.startswith("W/"):
        text = text[2:]
    return as_version(text.strip('"'))


@dataclass(frozen=True)
class Extractor:
    """Reads a response's version and source the way the options say."""

    version_from: str
    version_field: str
    source_header: str
    source_field: str

    def version(self, what: str, headers: Callable[[str], str | None], body: bytes) -> int | NoVersion:
        if self.version_from == "etag":
            etag = headers("ETag")
            if etag is None:
                return NoVersion(f"the response to {what} has no ETag header; set --http-version-from json")
            got = etag_version(etag)
            return NoVersion(f"the ETag of {what}, {etag!r}, is not a version number") if got is None else got
        try:
            value = dotted(json.loads(body), self.version_field)
        except (ValueError, UnicodeDecodeError):
            return NoVersion(f"the response to {what} is not JSON; set --http-version-from etag")
        except KeyError:
            return NoVersion(
                f"the JSON response to {what} has no field {self.version_field!r}; set --http-version-field"
            )
        got = as_version(value)
        if got is None:
            return NoVersion(f"the field {self.version_field!r} of {what} is {value!r}, not an integer")
        return got

    def source(self, headers: Callable[[str], str | None], body: bytes) -> str | None:
        if self.source_header:
            value = headers(self.source_header)
            if value:
                return value.strip().lower()
        if self.source_field:
            try:
                value = dotted(json.loads(body), self.source_field)
            except (ValueError, UnicodeDecodeError, KeyError):
                return None
            if isinstance(value, str) and value.strip():
                return value.strip().lower()
        return None


def cached_entry(key: str, entry: Any, where: str) -> Cached:
    """One ENTRY of the sweep and peek contract (module docstring) as a :class:`Cached`."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: an entry is {entry!r}, not a JSON object (docs/targets.md)")
    versions = []
    for field in ("cached", "db"):
        value = entry.get(field)
        if value is not None and as_version(value) is None:
            raise ValueError(f"{where}: {field!r} of {key} is {value!r}, not an integer or null")
        versions.append(None if value is None else as_version(value))
    held = entry.get("held")
    if held is not None and held not in HELD:
        raise ValueError(f"{where}: 'held' of {key} is {held!r}, not one of {', '.join(HELD)}")
    tier = entry.get("tier")
    return Cached(key, versions[0], versions[1], held, None if tier is None else str(tier))


# --------------------------------------------------------------------------------------------------
# The target


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Callable[[str], str | None]


class HttpTarget:
    """A web service: GET to read, PUT/PATCH/POST to write, versions in JSON or the ETag."""

    #: Each request fires Locust's request event itself (``GET /users/{index}``).
    reports_requests = True
    #: Set per instance when --http-peek-path is given: the write probes' read.
    peek: Callable[[str], Cached] | None = None

    def __init__(self, context: TargetContext) -> None:
        self.options = o = HttpOptions.from_parsed(context.options)
        problem = o.problem()
        if problem is not None:
            raise ValueError(problem)
        self.fire = context.fire
        url = urlsplit(o.base_url)
        self.prefix = url.path.rstrip("/")
        https = url.scheme == "https"
        concurrency = o.concurrency if context.role == "users" else COORDINATOR_CONCURRENCY
        headers = {"Content-Type": o.content_type}
        if o.header:
            name, _, value = o.header.partition(":")
            headers[name.strip()] = value.strip()
        self.client = HTTPClient(
            url.hostname or "",
            url.port or (443 if https else 80),
            ssl=https,
            concurrency=concurrency,
            connection_timeout=o.timeout,
            network_timeout=o.timeout,
            headers=headers,
        )
        self.extract = Extractor(o.version_from, o.version_field, o.source_header, o.source_field)
        self.no_effect = no_effect_statuses(o.no_effect_statuses)
        self.write_path = o.write_path or o.key_path
        self.index: dict[str, int] = {}
        if o.peek_path:
            self.peek = self._peek

    # -- HTTP ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, name: str, body: bytes = b"") -> Response:
        """One request, reported to Locust under ``name``; raises on a lost connection or timeout."""
        t0 = time.perf_counter()
        try:
            resp = self.client.request(method, self.prefix + path, body=body)
            try:
                data = resp.read()
            finally:
                resp.release()
        except Exception as e:
            self._fire(method, name, t0, 0, e)
            raise
        status = resp.status_code
        error = None if 200 <= status < 300 else HttpStatusError(method, name, status, data)
        self._fire(method, name, t0, len(data), error)

        def header(field: str) -> str | None:
            value = resp.get(field)
            return value[0] if isinstance(value, list) else value

        return Response(status, data, header)

    def _fire(self, method: str, name: str, t0: float, length: int, error: BaseException | None) -> None:
        self.fire(
            request_type=method,
            name=name,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    def _path(self, template: str, key: str) -> str:
        return template.replace("{index}", str(self.index[key]))

    def _json(self, method: str, path: str, document: Any) -> Any:
        """POST-like request of a JSON document on the coordinator; its JSON answer, or one line why not."""
        resp = self._request(method, path, path, json.dumps(document).encode())
        if not 200 <= resp.status < 300:
            raise RuntimeError(str(HttpStatusError(method, path, resp.status, resp.body)))
        if not resp.body.strip():
            return None
        try:
            return json.loads(resp.body)
        except ValueError:
            raise RuntimeError(f"{method} {path} answered with a body that is not JSON") from None

    # -- the target ----------------------------------------------------------------------

    def key(self, index: int) -> str:
        key = self.options.key_path.replace("{index}", str(index))
        self.index[key] = index
        return key

    def read(self, key: str) -> Read | NoVersion:
        resp = self._request("GET", key, self.options.key_path)
        if not 200 <= resp.status < 300:
            raise HttpStatusError("GET", key, resp.status, resp.body)
        version = self.extract.version(f"GET {key}", resp.headers, resp.body)
        if isinstance(version, NoVersion):
            return version
        return Read(version, self.extract.source(resp.headers, resp.body))

    def write(self, key: str) -> int | NoVersion:
        o = self.options
        index = str(self.index[key])
        body = o.write_body.replace("{index}", index).replace("{key}", key)
        body = body.replace("{random}", secrets.token_hex(8))
        resp = self._request(o.write_method, self._path(self.write_path, key), self.write_path, body.encode())
        if resp.status in self.no_effect:
            raise NoEffect(str(HttpStatusError(o.write_method, key, resp.status, resp.body)))
        if not 200 <= resp.status < 300:
            raise HttpStatusError(o.write_method, key, resp.status, resp.body)
        return self.extract.version(f"{o.write_method} {key}", resp.headers, resp.body)

    def reset(self, keys: Sequence[str]) -> dict[str, int] | None:
        """POST --http-reset-path, or GET every key and start from the versions it has."""
        o = self.options
        if o.reset_path:
            answer = self._json("POST", o.reset_path, {"keys": list(keys), "count": len(keys)})
            reported = answer.get("versions") if isinstance(answer, dict) else None
            if not reported:
                return None
            return {k: self._start_version(k, reported.get(k)) for k in keys}
        versions: dict[str, int] = {}
        for key in keys:
            got = self.read(key)
            if isinstance(got, NoVersion):
                raise RuntimeError(f"GET {key} at the reset: {got!r}")
            versions[key] = got.version
        return versions if any(versions.values()) else None

    @staticmethod
    def _start_version(key: str, value: Any) -> int:
        version = as_version(value)
        if version is None:
            raise RuntimeError(f"the reset's answer gives {key} the version {value!r}, not an integer")
        return version

    def sweep(self, keys: Sequence[str]) -> Iterator[Cached]:
        o = self.options
        if o.sweep_path:
            indexes = [self.index[k] for k in keys]
            answer = self._json("POST", o.sweep_path, {"keys": list(keys), "indexes": indexes})
            entries = answer.get("entries") if isinstance(answer, dict) else None
            if not isinstance(entries, list):
                raise RuntimeError(
                    f"POST {o.sweep_path} answered without an 'entries' list (docs/targets.md)"
                )
            by_index = dict(zip(indexes, keys, strict=True))
            for entry in entries:
                key = entry.get("key") if isinstance(entry, dict) else None
                if key is None and isinstance(entry, dict) and type(entry.get("index")) is int:
                    key = by_index.get(entry["index"])
                if key not in self.index:
                    raise RuntimeError(f"POST {o.sweep_path}: an entry names no key of this run: {entry!r}")
                yield cached_entry(str(key), entry, f"POST {o.sweep_path}")
        elif o.peek_path:
            for key in keys:
                yield from self._peek_all(key)
        else:
            log.warning(
                "cachestorm: the HTTP target has no --http-sweep-path or --http-peek-path: no divergence "
                "sweep (the divergence check is skipped)"
            )

    def _peek_all(self, key: str) -> list[Cached]:
        path = self._path(self.options.peek_path, key)
        resp = self._request("GET", path, self.options.peek_path)
        if not 200 <= resp.status < 300:
            raise HttpStatusError("GET", path, resp.status, resp.body)
        try:
            answer = json.loads(resp.body)
        except ValueError:
            raise RuntimeError(
                f"GET {path} answered with a body that is not JSON (docs/targets.md)"
            ) from None
        entries = answer if isinstance(answer, list) else [answer]
        return [cached_entry(key, entry, f"GET {path}") for entry in entries]

    def _peek(self, key: str) -> Cached:
        """What the service's first (or only) cache tier holds for ``key``."""
        return self._peek_all(key)[0]

    def describe(self) -> str:
        o = self.options
        sweep = (
            f"sweep {o.sweep_path}" if o.sweep_path else f"peek {o.peek_path}" if o.peek_path else "no sweep"
        )
        return (
            f"HTTP service at {redact(o.base_url)}: GET {o.key_path}, {o.write_method} {self.write_path}, "
            f"version from {o.version_from}, {sweep}"
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- the session ---------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        add_arguments(parser)

    @classmethod
    def setup(cls, environment: Any) -> None:
        """Check the options and that the service accepts connections, once, on the master."""
        problem = cls.options_problem(environment.parsed_options)
        if problem is not None:
            embedded.fatal(problem)

    @classmethod
    def run_problem(cls, environment: Any) -> str | None:
        return cls.options_problem(environment.parsed_options)

    @classmethod
    def options_problem(cls, parsed: Any) -> str | None:
        o = HttpOptions.from_parsed(parsed)
        problem = o.problem()
        if problem is not None:
            return problem
        url = urlsplit(o.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=min(o.timeout, 5.0)):
                pass
        except OSError as e:
            reason = e.strerror or type(e).__name__
            return (
                f"the HTTP service at {redact(o.base_url)} is unreachable ({reason}): start it, or fix "
                "--http-base-url (CACHESTORM_HTTP_BASE_URL)."
            )
        return None
