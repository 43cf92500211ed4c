"""cachestorm's options in Locust's web UI, without cachestorm's plugin: how Locust alone shows them.

The positive control of tests/test_secrets.py: with nothing masking them, the start form's page
source gives away the passwords in the service URLs.
"""

from __future__ import annotations

from locust import User, constant, events, task

from cachestorm import options

events.init_command_line_parser.add_listener(options.add_arguments)


class Idle(User):
    wait_time = constant(1)

    @task
    def nothing(self) -> None:
        pass
