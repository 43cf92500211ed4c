"""Ctrl-C and SIGTERM reach the main greenlet, where Locust closes the test."""

from __future__ import annotations

import signal

import gevent
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING


def interrupt_main_greenlet() -> None:
    """Raise KeyboardInterrupt in the main greenlet, which is where Locust expects Ctrl-C."""
    gevent.get_hub().parent.throw(KeyboardInterrupt())


def route(environment: Environment) -> None:
    """Deliver Ctrl-C and SIGTERM to the main greenlet, where Locust closes the test.

    SIGINT: Python raises KeyboardInterrupt in whichever frame is running, and under load that is
    often a user's greenlet, which then dies with a traceback before gevent passes the interrupt
    on. Handled by gevent instead, it always lands in the main greenlet.

    SIGTERM: Locust joins a headless shape test before it installs its own SIGTERM handler, so
    until the shape ends SIGTERM would kill the process with the run half written. Meanwhile it
    takes the Ctrl-C path: the test stops, the run is closed, the services are stopped. In every
    other mode Locust's own handler is in place and this one stands aside.
    """
    parsed = environment.parsed_options

    def on_sigterm() -> None:
        runner = environment.runner
        if parsed is None or not parsed.headless or environment.shape_class is None or runner is None:
            return
        if runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
            return  # the shape is over and Locust's handler is installed
        interrupt_main_greenlet()

    gevent.signal_handler(signal.SIGINT, interrupt_main_greenlet)
    gevent.signal_handler(signal.SIGTERM, on_sigterm)
