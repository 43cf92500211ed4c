"""A browser tab listening to the notifier.

It keeps a local copy of what it was told, ``{key: version}``, and reads it now and then
(``f=ui_read``), so a stale UI is measurable as well as a missed notification.
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
