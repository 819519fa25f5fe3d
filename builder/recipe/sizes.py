"""Parse human sizes ("8G", "20GiB", "512M") into bytes. Units are binary (G = GiB), as in Proxmox."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
MAX_DIGITS = 16  # more than any size a disk or a VM's memory can have


def parse_size(value: str | int, *, bare_unit: str) -> int:
    """Bytes in *value*. An integer (or a bare number string) is counted in *bare_unit* ("M" or "G").

    Raises ValueError with a message fit for the user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 8G, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        if value >= 10**MAX_DIGITS:
            raise ValueError("size is absurdly large")
        return value * _UNITS[bare_unit]
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"cannot parse size {value[:40]!r}: use a number with K, M, G or T (binary units), e.g. 8G")
    number, unit = match.groups()
    if len(number.partition(".")[0].lstrip("0")) > MAX_DIGITS or len(number) > 2 * MAX_DIGITS:
        raise ValueError(f"size {value[:20]!r}... is absurdly large")
    unit = unit.upper() or bare_unit
    try:
        size = int(Decimal(number) * _UNITS[unit])  # exact: a float would round, or overflow to infinity
    except InvalidOperation:
        raise ValueError(f"cannot parse size {value[:40]!r}") from None
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)
