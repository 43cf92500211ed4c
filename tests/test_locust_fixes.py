"""cachestorm.locust_fixes: Locust's option defaults built once per process, and still right; its
--csv files brought up to date on demand."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pandas as pd
from locust import argument_parser
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

from cachestorm import locust_fixes


def test_default_args_are_built_once_and_unchanged() -> None:
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    parser._default_config_files = {}
    expected = vars(parser.parse([]))
    locust_fixes.apply()
    locust_fixes.apply()  # idempotent: one wrapper, not two
    assert argument_parser.default_args_dict() == expected
    # What Locust's worker does for every key of a spawn message: no parser is built any more.
    with mock.patch.object(argument_parser, "setup_parser_arguments") as setup:
        for _ in range(200):
            assert "num_users" in argument_parser.default_args_dict()
        assert setup.call_count == 0
    # Each caller gets its own copy.
    argument_parser.default_args_dict()["num_users"] = -1
    assert argument_parser.default_args_dict()["num_users"] == expected["num_users"]


def test_the_csv_files_are_brought_up_to_date(tmp_path: Path) -> None:
    locust_fixes.apply()
    env = Environment()
    writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(tmp_path / "locust"))
    try:
        for ms in (1.0, 2.0, 3.0):
            env.stats.log_request("redis", "get", ms, 0)
        env.stats.log_error("redis", "get", "boom")
        # Locust's writer has not ticked (its greenlet never ran): the files are empty, the state
        # the run-end analysis used to read after a run's last second.
        assert (tmp_path / "locust_stats.csv").read_text() == ""
        locust_fixes.write_csv_now(env)
        stats = pd.read_csv(tmp_path / "locust_stats.csv")
        assert dict(zip(stats["Name"], stats["Request Count"], strict=True)) == {"get": 3, "Aggregated": 3}
        failures = pd.read_csv(tmp_path / "locust_failures.csv")
        assert failures[["Name", "Occurrences"]].to_dict("records") == [{"Name": "get", "Occurrences": 1}]
        # Written again, the files hold the figures once (rewritten from their start, not appended).
        env.stats.log_request("redis", "get", 4.0, 0)
        locust_fixes.write_csv_now(env)
        stats = pd.read_csv(tmp_path / "locust_stats.csv")
        assert dict(zip(stats["Name"], stats["Request Count"], strict=True)) == {"get": 4, "Aggregated": 4}
        # Another environment's call leaves these files alone.
        env.stats.log_request("redis", "get", 5.0, 0)
        locust_fixes.write_csv_now(Environment())
        assert pd.read_csv(tmp_path / "locust_stats.csv")["Request Count"].tolist() == [4, 4]
    finally:
        writer.close_files()
