"""What the three services agree on: keys, channels, the L2 encoding and its guarded updates, the
event log each service keeps for the target, and how a service announces that it is ready.

The L2 (shared Redis) holds, per user, ``e:<version>:<json>`` (an entry) or ``t:<version>`` (a
tombstone: that version was committed and everything older is invalid). Both updates are Lua
scripts, so a fill and an invalidation of one key are ordered by Redis:

- :data:`INVALIDATE_L2` (auth, after each commit) puts a tombstone unless L2 already holds that
  version or a newer one;
- :data:`FILL_L2` (backend, after a database read) installs an entry only if nothing newer is held,
  so a fill that read the database before a commit cannot overwrite that commit's tombstone (the
  cache-aside stale-set race).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

KEY_PREFIX = "user:"
#: Redis pub/sub channel of auth's invalidations, which every backend subscribes to.
INVALIDATE_CHANNEL = "three_services:invalidate"
#: PostgreSQL NOTIFY channel of the users table's commit trigger, which the frontend LISTENs on.
NOTIFY_CHANNEL = "three_services_user_changes"
L2_PREFIX = "three_services:l2:"
ACK_PREFIX = "three_services:ack:"
#: Tombstones must outlive any fill in flight; entries expire sooner so the L2 stays bounded.
TOMBSTONE_TTL_MS = 60_000
#: A long run's event log keeps its newest events only; a sample run stays far below this.
EVENT_LOG_LIMIT = 2_000_000
SERVED_BY = "X-Served-By"

FILL_L2 = """
local held = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if held then
    local kind, hv = string.match(held, '^(%a):(%d+)')
    hv = tonumber(hv)
    if kind == 'e' and hv >= v then return 0 end
    if kind == 't' and hv > v then return 0 end
end
redis.call('SET', KEYS[1], 'e:' .. ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
"""

INVALIDATE_L2 = """
local held = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if held then
    local kind, hv = string.match(held, '^(%a):(%d+)')
    if tonumber(hv) >= v then return 0 end
end
redis.call('SET', KEYS[1], 't:' .. ARGV[1], 'PX', ARGV[2])
return 1
"""


def user_key(user_id: int) -> str:
    """The history's key of one user."""
    return f"{KEY_PREFIX}{user_id}"


def user_id(key: str) -> int:
    return int(key[len(KEY_PREFIX) :])


def l2_key(uid: int) -> str:
    return f"{L2_PREFIX}{uid}"


def parse_l2(raw: bytes | str | None) -> tuple[str, int | None, dict[str, Any] | None]:
    """``(held, version, user)`` of an L2 value: ``entry``, ``tombstone`` or ``absent``."""
    if raw is None:
        return "absent", None, None
    text = raw.decode() if isinstance(raw, bytes) else raw
    kind, version, rest = [*text.split(":", 2), "", ""][:3]
    if kind == "e":
        return "entry", int(version), json.loads(rest)
    return "tombstone", int(version), None


class EventLog:
    """What one service did to which key and when (ns on the host's clock), for the target to fetch."""

    def __init__(self, tier: str) -> None:
        self.tier = tier
        self.events: deque[tuple[str, int, str, int]] = deque(maxlen=EVENT_LOG_LIMIT)

    def add(self, key: str, version: int, what: str, t_ns: int | None = None) -> None:
        self.events.append((key, version, what, time.time_ns() if t_ns is None else t_ns))

    def since(self, t_ns: int) -> list[dict[str, Any]]:
        return [
            {"key": k, "version": v, "tier": self.tier, "what": w, "t_ns": t}
            for k, v, w, t in list(self.events)
            if t >= t_ns
        ]


def announce(url: str) -> None:
    """The one stdout line a launcher waits for: the service is listening at ``url``."""
    print(f"READY {url}", flush=True)


# -- a small WSGI layer, enough for JSON endpoints ------------------------------------------------

Handler = Callable[[dict[str, Any], list[str]], tuple[int, Any, dict[str, str]]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
REASONS |= {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def json_app(
    routes: dict[tuple[str, str], Handler],
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app routing ``(METHOD, first path segment)`` to handlers that return
    ``(status, JSON-able body, extra headers)``; the rest of the path is passed as a list."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        parts = [p for p in environ.get("PATH_INFO", "/").split("/") if p]
        method = environ["REQUEST_METHOD"]
        headers: dict[str, str] = {}
        handler = routes.get((method, parts[0] if parts else ""))
        if handler is None and method == "PATCH":
            handler = routes.get(("PUT", parts[0] if parts else ""))
        if handler is None:
            status, body = 404, {"error": "no such route"}
        else:
            try:
                status, body, headers = handler(environ, parts[1:])
            except Exception as e:
                status, body = 500, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(body).encode()
        head = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(f"{status} {REASONS.get(status, 'Status')}", head + list(headers.items()))
        return [data]

    return app


def body_of(environ: dict[str, Any]) -> Any:
    """The request's JSON body, or None when it has none."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    return json.loads(raw) if raw else None


def query_int(environ: dict[str, Any], name: str, default: int) -> int:
    for pair in str(environ.get("QUERY_STRING", "")).split("&"):
        k, _, v = pair.partition("=")
        if k == name and v:
            return int(v)
    return default
