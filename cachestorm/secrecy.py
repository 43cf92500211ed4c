"""Keeps the session's secrets out of everything Locust shows, serves or logs.

A secret is the value of an option registered with ``is_secret=True`` (``--redis-url``,
``--pg-dsn``), or a password inside any option's URL or DSN (``redis://:PW@h``,
``postgresql://u:PW@h/db``, ``?password=PW``, ``password=PW``). Locust would give them away:
its start form embeds every option's default, which configargparse fills from the environment
(``CACHESTORM_REDIS_URL``), in the page source; ``is_secret`` only masks the input box. And
anything logged reaches the ``/logs`` endpoint and the log file.

:func:`protect`, called on every node by :func:`cachestorm.plugin.register`, closes each way out:

- the start form shows each option as :func:`shown` makes it, passwords as ``***``;
- a ``/swarm`` post whose secret field is blank or holds the placeholder the form showed leaves
  that field out, so the session keeps its real value; the placeholder never becomes a URL;
- every other response of the web UI (JSON, the report, CSV downloads) has any password that
  slipped into it replaced by ``***``;
- every log handler (console, ``--logfile``, the buffer behind ``/logs`` and the one a worker
  ships to its master) gets the same replacement, tracebacks included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from locust import argument_parser
from locust.env import Environment

from cachestorm.services import redact

MASK = "***"

_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def passwords_in(value: str) -> set[str]:
    """Every password written in ``value`` (a URL or a libpq key=value DSN), as written and decoded."""
    found: set[str] = set()
    if "://" in value:
        with contextlib.suppress(ValueError):
            password = urlsplit(value).password
            if password:
                found.add(password)
        found.update(m.group(1) for m in _QUERY_PASSWORD.finditer(value))
    else:
        found.update(m.group(1).strip("'") for m in _KV_PASSWORD.finditer(value))
    # A driver's message would hold the decoded form, the URL the percent-encoded one.
    return {p for p in found | {unquote(p) for p in found} if p}


def _looks_like_address(value: str) -> bool:
    return "://" in value or "=" in value


def secrets_of(value: str, secret: bool) -> set[str]:
    """The strings of ``value`` that must not be seen: its passwords, or all of it when it is the
    value of a secret option that is not an address (a bare token has no part worth showing)."""
    found = passwords_in(value)
    if secret and value and not found and not _looks_like_address(value):
        found.add(value)
    return found


def _variants(secret: str) -> set[str]:
    """How ``secret`` can be spelt in a response: as is, inside a JSON string, and as Flask's
    ``tojson`` writes it into a page (``<``, ``>``, ``&`` and ``'`` as ``\\u00XX``)."""
    in_json = json.dumps(secret)[1:-1]
    html_safe = in_json
    for ch in "<>&'":
        html_safe = html_safe.replace(ch, f"\\u{ord(ch):04x}")
    return {secret, in_json, html_safe}


class Secrets:
    """The secrets this process has seen, and the masking built on them.

    They are gathered from the parsed options each time they are needed, since a spawn message or
    the start form can bring new ones, and never forgotten: an old password may still sit in the
    log buffer.
    """

    def __init__(self, environment: Environment, secret_options: Iterable[str]) -> None:
        self.environment = environment
        self.secret_options = frozenset(secret_options)
        self.known: set[str] = set()
        self._spellings: list[str] = []
        self._seen_values: set[tuple[str, str]] = set()
        self._defaults: dict[str, Any] | None = None

    def learn(self, name: str, value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str) or (name, v) in self._seen_values:
                continue
            self._seen_values.add((name, v))
            new = secrets_of(v, name in self.secret_options) - self.known
            if new:
                self.known |= new
                # Longest first, so that a password containing another is masked whole.
                spellings = {s for k in self.known for s in _variants(k)}
                self._spellings = sorted(spellings, key=len, reverse=True)

    def refresh(self) -> None:
        parsed = self.environment.parsed_options
        if parsed is not None:
            for name, value in vars(parsed).items():
                self.learn(name, value)

    def scrub(self, text: str) -> str:
        """``text`` with every spelling of every known secret replaced by ``***``."""
        self.refresh()
        for spelling in self._spellings:
            if spelling in text:
                text = text.replace(spelling, MASK)
        return text

    def shown(self, value: Any) -> Any:
        """What the web UI may show of an option's value: its passwords as ``***``."""
        if isinstance(value, list):
            return [self.shown(v) for v in value]
        if not isinstance(value, str):
            return value
        return self.scrub(redact(value))

    def defaults(self) -> dict[str, Any]:
        """The start form's options and the defaults it shows (from the command line and the
        environment), as Locust computes them for its page."""
        if self._defaults is None:
            extra = argument_parser.ui_extra_args_dict()
            self._defaults = {name: o["default_value"] for name, o in extra.items()}
            for name, value in self._defaults.items():
                self.learn(name, value)
        return self._defaults

    def kept_fields(self, form: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The fields of a start-form post that Locust may apply.

        A field that holds what the form showed in place of a secret, or a blank secret field,
        stands for the session's value: it is left out, so that the value stays as it is.
        """
        parsed = self.environment.parsed_options
        current = vars(parsed) if parsed is not None else {}
        defaults = self.defaults()
        self.refresh()
        stands_in: dict[str, set[str]] = {}
        # Locust's own fields too: the page shows --host, which may hold a password.
        for name in current:
            for real in (current[name], defaults.get(name)):
                if isinstance(real, str) and self.shown(real) != real:
                    stands_in.setdefault(name, set()).add(self.shown(real))
        kept = []
        for name, value in form:
            if value in stands_in.get(name, ()):
                continue
            if name in self.secret_options and name in current and not value:
                continue
            kept.append((name, value))
        return kept


class _ScrubRecords(logging.Filter):
    """Masks secrets in a record before any handler formats it."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__("cachestorm.secrecy")
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.secrets.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatted here, so that the formatter takes this text instead of the raw traceback.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.secrets.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.secrets.scrub(record.stack_info)
        return True


def _all_handlers() -> list[logging.Handler]:
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return list({id(h): h for lg in loggers for h in lg.handlers}.values())


def guard_logs(secrets: Secrets) -> None:
    """Put the masking filter on every log handler (Locust has set them up before ``init``)."""
    for handler in _all_handlers():
        if not any(isinstance(f, _ScrubRecords) for f in handler.filters):
            handler.addFilter(_ScrubRecords(secrets))


def guard_web_ui(web_ui: Any, secrets: Secrets) -> None:
    """Mask secrets in the start form, keep them across form posts, and scrub every response."""
    from flask import request  # noqa: PLC0415  # Flask is Locust's, present wherever a web UI is
    from werkzeug.datastructures import ImmutableMultiDict  # noqa: PLC0415

    render_args = web_ui.update_template_args

    def update_template_args() -> None:
        render_args()
        extra = web_ui.template_args.get("extra_options") or {}
        for name, option in extra.items():
            secrets.learn(name, option.get("default_value"))
        web_ui.template_args["extra_options"] = {
            name: {**option, "default_value": secrets.shown(option.get("default_value"))}
            for name, option in extra.items()
        }

    # The page is rendered from template_args right after this call, on every request to "/".
    web_ui.update_template_args = update_template_args

    def keep_secrets() -> None:
        if request.method == "POST" and request.path.endswith("/swarm"):
            kept = secrets.kept_fields(request.form.items(multi=True))
            # werkzeug caches the parsed form on the request; Locust's view reads that copy.
            request.form = ImmutableMultiDict(kept)

    def scrub_response(response: Any) -> Any:
        # Static files are Locust's own build and stream from disk; they hold nothing of ours.
        if response.direct_passthrough or response.is_streamed or "/assets/" in request.path:
            return response
        body = response.get_data(as_text=True)
        clean = secrets.scrub(body)
        if clean != body:
            response.set_data(clean)
        return response

    web_ui.app.before_request(keep_secrets)
    web_ui.app.after_request(scrub_response)


def protect(environment: Environment) -> Secrets:
    """Keep this node's secrets out of its web UI and its logs; call it from the ``init`` event,
    before anything logs a service URL."""
    parser = argument_parser.get_parser()
    # Every secret option, also those kept out of the form: their values still reach the logs.
    secret_options = [a.dest for a in parser._actions if getattr(a, "is_secret", False)]
    secrets = Secrets(environment, secret_options)
    secrets.refresh()
    guard_logs(secrets)
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is not None:
        guard_web_ui(web_ui, secrets)
    return secrets
