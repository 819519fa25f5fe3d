"""Debian control-file (deb822) stanzas and Debian version ordering. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator


def iter_stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Yield each stanza of a deb822 text as a dict (field names as written, continuation lines joined by \\n).

    Works on any iterable of lines, so a large Packages file can be scanned while it is decompressed.
    """
    stanza: dict[str, str] = {}
    last: str | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
            continue
        if line.startswith("#"):
            continue
        if line[0] in " \t":
            if last is None:
                continue  # a continuation line without a field: ignore, as dpkg does not produce these
            stanza[last] += "\n" + line[1:]
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = name.strip()
        stanza[last] = value.strip()
    if stanza:
        yield stanza


def parse_stanza(text: str) -> dict[str, str]:
    """The first stanza of *text* (a Release file is one stanza)."""
    for stanza in iter_stanzas(text.splitlines()):
        return stanza
    return {}


# --- Debian version ordering (dpkg's algorithm, Debian Policy 5.6.12) --------------------------------------

_VERSION_RE = re.compile(r"^(?:(\d+):)?(.+?)(?:-([^-]+))?$")


def _order(ch: str) -> int:
    if ch == "~":
        return -1
    if ch.isdigit():
        return 0
    if ch.isalpha():
        return ord(ch)
    return ord(ch) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_versions(a: str, b: str) -> int:
    """Negative, zero or positive as Debian version *a* sorts before, equal to or after *b*."""
    ma, mb = _VERSION_RE.match(a.strip()), _VERSION_RE.match(b.strip())
    if not ma or not mb:
        raise ValueError(f"not a Debian version: {a!r} / {b!r}")
    ea, ua, ra = int(ma.group(1) or 0), ma.group(2), ma.group(3) or ""
    eb, ub, rb = int(mb.group(1) or 0), mb.group(2), mb.group(3) or ""
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)
