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

run_started = EventHook()
"""
Fired on the master (or the single local runner) when a run has started: its id is chosen, its
keys are reset and its collector is ready, before any user's row can arrive.

The locustfile wires the live coherence view to it (``analysis.live``).

:param environment: the Locust environment
:param run_dir: the run's results directory, ``RESULTS/<run-id>``
:param options: the run's :class:`cachestorm.options.Options`
:param expected_nodes: the ids of the nodes expected to send rows (empty on a local runner, whose
    own rows come as node ``local``)
"""

rows_collected = EventHook()
"""
Fired on the master (or the single local runner) for every batch of rows the run's collector takes
in: a node's shipped batch (once, whatever the retries), or rows the master recorded itself (the
initial versions, the target's stats, the final reads and the sweep).

Listeners run in the master's event loop: they should keep the batch and return, and do any
analysis later, off the message path.

:param environment: the Locust environment
:param node: the node whose rows these are
:param batch: a :class:`pyarrow.RecordBatch` in the history schema (:data:`cachestorm.history.SCHEMA`)
:param clock_uncertainty_ns: the node's clock uncertainty when it shipped the batch (0: the master's
    own clock), which bounds how far apart its timestamps and the master's may be
"""

node_finished = EventHook()
"""
Fired on the master (or the single local runner) when a node's final count arrives: every row it
recorded in this run has been shipped, so no later row of that node can change what came before.

:param environment: the Locust environment
:param node: the node that finished
"""
