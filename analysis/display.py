"""How figures read to a person: durations in µs or ms, times as offsets from the run's start.

One set of rules for the console (:mod:`analysis.console`), the report (:mod:`analysis.report`) and
the threshold lines (:mod:`analysis.verdict`), so a figure reads the same wherever it is shown and
never in scientific notation (``3.165e+04 us`` beside a limit in ms reads as nonsense). Pure
functions of plain numbers: this module imports nothing of the analysis.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

US_PER_MS = 1_000.0
NS_PER_US = 1_000
NS_PER_S = 1_000_000_000
#: Below this, a nanosecond figure named like a time (``t_*``, ``*_ns``) is a duration, not an epoch
#: stamp: 10^17 ns is about three years, and every epoch stamp since 1973 is above it.
EPOCH_NS_MIN = 10**17
#: Figure-name suffixes that give the unit of a duration, and how many microseconds one unit is.
DURATION_SUFFIXES = {"_us": 1.0, "_ms": US_PER_MS, "_ns": 1.0 / NS_PER_US}
MICRO = "\u00b5s"


def _decimals(magnitude: float) -> int:
    """Three or four significant digits: 2 decimals below 10, 1 below 100, none from 100 up."""
    return 2 if magnitude < 10 else 1 if magnitude < 100 else 0


def _fixed(value: float) -> str:
    """``value`` with :func:`_decimals` decimals and thousands separators, trailing zeros dropped."""
    places = _decimals(abs(value))
    # Rounding can carry into the next decade (9.996 -> 10.00): take that decade's places then.
    if abs(round(value, places)) >= (10 if places == 2 else 100 if places == 1 else math.inf):
        places -= 1
    text = f"{value:,.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def duration_us(us: float | None) -> str:
    """A duration given in microseconds, in µs below 1 ms and in ms from there: ``"298 µs"``,
    ``"31.6 ms"``, ``"1,339 ms"``; ``"-"`` for None or NaN."""
    if us is None or (isinstance(us, float) and math.isnan(us)):
        return "-"
    value = float(us)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    # Decided on the rounded figure, so 999.7 µs reads "1 ms", not "1,000 µs".
    if abs(round(value)) < US_PER_MS:
        return f"{_fixed(value)} {MICRO}"
    return f"{_fixed(value / US_PER_MS)} ms"


def duration_ms(ms: float | None) -> str:
    """A duration given in milliseconds, as :func:`duration_us` shows it."""
    return duration_us(None if ms is None else float(ms) * US_PER_MS)


def locust_ms(ms: float | None) -> str:
    """A percentile as Locust reports it: whole milliseconds below 100 ms (it rounds each response
    time), so a 0 says "under half a millisecond", never "0 µs"."""
    if ms is not None and 0 <= float(ms) < 0.5:
        return "<1 ms"
    return duration_ms(ms)


def duration_ns(ns: float | None) -> str:
    """A duration given in nanoseconds, as :func:`duration_us` shows it."""
    return duration_us(None if ns is None else float(ns) / NS_PER_US)


def number(value: Any) -> str:
    """A figure that is no duration: integers whole, ratios to 4 significant digits, never ``e+``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer():
            return str(int(value))
        if abs(value) >= 1:
            return _fixed(value)
        # Below 1: four significant digits (0.9211, 0.0003142), in fixed notation.
        places = max(4, 3 - math.floor(math.log10(abs(value))))
        return f"{value:.{places}f}".rstrip("0").rstrip(".")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def unit_of(name: str) -> float | None:
    """Microseconds per unit of a figure whose name ends in ``_us``, ``_ms`` or ``_ns``, else None."""
    for suffix, scale in DURATION_SUFFIXES.items():
        if name.endswith(suffix):
            return scale
    return None


def label(name: str) -> str:
    """A figure's name without its unit suffix, when :func:`figure` shows the unit in the value."""
    return name[:-3] if unit_of(name) is not None else name


def is_time(name: str, value: Any) -> bool:
    """Whether a figure is a timestamp in ns since the epoch, as every time of the history is.

    ``t_invoke``, ``t_complete``, ``t_intended`` (any ``t_*`` name) always are. A ``*_ns`` name is
    either a moment (``epoch_opened_ns``) or a duration (``tolerance_ns``): a stamp when its value
    has an epoch stamp's size.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if name.startswith("t_") or "_t_" in name:
        return True
    return name.endswith("_ns") and value >= EPOCH_NS_MIN


def timestamp(ns: float, t0: int) -> str:
    """An epoch stamp as its offset from the run's start and its UTC wall time, to the ms:
    ``"+12.345 s (11:41:56.509 UTC)"``."""
    offset = (int(ns) - int(t0)) / NS_PER_S
    wall = datetime.fromtimestamp(int(ns) / NS_PER_S, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{offset:+.3f} s ({wall} UTC)"


def wall_time(ns: int) -> str:
    """An epoch stamp as a full UTC date and time, to the ms: ``"2026-12-01 11:41:44.164 UTC"``."""
    return datetime.fromtimestamp(int(ns) / NS_PER_S, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def figure(name: str, value: Any, t0: int | None = None) -> str:
    """Any named figure: a duration by its name's unit suffix, an epoch stamp relative to ``t0``
    (when given), a nested record as ``name=value`` pairs, otherwise :func:`number`."""
    if isinstance(value, dict):
        return ", ".join(f"{label(k)}={figure(k, v, t0)}" for k, v in value.items())
    if t0 is not None and is_time(name, value):
        return timestamp(value, t0)
    scale = unit_of(name)
    if scale is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return duration_us(float(value) * scale)
    return number(value)


def pair(name: str, value: Any) -> str:
    """``name=value`` for a one-line summary of figures, the unit in the value (``age_p50=51.3 ms``)."""
    return f"{label(name)}={figure(name, value)}"
