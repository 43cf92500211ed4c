"""Keys that start a run at the versions a target's reset reported (``f=initial`` rows)."""

from __future__ import annotations

from analysis.checks import check_future_read, check_stale_read
from analysis.load import rebase_versions
from tests.histories import history, op


def rows(with_initial: bool) -> list[dict]:
    out = [
        op("write", "k", 10, 12, 11),
        op("read", "k", 13, 14, 11, source="hit"),
        op("write", "k", 20, 22, 12),
        op("read", "k", 23, 24, 12, source="miss"),
        op("read", "j", 5, 6, 40, source="hit"),
        op("sweep", "k", 30, 30, 12, value=12, source="entry"),
    ]
    if with_initial:
        out = [op("initial", "k", 0, 0, 10, process=0), op("initial", "j", 0, 0, 40, process=0), *out]
    return out


def test_reads_are_judged_from_each_keys_starting_version() -> None:
    h = rebase_versions(history(*rows(True)))
    assert check_future_read(h).violations == 0
    assert check_stale_read(h).violations == 0
    by_f = h.groupby("f", observed=True)["version"].apply(list).to_dict()
    assert by_f["write"] == [1, 2]
    assert by_f["initial"] == [0, 0]
    sweep = h[h["f"] == "sweep"].iloc[0]
    assert (sweep["version"], sweep["value"]) == (2, 2)


def test_without_the_initial_rows_the_same_reads_are_from_the_future() -> None:
    """The positive control: versions that no write of the run made are flagged."""
    h = rebase_versions(history(*rows(False)))
    assert check_future_read(h).violations == 3


def test_a_read_below_the_starting_version_is_flagged() -> None:
    h = rebase_versions(
        history(op("initial", "k", 0, 0, 10, process=0), op("read", "k", 1, 2, 9, source="hit"))
    )
    assert check_future_read(h).figures["negative"] == 1
