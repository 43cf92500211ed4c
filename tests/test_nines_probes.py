"""'Writes consistent within M' measured by probes (f=probe rows), on hand-built histories."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.nines import compute_nines, delay_label, probe_outcomes, writes_consistent_by_probes
from analysis.report import section_nines
from tests.histories import MS, history, op


def probe(
    key: str, written: int, done_ms: float, delay_ms: float, cached: int | None, source: str
) -> dict[str, Any]:
    """A probe of the write of ``written`` that completed at ``done_ms``, taken ``delay_ms`` later."""
    row = op("probe", key, done_ms + delay_ms, done_ms + delay_ms + 0.2, cached, value=written, source=source)
    row["t_intended"] = round((done_ms + delay_ms) * MS)
    return row


def probed_history() -> list[dict[str, Any]]:
    rows = []
    # Ten keys, each written once (version 1, done at 10 ms) and probed at 100 ms, 1 s and 5 s.
    for k in range(10):
        key = f"cs:e:{k}"
        rows.append(op("write", key, 0, 10, 1))
        for delay in (100, 1000, 5000):
            # Key 0 keeps the old entry (version 0) for 2 s: bad at 100 ms and 1 s, fixed by 5 s.
            # Key 1 keeps it forever: bad at every delay. Others hold the new entry or a tombstone.
            stale = (k == 0 and delay < 2000) or k == 1
            if stale:
                rows.append(probe(key, 1, 10, delay, 0, "entry"))
            elif k % 2:
                rows.append(probe(key, 1, 10, delay, None, "tombstone"))
            else:
                rows.append(probe(key, 1, 10, delay, 1, "entry"))
    return rows


def test_probes_are_matched_to_their_writes_and_judged() -> None:
    outcomes = probe_outcomes(history(*probed_history()))
    assert sorted(set(outcomes["delay_ns"])) == [100 * MS, 1000 * MS, 5000 * MS]
    assert len(outcomes) == 30
    assert int(outcomes["bad"].sum()) == 2 + 2 + 1


def test_nines_per_delay() -> None:
    result = writes_consistent_by_probes(history(*probed_history()))
    assert list(result) == ["100ms", "1s", "5s"]
    assert [result[m]["bad"] for m in result] == [2, 2, 1]
    assert [result[m]["total"] for m in result] == [10, 10, 10]
    assert result["5s"]["nines"] == pytest.approx(1.0)  # 1 bad in 10
    assert result["100ms"]["window_ms"] == 100


def test_a_newer_entry_or_nothing_cached_is_consistent() -> None:
    rows = [
        op("write", "cs:e:1", 0, 10, 3),
        probe("cs:e:1", 3, 10, 100, 4, "entry"),  # a later write's fill: newer, fine
        probe("cs:e:1", 3, 10, 1000, None, "absent"),
        probe("cs:e:1", 3, 10, 5000, 2, "entry"),  # older: bad
    ]
    result = writes_consistent_by_probes(history(*rows))
    assert [result[m]["bad"] for m in ("100ms", "1s", "5s")] == [0, 0, 1]


def test_a_failed_probe_is_not_counted() -> None:
    rows = [op("write", "cs:e:1", 0, 10, 1), probe("cs:e:1", 1, 10, 100, 0, "entry")]
    rows[1]["status"] = "fail"
    assert writes_consistent_by_probes(history(*rows)) == {}


def test_compute_nines_prefers_probes_and_falls_back_to_reads() -> None:
    with_probes = compute_nines(history(*probed_history()))
    assert with_probes["method"] == "probe"
    assert with_probes["probed_writes"] == with_probes["ok_writes"] == 10
    assert with_probes["writes_consistent"]["1s"]["bad"] == 2
    # Without probe rows, the users' reads measure it: here a read at 200 ms saw the old version.
    rows = [op("write", "cs:e:1", 0, 10, 1), op("read", "cs:e:1", 200, 201, 0, source="hit")]
    without = compute_nines(history(*rows))
    assert without["method"] == "reads"
    assert without["writes_consistent"]["100ms"]["bad"] == 1
    assert without["writes_consistent"]["1s"]["bad"] == 0


@pytest.mark.parametrize(("ns", "label"), [(100 * MS, "100ms"), (1000 * MS, "1s"), (2500 * MS, "2.5s")])
def test_delay_labels(ns: int, label: str) -> None:
    assert delay_label(ns) == label


def test_the_report_says_how_writes_were_measured() -> None:
    probed = section_nines(compute_nines(history(*probed_history())))
    assert "10 of 10 ok writes were probed" in probed
    assert "probes that found an older entry / probes" in probed
    assert "1 / 10" in probed  # 5 s: key 1 only
    rows = [op("write", "cs:e:1", 0, 10, 1), op("read", "cs:e:1", 200, 201, 1, source="hit")]
    by_reads = section_nines(compute_nines(history(*rows)))
    assert "no probes were recorded" in by_reads and "were probed" not in by_reads
