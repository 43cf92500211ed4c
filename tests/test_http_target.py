"""The HTTP target's pure logic: options, version and source extraction, the sweep's entries."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from cachestorm.http_target import (
    DEFAULT_NO_EFFECT,
    Extractor,
    HttpOptions,
    NoVersion,
    cached_entry,
    dotted,
    etag_version,
    no_effect_statuses,
)
from cachestorm.target import Cached


def options(**kw: Any) -> HttpOptions:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:8000/api",
        "key_path": "/users/{index}",
        "write_method": "PUT",
        "write_path": "",
        "write_body": "{}",
        "content_type": "application/json",
        "version_from": "json",
        "version_field": "version",
        "source_header": "X-Cache",
        "source_field": "",
        "reset_path": "",
        "sweep_path": "",
        "peek_path": "",
        "no_effect_statuses": DEFAULT_NO_EFFECT,
        "timeout": 10.0,
        "concurrency": 10,
        "header": "",
    }
    values.update(kw)
    return HttpOptions.from_parsed(SimpleNamespace(**{f"http_{k}": v for k, v in values.items()}))


def headers(**values: str) -> Any:
    lower = {k.lower().replace("_", "-"): v for k, v in values.items()}
    return lambda name: lower.get(name.lower())


def test_good_options_have_no_problem() -> None:
    assert options().problem() is None


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"base_url": ""}, "--http-base-url"),
        ({"base_url": "ftp://h"}, "--http-base-url"),
        ({"base_url": "http://:pw@h:x"}, "port"),
        ({"key_path": "/users"}, "--http-key-path"),
        ({"write_path": "users/{index}"}, "--http-write-path"),
        ({"peek_path": "/peek"}, "--http-peek-path"),
        ({"reset_path": "reset"}, "--http-reset-path"),
        ({"no_effect_statuses": "404,500"}, "--http-no-effect-statuses"),
        ({"timeout": 0}, "--http-timeout"),
        ({"concurrency": 0}, "--http-concurrency"),
        ({"header": "token"}, "--http-header"),
    ],
)
def test_bad_options_get_one_line_naming_the_flag(change: dict[str, Any], flag: str) -> None:
    problem = options(**change).problem()
    assert problem is not None and flag in problem and "\n" not in problem


def test_a_password_in_the_base_url_is_not_repeated() -> None:
    problem = options(base_url="gopher://u:hunter2@h").problem()
    assert problem is not None and "hunter2" not in problem


def test_no_effect_statuses_are_4xx_only() -> None:
    assert no_effect_statuses(" 400, 409 ,422") == {400, 409, 422}
    assert 408 not in no_effect_statuses(DEFAULT_NO_EFFECT)  # a request timeout may have run
    with pytest.raises(ValueError, match="5xx"):
        no_effect_statuses("503")


def test_versions_from_a_dotted_json_field() -> None:
    x = Extractor("json", "data.version", "X-Cache", "")
    assert x.version("GET /u/1", headers(), json.dumps({"data": {"version": 7}}).encode()) == 7
    assert x.version("GET /u/1", headers(), b'{"data": {"version": "8"}}') == 8
    for body, why in ((b"{}", "no field 'data.version'"), (b"<html>", "not JSON")):
        got = x.version("GET /u/1", headers(), body)
        assert isinstance(got, NoVersion) and why in repr(got)
    assert isinstance(x.version("GET /u/1", headers(), b'{"data": {"version": true}}'), NoVersion)
    assert dotted({"a": [{"b": 1}]}, "a.0.b") == 1


def test_versions_from_the_etag() -> None:
    x = Extractor("etag", "", "", "")
    assert x.version("GET /u/1", headers(etag='W/"12"'), b"") == 12
    assert x.version("GET /u/1", headers(etag='"3"'), b"") == 3
    assert isinstance(x.version("GET /u/1", headers(etag='"abc"'), b""), NoVersion)
    assert isinstance(x.version("GET /u/1", headers(), b""), NoVersion)
    assert etag_version("5") == 5


def test_source_from_the_header_then_the_json_field() -> None:
    x = Extractor("json", "version", "X-Cache", "meta.cache")
    assert x.source(headers(x_cache="HIT"), b"{}") == "hit"
    assert x.source(headers(), b'{"meta": {"cache": "Miss"}}') == "miss"
    assert x.source(headers(), b"{}") is None
    assert Extractor("json", "version", "", "").source(headers(x_cache="HIT"), b"") is None


def test_sweep_entries() -> None:
    assert cached_entry("/u/1", {"cached": 3, "db": 4}, "w") == Cached("/u/1", 3, 4, None, None)
    got = cached_entry("/u/1", {"cached": None, "db": 4, "held": "absent", "tier": "l1"}, "w")
    assert got == Cached("/u/1", None, 4, "absent", "l1")
    for bad in ({"cached": "x", "db": 1}, {"cached": 1, "db": 1, "held": "maybe"}, [1]):
        with pytest.raises(ValueError, match="w:"):
            cached_entry("/u/1", bad, "w")
