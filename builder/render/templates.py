"""Where the Jinja2 preseed templates live (the repository's preseed/ directory) and the strict environment."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jinja2

from builder.render.guard import debconf_value


def templates_dir() -> Path:
    """$IMGBUILD_PRESEED_DIR, else preseed/ beside the builder package (the repository layout)."""
    explicit = os.environ.get("IMGBUILD_PRESEED_DIR")
    return Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "preseed"


@functools.cache
def environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        finalize=debconf_value,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
