"""The run-time contract on a target's write versions (cachestorm.contract)."""

from __future__ import annotations

import pytest

from cachestorm.contract import RECENT, Contract
from cachestorm.target import ContractError


def test_concurrent_writes_may_answer_out_of_order() -> None:
    c = Contract()
    assert c.check_write("k", 2) == 2
    assert c.check_write("k", 1) == 1  # committed first, answered last
    assert c.committed["k"] == 2


def test_a_repeated_version_breaks_the_contract() -> None:
    c = Contract()
    c.check_write("k", 1)
    c.check_write("k", 3)
    with pytest.raises(ContractError, match="already"):
        c.check_write("k", 1)


def test_a_version_at_or_below_the_start_breaks_it() -> None:
    c = Contract()
    c.started({"k": 5})
    with pytest.raises(ContractError, match="started the run at version 5"):
        c.check_write("k", 5)
    assert c.check_write("k", 6) == 6
    with pytest.raises(ContractError, match="not an integer"):
        c.check_write("k", "7")
    with pytest.raises(ContractError, match="nothing"):
        c.check_write("k", None)


def test_the_versions_remembered_per_key_stay_bounded() -> None:
    c = Contract()
    for v in range(1, 5 * RECENT):
        c.check_write("k", v)
    assert len(c.recent["k"]) <= RECENT + 1
    with pytest.raises(ContractError):
        c.check_write("k", 5 * RECENT - 2)
