"""Wires cachestorm into a Locust environment: call :func:`register` from the ``init`` event.

Usage, from a locustfile::

    from locust import events
    from cachestorm import options, plugin

    events.init_command_line_parser.add_listener(options.add_arguments)

    @events.init.add_listener
    def _(environment, **_kwargs):
        plugin.register(environment)

What happens, by role:

- The master (or the single local runner) sets up the target's services once
  (``Target.setup``: for the reference cache, the embedded Redis, PostgreSQL and notifier when no
  URLs were given), then per run has the target reset its keys, collects every node's history,
  has the target sweep its keys for divergence, and writes RESULTS/<run-id>/run.json
  (:mod:`cachestorm.coordinator`).
- Every node that runs users (the local runner, or each worker) makes the run's target, records
  each operation around it, and ships the rows to the master in numbered batches
  (:mod:`cachestorm.node`).
- The web UI, when Locust serves one, gets cachestorm's start form and each run's verdict and
  report (:mod:`cachestorm.webui`).

The modules: :mod:`~cachestorm.session` (test start, stop and quit), :mod:`~cachestorm.messages`
(what nodes send each other), :mod:`~cachestorm.signals` (Ctrl-C and SIGTERM),
:mod:`~cachestorm.embedded` (the session's services and :func:`~cachestorm.embedded.fatal`).
"""

from __future__ import annotations

from collections.abc import Sequence

from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from cachestorm import (
    embedded,
    locust_fixes,
    messages,
    nemesis,
    procutil,
    secrecy,
    signals,
    target_loader,
    webui,
)
from cachestorm.coordinator import Coordinator
from cachestorm.embedded import fatal
from cachestorm.history import Recorder
from cachestorm.node import Node
from cachestorm.options import Options
from cachestorm.session import RunRule, Session

GRACEFUL_STOP_S = 10.0

# Locust forks the --processes workers after loading the locustfile (which imports this module) and
# before the init event: import time is the only moment early enough.
procutil.forked_children_die_with_parent()


def register(environment: Environment, run_rules: Sequence[RunRule] = ()) -> Session:
    """Attach cachestorm to ``environment``; call it from the ``init`` event.

    ``run_rules`` are checked at each test start on the master; a run that breaks one is stopped
    with its line in the log (see :meth:`Session.run_problem`).
    """
    locust_fixes.apply()
    runner = environment.runner
    # Before the secrecy: what the form glue puts in the page is masked with the rest.
    ui = webui.attach(environment) if not isinstance(runner, WorkerRunner) else None
    secrecy.protect(environment)
    parsed = environment.parsed_options
    if parsed is None:
        raise RuntimeError("cachestorm needs Locust's parsed options (run it through the locust command)")
    o = Options.from_parsed(parsed)
    problems = o.problems()
    if problems:
        fatal(problems[0])
    try:
        target_cls = target_loader.load(o.target)
    except target_loader.TargetLoadError as e:
        fatal(str(e))
    name = (
        runner.client_id
        if isinstance(runner, WorkerRunner)
        else "master"
        if isinstance(runner, MasterRunner)
        else "local"
    )
    coordinator = (
        Coordinator(environment, name, o) if isinstance(runner, LocalRunner | MasterRunner) else None
    )
    node = (
        Node(environment, name, o, Recorder(o.history))
        if isinstance(runner, LocalRunner | WorkerRunner)
        else None
    )
    session = Session(environment, node, coordinator, run_rules)
    if node is not None:
        node.on_broken = session.on_broken
    signals.route(environment)
    if coordinator is not None:
        coordinator.first_run_id = o.run_id
        if not environment.stop_timeout:
            # Locust's default kills users mid-task at stop: a writer killed between its commit and
            # its invalidation leaves a stale entry that the divergence sweep would rightly count.
            # Let each user finish its current operation; the master sends this to the workers.
            environment.stop_timeout = GRACEFUL_STOP_S
        # Refused before the target's setup starts services that would then have to be stopped.
        if problem := nemesis.refusal(o):
            fatal(problem)
        setup = getattr(target_cls, "setup", None)
        if callable(setup):
            setup(environment)
        if o.nemesis and (problem := nemesis.no_services(embedded.session_services())):
            fatal(problem)
        coordinator.options = Options.from_parsed(parsed)
    messages.wire(environment, session)
    environment.events.test_start.add_listener(session.on_test_start)
    if ui is not None:
        environment.events.test_start.add_listener(ui.on_test_start)
    environment.events.test_stop.add_listener(session.on_test_stop)
    environment.events.quitting.add_listener(session.on_quitting)
    environment.cachestorm = session  # type: ignore[attr-defined]
    return session
