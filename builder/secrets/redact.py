"""What must never be shown, and the one function every output path passes its text through.

Secrets enter this process at the edges: passwords read from the environment, the credentials in a
mirror proxy URL (``http://user:password@proxy:3128/``). ``remember`` them there (render_recipe does);
``redact`` then hides them in progress lines, logs, error messages, command lines, report.json and
anything printed. The password in any ``scheme://user:password@`` URL is hidden even when nobody
remembered it.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?<=://)([^\s/@:'\"]*):[^\s/@'\"]*@")
_known: set[str] = set()


def remember(*secrets: str | None) -> None:
    """Hide these values from now on, for the rest of this process."""
    for secret in secrets:
        if secret:
            _known.add(secret)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials in *url* (``user:password@``): the password, as written and percent-decoded."""
    if not url:
        return ()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return tuple(s for s in found if s)


def redact(text: str) -> str:
    if not text:
        return text
    text = _URL_CREDENTIALS.sub(r"\1:" + MASK + "@", text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_data(data: Any) -> Any:
    """*data* (JSON-like: dicts, lists, strings) with every string redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (installed on the CLI's log handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
