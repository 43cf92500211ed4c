"""A browser tab listening to the notifier.

It keeps a local copy of what it was told, ``{key: version}``, and reads it now and then
(``f=ui_read``), so a stale UI is measurable as well as a missed notification.

It follows the notifier's ``seq`` on each connection and records what breaks it as ``f=ws_gap``
(docs/history.md): the notifier's own message after it re-LISTENed (``source=reconnect``: changes
committed in its window may have been lost by PostgreSQL), or a hole in ``seq``
(``source=seq``: messages the live notifier numbered and did not send to this tab).
"""

from __future__ import annotations

import json
import random
import time

import websocket
from locust import User, constant, task

from cachestorm import keys
from cachestorm.clients import InstrumentedWebSocket
from cachestorm.node import node_of

now = time.time_ns


class WebSocketListener(User):
    """Holds one WebSocket connection to the notifier and records every notification.

    ``fixed_count`` is set from ``--listeners`` by the locustfile.
    """

    fixed_count = 10
    wait_time = constant(0)
    # Seconds of listening per task, between two reads of the local copy.
    listen_s = 0.5
    ws: InstrumentedWebSocket | None = None

    def on_start(self) -> None:
        self.node = node_of(self.environment)
        self.record = self.node.recorder.record
        self.local: dict[str, int] = {}
        self.known: list[str] = []
        self.rng = random.Random(keys.user_seed(self.node.options.seed, self.environment, self))
        self._open()

    def _open(self) -> None:
        if not self.node.ws_url:
            return  # the target pushes no notifications: this tab has nothing to listen to
        self.process = self.node.new_process()
        ws = InstrumentedWebSocket(self.node.ws_url, self.node.fire)
        t0 = now()
        try:
            ws.open()
        except Exception:
            self.record(self.process, "ws_open", None, "fail", t0, now())
            self.ws = None
            return
        self.record(self.process, "ws_open", None, "ok", t0, now())
        self.ws = ws
        # Where this connection's seq stands; another connection (or notifier) numbers afresh.
        self.last_seq: int | None = None
        self.last_t = now()

    @task
    def listen(self) -> None:
        if self.ws is None:
            time.sleep(1.0)
            self._open()
            return
        deadline = time.monotonic() + self.listen_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                msg = self.ws.recv(left)
                if msg is None:
                    break
                t = now()
                note = json.loads(msg)
                self._follow_seq(note, t)
                if "gap" in note:
                    self._gap(note)
                    continue
                key, version, commit_ns = note["key"], int(note["version"]), int(note["commit_ns"])
                self.record(self.process, "ws_recv", key, "ok", t, t, version, commit_ns)
                self.ws.received((t - commit_ns) / 1e6)
                if key not in self.local:
                    self.known.append(key)
                    self.local[key] = version
                elif version > self.local[key]:
                    self.local[key] = version
        except (websocket.WebSocketException, OSError):
            t = now()
            self.record(self.process, "ws_close", None, "info", t, t)
            self.ws = None
            return
        if self.known:
            key = self.known[self.rng.randrange(len(self.known))]
            t = now()
            self.record(self.process, "ui_read", key, "ok", t, t, self.local[key])

    def _follow_seq(self, note: dict[str, object], t: int) -> None:
        seq = note.get("seq")
        if not isinstance(seq, int):
            return
        if self.last_seq is not None and seq > self.last_seq + 1:
            # t_invoke..t_complete: between the receipts around the hole; value: how many it spans.
            skipped = seq - self.last_seq - 1
            self.record(self.process, "ws_gap", None, "ok", self.last_t, t, None, skipped, "seq")
        self.last_seq, self.last_t = seq, t

    def _gap(self, note: dict[str, object]) -> None:
        start, end = note.get("from_ns"), note.get("to_ns")
        if note.get("gap") != "reconnect" or not isinstance(start, int) or not isinstance(end, int):
            return
        # How many were lost is unknowable (PostgreSQL dropped them), so value stays null.
        self.record(self.process, "ws_gap", None, "ok", start, max(start, end), None, None, "reconnect")

    def on_stop(self) -> None:
        if self.ws is None:
            return
        t0 = now()
        status = "ok"
        try:
            self.ws.close()
        except Exception:
            status = "info"
        self.record(self.process, "ws_close", None, status, t0, now())
        self.ws = None
