"""One Locust session's cachestorm lifecycle: what happens at each test start, stop and quit.

:func:`cachestorm.plugin.register` makes the :class:`Session` and hooks it to Locust's events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import WorkerRunner

from cachestorm import embedded, events, target_loader
from cachestorm.coordinator import Coordinator
from cachestorm.messages import MSG_CONTRACT
from cachestorm.node import Node
from cachestorm.options import Options

log = logging.getLogger("cachestorm")

RunRule = Callable[[Environment], "str | None"]
"""A check of a run's settings at its start: what is wrong, in one line, or None."""


@dataclass
class Session:
    environment: Environment
    node: Node | None
    coordinator: Coordinator | None
    # Checked on the master (or local runner) at each test start, beside the options' own checks.
    run_rules: Sequence[RunRule] = ()
    # The current run was refused at its start: nothing was reset or recorded, and users stop.
    refused: bool = False

    def on_test_start(self, **_kw: Any) -> None:
        problem = self.run_problem()
        self.refused = problem is not None
        if problem is not None:
            log.error("cachestorm: %s The run is stopped.", problem)
            runner = self.environment.runner
            if runner is not None and not isinstance(runner, WorkerRunner):
                gevent.spawn(runner.stop)
            return
        if self.coordinator is not None:
            self.coordinator.start_run()
        if self.node is not None:
            self.node.start_run()
            if self.coordinator is not None:
                self.node.started(self.coordinator.start_versions)

    def run_problem(self) -> str | None:
        """Why this run must not start, in one line, or None.

        Start-up checks see the command line only; a run started from the web UI takes the form's
        values, so each run is checked again here. The shape lives on the master, so the rules
        (``run_rules``) and the target's own check are run there; a worker checks option values.
        """
        parsed = self.environment.parsed_options
        o = Options.from_parsed(parsed)
        problems = o.problems()
        if problems:
            return problems[0]
        if self.coordinator is None:
            return None
        for rule in self.run_rules:
            problem = rule(self.environment)
            if problem is not None:
                return problem
        try:
            cls = target_loader.load(o.target)
        except target_loader.TargetLoadError as e:
            return str(e)
        check = getattr(cls, "run_problem", None)
        return check(self.environment) if callable(check) else None

    def on_broken(self, message: str) -> None:
        """This node's target broke the contract: stop the run, here or through the master."""
        events.contract_broken.fire(environment=self.environment, message=message)
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            log.error("cachestorm: the target broke the contract: %s. The run is stopped.", message)
            runner.send_message(MSG_CONTRACT, {"message": message})
        else:
            self.stop_broken(message)

    def stop_broken(self, message: str) -> None:
        """On the master: record the first broken contract of the run and stop it."""
        c = self.coordinator
        if c is None or c.contract_broken:
            return
        c.contract_broken = message
        log.error("cachestorm: the target broke the contract: %s. The run is stopped.", message)
        self.environment.process_exit_code = 2
        runner = self.environment.runner
        parsed = self.environment.parsed_options
        if runner is not None:
            gevent.spawn(runner.quit if parsed is not None and parsed.headless else runner.stop)

    def on_test_stop(self, **_kw: Any) -> None:
        if self.refused:
            return  # nothing was started, so there is nothing to ship or close
        # Order matters on a local runner: the node ships its last rows before the run is closed.
        if self.node is not None:
            self.node.end_run()
        if self.coordinator is not None:
            self.coordinator.finish_run()

    def on_quitting(self, **_kw: Any) -> None:
        runner = self.environment.runner
        if self.coordinator is not None and runner is not None:
            # Ctrl-C or SIGTERM: close the run properly before the services go away.
            runner.stop()
            self.coordinator.finish_run()
        if self.node is not None:
            self.node.close()
        if self.coordinator is not None:
            teardown = getattr(target_loader.load(self.coordinator.options.target), "teardown", None)
            if callable(teardown):
                teardown()
        embedded.stop()
