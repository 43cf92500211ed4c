"""cachestorm.locust_fixes: Locust's option defaults built once per process, and still right."""

from __future__ import annotations

from unittest import mock

from locust import argument_parser

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
