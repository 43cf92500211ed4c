"""``--verdict``: the analysis judges each run as it ends, and its verdict is Locust's exit code.

cachestorm fires :data:`cachestorm.events.run_finished` on the master when a run's results are
whole; a locustfile wires this listener to it::

    from cachestorm import events
    from analysis import at_run_end

    events.run_finished.add_listener(at_run_end.judge)

The analysis is imported only when a run asks for it: it pulls in pandas, which the load path
never needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Locust's exit code for bad input, which a verdict never overrides.
BAD_INPUT = 2


def judge(environment: Any, run_dir: Path, options: Any, **_kw: Any) -> None:
    """Analyse ``run_dir`` when the run asked for ``--verdict``; the verdict becomes the exit code:
    0 pass, 1 fail, 3 unknown (docs/checks.md, "Exit status"), 2 bad input."""
    if not options.verdict:
        return
    from analysis.__main__ import main as analyse  # noqa: PLC0415

    code = analyse([str(run_dir)])
    # A run already stopped for bad input (a broken target contract) keeps its exit code.
    if environment.process_exit_code != BAD_INPUT:
        environment.process_exit_code = code
