"""The run-time contract on a target's write versions (cachestorm.contract)."""

from __future__ import annotations

import pytest

from cachestorm.contract import RECENT, Contract
from cachestorm.target import ContractError


def test_concurrent_writes_may_answer_out_of_order() -> None:
    c = Contract()
    floor = c.floor("k")  # both writes began before either answered
    assert c.check_write("k", 2, floor) == 2
    assert c.check_write("k", 1, floor) == 1  # committed first, answered last
    assert c.committed["k"] == 2


def test_a_version_committed_before_the_write_began_breaks_it() -> None:
    c = Contract()
    c.check_write("k", 1, c.floor("k"))
    c.check_write("k", 2, c.floor("k"))
    with pytest.raises(ContractError, match="version 2 was already committed when it began"):
        c.check_write("k", 2, c.floor("k"))


def test_a_repeated_version_breaks_the_contract() -> None:
    c = Contract()
    floor = c.floor("k")
    c.check_write("k", 1, floor)
    c.check_write("k", 3, floor)
    with pytest.raises(ContractError, match="two writes of key 'k' returned version 1"):
        c.check_write("k", 1, floor)


def test_a_version_at_or_below_the_start_breaks_it() -> None:
    c = Contract()
    c.started({"k": 5})
    with pytest.raises(ContractError, match="version 5 was already committed"):
        c.check_write("k", 5, c.floor("k"))
    assert c.check_write("k", 6, c.floor("k")) == 6
    with pytest.raises(ContractError, match="not an integer"):
        c.check_write("k", "7", c.floor("k"))
    with pytest.raises(ContractError, match="nothing"):
        c.check_write("k", None, c.floor("k"))


def test_the_versions_remembered_per_key_stay_bounded() -> None:
    c = Contract()
    for v in range(1, 5 * RECENT):
        c.check_write("k", v, 0)
    assert len(c.returned["k"]) <= 2 * RECENT + 1
