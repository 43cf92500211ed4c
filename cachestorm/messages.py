"""The messages cachestorm's nodes exchange over Locust's, and their wiring.

History batches and final counts (``cachestorm_history``, ``cachestorm_history_end``) go from
every user-running node to the master; the master asks workers to drain, to pause writes and
answers their clock pings; a worker whose target broke the contract, or whose services are not
the master's, tells the master, which stops the run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from cachestorm.coordinator import MSG_DRAIN
from cachestorm.history import MSG_BATCH, MSG_END
from cachestorm.node import MSG_CLOCK_PING, boot_id

if TYPE_CHECKING:
    from cachestorm.session import Session

MSG_PAUSE_WRITES = "cachestorm_pause_writes"
MSG_CLOCK_PONG = "cachestorm_clock_pong"
MSG_CONTRACT = "cachestorm_contract_broken"
MSG_SERVICES = "cachestorm_wrong_services"


def pause_writes(runner: Any) -> None:
    """Ask every node to stop writing for the rest of the run (users keep running).

    Locust cannot stop one user class while keeping the user count: its dispatcher applies a new
    class list only to users it spawns next. So the writers stay, and skip their writes.
    """
    runner.send_message(MSG_PAUSE_WRITES, None)


def wire(environment: Environment, session: Session) -> None:
    """Register every cachestorm message handler this node's role needs."""
    runner = environment.runner
    if runner is None:
        return
    coordinator, node = session.coordinator, session.node
    if coordinator is not None:
        runner.register_message(MSG_BATCH, lambda environment, msg, **kw: coordinator.on_batch(msg.data))
        runner.register_message(MSG_END, lambda environment, msg, **kw: coordinator.on_end(msg.data))
        runner.register_message(
            MSG_CONTRACT, lambda environment, msg, **kw: session.stop_broken(str(msg.data["message"]))
        )
        runner.register_message(
            MSG_SERVICES,
            lambda environment, msg, **kw: session.stop_for(str(msg.data["message"]), str(msg.data["node"])),
        )
    if isinstance(runner, MasterRunner):

        def pong(environment: Environment, msg: Any, **_kw: Any) -> None:
            runner.send_message(
                MSG_CLOCK_PONG,
                {
                    "seq": msg.data.get("seq"),
                    "t0": msg.data["t0"],
                    "t_master": time.time_ns(),
                    "boot_id": boot_id(),
                },
                client_id=msg.node_id,
            )

        runner.register_message(MSG_CLOCK_PING, pong)
    if node is not None:

        def on_pause(environment: Environment, msg: Any, **_kw: Any) -> None:
            node.writes_paused = True

        runner.register_message(MSG_PAUSE_WRITES, on_pause)
    if isinstance(runner, WorkerRunner) and node is not None:

        def drain(environment: Environment, msg: Any, **_kw: Any) -> None:
            # Runner.stop() fires test_stop, which ships the last rows; if the users had
            # already stopped, it returns at once and end_run resends the final count.
            runner.stop()
            node.end_run()

        runner.register_message(MSG_DRAIN, drain)
        runner.register_message(MSG_CLOCK_PONG, lambda environment, msg, **kw: node.on_clock_pong(msg.data))
