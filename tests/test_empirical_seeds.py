"""The seeds of the empirical tests (TRL_EXT_EMPIRICAL_SEEDS, tests/conftest.py)."""

from __future__ import annotations

import pytest
from conftest import empirical_seeds


@pytest.mark.parametrize(
    "value, expected",
    [("0", [0]), ("0,3,7", [0, 3, 7]), ("0-4", [0, 1, 2, 3, 4]), (" 0-2, 9 ", [0, 1, 2, 9]), ("1,1,0-1", [1, 0])],
)
def test_seed_lists_and_ranges(value, expected):
    assert empirical_seeds(value) == expected


def test_default_is_seed_zero(monkeypatch):
    monkeypatch.delenv("TRL_EXT_EMPIRICAL_SEEDS", raising=False)
    assert empirical_seeds() == [0]
    monkeypatch.setenv("TRL_EXT_EMPIRICAL_SEEDS", "2-3")
    assert empirical_seeds() == [2, 3]


@pytest.mark.parametrize("value", ["a", "0-x", "", " , "])
def test_bad_values_are_named(value):
    with pytest.raises(pytest.UsageError, match="TRL_EXT_EMPIRICAL_SEEDS"):
        empirical_seeds(value)
