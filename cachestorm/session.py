"""One Locust session's cachestorm lifecycle: what happens at each test start, stop and quit.

:func:`cachestorm.plugin.register` makes the :class:`Session` and hooks it to Locust's events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import psycopg
import redis
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from cachestorm import embedded, events, marker, target_loader
from cachestorm.coordinator import Coordinator
from cachestorm.messages import MSG_CONTRACT, MSG_SERVICES
from cachestorm.node import Node
from cachestorm.options import Options
from cachestorm.services import redact

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
    # The run is being closed (test_stop's listeners: history, sweep, analysis) though Locust
    # already says "stopped".
    closing: bool = False

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
            self.mark_services()
        if self.node is not None:
            wrong = self.services_problem()
            if wrong is not None:
                self.refused = True
                log.error("cachestorm: %s. The run is stopped.", wrong)
                runner = self.environment.runner
                assert runner is not None
                runner.send_message(MSG_SERVICES, {"message": wrong, "node": self.node.node})
                return
            self.node.start_run()
            if self.coordinator is not None:
                self.node.started(self.coordinator.start_versions)

    def mark_services(self) -> None:
        """On the master: write this run's marker into the session's services, for the workers'
        check (:mod:`cachestorm.marker`). A target without session services gets none."""
        parsed = self.environment.parsed_options
        assert parsed is not None
        urls = embedded.session_urls()
        parsed.run_marker = ""
        if urls is None or not isinstance(self.environment.runner, MasterRunner):
            return
        # The workers check only a marker they were sent, so none sent is no check anywhere.
        if getattr(parsed, "check_services", "on") == "off":
            return
        run_marker = marker.new(parsed.run_id)
        try:
            marker.write(urls[0], urls[1], run_marker)
        except (redis.RedisError, psycopg.Error, OSError) as e:
            self.stop_for(f"the master could not write the run marker: {redact(str(e))}")
            return
        parsed.run_marker = run_marker

    def services_problem(self) -> str | None:
        """On a worker: why the services it was given are not the master's, in one line, or None."""
        parsed = self.environment.parsed_options
        run_marker = getattr(parsed, "run_marker", "")
        on_worker = isinstance(self.environment.runner, WorkerRunner)
        if parsed is None or not run_marker or not on_worker or self.node is None:
            return None
        return marker.problem(self.node.node, parsed.redis_url, parsed.pg_dsn, parsed.ws_url, run_marker)

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

    def stop_for(self, message: str, node: str = "") -> None:
        """On the master: record the first reason this run must stop (``node``'s services are not
        the master's), and stop it; run.json's ``stopped_for`` makes the analysis refuse it."""
        c = self.coordinator
        if c is None or c.stopped_for:
            return
        c.stopped_for = message
        if node and c.collector is not None:
            # It refused to run users, so no final count will come from it.
            c.collector.mark_lost(node, message)
        log.error("cachestorm: %s. The run is stopped.", message)
        self.environment.process_exit_code = 2
        runner = self.environment.runner
        parsed = self.environment.parsed_options
        if runner is not None:
            gevent.spawn(runner.quit if parsed is not None and parsed.headless else runner.stop)

    def on_test_stop(self, **_kw: Any) -> None:
        if self.refused:
            return  # nothing was started, so there is nothing to ship or close
        # Locust says "stopped" before this has run: the web UI reads ``closing`` to keep its page
        # polling until the run is closed (its history, sweep, analysis and live view's end).
        self.closing = True
        try:
            # Order matters on a local runner: the node ships its last rows before the run is closed.
            if self.node is not None:
                self.node.end_run()
            if self.coordinator is not None:
                self.coordinator.finish_run()
        finally:
            self.closing = False

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
