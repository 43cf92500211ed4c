"""The WebSocket listener's reading of the notifier's ``seq`` (users/websocket.py), message by
message: what becomes a ``ws_gap`` row and what does not."""

from __future__ import annotations

from typing import Any

from users.websocket import WebSocketListener


def listener() -> tuple[WebSocketListener, list[tuple[Any, ...]]]:
    # Without Locust: only the attributes the seq handling uses.
    rows: list[tuple[Any, ...]] = []
    tab = object.__new__(WebSocketListener)
    tab.process = 7
    tab.record = lambda *row: rows.append(row)  # type: ignore[method-assign]
    tab.last_seq, tab.last_t = None, 100
    return tab, rows


def feed(tab: WebSocketListener, *notes: tuple[dict[str, Any], int]) -> None:
    for note, t in notes:
        tab._follow_seq(note, t)
        if "gap" in note:
            tab._gap(note)


def change(seq: int) -> dict[str, Any]:
    return {"key": "cs:e:1", "version": seq, "commit_ns": 0, "seq": seq}


def test_a_continuous_seq_records_nothing() -> None:
    tab, rows = listener()
    feed(tab, (change(5), 200), (change(6), 300), (change(7), 400))
    assert rows == []


def test_a_hole_in_seq_is_recorded_with_its_size_between_the_receipts() -> None:
    tab, rows = listener()
    feed(tab, (change(1), 200), (change(2), 300), (change(6), 400))
    assert rows == [(7, "ws_gap", None, "ok", 300, 400, None, 3, "seq")]


def test_the_notifiers_gap_message_is_recorded_and_keeps_seq_continuous() -> None:
    tab, rows = listener()
    gap = {"gap": "reconnect", "from_ns": 250, "to_ns": 350, "seq": 3}
    feed(tab, (change(1), 200), (change(2), 300), (gap, 360), (change(4), 400))
    assert rows == [(7, "ws_gap", None, "ok", 250, 350, None, None, "reconnect")]


def test_the_first_message_of_a_connection_is_no_hole() -> None:
    # A connection to a restarted notifier, or opened late, starts wherever seq is.
    tab, rows = listener()
    feed(tab, (change(900), 200))
    assert rows == []
