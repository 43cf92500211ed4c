"""``python -m analysis RESULTS``: check a run's op history and print the verdict.

Exit status: 0 every check passed, 1 a check failed or a threshold was breached, 2 the input (or the
thresholds file) could not be used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis.checks import Options, run_checks
from analysis.console import render
from analysis.load import InputError, load_results
from analysis.nines import compute_nines
from analysis.report import write_report
from analysis.thresholds import load_thresholds
from analysis.verdict import dumps, jsonable, write_summary

EXIT_PASS, EXIT_FAIL, EXIT_INPUT = 0, 1, 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Check a cachestorm run's op history for cache anomalies and write summary.json.",
        epilog="Exit status: 0 all checks and thresholds passed, 1 a check failed or a threshold was "
        "breached, 2 bad input or thresholds file. See docs/checks.md.",
    )
    parser.add_argument("results", help="the results directory of a run (holds history/, run.json)")
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="MS",
        default=None,
        help="clock tolerance in milliseconds applied to every cross-process 'before' "
        "(default: run.json's clock_uncertainty_ns, else 0)",
    )
    parser.add_argument(
        "--ws-grace",
        type=float,
        metavar="SECONDS",
        default=None,
        help="writes this close to a WebSocket connection's open or close are not expected (default 1)",
    )
    parser.add_argument(
        "--thresholds",
        metavar="FILE",
        default=None,
        help="TOML file of SLAs judged against the figures (default: the seed SLAs in "
        "analysis/thresholds.toml); 'none' applies no thresholds",
    )
    parser.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    args = parser.parse_args(argv)
    if args.tolerance is not None and args.tolerance < 0:
        parser.error("--tolerance must be >= 0")
    if args.ws_grace is not None and args.ws_grace < 0:
        parser.error("--ws-grace must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # python -m analysis compare RUN_A RUN_B (docs/compare.md)
        from analysis.compare import main as compare_main  # noqa: PLC0415

        return compare_main(argv[1:])
    args = parse_args(argv)
    try:
        thresholds = None if args.thresholds == "none" else load_thresholds(args.thresholds)
        inputs = load_results(args.results)
    except InputError as exc:
        print(f"analysis: {exc}", file=sys.stderr)
        return EXIT_INPUT
    options = Options.resolve(inputs.run, tolerance_ms=args.tolerance, ws_grace_s=args.ws_grace)
    verdict = run_checks(inputs.history, inputs.run, options, locust=inputs.locust, thresholds=thresholds)
    summary = verdict.to_summary()
    nines = compute_nines(inputs.history, options.tolerance_ns)
    summary["nines"] = jsonable(nines)
    try:
        write_summary(inputs.results, summary)
        write_report(inputs.results, verdict, inputs.history, nines, options.tolerance_ns)
    except OSError as exc:
        print(
            f"analysis: {inputs.results}: cannot write summary.json/report.html ({exc.strerror or exc}); "
            "make the results directory writable",
            file=sys.stderr,
        )
        return EXIT_INPUT
    print(dumps(summary) if args.json else render(verdict), end="" if args.json else "\n")
    return EXIT_PASS if verdict.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
