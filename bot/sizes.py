"""Byte sizes and parameter counts, read and written with units that cannot be mistaken for each other.

Bytes carry a unit that names a power of 1000 or 1024 (``kB``, ``MB``, ``GB``, ``TB``, ``KiB``, ``MiB``,
``GiB``, ``TiB``), the word ``bytes``, or no unit at all. Parameter counts use ``k``, ``M``, ``B`` (billions) and
``T`` and are written with the word ``params`` (``7B params``). A bare ``B`` after a number is refused as a byte
size, and a byte unit is refused as a parameter count, because "7B" means seven billion parameters to anyone
reading a model card and seven bytes to a disk tool.

Errors name the text only; the caller, which knows the flag or input, adds its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.errors import ConfigError

_BYTE_UNITS = {
    "": 1,
    "bytes": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_PARAMETER_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_NUMBER_AND_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)
_PARAMETERS_WORD = re.compile(r"\s*params?\s*$", re.IGNORECASE)


def _amount(text: str, units: Mapping[str, int]) -> int | None:
    """``text`` as a number times one of ``units`` (keys lower-case), or None when it is not one."""
    match = _NUMBER_AND_UNIT.fullmatch(text)
    if match is None or match[2].lower() not in units:
        return None
    return int(float(match[1]) * units[match[2].lower()])


def parse_bytes(text: str) -> int:
    """Bytes from ``4GB``, ``500 MiB``, ``1.5kB``, ``512 bytes`` or ``123456``.

    Raises:
        ConfigError: not a number with a byte unit, including ``7B`` (billions of what?).

    Example:
        >>> parse_bytes("4GB"), parse_bytes("1.5 KiB"), parse_bytes("123456")
        (4000000000, 1536, 123456)
    """
    n_bytes = _amount(text, _BYTE_UNITS)
    if n_bytes is not None:
        return n_bytes
    if _amount(text, {"b": 1}) is not None:
        raise ConfigError(f"{text!r}: a bare B reads as billions of parameters; give bytes as kB, MB, GB or no unit")
    raise ConfigError(f"{text!r} is not a size in bytes (examples: 4GB, 500MiB, 123456)")


def format_bytes(n_bytes: int) -> str:
    """A byte size in decimal units, three significant digits.

    Example:
        >>> format_bytes(4_000_000_000), format_bytes(1536), format_bytes(512)
        ('4.0 GB', '1.5 kB', '512 bytes')
    """
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    value = n_bytes / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def parse_parameters(text: str) -> int:
    """A parameter count from ``1.5B``, ``7B params``, ``500M`` or ``1000``.

    Raises:
        ConfigError: not a number with k, M, B or T, including a byte size such as ``7GB``.

    Example:
        >>> parse_parameters("1.5B"), parse_parameters("7B params"), parse_parameters("500k")
        (1500000000, 7000000000, 500000)
    """
    parameters = _amount(_PARAMETERS_WORD.sub("", text), _PARAMETER_UNITS)
    if parameters is None:
        raise ConfigError(f"{text!r} is not a parameter count (examples: 1.5B, 500M, 7B params; not bytes)")
    return parameters


def format_parameters(parameters: int) -> str:
    """A parameter count in three significant digits, with the word that keeps it from reading as bytes.

    Example:
        >>> format_parameters(6_442_450_944), format_parameters(88_473_600), format_parameters(196)
        ('6.44B params', '88.5M params', '196 params')
    """
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit} params"
    return f"{parameters} params"
