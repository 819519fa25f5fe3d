"""What every subcommand gets: resolved global options and the output renderer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.cli.output import Output


def default_recipes_dir() -> Path:
    """$IMGBUILD_RECIPES, else ./recipes when it exists, else the recipes shipped beside the package."""
    explicit = os.environ.get("IMGBUILD_RECIPES")
    if explicit:
        return Path(explicit)
    here = Path("recipes")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "recipes"


def default_out_dir() -> Path:
    return Path(os.environ.get("IMGBUILD_OUT", "out"))


@dataclass
class Context:
    recipes_dir: Path
    out_dir: Path
    debug: bool
    out: Output
