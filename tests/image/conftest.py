"""Fixtures for golden image tests: the web-server image and a raw view of it for inspection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.image import GoldenImage, ImageSpec, build_golden_image
from builder.proc import run

WEB_SPEC = ImageSpec(release="trixie", tasks=("web-server", "ssh-server", "standard"), bios="seabios")


@pytest.fixture(scope="module")
def web_image() -> GoldenImage:
    return build_golden_image(WEB_SPEC)


@pytest.fixture(scope="module")
def web_raw(web_image: GoldenImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image as a sparse raw file, so sfdisk and debugfs can read it."""
    raw = tmp_path_factory.mktemp("raw") / "disk.raw"
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", web_image.path, raw])
    yield raw
    raw.unlink(missing_ok=True)
