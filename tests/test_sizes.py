"""Byte sizes and parameter counts: one reader and writer each, and neither accepts the other's units."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.sizes import format_bytes, format_parameters, parse_bytes, parse_parameters


@pytest.mark.parametrize(
    ("text", "expected"),
    [("123", 123), ("2 GiB", 2 * 2**30), ("1.5mb", 1_500_000), ("4GB", 4 * 10**9), ("0", 0), (" 10 kB ", 10_000)],
)
def test_byte_sizes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("1.5B", 1_500_000_000), ("7B params", 7 * 10**9), ("500M", 500 * 10**6), ("1000", 1000)]
)
def test_parameter_counts(text: str, expected: int) -> None:
    assert parse_parameters(text) == expected


def test_a_bare_b_is_not_a_byte_size() -> None:
    with pytest.raises(ConfigError, match="'7B': a bare B reads as billions of parameters"):
        parse_bytes("7B")


@pytest.mark.parametrize("text", ["7GB", "500MiB", "12 parsecs", ""])
def test_a_byte_size_is_not_a_parameter_count(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a parameter count"):
        parse_parameters(text)


@pytest.mark.parametrize("text", ["12 parsecs", "-1GB", "GB", ""])
def test_unreadable_byte_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size in bytes"):
        parse_bytes(text)


def test_formatted_sizes_read_back() -> None:
    for n_bytes in (512, 1536, 4 * 10**9, 3 * 10**12):
        assert parse_bytes(format_bytes(n_bytes).replace(" ", "")) == pytest.approx(n_bytes, rel=0.05)
    for parameters in (196, 88_473_600, 6_442_450_944):
        text = format_parameters(parameters)
        assert text.endswith(" params")
        assert parse_parameters(text) == pytest.approx(parameters, rel=0.01)
