"""cachestorm's own events, for what comes after a run without cachestorm/ knowing it.

Each is a Locust :class:`~locust.event.EventHook`: add a listener with ``add_listener``.
"""

from __future__ import annotations

from locust.event import EventHook

run_finished = EventHook()
"""
Fired on the master (or the single local runner) when a run's results are whole: its history,
sweep and run.json are written.

The locustfile wires the analysis to it (``--verdict``), which keeps the load path free of
pandas and cachestorm/ free of analysis/.

:param environment: the Locust environment; a listener may set its ``process_exit_code``
:param run_dir: the run's results directory, ``RESULTS/<run-id>``
:param options: the run's :class:`cachestorm.options.Options`
"""

contract_broken = EventHook()
"""
Fired on the node whose target broke cachestorm's contract (cachestorm.contract), before the run
is stopped.

:param environment: the Locust environment
:param message: the one line naming the key and what was wrong
"""
