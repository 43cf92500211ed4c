"""``python -m analysis RESULTS``: check a run's op history and print the verdict.

Exit status: 0 every check passed, 1 a check failed or a threshold was breached, 2 the input (or the
thresholds file) could not be used, 3 unknown: no check failed, but one the run needed could not be
judged (skipped, or its rows incomplete).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import psutil

from analysis.checks import Options, run_checks
from analysis.chunked import run_checks_chunked
from analysis.console import render
from analysis.load import InputError, Inputs, history_rows, load_columns, load_results, unfinished_run
from analysis.nines import compute_nines
from analysis.ops import NS_PER_MS
from analysis.report import write_report
from analysis.thresholds import Thresholds, evaluate_thresholds, load_thresholds
from analysis.verdict import FAIL, PASS, UNKNOWN, Verdict, dumps, jsonable, write_summary

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_CODES = {PASS: EXIT_PASS, FAIL: EXIT_FAIL, UNKNOWN: EXIT_UNKNOWN}
#: Peak memory per history row when checked all at once, with margin: bench/checker_speed.py
#: measured 150 bytes per operation at 10M rows (docs/performance.md).
BYTES_PER_ROW = 300
MAX_CHUNKS = 254


#: The most a partition may need when the history is partitioned at all: the chunked mode's
#: peak is about one partition (bench/checker_speed.py: 1.6 GiB for partitions of 5.8M rows), so
#: this keeps it near 2-3 GB however much memory the machine has.
PARTITION_BYTES = 2 * 1024**3


def chunks_for(rows: int, available: int) -> int:
    """How many key partitions keep a history of ``rows`` within half of ``available`` bytes:
    none (1) when it fits, else enough that each needs at most half of ``available`` and at most
    :data:`PARTITION_BYTES`, plus one for the unevenness of a hash partition."""
    need = rows * BYTES_PER_ROW
    budget = max(available // 2, 1)
    if need <= budget:
        return 1
    return min(MAX_CHUNKS, -(-need // min(budget, PARTITION_BYTES)) + 1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Check a cachestorm run's op history for cache anomalies and write summary.json.",
        epilog="Exit status: 0 pass: all checks and thresholds passed; 1 fail: a check failed or a "
        "threshold was breached; 2 bad input or thresholds file; 3 unknown: nothing failed, but a check "
        "the run needed was skipped or its history is incomplete. See docs/checks.md.",
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
    parser.add_argument(
        "--chunks",
        metavar="N|auto",
        default="auto",
        help="check the history in N partitions by key, holding one at a time: for histories too large "
        "for memory. auto (the default): 1 (all at once) when it fits in half the available memory "
        "at about 300 bytes per operation, else as many as make each part fit. With more than 1, the "
        "nines and the report's history plots are left out (they need the whole history)",
    )
    parser.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    args = parser.parse_args(argv)
    if args.chunks != "auto" and not (args.chunks.isdigit() and 1 <= int(args.chunks) <= MAX_CHUNKS):
        parser.error(f"--chunks is {args.chunks!r}: give auto or a number from 1 to {MAX_CHUNKS}")
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
        rows = history_rows(args.results)
        if args.chunks == "auto":
            chunks = chunks_for(rows, psutil.virtual_memory().available)
            if chunks > 1:
                print(
                    f"analysis: {rows:,} history rows need about {rows * BYTES_PER_ROW / 2**30:.1f} GiB "
                    f"at once; checking them in {chunks} partitions by key (--chunks 1 to force)",
                    file=sys.stderr,
                )
        else:
            chunks = int(args.chunks)
        tolerance_ns = None if args.tolerance is None else round(args.tolerance * NS_PER_MS)
        inputs = load_results(args.results, history=chunks == 1 or rows == 0, tolerance_ns=tolerance_ns)
        options = Options.resolve(inputs.run, tolerance_ms=args.tolerance, ws_grace_s=args.ws_grace)
        if inputs.history is None and rows:
            # The chunked mode checks the rows as it reads them: bad input can surface here too.
            verdict = chunked_verdict(inputs, chunks, options, thresholds)
    except InputError as exc:
        print(f"analysis: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if inputs.history is None and rows:
        nines: dict[str, Any] = {"skipped": True, "reason": f"checked in {chunks} partitions by key"}
    else:
        verdict = run_checks(inputs.history, inputs.run, options, locust=inputs.locust, thresholds=thresholds)
        nines = compute_nines(inputs.history, options.tolerance_ns)
    unfinished = unfinished_run(inputs.results)
    if unfinished is not None:
        verdict.notes.insert(0, unfinished)
    summary = verdict.to_summary()
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
    return EXIT_CODES[verdict.outcome]


def chunked_verdict(inputs: Inputs, chunks: int, options: Options, thresholds: Thresholds | None) -> Verdict:
    """:func:`run_checks_chunked`, with the thresholds judged as :func:`run_checks` judges them.

    The success rate needs only each row's ``f`` and ``status``, which are loaded alone.
    """
    verdict = run_checks_chunked(inputs.results, chunks, options, inputs.run)
    verdict.locust = inputs.locust
    verdict.notes.append(
        f"checked in {chunks} partitions by key: the nines and the report's history plots need the "
        "whole history in memory and are left out (--chunks 1 on a larger machine gives them)"
    )
    if thresholds is not None:
        statuses = load_columns(inputs.results, ["f", "status"])
        verdict.thresholds = evaluate_thresholds(
            thresholds, verdict.checks, statuses, inputs.run, inputs.locust
        )
        verdict.options["thresholds"] = thresholds.source
    return verdict


if __name__ == "__main__":
    sys.exit(main())
