"""Workarounds for Locust behaviour that distorts what cachestorm measures.

:func:`apply` is called once per process by :func:`cachestorm.plugin.register`.

- **Spawn messages block a worker.** Locust 2.47's ``WorkerRunner`` filters the options in each
  ``spawn`` message with ``k not in argument_parser.default_args_dict()``, which builds a whole
  argument parser for every key of the message. With cachestorm's options that is 109
  parsers at about 3 ms each, so every spawn message (one a second per worker while users are
  spawning) stopped the worker's event loop for a few hundred milliseconds, and each user's
  operation in flight then took that long. The defaults do not change within a process, so they
  are built once. Measured in the demo, read_hit p95 while users spawn: docs/performance.md.
- **A worker's last seconds reach the master only at quit.** A worker reports its statistics
  every 3 s and, at a stop, not at all (only a ``quit`` sends a final report). The run-end
  analysis, which runs before the quit, saw about a fifth fewer requests than Locust's own
  final figures in a 6 s ``--processes 2`` run. :func:`report_stats_now` sends the report at once;
  the node calls it when its users have stopped, before its last history rows, so that the master
  has every worker's figures when it has every worker's rows. Some runs still miss about 5.5%
  (docs/checks.md, "Locust figures"), cause not found.
- **``--csv`` files lag.** Locust rewrites ``*_stats.csv`` and ``*_failures.csv`` every second and
  flushes ``*_stats_history.csv`` every 5 s; their final versions are written at exit, after the
  run-end analysis has read them. :func:`write_csv_now` brings them up to date first.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from locust import argument_parser
from locust import stats as locust_stats
from locust.env import Environment
from locust.runners import WorkerRunner

_applied = False
#: Every ``--csv`` writer Locust made in this process (one per environment, in practice).
_csv_writers: weakref.WeakSet[locust_stats.StatsCSVFileWriter] = weakref.WeakSet()


def apply() -> None:
    """Install the workarounds (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    original = argument_parser.default_args_dict
    cached = functools.cache(original)

    def default_args_dict() -> dict[str, Any]:
        # A copy, so that no caller can change what the next one sees.
        return dict(cached())

    default_args_dict.__doc__ = original.__doc__
    argument_parser.default_args_dict = default_args_dict

    # Locust's main() keeps its --csv writer in a local variable: note each one as it is made.
    make_writer = locust_stats.StatsCSVFileWriter.__init__

    @functools.wraps(make_writer)
    def noted(self: locust_stats.StatsCSVFileWriter, *args: Any, **kwargs: Any) -> None:
        make_writer(self, *args, **kwargs)
        _csv_writers.add(self)

    locust_stats.StatsCSVFileWriter.__init__ = noted  # type: ignore[method-assign]


def report_stats_now(runner: WorkerRunner) -> None:
    """Send this worker's statistics to the master now, as its 3 s reporter would.

    Each report carries what was recorded since the last one (Locust's listener takes and resets
    it), so an extra report counts nothing twice.
    """
    data: dict[str, Any] = {}
    runner.environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
    runner.send_message("stats", data)


def write_csv_now(environment: Environment) -> None:
    """Rewrite ``environment``'s ``--csv`` files with its statistics as they are now.

    The same rows Locust's writer would write at its next tick, through its own file handles (so
    its later writes, and the final one at exit, carry on in the same files). Raises OSError or
    ValueError when the files can no longer be written (closed at exit).
    """
    for writer in list(_csv_writers):
        if writer.environment is not environment:
            continue
        for handle, csv_writer, write in (
            (writer.requests_csv_filehandle, writer.requests_csv_writer, writer.requests_csv),
            (writer.failures_csv_filehandle, writer.failures_csv_writer, writer.failures_csv),
            (writer.exceptions_csv_filehandle, writer.exceptions_csv_writer, writer.exceptions_csv),
        ):
            # Each writes its header and its rows, as the file holds them from its start.
            handle.seek(0)
            write(csv_writer)
            handle.truncate()
            handle.flush()
        writer.stats_history_flush()
